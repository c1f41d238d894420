"""Keystone's v3 identity API over Latchkey's own services (docs/keystone.md).

Each module registers its routes on the one blueprint of ``common``; importing
the package registers them all.
"""

from latchkey.frontdoors.keystone import (
    application_credentials,
    assignments,
    catalog,
    credentials,
    domain_config,
    domains,
    ec2,
    groups,
    oauth1,
    projects,
    roles,
    services,
    tokens,
    trusts,
    users,
)
from latchkey.frontdoors.keystone.common import blp

__all__ = [
    "application_credentials",
    "assignments",
    "blp",
    "catalog",
    "credentials",
    "domain_config",
    "domains",
    "ec2",
    "groups",
    "oauth1",
    "projects",
    "roles",
    "services",
    "tokens",
    "trusts",
    "users",
]
