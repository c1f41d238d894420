"""Keystone's v3 identity API over Latchkey's own services (docs/keystone.md).

Each module registers its routes on the one blueprint of ``common``; importing
the package registers them all.
"""

from latchkey.frontdoors.keystone import application_credentials, catalog, tokens
from latchkey.frontdoors.keystone import trusts
from latchkey.frontdoors.keystone.common import blp

__all__ = ["application_credentials", "blp", "catalog", "tokens"]
__all__ += ["trusts"]
