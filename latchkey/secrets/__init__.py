"""Secrets: tenant secrets and Latchkey's own, kept in a SecretStore (backends/)."""
