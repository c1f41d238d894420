"""Latchkey: identity, application credentials and tenant-controlled authorization."""
