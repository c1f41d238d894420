"""Credentials: application credentials and their secrets, access rules, trusts,
Keystone credentials."""
