"""The sql backend: users, groups and password hashes in Latchkey's database."""

from __future__ import annotations

from latchkey.identity.models import User
from latchkey.identity.passwords import PasswordHasher


class SqlIdentity:
    name = "sql"
    writable = True

    def __init__(self, hasher: PasswordHasher) -> None:
        self._hasher = hasher

    def verify_password(self, user: User, password: str) -> bool:
        return self._hasher.verify(user.password_hash, password)
