"""OAuth 2.0 for relying services and machine clients (authlib's server pieces).

``client_credentials`` only: the client is an application credential and the
access token is the same JWT ``POST /v1/auth/tokens`` issues. See docs/oauth.md.
"""
