"""Keystone's v3 identity API over Latchkey's own services (docs/keystone.md).

Each module registers its routes on the one blueprint of ``common``; importing
the package registers them all.
"""

import latchkey.frontdoors.keystone.trusts  # noqa: F401  (OS-TRUST routes, issue 14)
from latchkey.frontdoors.keystone import application_credentials, catalog, tokens
from latchkey.frontdoors.keystone.common import blp

__all__ = ["application_credentials", "blp", "catalog", "tokens"]
