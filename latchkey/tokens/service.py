"""Issuing, validating and revoking tokens: ES256 JWS (RFC 9068 profile)."""

from __future__ import annotations

import base64
import math
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from joserfc import jwt
from joserfc.jwk import ECKey, KeySet

from latchkey.audit import AuditLog, AuditTarget
from latchkey.errors import LatchkeyError
from latchkey.identity.models import Domain, Project, User
from latchkey.metrics import count_validation
from latchkey.policy.context import AuthContext, CallContext
from latchkey.policy.enforcer import Enforcer, Target
from latchkey.tokens.keys import ALGORITHM, KeyRing
from latchkey.tokens.records import RevocationRecord
from latchkey.tokens.revocations import TOKEN, RevocationList

# The compact JWS and its offline check live in latchkey.wire.jws (no Flask, no
# SQLAlchemy: latchkey.middleware imports them); re-exported here for callers.
from latchkey.wire.jws import (
    MAX_TOKEN_LENGTH,
    TOKEN_TYPE,
    TokenInvalid,
    canonical_token,
    verify_jwt,
)

__all__ = [
    "MAX_TOKEN_LENGTH",
    "TOKEN_TYPE",
    "IssuedToken",
    "Scope",
    "TokenInvalid",
    "TokenNotFound",
    "Tokens",
    "VerifiedClaims",
    "sign",
    "verify_jwt",
]

VALIDATE = "identity:token:validate"  # the action that lets a caller see a token's claims


def sign(header: dict[str, Any], claims: dict[str, Any], key: ECKey) -> str:
    """A compact ES256 JWS of ``claims``, its signature in the canonical low-S form
    (latchkey.wire.jws): every token Latchkey issues is signed here."""
    return canonical_token(jwt.encode(header, claims, key, algorithms=[ALGORITHM]))


@dataclass(frozen=True)
class IssuedToken:
    token: str
    claims: dict[str, Any]

    @property
    def expires_at(self) -> datetime:
        return datetime.fromtimestamp(self.claims["exp"], UTC)

    @property
    def issued_at(self) -> datetime:
        return datetime.fromtimestamp(self.claims["iat_ms"] / 1000, UTC)


@dataclass(frozen=True)
class Scope:
    """What a token is scoped to: one project, one domain, the system, or nothing."""

    project: Project | None = None
    project_domain: Domain | None = None
    domain: Domain | None = None
    system: bool = False  # Keystone's system scope: {"system": {"all": true}}


