"""Identity: domains, projects, users, groups, roles, authentication and tokens."""
