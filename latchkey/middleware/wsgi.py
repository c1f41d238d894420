"""WSGI middleware for services relying on Latchkey tokens (docs/middleware.md).

Per request, without calling Latchkey: the token's ES256 signature against the
cached JWKS, its claims (issuer, audience, expiry), the revocation events read
from ``/v1/revocations`` and the application credential's access rules for this
service's type. A token seen before skips the first two (a bounded cache of
verified tokens, each used until its ``exp``); the last two run every time.
Latchkey is called only to refresh the JWKS (unknown ``kid``, rate-limited), to
poll the revocation feed (lazily, by the first request after
``revocation_poll_interval``) and for ``authorize`` decisions (cached for
``decision_ttl``). Anything that cannot be checked is refused.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from joserfc.jwk import Key

from latchkey.errors import PROBLEM_BASE
from latchkey.middleware._http import LatchkeyHttp
from latchkey.middleware.caches import KeyCache, RevocationCache, VerifiedToken, VerifiedTokens
from latchkey.middleware.decisions import DecisionCache, DecisionClient
from latchkey.wire.access_rules import allows
from latchkey.wire.claims import Identity
from latchkey.wire.jws import TokenInvalid, verify_jwt

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

log = logging.getLogger("latchkey.middleware")

IDENTITY_KEY = "latchkey.identity"
MIDDLEWARE_KEY = "latchkey.middleware"
DEFAULT_MAX_TOKEN_LIFETIME = 24 * 3600.0


def current_identity(environ: Mapping[str, Any]) -> Identity | None:
    """The caller's identity (None without a token); e.g. ``current_identity(request.environ)``."""
    identity = environ.get(IDENTITY_KEY)
    return identity if isinstance(identity, Identity) else None


def authorize(environ: Mapping[str, Any], action: str, resource: Mapping[str, Any]) -> bool:
    """``LatchkeyMiddleware.authorize`` for the request's caller, from inside the app."""
    middleware = environ.get(MIDDLEWARE_KEY)
    if not isinstance(middleware, LatchkeyMiddleware):
        log.warning("latchkey middleware: authorize() outside the middleware (denied)")
        return False
    return middleware.authorize(environ, action, resource)


