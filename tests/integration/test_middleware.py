"""``latchkey.middleware`` in front of a small Flask service, talking HTTP to a real
Latchkey (SQLite) served in a thread: offline verification, key rotation, the
revocation feed, access rules, cached decisions and failing closed.

Intervals run on a fake monotonic clock so "after the next poll" needs no sleeping.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from flask import Flask, jsonify, request
from joserfc import jwt
from joserfc.jwk import ECKey
from werkzeug.serving import make_server
from werkzeug.test import Client, TestResponse

import latchkey.middleware.wsgi
from latchkey.middleware import LatchkeyMiddleware, authorize, current_identity
from latchkey.policy.engine import DEFAULT_BOUNDARY
from latchkey.wire.jws import canonical_token
from tests.conftest import Api, build_app, make_settings, reset_database

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

PASSWORD = "middleware-password-1"
READ = "objects:container:read"
OBJECTS_SERVICE: dict[str, Any] = {
    "type": "objects",
    "name": "Object store",
    "actions": [READ, "objects:container:write"],
    "resource_types": {"objects:container": {"attributes": {"env": "string"}}},
}
POLICY = {
    "rules": [
        {
            "id": "read-staging",
            "effect": "allow",
            "actions": [READ],
            "resource": {
                "type": "objects:container",
                "conditions": [{"attribute": "env", "op": "=", "value": "staging"}],
            },
        }
    ]
}


# -- a real Latchkey over HTTP ----------------------------------------------------------


class Counting:
    """Counts the paths Latchkey is asked for; ``down`` makes it answer 503."""

    def __init__(self) -> None:
        self.inner: WSGIApplication | None = None
        self.calls: Counter[str] = Counter()
        self.down = False

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        self.calls[environ["PATH_INFO"]] += 1
        if self.down or self.inner is None:
            start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
            return [b"down"]
        return self.inner(environ, start_response)


@dataclass
class Served:
    app: Flask
    url: str
    counter: Counting


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    counter = Counting()
    server = make_server("127.0.0.1", 0, counter, threaded=True)
    url = f"http://127.0.0.1:{server.server_port}"
    home: Path = tmp_path_factory.mktemp("middleware-home")
    app = build_app(make_settings(home, f"sqlite:///{home / 'latchkey.db'}", issuer=url))
    counter.inner = app
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Served(app, url, counter)
    server.shutdown()


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Env:
    served: Served
    api: Api
    admin: str
    project_id: str
    service_token: str
    alice_id: str
    alice: str
    clock: FakeClock = field(default_factory=FakeClock)

    @property
    def calls(self) -> Counter[str]:
        return self.served.counter.calls

    def middleware(self, **options: Any) -> LatchkeyMiddleware:
        options.setdefault("latchkey_url", self.served.url)
        options.setdefault("service_type", "objects")
        options.setdefault("service_token", self.service_token)
        options.setdefault("clock", self.clock)
        return LatchkeyMiddleware(sample_service(), **options)

    def user(self, name: str, role: str = "member") -> tuple[str, str]:
        user = self.api.ok("POST", "/v1/users", self.admin, {"name": name, "password": PASSWORD})
        path = f"/v1/projects/{self.project_id}/users/{user['id']}/roles/{role}"
        self.api.ok("PUT", path, self.admin)
        return str(user["id"]), self.api.login(name, PASSWORD, project="web")


@pytest.fixture
def env(served: Served) -> Env:
    reset_database(served.app)
    with served.app.app_context():  # the boundary as shipped, not a cached copy of it
        served.app.extensions["latchkey"].boundaries.load_file(str(DEFAULT_BOUNDARY))
    api = Api(served.app.test_client())
    admin = api.admin_token()
    api.ok("POST", "/v1/services", admin, OBJECTS_SERVICE)
    project_id = api.ok("POST", "/v1/projects", admin, {"name": "web"})["id"]
    e = Env(served, api, admin, project_id, "", "", "")
    _, e.service_token = e.user("objects-svc", role="service")
    e.alice_id, e.alice = e.user("alice")
    served.counter.calls.clear()
    served.counter.down = False
    return e


# -- the relying service ----------------------------------------------------------------


def sample_service() -> Flask:
    app = Flask("objects")

    @app.route("/v1/containers/<name>", methods=["GET", "POST"])
    def container(name: str) -> Any:
        identity = current_identity(request.environ)
        if identity is None:
            return jsonify(anonymous=True)
        resource = {"type": "objects:container", "id": name, "attributes": {"env": name}}
        return jsonify(
            user_id=identity.user_id,
            user_name=identity.user_name,
            project_id=identity.project_id,
            roles=list(identity.roles),
            credential=identity.application_credential_id,
            may_read=authorize(request.environ, READ, resource),
        )

    return app


def call(
    middleware: LatchkeyMiddleware,
    token: str | None,
    path: str = "/v1/containers/staging",
    method: str = "GET",
    header: str = "Authorization",
) -> TestResponse:
    headers = {}
    if token is not None:
        headers[header] = f"Bearer {token}" if header == "Authorization" else token
    return Client(middleware).open(path, method=method, headers=headers)


def status(middleware: LatchkeyMiddleware, token: str, **kwargs: Any) -> int:
    return call(middleware, token, **kwargs).status_code


def refused(response: TestResponse, code: int, problem: str) -> None:
    assert response.status_code == code, response.get_data(as_text=True)
    assert response.headers["Content-Type"] == "application/problem+json"
    assert response.get_json()["code"] == problem


# -- crafting tokens --------------------------------------------------------------------


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * 4))
    return decoded


def sign(env: Env, claims: dict[str, Any], key: ECKey | None = None, kid: str | None = None) -> str:
    with env.served.app.app_context():
        signing = key or env.served.app.extensions["latchkey"].keys.signing_key()
        header = {"alg": "ES256", "typ": "at+jwt", "kid": kid or signing.kid}
        return canonical_token(jwt.encode(header, claims, signing, algorithms=["ES256"]))


def crafted(token: str, **changes: Any) -> dict[str, Any]:
    claims = claims_of(token)
    now = time.time()
    claims.update(iat=int(now - 5), iat_ms=int((now - 5) * 1000), exp=int(now) + 600)
    claims.update({"jti": f"crafted-{now}", **changes})
    return claims


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def alg_none(env: Env, kid: str) -> str:
    header = {"alg": "none", "typ": "at+jwt", "kid": kid}
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(crafted(env.alice)).encode())}."


def hs256_with_public_key(env: Env, kid: str) -> str:
    """The classic confusion: HMAC keyed with the published public key."""
    jwk = next(
        k for k in env.served.app.extensions["latchkey"].keys.jwks()["keys"] if k["kid"] == kid
    )
    secret = ECKey.import_key(jwk).as_pem()
    header = {"alg": "HS256", "typ": "at+jwt", "kid": kid}
    signing_input = (
        f"{b64(json.dumps(header).encode())}.{b64(json.dumps(crafted(env.alice)).encode())}"
    )
    digest = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(digest)}"


@pytest.fixture
def verifications(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Tokens whose signature and claims the middleware checked (not served from its cache)."""
    seen: list[str] = []
    real = latchkey.middleware.wsgi.verify_jwt

    def counting(token: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        seen.append(token)
        return real(token, *args, **kwargs)

    monkeypatch.setattr(latchkey.middleware.wsgi, "verify_jwt", counting)
    return seen


# -- tests ------------------------------------------------------------------------------


def test_valid_token_passes_and_the_app_sees_the_identity(env: Env) -> None:
    middleware = env.middleware()
    for header in ("Authorization", "X-Auth-Token"):
        response = call(middleware, env.alice, header=header)
        assert response.status_code == 200, response.get_data(as_text=True)
        body = response.get_json()
        assert body["user_id"] == env.alice_id and body["user_name"] == "alice"
        assert body["project_id"] == env.project_id
        assert body["roles"] == ["member", "reader"] and body["credential"] is None
    # No token: the app decides; require_token refuses.
    assert call(middleware, None).get_json() == {"anonymous": True}
    refused(call(env.middleware(require_token=True), None), 401, "token_missing")
    # One JWKS fetch and one feed poll served both requests.
    assert env.calls["/.well-known/jwks.json"] == 1
    assert env.calls["/v1/revocations"] == 1


def test_forged_expired_wrong_audience_and_issuer_are_refused(env: Env) -> None:
    with env.served.app.app_context():
        real_kid = env.served.app.extensions["latchkey"].keys.signing_key().kid
    now = int(time.time())
    bad = {
        "forged": sign(env, crafted(env.alice), ECKey.generate_key("P-256"), kid=real_kid),
        "expired": sign(env, crafted(env.alice, iat=now - 7200, exp=now - 60)),
        "wrong audience": sign(env, crafted(env.alice, aud="another-service")),
        "wrong issuer": sign(env, crafted(env.alice, iss="https://evil.example")),
        "too long-lived": sign(env, crafted(env.alice, exp=now + 30 * 24 * 3600)),
        "tampered": env.alice[:-8] + ("A" * 8 if not env.alice.endswith("A" * 8) else "B" * 8),
        "another token's signature": env.alice.rsplit(".", 1)[0]
        + "."
        + sign(env, crafted(env.alice)).rsplit(".", 1)[1],
        "unknown kid": sign(env, crafted(env.alice), kid="made-up"),
        "alg none": alg_none(env, real_kid),
        "HS256 keyed with the public key": hs256_with_public_key(env, real_kid),
        "garbage": "not-a-token",
    }
    cold = env.middleware()  # nothing verified yet
    warm = env.middleware()
    assert status(warm, env.alice) == 200
    assert status(warm, env.alice) == 200  # verified a second time: now in its cache
    for middleware in (cold, warm):
        for name, token in bad.items():
            response = call(middleware, token)
            refused(response, 401, "invalid_token")
            assert "invalid_token" in response.headers["WWW-Authenticate"], name
    assert len(cold.verified_tokens) == 0 and len(warm.verified_tokens) == 1
    assert status(warm, env.alice) == 200  # the cached token still passes
    # A well-formed crafted token signed with the real key passes: the checks above bite.
    assert status(cold, sign(env, crafted(env.alice))) == 200


def test_a_repeated_token_is_verified_twice_then_cached(env: Env, verifications: list[str]) -> None:
    """Admitted at its second verification: a stream of distinct tokens fills no cache."""
    middleware = env.middleware()
    for _ in range(5):
        assert call(middleware, env.alice).get_json()["user_name"] == "alice"
    assert verifications == [env.alice, env.alice]
    assert middleware.verify(env.alice) is middleware.verify(env.alice)  # the same Identity
    other = env.api.login("alice", PASSWORD, project="web")
    assert status(middleware, other) == 200
    assert verifications == [env.alice, env.alice, other]
    assert len(middleware.verified_tokens) == 1  # seen once: not cached yet
    # token_cache_size=0 turns the cache off.
    uncached = env.middleware(token_cache_size=0)
    for _ in range(3):
        assert status(uncached, env.alice) == 200
    assert verifications.count(env.alice) == 5 and len(uncached.verified_tokens) == 0


def test_a_cached_token_is_refused_from_its_exp(env: Env, verifications: list[str]) -> None:
    wall = FakeClock(time.time())
    middleware = env.middleware(wall_clock=wall)
    exp = int(wall.now) + 60
    token = sign(env, crafted(env.alice, exp=exp))
    assert status(middleware, token) == 200
    assert status(middleware, token) == 200  # the second verification caches it
    wall.now = exp - 0.5  # a second short of exp: still served from the cache
    assert status(middleware, token) == 200
    assert verifications == [token, token]
    wall.now = exp  # never past it: exp itself is too late, as for a token not cached
    assert status(middleware, token) == 401
    assert len(middleware.verified_tokens) == 0
    assert verifications == [token, token, token]


def test_the_verified_token_cache_is_bounded(env: Env, verifications: list[str]) -> None:
    middleware = env.middleware(token_cache_size=3)
    tokens = [sign(env, crafted(env.alice, jti=f"bounded-{i}")) for i in range(5)]
    for token in tokens:
        assert status(middleware, token) == 200
        assert status(middleware, token) == 200  # cached at the second verification
    assert len(middleware.verified_tokens) == 3
    assert status(middleware, tokens[-1]) == 200  # still held
    assert status(middleware, tokens[0]) == 200  # evicted, verified again
    assert verifications == [t for token in tokens for t in (token, token)] + [tokens[0]]
    assert len(middleware.verified_tokens) == 3


def test_key_rotation_unknown_kid_refetch_is_rate_limited(
    env: Env, verifications: list[str]
) -> None:
    # The service's own token is signed by the old key too: a provider hands out a fresh one.
    current = {"token": env.service_token}
    middleware = env.middleware(
        jwks_refresh_min_interval=5.0,
        jwks_max_age=300.0,
        service_token=None,
        service_token_provider=lambda: current["token"],
    )
    old_token = env.alice
    assert status(middleware, old_token) == 200
    assert status(middleware, old_token) == 200  # cached at the second verification
    assert env.calls["/.well-known/jwks.json"] == 1
    assert len(middleware.verified_tokens) == 1
    keys = env.served.app.extensions["latchkey"].keys
    with env.served.app.app_context():
        old_kid = keys.signing_key().kid
        keys.rotate()  # the staged key, already in the cached JWKS, signs now
        keys.rotate()  # this one was staged after the middleware fetched: unknown kid
    new_token = env.api.login("alice", PASSWORD, project="web")
    current["token"] = env.api.login("objects-svc", PASSWORD, project="web")
    env.clock.advance(6)
    assert status(middleware, new_token) == 200
    assert env.calls["/.well-known/jwks.json"] == 2
    assert status(middleware, old_token) == 200  # the secondary key still verifies
    assert verifications == [old_token, old_token, new_token]  # cached across the refetch

    # A flood of made-up kids: refused, and no fetch inside the rate limit...
    for i in range(20):
        assert status(middleware, sign(env, crafted(env.alice), kid=f"made-up-{i}")) == 401
    assert env.calls["/.well-known/jwks.json"] == 2
    # ...then one fetch per interval however many arrive.
    env.clock.advance(6)
    for i in range(20):
        assert status(middleware, sign(env, crafted(env.alice), kid=f"again-{i}")) == 401
    assert env.calls["/.well-known/jwks.json"] == 3

    # Retiring the old key: refused once the cached JWKS is older than jwks_max_age.
    with env.served.app.app_context():
        keys.retire(old_kid)
    assert status(middleware, old_token) == 200
    env.clock.advance(301)
    assert status(middleware, old_token) == 401  # cached, but its key is no longer published
    assert status(middleware, new_token) == 200
    assert env.calls["/.well-known/jwks.json"] == 4


def test_revoked_token_is_refused_after_the_next_poll(env: Env, verifications: list[str]) -> None:
    middleware = env.middleware(revocation_poll_interval=5.0)
    other = env.api.login("alice", PASSWORD, project="web")
    assert status(middleware, env.alice) == 200
    assert status(middleware, env.alice) == 200
    assert verifications == [env.alice] * 2  # verified twice: served from the cache from now on
    response = env.api.call(
        "DELETE", "/v1/auth/tokens", env.alice, headers={"X-Subject-Token": env.alice}
    )
    assert response.status_code == 204
    assert status(middleware, env.alice) == 200  # the window: until the next poll
    env.clock.advance(5)
    assert status(middleware, env.alice) == 401
    assert verifications == [env.alice] * 2  # the cache did not help it
    assert status(middleware, other) == 200  # only that token
    assert middleware.revocations.cursor > 0
    polls = env.calls["/v1/revocations"]
    assert status(middleware, other) == 200
    assert env.calls["/v1/revocations"] == polls  # at most one poll per interval


def test_disabled_user_is_refused_after_the_next_poll(env: Env) -> None:
    middleware = env.middleware()
    bob_id, bob = env.user("bob")
    assert status(middleware, bob) == 200
    env.api.ok("PATCH", f"/v1/users/{bob_id}", env.admin, {"enabled": False}, 200)
    env.clock.advance(5)
    assert status(middleware, bob) == 401
    assert status(middleware, env.alice) == 200
    # Re-enabled: tokens issued afterwards pass, the old one stays revoked.
    env.api.ok("PATCH", f"/v1/users/{bob_id}", env.admin, {"enabled": True}, 200)
    time.sleep(0.01)
    fresh = env.api.login("bob", PASSWORD, project="web")
    env.clock.advance(5)
    assert status(middleware, fresh) == 200
    assert status(middleware, bob) == 401


def test_access_rules_are_enforced_for_the_service_type(env: Env) -> None:
    rules = [{"service": "objects", "method": "GET", "path": "/v1/containers/*"}]
    created = env.api.ok(
        "POST",
        f"/v1/users/{env.alice_id}/application-credentials",
        env.alice,
        {"project_id": env.project_id, "name": "ci", "access_rules": rules},
    )
    login = env.api.call(
        "POST",
        "/v1/auth/tokens",
        json={
            "auth": {"application_credential": {"id": created["id"], "secret": created["secret"]}}
        },
    )
    assert login.status_code == 201, login.get_json()
    token = login.get_json()["token"]
    middleware = env.middleware()
    response = call(middleware, token)
    assert response.status_code == 200
    assert response.get_json()["credential"] == created["id"]
    # The token is cached now; its access rules are still matched on every request.
    refused(call(middleware, token, method="POST"), 403, "access_rule_denied")
    refused(call(middleware, token, path="/v1/containers/a/b"), 403, "access_rule_denied")
    refused(call(env.middleware(service_type="compute"), token), 403, "access_rule_denied")
    assert status(middleware, env.alice, method="POST") == 200  # no rules: roles decide
    # Deleting the credential revokes its tokens (feed kind application_credential).
    env.api.ok(
        "DELETE", f"/v1/users/{env.alice_id}/application-credentials/{created['id']}", env.alice
    )
    env.clock.advance(5)
    refused(call(middleware, token), 401, "invalid_token")


def test_authorize_against_a_tenant_policy_cached_and_batched(env: Env) -> None:
    env.api.ok("PUT", f"/v1/projects/{env.project_id}/policy", env.admin, POLICY, 200)
    middleware = env.middleware(decision_ttl=5.0)
    # Through the app (authorize(request.environ, ...)): staging yes, prod no.
    assert call(middleware, env.alice, path="/v1/containers/staging").get_json()["may_read"]
    assert not call(middleware, env.alice, path="/v1/containers/prod").get_json()["may_read"]
    assert env.calls["/v1/authorize"] == 2

    identity = middleware.verify(env.alice)
    staging = {"type": "objects:container", "id": "staging", "attributes": {"env": "staging"}}
    for _ in range(5):
        assert middleware.authorize(identity, READ, staging)
    assert env.calls["/v1/authorize"] == 2  # cached (same jti, action, resource)
    env.clock.advance(5)
    assert middleware.authorize(identity, READ, staging)
    assert env.calls["/v1/authorize"] == 3  # the TTL ran out

    checks = [
        (READ, {"type": "objects:container", "attributes": {"env": env_name}})
        for env_name in ("staging", "prod", "dev")
    ]
    checks.append(("objects:container:write", staging))
    assert middleware.authorize_many(identity, checks) == [True, False, False, False]
    assert env.calls["/v1/authorize/batch"] == 1
    assert middleware.authorize_many(identity, checks) == [True, False, False, False]
    assert env.calls["/v1/authorize/batch"] == 1  # all cached
    assert middleware.authorize(identity, READ, checks[0][1])
    assert env.calls["/v1/authorize"] == 3

    # New revocation events drop cached decisions; a revoked token gets no decision.
    env.api.call("DELETE", "/v1/auth/tokens", env.alice, headers={"X-Subject-Token": env.alice})
    env.clock.advance(5)
    assert not middleware.authorize(identity, READ, staging)
    assert len(middleware.decisions.cache) == 0
    assert not middleware.authorize(None, READ, staging)


def test_latchkey_unreachable_fails_closed(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="latchkey.middleware")
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
    nowhere = env.middleware(latchkey_url=dead, issuer=env.served.url, timeout=0.5)
    refused(call(nowhere, env.alice), 401, "invalid_token")
    assert "cannot fetch the JWKS" in caplog.text

    middleware = env.middleware(revocation_poll_interval=5.0, revocation_max_staleness=20.0)
    assert status(middleware, env.alice) == 200
    identity = middleware.verify(env.alice)
    env.served.counter.down = True
    prod = {"type": "objects:container", "attributes": {"env": "prod"}}
    assert middleware.authorize(identity, READ, prod) is False
    assert middleware.authorize_many(identity, [(READ, prod)]) == [False]
    assert "no decision" in caplog.text and "no batch decision" in caplog.text
    # Within the staleness limit the cached keys and events still serve...
    env.clock.advance(10)
    assert status(middleware, env.alice) == 200
    assert "cannot read the revocation feed" in caplog.text
    # ...beyond it every token is refused until the feed answers again.
    env.clock.advance(15)
    refused(call(middleware, env.alice), 401, "invalid_token")
    env.served.counter.down = False
    env.clock.advance(5)
    assert status(middleware, env.alice) == 200
    # The failure was not cached as an answer: asked again, the boundary allows (no policy).
    asked = env.calls["/v1/authorize"]
    assert middleware.authorize(identity, READ, prod) is True
    assert env.calls["/v1/authorize"] == asked + 1


def test_a_restore_fence_refuses_every_earlier_token(env: Env) -> None:
    """`latchkey restore-fence` (issue 15, point 4) reaches relying services through the
    feed as one event of kind `all`; the service's own token is fenced too, so it logs
    in again through its token provider."""
    service = {"token": env.service_token}
    middleware = env.middleware(service_token=None, service_token_provider=lambda: service["token"])
    assert status(middleware, env.alice) == 200
    app = env.served.app
    with app.app_context():
        app.extensions["latchkey"].tokens.restore_fence(datetime.now(UTC))
    time.sleep(0.01)  # what follows is issued after the fence's millisecond
    service["token"] = env.api.login("objects-svc", PASSWORD, project="web")
    fresh = env.api.login("alice", PASSWORD, project="web")
    # The feed holds the fence back while the ids below it are young (its id jumps).
    deadline = time.monotonic() + 15
    while status(middleware, env.alice) == 200:
        assert time.monotonic() < deadline
        time.sleep(0.5)
        env.clock.advance(5)
    refused(call(middleware, env.alice), 401, "invalid_token")
    assert status(middleware, fresh) == 200
