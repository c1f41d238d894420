"""Who is calling: built from a validated token's claims, no database lookup."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class AuthContext:
    user_id: str
    user_domain_id: str
    token_id: str
    roles: frozenset[str] = frozenset()
    project_id: str | None = None
    project_domain_id: str | None = None
    domain_id: str | None = None  # set for domain-scoped tokens
    # Keystone's system scope ({"system": {"all": true}}): the whole deployment.
    system_scoped: bool = False
    trust_id: str | None = None  # a token obtained through an OS-TRUST trust
    is_admin_project: bool = False
    kind: str = "human"
    application_credential_id: str | None = None
    restricted: bool = False  # an application credential that is not `unrestricted`
    access_rules: tuple[dict[str, str], ...] = ()
    claims: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def from_claims(cls, claims: dict[str, Any]) -> AuthContext:
        project = claims.get("project") or {}
        domain = claims.get("domain") or {}
        user = claims.get("user") or {}
        credential = claims.get("application_credential") or {}
        return cls(
            user_id=claims["sub"],
            user_domain_id=(user.get("domain") or {}).get("id", ""),
            token_id=claims["jti"],
            roles=frozenset(claims.get("roles", [])),
            project_id=project.get("id"),
            project_domain_id=(project.get("domain") or {}).get("id"),
            domain_id=domain.get("id"),
            system_scoped=bool((claims.get("system") or {}).get("all")),
            trust_id=(claims.get("trust") or {}).get("id"),
            is_admin_project=bool(project.get("is_admin_project")),
            kind=user.get("kind", "human"),
            application_credential_id=credential.get("id"),
            restricted=bool(credential) and bool(credential.get("restricted", True)),
            access_rules=tuple(credential.get("access_rules") or ()),
            claims=claims,
        )

    def is_cloud(self, role: str) -> bool:
        """Holds ``role`` on the operators' admin project, or on the system (a
        system-scoped token): acts across every domain (docs/decisions.md)."""
        return (self.is_admin_project or self.system_scoped) and role in self.roles


@dataclass(frozen=True)
class CallContext:
    """What a service needs to know about the request it serves (no Flask objects)."""

    auth: AuthContext | None
    request_id: str | None = None
    source_ip: str | None = None

    @property
    def actor_id(self) -> str | None:
        return self.auth.user_id if self.auth else None