class LatchkeyMiddleware:
    def __init__(
        self,
        app: WSGIApplication,
        *,
        latchkey_url: str,
        service_type: str,
        issuer: str | None = None,
        audience: str = "latchkey",
        service_token: str | None = None,
        service_token_provider: Callable[[], str] | None = None,
        require_token: bool = False,
        jwks_refresh_min_interval: float = 5.0,
        jwks_max_age: float = 300.0,
        revocation_poll_interval: float = 5.0,
        revocation_max_staleness: float = 60.0,
        max_token_lifetime: float = DEFAULT_MAX_TOKEN_LIFETIME,
        decision_ttl: float = 5.0,
        decision_cache_size: int = 10_000,
        token_cache_size: int = 10_000,
        timeout: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if (service_token is None) == (service_token_provider is None):
            raise ValueError("give exactly one of service_token and service_token_provider")
        if revocation_max_staleness < revocation_poll_interval:
            raise ValueError("revocation_max_staleness must be >= revocation_poll_interval")
        self.app = app
        self.service_type = service_type
        self.issuer = issuer or latchkey_url.rstrip("/")
        self.audience = audience
        self.require_token = require_token
        self.max_token_lifetime = max_token_lifetime
        self._wall_clock = wall_clock
        provider = service_token_provider or (lambda: str(service_token))
        http = LatchkeyHttp(latchkey_url, timeout)
        self.keys = KeyCache(
            http, min_interval=jwks_refresh_min_interval, max_age=jwks_max_age, clock=clock
        )
        self.verified_tokens = VerifiedTokens(token_cache_size)
        self.decisions = DecisionClient(
            http, provider, DecisionCache(decision_ttl, decision_cache_size, clock)
        )
        self.revocations = RevocationCache(
            http,
            provider,
            poll_interval=revocation_poll_interval,
            max_staleness=revocation_max_staleness,
            max_token_lifetime=max_token_lifetime,
            clock=clock,
            wall_clock=wall_clock,
            # A user's roles or a project may have changed: cached answers may be wrong.
            on_new_events=self.decisions.cache.clear,
        )

    # -- WSGI -------------------------------------------------------------------------

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        environ[MIDDLEWARE_KEY] = self
        environ[IDENTITY_KEY] = None
        token = bearer_token(environ)
        if token is None:
            if self.require_token:
                return _problem(
                    start_response, 401, "token_missing", "This service needs a Latchkey token."
                )
            return self.app(environ, start_response)
        try:
            identity = self.verify(token)
        except TokenInvalid:
            return _problem(start_response, 401, "invalid_token", "The token is not valid.")
        rules = (identity.claims.get("application_credential") or {}).get("access_rules")
        method, path = environ.get("REQUEST_METHOD", "GET"), environ.get("PATH_INFO") or "/"
        if rules and not allows(rules, self.service_type, method, path):
            return _problem(
                start_response,
                403,
                "access_rule_denied",
                f"The credential's access rules do not allow {method} {path} "
                f"on service {self.service_type!r}.",
            )
        environ[IDENTITY_KEY] = identity
        return self.app(environ, start_response)

    # -- checks -----------------------------------------------------------------------

    def verify(self, token: str) -> Identity:
        """Signature, claims, lifetime and revocation; TokenInvalid otherwise."""
        verified = self._verified(token)
        self._check_revocation(verified.identity.claims)  # every call: the feed moves on
        return verified.identity

    def _verified(self, token: str) -> VerifiedToken:
        """The checks that depend on the token alone, done once per token while it
        is unexpired and the key that verified it is still published."""
        cached = self.verified_tokens.get(token)
        if cached is not None:
            if cached.expires > int(self._wall_clock()) and self._still_published(cached):
                return cached
            self.verified_tokens.discard(token)
        verified = self._verify_token(token)
        if self.verified_tokens.admit(token):  # cached from its second use on
            self.verified_tokens.put(token, verified)
        return verified

    def _still_published(self, cached: VerifiedToken) -> bool:
        try:  # a refetched JWKS keeps the same key object for an unchanged key
            return self.keys.key_for_kid(cached.kid) is cached.key
        except TokenInvalid:  # retired, or the JWKS cannot be had
            return False

    def _verify_token(self, token: str) -> VerifiedToken:
        used: list[tuple[str, Key]] = []

        def key_for_kid(kid: str) -> Key:
            key = self.keys.key_for_kid(kid)
            used.append((kid, key))
            return key

        now = self._wall_clock()
        claims = verify_jwt(token, key_for_kid, self.issuer, self.audience, now)
        try:
            lifetime = float(claims["exp"]) - float(claims["iat"])
            identity = Identity.from_claims(claims, token)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise TokenInvalid() from exc
        if lifetime > self.max_token_lifetime:
            # Revocation events are kept for max_token_lifetime only.
            raise TokenInvalid()
        kid, key = used[-1]
        return VerifiedToken(identity, kid, key, claims["exp"])

    def _check_revocation(self, claims: Mapping[str, Any]) -> None:
        if not self.revocations.ensure_fresh():
            log.warning("latchkey middleware: revocation feed too stale, refusing tokens")
            raise TokenInvalid()
        try:
            revoked = self.revocations.is_revoked(claims)
        except (KeyError, TypeError, ValueError) as exc:
            raise TokenInvalid() from exc
        if revoked:
            raise TokenInvalid()

    # -- decisions --------------------------------------------------------------------

    def authorize(
        self,
        subject: Identity | Mapping[str, Any] | None,
        action: str,
        resource: Mapping[str, Any],
    ) -> bool:
        """May the caller do ``action`` on ``resource`` ({type, id?, project_id?,
        attributes})? ``project_id`` defaults to the token's project. False when
        Latchkey cannot be asked."""
        identity = self._identity(subject)
        if identity is None:
            return False
        return self.decisions.decide(
            identity.token, identity.jti, action, _with_project(resource, identity)
        )

    def authorize_many(
        self,
        subject: Identity | Mapping[str, Any] | None,
        checks: Sequence[tuple[str, Mapping[str, Any]]],
    ) -> list[bool]:
        """``authorize`` for many ``(action, resource)`` pairs, in one batch call."""
        identity = self._identity(subject)
        if identity is None:
            return [False] * len(checks)
        resolved = [(action, _with_project(resource, identity)) for action, resource in checks]
        return self.decisions.decide_many(identity.token, identity.jti, resolved)

    def _identity(self, subject: Identity | Mapping[str, Any] | None) -> Identity | None:
        if isinstance(subject, Identity):
            identity: Identity | None = subject
        else:
            identity = current_identity(subject) if subject is not None else None
        if identity is None:
            return None
        try:  # revoked since the request began, or the feed went stale: no
            self._check_revocation(identity.claims)
        except TokenInvalid:
            return None
        return identity


def bearer_token(environ: Mapping[str, Any]) -> str | None:
    header = environ.get("HTTP_AUTHORIZATION") or ""
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return str(value.strip())
    token = environ.get("HTTP_X_AUTH_TOKEN")
    return str(token).strip() or None if token else None


def _with_project(resource: Mapping[str, Any], identity: Identity) -> dict[str, Any]:
    resolved = dict(resource)
    if not resolved.get("project_id") and identity.project_id:
        resolved["project_id"] = identity.project_id
    return resolved


def _problem(start_response: StartResponse, status: int, code: str, detail: str) -> Iterable[bytes]:
    titles = {401: "Unauthorized", 403: "Forbidden"}
    body = json.dumps(
        {
            "type": PROBLEM_BASE + code,
            "title": titles[status],
            "status": status,
            "detail": detail,
            "code": code,
        }
    ).encode()
    headers = [
        ("Content-Type", "application/problem+json"),
        ("Content-Length", str(len(body))),
        ("Cache-Control", "no-store"),
    ]
    if status == 401:
        error = "invalid_token" if code == "invalid_token" else "invalid_request"
        headers.append(("WWW-Authenticate", f'Bearer realm="latchkey", error="{error}"'))
    start_response(f"{status} {titles[status]}", headers)
    return [body]
