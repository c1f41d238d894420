"""What the credentials services hand to front doors: plain frozen values, never ORM rows.

Each record carries the fields the front doors read, under the names the rows have
(so the /v1 schemas dump them by attribute and the /v3 bodies read them as before).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from latchkey.records import copy_row

if TYPE_CHECKING:  # of() takes rows; importing a record loads no ORM class
    from latchkey.credentials.models import (
        ApplicationCredential,
        CredentialSecret,
        KeystoneCredential,
        OAuth1Consumer,
        Trust,
        UserAccessRule,
    )


@dataclass(frozen=True, slots=True)
class SecretRecord:
    """A credential secret's metadata (its hash stays in the service)."""

    id: str
    credential_id: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None

    @classmethod
    def of(cls, row: CredentialSecret) -> SecretRecord:
        return copy_row(cls, row)


@dataclass(frozen=True, slots=True)
class CredentialRecord:
    """An application credential with its secrets' metadata (oldest first)."""

    id: str
    name: str
    description: str
    user_id: str
    project_id: str
    roles: list[str]
    unrestricted: bool
    expires_at: datetime | None
    access_rules: list[dict[str, str]]
    allowed_cidrs: list[str]
    created_at: datetime
    last_used_at: datetime | None
    secrets: list[SecretRecord]

    @classmethod
    def of(cls, row: ApplicationCredential, secrets: list[CredentialSecret]) -> CredentialRecord:
        return copy_row(
            cls,
            row,
            roles=list(row.roles or []),
            access_rules=[dict(rule) for rule in row.access_rules or []],
            allowed_cidrs=list(row.allowed_cidrs or []),
            secrets=[SecretRecord.of(secret) for secret in secrets],
        )


@dataclass(frozen=True, slots=True)
class CreatedCredential:
    credential: CredentialRecord
    secret: SecretRecord
    secret_value: str  # shown once, never stored


@dataclass(frozen=True, slots=True)
class AccessRuleRecord:
    id: str
    service: str
    method: str
    path: str

    @classmethod
    def of(cls, row: UserAccessRule) -> AccessRuleRecord:
        return copy_row(cls, row)


@dataclass(frozen=True, slots=True)
class TrustRecord:
    id: str
    trustor_user_id: str
    trustee_user_id: str
    project_id: str | None
    impersonation: bool
    role_ids: list[str]
    expires_at: datetime | None
    remaining_uses: int | None
    created_at: datetime

    @classmethod
    def of(cls, row: Trust) -> TrustRecord:
        return copy_row(cls, row, role_ids=list(row.role_ids or []))


@dataclass(frozen=True, slots=True)
class KeystoneCredentialRecord:
    """A ``/v3/credentials`` entry without its blob (the blob travels opened, in
    ``OpenCredential``, or not at all)."""

    id: str
    user_id: str
    project_id: str | None
    type: str
    extra: dict[str, Any] | None
    created_at: datetime

    @classmethod
    def of(cls, row: KeystoneCredential) -> KeystoneCredentialRecord:
        return copy_row(cls, row)


@dataclass(frozen=True, slots=True)
class OpenCredential:
    """A credential with its blob opened (for the answer; never logged)."""

    credential: KeystoneCredentialRecord
    blob: str

    @classmethod
    def of(cls, row: KeystoneCredential, blob: str) -> OpenCredential:
        return cls(KeystoneCredentialRecord.of(row), blob)

    def ec2(self) -> dict[str, Any]:
        return ec2_blob(self.blob)


def ec2_blob(blob: str) -> dict[str, Any]:
    """An EC2 credential's blob as an object ({} if it is not one)."""
    try:
        value = json.loads(blob)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


@dataclass(frozen=True, slots=True)
class OAuth1ConsumerRecord:
    id: str
    description: str | None
    created_at: datetime

    @classmethod
    def of(cls, row: OAuth1Consumer) -> OAuth1ConsumerRecord:
        return copy_row(cls, row)


@dataclass(frozen=True, slots=True)
class CreatedConsumer:
    consumer: OAuth1ConsumerRecord
    secret: str  # shown once, in the creation's answer
