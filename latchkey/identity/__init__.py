"""Identity: domains, projects, users, groups, roles and their assignments."""