class Tokens:
    def __init__(
        self,
        keys: KeyRing,
        revocations: RevocationList,
        audit: AuditLog,
        enforcer: Enforcer,
        *,
        issuer: str,
        audience: str,
        ttl: timedelta,
        verified_cache_size: int = 0,
        every_admin_is_cloud_admin: bool = False,
    ) -> None:
        # Keystone's own default (no `[resource] admin_project_name`, its bug 968696):
        # the admin role on any project acts across the cloud. Off unless the operator
        # asks for it (docs/keystone.md "Admin on any project").
        self._every_admin_is_cloud_admin = every_admin_is_cloud_admin
        self._keys = keys
        self._verified = VerifiedClaims(verified_cache_size)
        self._contexts: OrderedDict[str, AuthContext] = OrderedDict()
        self._contexts_lock = threading.Lock()
        self._revocations = revocations
        self._audit = audit
        self._enforcer = enforcer
        self.issuer = issuer
        self.audience = audience
        self.ttl = ttl

    def issue(
        self,
        user: User,
        user_domain: Domain,
        scope: Scope,
        roles: set[str],
        methods: list[str],
        client_id: str | None = None,
        extra_claims: dict[str, Any] | None = None,
        not_after: datetime | None = None,
    ) -> IssuedToken:
        """Sign a token; ``not_after`` caps its lifetime (a credential's or secret's expiry)."""
        now = time.time()
        expires = int(now + self.ttl.total_seconds())
        if not_after is not None:
            expires = min(expires, int(not_after.timestamp()))
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": user.id,
            "aud": self.audience,
            # Whole seconds for every JWT library; iat_ms (rounded down, never after
            # the real instant) lets revocation events compare to the millisecond.
            "iat": int(now),
            "iat_ms": math.floor(now * 1000),
            "exp": expires,
            "jti": base64.urlsafe_b64encode(secrets.token_bytes(16)).decode().rstrip("="),
            "client_id": client_id or user.id,
            "user": {
                "id": user.id,
                "name": user.name,
                "kind": user.kind,
                "domain": {"id": user_domain.id, "name": user_domain.name},
            },
            "roles": sorted(roles),
            "methods": methods,
        }
        if scope.project is not None and scope.project_domain is not None:
            claims["project"] = {
                "id": scope.project.id,
                "name": scope.project.name,
                "domain": {"id": scope.project_domain.id, "name": scope.project_domain.name},
            }
            if scope.project.is_admin_project or (
                self._every_admin_is_cloud_admin and "admin" in roles
            ):
                claims["project"]["is_admin_project"] = True
        elif scope.domain is not None:
            claims["domain"] = {"id": scope.domain.id, "name": scope.domain.name}
        elif scope.system:
            claims["system"] = {"all": True}
        claims.update(extra_claims or {})
        key = self._keys.signing_key()
        header = {"alg": ALGORITHM, "typ": TOKEN_TYPE, "kid": key.kid}
        return IssuedToken(sign(header, claims, key), claims)

    def validate(self, token: str) -> dict[str, Any]:
        """Signature, issuer, audience, expiry and revocation; TokenInvalid otherwise."""
        try:
            claims = self.verify_signature_and_claims(token)
        except TokenInvalid:
            count_validation(None, "invalid")
            raise
        if self._revocations.is_revoked(claims):
            count_validation(claims, "revoked")
            raise TokenInvalid()
        count_validation(claims, "valid")
        return claims

    def verify_signature_and_claims(self, token: str) -> dict[str, Any]:
        """``verify_jwt``, or its earlier answer for a token verified twice already,
        while unexpired and while the key that verified it is still published.
        Revocation is not part of it: ``validate`` checks that on every call."""
        cached = self._verified.get(token)
        if cached is not None:
            claims, kid = cached
            if claims["exp"] > int(time.time()) and self._keys.publishes(kid):
                return claims
            self._verified.discard(token)
        used: list[str] = []

        def keys_for_kid(kid: str) -> KeySet:
            used.append(kid)
            return self._keys.verify_keys(kid)

        claims = verify_jwt(token, keys_for_kid, self.issuer, self.audience)
        self._verified.remember(token, (claims, used[-1]))
        return claims

    def authenticate_bearer(self, token: str) -> AuthContext:
        return self.context_of(token, self.validate(token))

    def context_of(self, token: str, claims: dict[str, Any]) -> AuthContext:
        """``AuthContext.from_claims``, kept per token for as long as the verified
        cache serves the very same claims (a frozen dataclass of 16 fields takes
        ~4 us to build, a tenth of a whole validation; callers reuse their tokens)."""
        known = self._contexts.get(token)
        if known is not None and known.claims is claims:
            return known
        auth = AuthContext.from_claims(claims)
        if self._verified.holds(token, claims):
            with self._contexts_lock:
                self._contexts[token] = auth
                if len(self._contexts) > self._verified.size:
                    self._contexts.popitem(last=False)
        return auth

    def check_subject(self, ctx: CallContext, subject_token: str) -> dict[str, Any]:
        """GET /v1/auth/tokens: validate someone's token on behalf of the caller."""
        claims = self._validate_subject(subject_token)
        self._enforcer.enforce(ctx.auth, VALIDATE, _subject_target(claims))
        return claims

    # -- the validation lane (latchkey/frontdoors/http/validation_lane.py) ---------------
    # Each answers what its counterpart above would, or None where that one would raise;
    # none counts, audits or writes anything, so a request they cannot answer is
    # handed whole to the full path, which answers (and counts) it as it always did.

    def valid_claims(self, token: str) -> dict[str, Any] | None:
        """``validate``'s claims, or None where it raises; nothing counted."""
        try:
            claims = self.verify_signature_and_claims(token)
        except TokenInvalid:
            return None
        return None if self._revocations.is_revoked(claims) else claims

    def may_check_subject(self, auth: AuthContext, claims: dict[str, Any]) -> bool:
        """Would ``check_subject`` let ``auth`` see this (valid) token's claims?"""
        try:
            self._enforcer.enforce(auth, VALIDATE, _subject_target(claims))
        except LatchkeyError:
            return False
        return True

    def revoke(self, ctx: CallContext, subject_token: str) -> None:
        claims = self._validate_subject(subject_token)
        self._enforcer.enforce(ctx.auth, "identity:token:revoke", _subject_target(claims))
        event = self._revocations.add(TOKEN, claims["jti"])
        event.expires_at = datetime.fromtimestamp(claims["exp"], UTC)
        self._audit.add(
            type="change",
            action="identity:token:revoke",
            outcome="success",
            actor_id=ctx.actor_id,
            target=AuditTarget(
                "token", claims["jti"], project_id=(claims.get("project") or {}).get("id")
            ),
            request_id=ctx.request_id,
            source_ip=ctx.source_ip,
            details={"user_id": claims["sub"]},
        )
        self._revocations.commit()

    def revoke_claims(
        self, ctx: CallContext, claims: dict[str, Any], actor_id: str, **details: Any
    ) -> None:
        """Revoke an already-validated token on behalf of a client that may do so
        (OAuth 2.0 revocation: the client revokes its own tokens)."""
        event = self._revocations.add(TOKEN, claims["jti"])
        event.expires_at = datetime.fromtimestamp(claims["exp"], UTC)
        self._audit.add(
            type="change",
            action="identity:token:revoke",
            outcome="success",
            actor_id=actor_id,
            target=AuditTarget(
                "token", claims["jti"], project_id=(claims.get("project") or {}).get("id")
            ),
            request_id=ctx.request_id,
            source_ip=ctx.source_ip,
            details={"user_id": claims["sub"], **details},
        )
        self._revocations.commit()

    def restore_fence(self, issued_before: datetime) -> RevocationRecord:
        """``latchkey restore-fence``: every token issued at or before ``issued_before``
        is revoked, on every node and in the feed (docs/operations.md)."""
        event = self._revocations.fence(issued_before)
        self._audit.add(
            type="change",
            action="identity:revocation:fence",
            outcome="success",
            actor_id=None,
            target=AuditTarget("revocation", str(event.id)),
            request_id=None,
            source_ip=None,
            details={"issued_before": issued_before.isoformat()},
        )
        self._revocations.commit()
        return RevocationRecord.of(event)

    def revocations_since(
        self, ctx: CallContext, cursor: int, limit: int
    ) -> list[RevocationRecord]:
        self._enforcer.enforce(ctx.auth, "identity:revocation:list", Target())
        return [RevocationRecord.of(event) for event in self._revocations.since(cursor, limit)]

    def _validate_subject(self, subject_token: str) -> dict[str, Any]:
        try:
            return self.validate(subject_token)
        except TokenInvalid as exc:
            raise TokenNotFound() from exc


