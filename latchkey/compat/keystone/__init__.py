"""A Keystone v3 subset so unmodified OpenStack clients can use Latchkey (docs/keystone.md)."""

from latchkey.compat.keystone.api import blp

__all__ = ["blp"]
