"""Who a verified token says called: the claims a relying service reads, as one value.

Shared by the middleware (``request.environ["latchkey.identity"]``) and its caches;
no Flask, no SQLAlchemy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Identity:
    """Who called, from a verified, unrevoked token."""

    user_id: str
    user_name: str | None
    project_id: str | None
    domain_id: str | None  # the scope's domain (project's or domain scope), else the user's
    roles: tuple[str, ...]
    application_credential_id: str | None
    claims: Mapping[str, Any] = field(repr=False, compare=False)
    token: str = field(repr=False, compare=False)
    # Keystone's system scope ({"system": {"all": true}}): no project, the whole cloud.
    system_scoped: bool = False
    trust_id: str | None = None  # obtained through an OS-TRUST trust

    @property
    def jti(self) -> str:
        return str(self.claims["jti"])

    @classmethod
    def from_claims(cls, claims: Mapping[str, Any], token: str) -> Identity:
        user = claims.get("user") or {}
        project = claims.get("project") or {}
        scope_domain = (project.get("domain") or claims.get("domain") or {}).get("id")
        credential = claims.get("application_credential") or {}
        return cls(
            user_id=str(claims["sub"]),
            user_name=user.get("name"),
            project_id=project.get("id"),
            domain_id=scope_domain or (user.get("domain") or {}).get("id"),
            roles=tuple(claims.get("roles") or ()),
            application_credential_id=credential.get("id"),
            claims=claims,
            token=token,
            system_scoped=bool((claims.get("system") or {}).get("all")),
            trust_id=(claims.get("trust") or {}).get("id"),
        )
