"""What the credentials services hand to front doors: plain frozen values, never ORM rows.

Each record carries the fields the front doors read, under the names the rows have
(so the /v1 schemas dump them by attribute and the /v3 bodies read them as before).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from latchkey.credentials.models import (
    ApplicationCredential,
    CredentialSecret,
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
        return cls(row.id, row.credential_id, row.created_at, row.expires_at, row.last_used_at)


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
        return cls(
            id=row.id,
            name=row.name,
            description=row.description,
            user_id=row.user_id,
            project_id=row.project_id,
            roles=list(row.roles or []),
            unrestricted=row.unrestricted,
            expires_at=row.expires_at,
            access_rules=[dict(rule) for rule in row.access_rules or []],
            allowed_cidrs=list(row.allowed_cidrs or []),
            created_at=row.created_at,
            last_used_at=row.last_used_at,
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
        return cls(row.id, row.service, row.method, row.path)
