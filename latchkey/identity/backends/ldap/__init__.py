"""The ldap backend: read-only corporate directories (ldap3), one per LDAP domain."""
