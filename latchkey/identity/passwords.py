"""Password hashing (argon2id) and the password policy for sql users."""

from __future__ import annotations

import argon2
from argon2.exceptions import InvalidHashError, VerificationError

from latchkey.errors import InvalidRequest

MAX_PASSWORD_LENGTH = 4096  # bounds the hashing work an attacker can ask for


class PasswordHasher:
    def __init__(self, time_cost: int, memory_kib: int, min_length: int) -> None:
        self._hasher = argon2.PasswordHasher(
            time_cost=time_cost, memory_cost=memory_kib, type=argon2.Type.ID
        )
        self.min_length = min_length
        # Verified against when the user does not exist, so both paths cost the same.
        self._dummy_hash = self._hasher.hash("latchkey-timing-equaliser")

    def check_policy(self, password: str) -> None:
        if len(password) < self.min_length:
            raise InvalidRequest(
                f"the password must have at least {self.min_length} characters",
                code="password_too_short",
            )
        if len(password) > MAX_PASSWORD_LENGTH:
            raise InvalidRequest("the password is too long", code="password_too_long")

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, password_hash: str | None, password: str) -> bool:
        """Constant-time check; a missing hash still costs one verification."""
        if len(password) > MAX_PASSWORD_LENGTH:
            return False
        try:
            return self._hasher.verify(password_hash or self._dummy_hash, password) and (
                password_hash is not None
            )
        except (VerificationError, InvalidHashError):
            return False
