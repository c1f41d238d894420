"""Tokens: authentication methods, the signing key ring, issuance and validation, revocation."""
