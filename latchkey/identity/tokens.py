"""Issuing, validating and revoking tokens: ES256 JWS (RFC 9068 profile)."""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeGuard

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, Key, KeySet

from latchkey.audit import AuditLog, AuditTarget
from latchkey.errors import LatchkeyError
from latchkey.identity.keys import ALGORITHM, KeyRing
from latchkey.identity.models import Domain, Project, User
from latchkey.identity.revocations import TOKEN, RevocationEvent, RevocationList
from latchkey.policy.context import AuthContext, CallContext
from latchkey.policy.enforcer import Enforcer, Target

TOKEN_TYPE = "at+jwt"  # RFC 9068 section 2.1
MAX_TOKEN_LENGTH = 8192


class TokenInvalid(LatchkeyError):
    """Bad signature, expired, revoked, malformed: callers never learn which."""

    status = 401
    code = "invalid_token"
    title = "The token is not valid"


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
    """What a token is scoped to: one project, one domain, or nothing."""

    project: Project | None = None
    project_domain: Domain | None = None
    domain: Domain | None = None


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
    ) -> None:
        self._keys = keys
        self._verified = VerifiedClaims(verified_cache_size)
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
            if scope.project.is_admin_project:
                claims["project"]["is_admin_project"] = True
        elif scope.domain is not None:
            claims["domain"] = {"id": scope.domain.id, "name": scope.domain.name}
        claims.update(extra_claims or {})
        key = self._keys.signing_key()
        header = {"alg": ALGORITHM, "typ": TOKEN_TYPE, "kid": key.kid}
        return IssuedToken(jwt.encode(header, claims, key, algorithms=[ALGORITHM]), claims)

    def validate(self, token: str) -> dict[str, Any]:
        """Signature, issuer, audience, expiry and revocation; TokenInvalid otherwise."""
        claims = self.verify_signature_and_claims(token)
        if self._revocations.is_revoked(claims):
            raise TokenInvalid()
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
        return AuthContext.from_claims(self.validate(token))

    def check_subject(self, ctx: CallContext, subject_token: str) -> dict[str, Any]:
        """GET /v1/auth/tokens: validate someone's token on behalf of the caller."""
        claims = self._validate_subject(subject_token)
        self._enforcer.enforce(ctx.auth, "identity:token:validate", _subject_target(claims))
        return claims

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

    def revocations_since(self, ctx: CallContext, cursor: int, limit: int) -> list[RevocationEvent]:
        self._enforcer.enforce(ctx.auth, "identity:revocation:list", Target())
        return self._revocations.since(cursor, limit)

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


def verify_jwt(
    token: str,
    keys_for_kid: Callable[[str], Key | KeySet],
    issuer: str,
    audience: str,
    now: float | None = None,
) -> dict[str, Any]:
    """Offline check of a Latchkey token: ES256 signature by a known key, typ, claims.

    Shared by the service and by anything holding only the JWKS (``latchkey
    token verify --jwks-url``). Revocation is not checked here. ``now`` is the
    wall-clock time (``time.time()`` by default).

    joserfc imports and vets the keys (and signs); the token is taken apart here
    and its signature checked with ``cryptography`` directly (docs/decisions.md):
    joserfc's general JWS path (header registry checks, key guessing, lax-to-strict
    base64 layers) held the middleware's cold verification to ~76 % of a bare
    ES256 check; this path, as strict, reaches ~94 % (bench/offline.py).
    """
    if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH:
        raise TokenInvalid()
    # Three strict base64url segments, the last one exactly 64 bytes (r || s).
    compact = _COMPACT_ES256.fullmatch(token)
    if compact is None:
        raise TokenInvalid()
    header_b64, payload_b64, signature_b64 = compact.groups()
    try:
        kid = _ACCEPTED_HEADERS.get(header_b64) or _header_kid(header_b64)
        public_key = _es256_public_key(keys_for_kid(kid), kid)
        signature = _b64url_decode(signature_b64)
        public_key.verify(
            encode_dss_signature(
                int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
            ),
            token[: compact.end(2)].encode(),
            _ECDSA_SHA256,
        )
        claims = json.loads(_b64url_decode(payload_b64).decode())
    except (InvalidSignature, JoseError, ValueError, TypeError, KeyError) as exc:
        raise TokenInvalid() from exc
    if not isinstance(claims, dict) or not _claims_valid(claims, issuer, audience, now):
        raise TokenInvalid()
    _remember(_ACCEPTED_HEADERS, header_b64, kid)  # signed by a key of ours: one of our headers
    return claims