class TokenNotFound(LatchkeyError):
    status = 404
    code = "token_not_found"
    title = "The token is not valid"


class VerifiedClaims:
    """``token -> (claims, kid)`` for tokens this process verified, keyed by the whole
    token string (only a verified token can be found), the least recently used
    evicted past ``size``. A token enters at its second verification: a token
    seen once costs a string in a bounded set, not a dict of claims (callers reuse
    their tokens; a stream of distinct ones should not churn the cache)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[dict[str, Any], str]] = OrderedDict()
        # OrderedDict, not dict: dropping a dict's oldest key scans past every slot
        # deleted before it (~4 us a token for a stream of distinct tokens).
        self._seen_once: OrderedDict[str, None] = OrderedDict()

    def get(self, token: str) -> tuple[dict[str, Any], str] | None:
        if self._size <= 0:
            return None
        with self._lock:
            entry = self._entries.get(token)
            if entry is not None:
                self._entries.move_to_end(token)
            return entry

    def remember(self, token: str, entry: tuple[dict[str, Any], str]) -> None:
        if self._size <= 0:
            return
        with self._lock:
            if self._seen_once.pop(token, 0) is not None:
                self._seen_once[token] = None
                if len(self._seen_once) > self._size:
                    self._seen_once.popitem(last=False)
                return
            self._entries[token] = entry
            if len(self._entries) > self._size:
                self._entries.popitem(last=False)

    def discard(self, token: str) -> None:
        with self._lock:
            self._entries.pop(token, None)

    @property
    def size(self) -> int:
        return self._size

    def holds(self, token: str, claims: dict[str, Any]) -> bool:
        """Is ``claims`` the very entry kept for ``token``?"""
        entry = self._entries.get(token)
        return entry is not None and entry[0] is claims


def _subject_target(claims: dict[str, Any]) -> Target:
    user_domain = ((claims.get("user") or {}).get("domain") or {}).get("id")
    return Target(domain_id=user_domain, user_id=claims["sub"])
