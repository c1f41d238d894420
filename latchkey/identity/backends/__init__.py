"""Identity backends: where a domain's users and groups come from."""

from __future__ import annotations

from typing import Protocol

from latchkey.identity.models import User


class IdentityBackend(Protocol):
    """One per domain kind. ``writable`` is checked once, in the user service."""

    name: str
    writable: bool

    def verify_password(self, user: User, password: str) -> bool: ...