# header.payload.signature, base64url without padding. The header is at most 512
# characters (joserfc's limit; it is decoded before the signature is checked). A
# signature of 64 bytes is 86 characters, the last one carrying 4 bits of it and 2
# zero bits (A, Q, g or w).
_COMPACT_ES256 = re.compile(r"([A-Za-z0-9_-]{1,512})\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]{85}[AQgw])")
# As joserfc's urlsafe_b64decode: a segment of 4n+3 or 4n+2 characters must leave the
# unused bits of its last character zero (one encoding per byte string, no malleability).
_LAST_CHARACTERS = {1: "AEIMQUYcgkosw048", 2: "AQgw"}  # by the padding it lacks
_URLSAFE_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())
# Header segments that came with a valid signature (``{alg, typ, kid}`` as Latchkey
# writes them, a few kids at a time) -> their kid: not decoded again.
_ACCEPTED_HEADERS: dict[str, str] = {}
# id(key) -> (key, its cryptography public key), for keys vetted by _es256_public_key;
# the key is held so that its id cannot be reused while the entry lives.
_PUBLIC_KEYS: dict[int, tuple[Key, ec.EllipticCurvePublicKey]] = {}
_MEMO_SIZE = 64


def _b64url_decode(segment: str) -> bytes:
    """A segment already matched by _COMPACT_ES256 (URL-safe alphabet, no padding)."""
    pad = -len(segment) % 4
    if pad == 3 or (pad and segment[-1] not in _LAST_CHARACTERS[pad]):
        raise ValueError("not canonical base64url")
    return binascii.a2b_base64(
        segment.encode().translate(_URLSAFE_TO_STANDARD) + b"=" * pad, strict_mode=True
    )


def _header_kid(segment: str) -> str:
    """The kid of a header that is exactly ``{alg: ES256, typ: at+jwt, kid}``: no other
    algorithm (``none``, HS256 keyed with our public key), no other parameter."""
    header = json.loads(_b64url_decode(segment).decode())
    if not isinstance(header, dict) or len(header) != 3:
        raise ValueError("unexpected header")
    kid = header.get("kid")
    if header.get("alg") != ALGORITHM or header.get("typ") != TOKEN_TYPE:
        raise ValueError("unexpected header")
    if not isinstance(kid, str) or not kid:
        raise ValueError("unexpected header")
    return kid


def _es256_public_key(found: Key | KeySet, kid: str) -> ec.EllipticCurvePublicKey:
    """The key joserfc would verify an ES256 token of ``kid`` with, vetted as joserfc
    vets it (an EC P-256 key, ``use``, ``alg`` and ``key_ops`` allowing it), once per
    key object."""
    if isinstance(found, KeySet):
        found = found.get_by_kid(kid, {"alg": ALGORITHM, "use": "sig"})
    held = _PUBLIC_KEYS.get(id(found))
    if held is not None and held[0] is found:
        return held[1]
    if not isinstance(found, ECKey) or found.curve_name != "P-256":
        raise ValueError("not an ES256 key")
    found.check_use("sig")
    found.check_alg(ALGORITHM)
    public_key = found.get_op_key("verify")
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise ValueError("not an ES256 key")
    _remember(_PUBLIC_KEYS, id(found), (found, public_key))
    return public_key


def _remember(memo: dict[Any, Any], name: Any, value: Any) -> None:
    if name not in memo:
        if len(memo) >= _MEMO_SIZE:
            memo.clear()  # a handful of keys in use at a time: nothing worth an LRU
        memo[name] = value


def _claims_valid(claims: dict[str, Any], issuer: str, audience: str, now: float | None) -> bool:
    """What ``JWTClaimsRegistry(iss=issuer, aud=audience, exp, iat, sub, jti all
    essential).validate(claims)`` decides, with its defaults (now = whole seconds,
    no leeway), without building a registry per token (tests/unit/
    test_token_verification.py holds the two side by side)."""
    # A missing or null essential claim fails its own check below.
    seconds = int(time.time() if now is None else now)
    get = claims.get
    iss, aud, sub, jti = get("iss"), get("aud"), get("sub"), get("jti")
    if not (isinstance(iss, str) and iss and iss == issuer):
        return False
    if not (isinstance(sub, str) and sub and isinstance(jti, str) and jti):
        return False
    if isinstance(aud, list):
        if not aud or not all(isinstance(a, str) for a in aud) or audience not in aud:
            return False
    elif not (isinstance(aud, str) and aud and aud == audience):
        return False
    exp, iat = get("exp"), get("iat")
    if not (_numeric_date(exp) and exp > seconds and _numeric_date(iat) and iat <= seconds):
        return False
    nbf = claims.get("nbf")
    return "nbf" not in claims or (_numeric_date(nbf) and nbf <= seconds)


def _numeric_date(value: object) -> TypeGuard[int | float]:
    # As joserfc: a JSON number, not a bool, not NaN or infinite.
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


def _subject_target(claims: dict[str, Any]) -> Target:
    user_domain = ((claims.get("user") or {}).get("domain") or {}).get("id")
    return Target(domain_id=user_domain, user_id=claims["sub"])
