"""Tokens end to end: offline verification, expiry, revocation, key rotation, forgeries,
password login (generic failures, lockout, audit) and caching headers.

Most tests run against both backends through the ``app`` fixture. Tokens that
the API would never issue (expired, wrong issuer, ...) are crafted with the
application's real signing key inside ``app.app_context()``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from joserfc import jwt
from joserfc.errors import BadSignatureError, InvalidKeyIdError
from joserfc.jwk import ECKey, KeySet
from joserfc.jwt import JWTClaimsRegistry
from sqlalchemy import select
from werkzeug.test import TestResponse

import latchkey.tokens.revocations as revocations_module
import latchkey.tokens.service as tokens_module
from latchkey.errors import Conflict, NotFound
from latchkey.tokens.models import LoginLockout
from latchkey.tokens.service import TokenInvalid, verify_jwt
from latchkey.wire.jws import canonical_token
from latchkey.wiring import Services
from tests.conftest import ADMIN_PASSWORD, Api, build_app, database_of, make_settings, password_auth

ALICE_PASSWORD = "alice-password-1"


# -- helpers ----------------------------------------------------------------------------


def services(app: Flask) -> Services:
    found: Services = app.extensions["latchkey"]
    return found


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def unb64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def segments(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims of a token, without checking anything."""
    header, payload, _ = token.split(".")
    return json.loads(unb64(header)), json.loads(unb64(payload))


def sign(
    app: Flask,
    claims: dict[str, Any],
    header: dict[str, Any] | None = None,
    key: ECKey | None = None,
) -> str:
    """An ES256 token signed with the app's primary key (or ``key``); None drops a header."""
    with app.app_context():
        signing = key or services(app).keys.signing_key()
        full = {"alg": "ES256", "typ": "at+jwt", "kid": signing.kid}
        full.update(header or {})
        full = {name: value for name, value in full.items() if value is not None}
        return canonical_token(jwt.encode(full, claims, signing, algorithms=["ES256"]))


def hs256(header: dict[str, Any], claims: dict[str, Any], secret: bytes) -> str:
    """Hand-made HS256 token (joserfc refuses to use an EC public key as HMAC secret)."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def fresh_claims(token: str, **changes: Any) -> dict[str, Any]:
    """The claims of a real token, with a new jti and lifetime, plus ``changes``."""
    _, claims = segments(token)
    now = time.time()
    claims.update(
        iat=int(now - 5), iat_ms=int((now - 5) * 1000), exp=int(now) + 600, jti=f"crafted-{now}"
    )
    claims.update(changes)
    return claims


def subject_status(api: Api, caller: str, subject: str) -> TestResponse:
    return api.call("GET", "/v1/auth/tokens", caller, headers={"X-Subject-Token": subject})


def assert_valid(api: Api, caller: str, token: str) -> dict[str, Any]:
    response = subject_status(api, caller, token)
    assert response.status_code == 200, response.get_json()
    bearer = api.call("GET", "/v1/auth/tokens", token, headers={"X-Subject-Token": token})
    assert bearer.status_code == 200, bearer.get_json()
    body: dict[str, Any] = response.get_json()
    return body


def assert_rejected(api: Api, caller: str, token: str) -> None:
    """404 when checked as a subject token, 401 invalid_token when used as Bearer."""
    checked = subject_status(api, caller, token)
    assert checked.status_code == 404, checked.get_json()
    assert checked.get_json()["code"] == "token_not_found"
    for path, headers in (
        ("/v1/domains", {}),
        ("/v1/auth/tokens", {"X-Subject-Token": caller}),
    ):
        response = api.client.get(path, headers={"Authorization": f"Bearer {token}", **headers})
        assert response.status_code == 401, (path, response.get_json())
        assert response.get_json()["code"] == "invalid_token"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    # The Keystone-style header is checked the same way.
    legacy = api.client.get("/v1/domains", headers={"X-Auth-Token": token})
    assert legacy.status_code == 401
    assert legacy.get_json()["code"] == "invalid_token"


def create_user(api: Api, admin_token: str, name: str = "alice") -> dict[str, Any]:
    user: dict[str, Any] = api.ok(
        "POST", "/v1/users", admin_token, {"name": name, "password": ALICE_PASSWORD}
    )
    return user


def create_member(api: Api, admin_token: str, project_name: str = "web") -> tuple[dict, dict]:
    project = api.ok("POST", "/v1/projects", admin_token, {"name": project_name})
    user = create_user(api, admin_token)
    api.ok("PUT", f"/v1/projects/{project['id']}/users/{user['id']}/roles/member", admin_token)
    return project, user


def revocation_feed(api: Api, token: str, since: int) -> dict[str, Any]:
    body: dict[str, Any] = api.ok("GET", f"/v1/revocations?since={since}", token)
    return body


def fetch_key_set(client: FlaskClient) -> tuple[KeySet, dict[str, Any]]:
    response = client.get("/.well-known/jwks.json")
    assert response.status_code == 200
    jwks: dict[str, Any] = response.get_json()
    return KeySet.import_key_set(jwks), jwks  # type: ignore[arg-type]


def login_response(client: FlaskClient, name: str, password: str, **scope: Any) -> TestResponse:
    return client.post("/v1/auth/tokens", json=password_auth(name, password, **scope))


def without_request_id(response: TestResponse) -> dict[str, Any]:
    body = dict(response.get_json())
    assert body.pop("request_id", None)
    return body


# -- 1. offline verification with the published JWKS -----------------------------------


def test_token_verifies_offline_with_published_jwks(app: Flask, client: FlaskClient) -> None:
    response = login_response(client, "admin", ADMIN_PASSWORD, project="admin")
    assert response.status_code == 201
    body = response.get_json()
    token = body["token"]

    key_set, jwks = fetch_key_set(client)
    for published in jwks["keys"]:
        assert published["kty"] == "EC" and published["crv"] == "P-256"
        assert published["alg"] == "ES256" and published["use"] == "sig"
        assert "d" not in published, "the JWKS must never publish a private key"

    decoded = jwt.decode(token, key_set, algorithms=["ES256"])
    settings = services(app).settings
    with app.app_context():
        primary_kid = services(app).keys.signing_key().kid
    assert decoded.header["alg"] == "ES256"
    assert decoded.header["typ"] == "at+jwt"
    assert decoded.header["kid"] == primary_kid
    assert primary_kid in {k["kid"] for k in jwks["keys"]}

    claims = decoded.claims
    JWTClaimsRegistry(  # joserfc's defaults, as any relying service would use them
        iss={"essential": True, "value": settings.effective_issuer},
        aud={"essential": True, "value": settings.token_audience},
        exp={"essential": True},
        iat={"essential": True},
        sub={"essential": True},
        jti={"essential": True},
    ).validate(claims)
    now = time.time()
    assert claims["iss"] == settings.effective_issuer
    assert claims["aud"] == settings.token_audience
    assert now - 60 < claims["iat"] <= now
    assert claims["exp"] - claims["iat"] == pytest.approx(settings.token_ttl_seconds, abs=1.0)
    assert claims["exp"] == datetime.fromisoformat(body["expires_at"]).timestamp()
    assert claims["project"]["name"] == "admin"
    assert claims["user"]["name"] == "admin"
    assert claims["sub"] == claims["user"]["id"] == body["user"]["id"]
    assert "admin" in claims["roles"] and claims["methods"] == ["password"]

    # The verifier shipped for relying services, given nothing but the JWKS.
    assert (
        verify_jwt(token, lambda kid: key_set, settings.effective_issuer, settings.token_audience)
        == claims
    )

    # A relying service verifying offline notices a modified token.
    header_part, _, signature = token.split(".")
    forged = dict(claims, roles=["admin", "service"], sub="someone-else")
    tampered = f"{header_part}.{b64(json.dumps(forged).encode())}.{signature}"
    with pytest.raises(BadSignatureError):
        jwt.decode(tampered, key_set, algorithms=["ES256"])
    with pytest.raises(TokenInvalid):
        verify_jwt(tampered, lambda kid: key_set, settings.effective_issuer, "latchkey")


def test_issue_response_is_not_cacheable(client: FlaskClient) -> None:
    response = login_response(client, "admin", ADMIN_PASSWORD, project="admin")
    assert response.status_code == 201
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers.get("Pragma") == "no-cache"
    jwks = client.get("/.well-known/jwks.json")
    assert "no-store" not in jwks.headers.get("Cache-Control", "")


# -- 2. expiry ----------------------------------------------------------------------------


def test_expired_token_is_rejected(app: Flask, api: Api, admin_token: str) -> None:
    now = time.time()
    alive = sign(app, fresh_claims(admin_token))
    expired = sign(app, fresh_claims(admin_token, iat=int(now - 7200), exp=int(now) - 60))
    just_expired = sign(app, fresh_claims(admin_token, iat=int(now - 60), exp=int(now) - 1))
    # Control: the same crafting with a live exp is accepted, so expiry is what fails.
    assert_valid(api, admin_token, alive)
    assert_rejected(api, admin_token, expired)
    assert_rejected(api, admin_token, just_expired)


def test_token_is_accepted_until_its_exp(app: Flask, api: Api, admin_token: str) -> None:
    fraction = time.time() % 1
    if fraction > 0.5:
        time.sleep(1.0 - fraction + 0.01)
    exp = math.ceil(time.time())  # at least ~0.5 s in the future
    token = sign(app, fresh_claims(admin_token, exp=exp))
    assert time.time() < exp
    assert_valid(api, admin_token, token)


def test_issued_token_expires_with_short_ttl(tmp_path: Path) -> None:
    ttl = 3
    app = build_app(
        make_settings(tmp_path, f"sqlite:///{tmp_path / 'ttl.db'}", token_ttl_seconds=ttl)
    )
    with app.app_context():
        services(app).bootstrap.run(ADMIN_PASSWORD)
        database_of(app).session.remove()
    api = Api(app.test_client())
    token = api.admin_token()
    claims = assert_valid(api, token, token)
    assert claims["exp"] - claims["iat"] == pytest.approx(ttl, abs=1.0)
    time.sleep(max(0.0, claims["exp"] - time.time()) + 0.05)
    later = api.admin_token()
    assert_rejected(api, later, token)
    with app.app_context():
        database_of(app).session.remove()
        database_of(app).engine.dispose()


# -- 3. revocation ------------------------------------------------------------------------


def test_revoke_by_token(app: Flask, api: Api, admin_token: str) -> None:
    cursor = revocation_feed(api, admin_token, 0)["cursor"]
    create_user(api, admin_token)
    first = api.login("alice", ALICE_PASSWORD)
    second = api.login("alice", ALICE_PASSWORD)
    assert_valid(api, admin_token, first)

    response = api.call(
        "DELETE", "/v1/auth/tokens", admin_token, headers={"X-Subject-Token": first}
    )
    assert response.status_code == 204
    assert_rejected(api, admin_token, first)
    # Only that token: the user's other token and the admin's keep working.
    assert_valid(api, admin_token, second)
    assert_valid(api, admin_token, admin_token)
    # Revoking it again: the token no longer exists.
    again = api.call("DELETE", "/v1/auth/tokens", admin_token, headers={"X-Subject-Token": first})
    assert again.status_code == 404

    # A user may revoke their own token (logout).
    own = api.call("DELETE", "/v1/auth/tokens", second, headers={"X-Subject-Token": second})
    assert own.status_code == 204
    assert_rejected(api, admin_token, second)

    feed = revocation_feed(api, admin_token, cursor)
    jtis = [segments(t)[1]["jti"] for t in (first, second)]
    assert [(e["kind"], e["subject"]) for e in feed["revocations"]] == [
        ("token", jtis[0]),
        ("token", jtis[1]),
    ]
    assert feed["cursor"] > cursor
    assert feed["cursor"] == feed["revocations"][-1]["id"]
    # Nothing new since the returned cursor: same cursor, no events.
    assert revocation_feed(api, admin_token, feed["cursor"]) == {
        "revocations": [],
        "cursor": feed["cursor"],
    }
    # The feed is for services and administrators, not for anyone.
    fresh = api.login("alice", ALICE_PASSWORD)
    assert api.call("GET", "/v1/revocations", fresh).status_code == 403
    assert api.call("GET", "/v1/revocations").status_code == 401


def test_revoke_by_disabling_user(app: Flask, api: Api, admin_token: str) -> None:
    cursor = revocation_feed(api, admin_token, 0)["cursor"]
    user = create_user(api, admin_token)
    old = api.login("alice", ALICE_PASSWORD)
    assert_valid(api, admin_token, old)

    api.ok("PATCH", f"/v1/users/{user['id']}", admin_token, {"enabled": False})
    assert_rejected(api, admin_token, old)
    refused = login_response(api.client, "alice", ALICE_PASSWORD)
    assert refused.status_code == 401
    assert refused.get_json()["code"] == "authentication_failed"

    api.ok("PATCH", f"/v1/users/{user['id']}", admin_token, {"enabled": True})
    # Issued right after re-enabling, usually in the same second as the revocation:
    # only millisecond iat precision lets it through.
    new = api.login("alice", ALICE_PASSWORD)
    assert_valid(api, admin_token, new)
    assert_rejected(api, admin_token, old)  # re-enabling does not resurrect old tokens

    feed = revocation_feed(api, admin_token, cursor)
    assert [(e["kind"], e["subject"]) for e in feed["revocations"]] == [("user", user["id"])]
    assert feed["cursor"] > cursor


def test_revoke_by_password_change(app: Flask, api: Api, admin_token: str) -> None:
    user = create_user(api, admin_token)
    old = api.login("alice", ALICE_PASSWORD)
    other = api.login("alice", ALICE_PASSWORD)
    new_password = "alice-new-password-2"
    response = api.call(
        "POST",
        f"/v1/users/{user['id']}/password",
        old,
        {"original_password": ALICE_PASSWORD, "password": new_password},
    )
    assert response.status_code == 204, response.get_json()
    assert_rejected(api, admin_token, old)
    assert_rejected(api, admin_token, other)
    assert login_response(api.client, "alice", ALICE_PASSWORD).status_code == 401
    fresh = api.login("alice", new_password)
    assert_valid(api, admin_token, fresh)

    # An administrator's reset revokes too.
    api.ok("PATCH", f"/v1/users/{user['id']}", admin_token, {"password": "reset-by-admin-3"})
    assert_rejected(api, admin_token, fresh)
    assert_valid(api, admin_token, api.login("alice", "reset-by-admin-3"))

    feed = revocation_feed(api, admin_token, 0)
    user_events = [e for e in feed["revocations"] if e["kind"] == "user"]
    assert [e["subject"] for e in user_events] == [user["id"], user["id"]]


def test_revoke_by_disabling_project(app: Flask, api: Api, admin_token: str) -> None:
    cursor = revocation_feed(api, admin_token, 0)["cursor"]
    project, _ = create_member(api, admin_token)
    scoped = api.login("alice", ALICE_PASSWORD, project="web")
    unscoped = api.login("alice", ALICE_PASSWORD)
    assert_valid(api, admin_token, scoped)

    api.ok("PATCH", f"/v1/projects/{project['id']}", admin_token, {"enabled": False})
    assert_rejected(api, admin_token, scoped)
    assert_valid(api, admin_token, unscoped)  # not scoped to that project
    assert_valid(api, admin_token, admin_token)
    refused = login_response(api.client, "alice", ALICE_PASSWORD, project="web")
    assert refused.status_code == 401
    assert refused.get_json()["code"] == "scope_not_allowed"

    api.ok("PATCH", f"/v1/projects/{project['id']}", admin_token, {"enabled": True})
    new = api.login("alice", ALICE_PASSWORD, project="web")
    assert_valid(api, admin_token, new)
    assert_rejected(api, admin_token, scoped)

    feed = revocation_feed(api, admin_token, cursor)
    assert [(e["kind"], e["subject"]) for e in feed["revocations"]] == [("project", project["id"])]
    event = feed["revocations"][0]
    assert datetime.fromisoformat(event["issued_before"]) <= datetime.now(UTC)
    assert datetime.fromisoformat(event["created_at"]) <= datetime.now(UTC)


def test_revoke_by_deleting_project(app: Flask, api: Api, admin_token: str) -> None:
    cursor = revocation_feed(api, admin_token, 0)["cursor"]
    project, _ = create_member(api, admin_token)
    scoped = api.login("alice", ALICE_PASSWORD, project="web")
    api.ok("DELETE", f"/v1/projects/{project['id']}", admin_token)
    assert_rejected(api, admin_token, scoped)

    # A new project with the same name is a different project: its tokens work.
    again = api.ok("POST", "/v1/projects", admin_token, {"name": "web"})
    alice_id = segments(scoped)[1]["sub"]
    api.ok("PUT", f"/v1/projects/{again['id']}/users/{alice_id}/roles/reader", admin_token)
    assert_valid(api, admin_token, api.login("alice", ALICE_PASSWORD, project="web"))

    feed = revocation_feed(api, admin_token, cursor)
    assert ("project", project["id"]) in [(e["kind"], e["subject"]) for e in feed["revocations"]]
    assert feed["cursor"] > cursor


def test_revocation_boundary_is_millisecond_precise(app: Flask, api: Api, admin_token: str) -> None:
    """A user event revokes tokens issued up to its instant, not the whole second."""
    user = create_user(api, admin_token)
    template = api.login("alice", ALICE_PASSWORD)
    cursor = revocation_feed(api, admin_token, 0)["cursor"]
    api.ok("PATCH", f"/v1/users/{user['id']}", admin_token, {"enabled": False})
    api.ok("PATCH", f"/v1/users/{user['id']}", admin_token, {"enabled": True})
    (event,) = revocation_feed(api, admin_token, cursor)["revocations"]
    instant = datetime.fromisoformat(event["issued_before"]).timestamp()

    before = sign(app, fresh_claims(template, iat_ms=round((instant - 0.002) * 1000)))
    after = sign(app, fresh_claims(template, iat_ms=round((instant + 0.002) * 1000)))
    assert_rejected(api, admin_token, before)
    assert_valid(api, admin_token, after)


def test_token_issued_just_before_revocation_is_revoked(
    app: Flask, api: Api, admin_token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Login at T, user disabled at T + 0.2 ms: the token must not survive.

    Rounding iat_ms to the nearest millisecond would put it 0.4 ms after the revocation.
    """
    user = create_user(api, admin_token)
    login_at = math.floor(time.time()) + 0.1236
    monkeypatch.setattr(tokens_module, "time", SimpleNamespace(time=lambda: login_at))
    monkeypatch.setattr(
        revocations_module,
        "utcnow",
        lambda: datetime.fromtimestamp(login_at + 0.0002, UTC),
    )
    token = api.login("alice", ALICE_PASSWORD)
    assert segments(token)[1]["iat_ms"] <= login_at * 1000
    api.ok("PATCH", f"/v1/users/{user['id']}", admin_token, {"enabled": False})
    assert_rejected(api, admin_token, token)


# -- 4. key rotation ----------------------------------------------------------------------


def test_key_rotation_and_retirement(app: Flask, api: Api, client: FlaskClient) -> None:
    old_token = api.admin_token()
    _, jwks_before = fetch_key_set(client)
    with app.app_context():
        keys = services(app).keys
        old_kid = keys.signing_key().kid
        states_before = {k["kid"]: k["state"] for k in keys.describe()}
        changes = keys.rotate()
        states = {k["kid"]: k["state"] for k in keys.describe()}
    assert states_before[old_kid] == "primary"
    (new_kid,) = changes["promoted"]
    (staged_kid,) = changes["staged"]
    assert changes["demoted"] == [old_kid]
    # The new primary was already published while staged.
    assert states_before[new_kid] == "staged"
    assert new_kid in {k["kid"] for k in jwks_before["keys"]}
    assert states[old_kid] == "secondary" and states[new_kid] == "primary"
    assert states[staged_kid] == "staged"

    new_token = api.admin_token()
    assert segments(new_token)[0]["kid"] == new_kid
    assert segments(old_token)[0]["kid"] == old_kid
    assert_valid(api, new_token, old_token)
    assert_valid(api, old_token, new_token)

    key_set, jwks = fetch_key_set(client)
    assert sorted(k["kid"] for k in jwks["keys"]) == sorted([old_kid, new_kid, staged_kid])
    for token in (old_token, new_token):
        jwt.decode(token, key_set, algorithms=["ES256"])

    with app.app_context():
        services(app).keys.retire(old_kid)
    assert_rejected(api, new_token, old_token)
    assert_valid(api, new_token, new_token)
    key_set, jwks = fetch_key_set(client)
    assert old_kid not in {k["kid"] for k in jwks["keys"]}
    assert sorted(k["kid"] for k in jwks["keys"]) == sorted([new_kid, staged_kid])
    with pytest.raises(InvalidKeyIdError):
        jwt.decode(old_token, key_set, algorithms=["ES256"])

    # The primary cannot be retired; a retired key cannot be retired twice.
    with app.app_context():
        with pytest.raises(Conflict, match="rotate"):
            services(app).keys.retire(new_kid)
        with pytest.raises(NotFound, match="no live signing key"):
            services(app).keys.retire(old_kid)


# -- 5. forged and malformed tokens -------------------------------------------------------


@dataclass
class Forge:
    app: Flask
    token: str  # a genuine admin token
    jwks: dict[str, Any]

    @property
    def parts(self) -> list[str]:
        return self.token.split(".")

    @property
    def header(self) -> dict[str, Any]:
        return segments(self.token)[0]

    @property
    def claims(self) -> dict[str, Any]:
        return fresh_claims(self.token)

    def public_jwk(self) -> dict[str, Any]:
        kid = self.header["kid"]
        found: dict[str, Any] = next(k for k in self.jwks["keys"] if k["kid"] == kid)
        return found


def _tampered_payload(f: Forge) -> str:
    claims = segments(f.token)[1]
    claims.update(roles=["admin", "member", "reader", "service"], exp=int(time.time()) + 10**6)
    return f"{f.parts[0]}.{b64(json.dumps(claims).encode())}.{f.parts[2]}"


def _tampered_signature(f: Forge) -> str:
    signature = bytearray(unb64(f.parts[2]))
    signature[5] ^= 0x01
    return f"{f.parts[0]}.{f.parts[1]}.{b64(bytes(signature))}"


def _alg_none(f: Forge, alg: str = "none") -> str:
    header = dict(f.header, alg=alg)
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(f.claims).encode())}."


def _hs256_with(secret: Callable[[Forge], bytes]) -> Callable[[Forge], str]:
    def build(f: Forge) -> str:
        return hs256(dict(f.header, alg="HS256"), f.claims, secret(f))

    return build


def _public_pem(f: Forge) -> bytes:
    return ECKey.import_key(f.public_jwk()).as_pem(private=False)  # type: ignore[arg-type]


def _foreign_key(kid: str) -> ECKey:
    return ECKey.generate_key("P-256", parameters={"kid": kid}, private=True)


def _resign_header(f: Forge, **header: Any) -> str:
    """Signed with the real key, but with a header the service does not accept."""
    return sign(f.app, f.claims, header=header)


FORGERIES: dict[str, Callable[[Forge], str]] = {
    "tampered-payload": _tampered_payload,
    "tampered-signature": _tampered_signature,
    "signature-removed": lambda f: f"{f.parts[0]}.{f.parts[1]}.",
    "signature-truncated": lambda f: f"{f.parts[0]}.{f.parts[1]}.{f.parts[2][:40]}",
    "signature-of-other-token": lambda f: (
        f"{f.parts[0]}.{f.parts[1]}.{sign(f.app, f.claims).split('.')[2]}"
    ),
    "alg-none": _alg_none,
    "alg-None": lambda f: _alg_none(f, "None"),
    "alg-none-with-signature": lambda f: _alg_none(f) + f.parts[2],
    "hs256-public-key-pem": _hs256_with(_public_pem),
    "hs256-public-jwk-json": _hs256_with(lambda f: json.dumps(f.public_jwk()).encode()),
    "hs256-jwks-document": _hs256_with(lambda f: json.dumps(f.jwks).encode()),
    "wrong-issuer": lambda f: sign(f.app, dict(f.claims, iss="https://evil.example")),
    "issuer-missing": lambda f: sign(f.app, {k: v for k, v in f.claims.items() if k != "iss"}),
    "wrong-audience": lambda f: sign(f.app, dict(f.claims, aud="some-other-service")),
    "audience-list-without-us": lambda f: sign(f.app, dict(f.claims, aud=["a", "b"])),
    "exp-missing": lambda f: sign(f.app, {k: v for k, v in f.claims.items() if k != "exp"}),
    "exp-not-a-number": lambda f: sign(f.app, dict(f.claims, exp="tomorrow")),
    "iat-in-the-future": lambda f: sign(f.app, dict(f.claims, iat=time.time() + 3600)),
    "typ-jwt": lambda f: _resign_header(f, typ="JWT"),
    "typ-missing": lambda f: _resign_header(f, typ=None),
    "kid-missing": lambda f: _resign_header(f, kid=None),
    "unknown-kid": lambda f: sign(f.app, f.claims, key=_foreign_key("unknown-kid")),
    "foreign-key-claiming-real-kid": lambda f: sign(
        f.app, f.claims, header={"kid": f.header["kid"]}, key=_foreign_key(f.header["kid"])
    ),
    "embedded-jwk": lambda f: sign(
        f.app,
        f.claims,
        header={"jwk": _foreign_key("x").as_dict(private=False)},
        key=_foreign_key(f.header["kid"]),
    ),
    "payload-not-an-object": lambda f: f"{f.parts[0]}.{b64(b'[1, 2]')}.{f.parts[2]}",
    "garbage-word": lambda f: "garbage",
    "garbage-dots": lambda f: "a.b.c",
    "only-dots": lambda f: "..",
    "two-segments": lambda f: f"{f.parts[0]}.{f.parts[1]}",
    "five-segments": lambda f: f"{f.token}.x.y",
    "header-not-json": lambda f: f"{b64(b'not json')}.{f.parts[1]}.{f.parts[2]}",
    "header-a-list": lambda f: f"{b64(b'[]')}.{f.parts[1]}.{f.parts[2]}",
    "header-kid-a-number": lambda f: (
        f"{b64(json.dumps(dict(f.header, kid=7)).encode())}.{f.parts[1]}.{f.parts[2]}"
    ),
    "bad-base64": lambda f: f"{f.parts[0]}.%%%.{f.parts[2]}",
    "non-ascii": lambda f: f"{f.parts[0]}.{f.parts[1]}é.{f.parts[2]}",
    "padded-token": lambda f: f"{f.parts[0]}==.{f.parts[1]}.{f.parts[2]}",
    "oversized-junk": lambda f: "A" * 20_000,
    "oversized-but-validly-signed": lambda f: sign(f.app, dict(f.claims, filler="x" * 9000)),
}


FAMILIES: dict[str, list[str]] = {
    "signature": [
        "tampered-payload",
        "tampered-signature",
        "signature-removed",
        "signature-truncated",
        "signature-of-other-token",
        "foreign-key-claiming-real-kid",
        "embedded-jwk",
        "payload-not-an-object",
    ],
    "algorithm": [
        "alg-none",
        "alg-None",
        "alg-none-with-signature",
        "hs256-public-key-pem",
        "hs256-public-jwk-json",
        "hs256-jwks-document",
    ],
    "claims": [
        "wrong-issuer",
        "issuer-missing",
        "wrong-audience",
        "audience-list-without-us",
        "exp-missing",
        "exp-not-a-number",
        "iat-in-the-future",
    ],
    "header": ["typ-jwt", "typ-missing", "kid-missing", "unknown-kid", "header-kid-a-number"],
    "malformed": [
        "garbage-word",
        "garbage-dots",
        "only-dots",
        "two-segments",
        "five-segments",
        "header-not-json",
        "header-a-list",
        "bad-base64",
        "non-ascii",
        "padded-token",
        "oversized-junk",
        "oversized-but-validly-signed",
    ],
}


def test_every_forgery_belongs_to_a_family() -> None:
    listed = [name for names in FAMILIES.values() for name in names]
    assert sorted(listed) == sorted(FORGERIES)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_forged_or_malformed_token_is_rejected(
    app: Flask, api: Api, client: FlaskClient, admin_token: str, family: str
) -> None:
    """One test per family (a fresh database per case would be slow); every case is run
    and every failure is reported by name. A 5xx fails the case too (CheckedClient)."""
    _, jwks = fetch_key_set(client)
    failures: list[str] = []
    for name in FAMILIES[family]:
        try:
            forged = FORGERIES[name](Forge(app, admin_token, jwks))
            assert forged != admin_token
            assert_rejected(api, admin_token, forged)
        except AssertionError as exc:
            failures.append(f"{name}: {exc}")
    assert not failures, "\n".join(failures)
    # The genuine token is unaffected by whatever was tried.
    assert_valid(api, admin_token, admin_token)


def test_crafting_helpers_produce_accepted_tokens(
    app: Flask, api: Api, client: FlaskClient, admin_token: str
) -> None:
    """Control for the forgeries above: without the defect, a crafted token passes."""
    _, jwks = fetch_key_set(client)
    f = Forge(app, admin_token, jwks)
    assert_valid(api, admin_token, sign(app, f.claims))
    assert_valid(api, admin_token, sign(app, dict(f.claims, aud=["other", f.claims["aud"]])))
    # The HS256 forgery is a correct HMAC: the service refuses it for its algorithm.
    forged = _hs256_with(_public_pem)(f)
    signing_input, _, mac = forged.rpartition(".")
    expected = hmac.new(_public_pem(f), signing_input.encode(), hashlib.sha256).digest()
    assert unb64(mac) == expected


# -- 6. password login --------------------------------------------------------------------


def test_failed_logins_are_indistinguishable(app: Flask, api: Api, admin_token: str) -> None:
    create_user(api, admin_token)
    bob = create_user(api, admin_token, "bob")
    api.ok("PATCH", f"/v1/users/{bob['id']}", admin_token, {"enabled": False})

    attempts = {
        "wrong-password": login_response(api.client, "alice", "not-the-password-1"),
        "unknown-user": login_response(api.client, "mallory", "not-the-password-1"),
        "unknown-domain": api.client.post(
            "/v1/auth/tokens",
            json=password_auth("alice", ALICE_PASSWORD, user_domain="no-such-domain"),
        ),
        "disabled-user": login_response(api.client, "bob", ALICE_PASSWORD),
    }
    reference = attempts["wrong-password"]
    assert reference.status_code == 401
    assert reference.get_json()["code"] == "authentication_failed"
    for case, response in attempts.items():
        assert response.status_code == 401, case
        assert without_request_id(response) == without_request_id(reference), case
        assert response.headers["Content-Type"] == reference.headers["Content-Type"], case
        assert response.headers["WWW-Authenticate"] == reference.headers["WWW-Authenticate"]
        assert "token" not in response.get_json()


def test_lockout_after_repeated_failures(app: Flask, api: Api, admin_token: str) -> None:
    attempts = services(app).settings.lockout_failure_attempts
    assert attempts >= 2
    user = create_user(api, admin_token)
    wrong = login_response(api.client, "alice", "wrong-password-0")

    # Fewer failures than the limit, then a success: the counter starts again.
    for i in range(attempts - 2):
        assert login_response(api.client, "alice", f"wrong-password-{i}").status_code == 401
    assert_valid(api, admin_token, api.login("alice", ALICE_PASSWORD))

    for i in range(attempts):
        assert login_response(api.client, "alice", f"wrong-password-{i}").status_code == 401
    locked = login_response(api.client, "alice", ALICE_PASSWORD)
    assert locked.status_code == 401
    assert without_request_id(locked) == without_request_id(wrong)
    # Other users are not affected.
    api.admin_token()

    events = api.ok("GET", "/v1/audit/events?type=authentication&limit=1000", admin_token)
    reasons = [e["details"].get("reason") for e in events["events"] if e["actor_id"] == user["id"]]
    assert reasons.count("wrong_password_locked") == 1
    assert reasons[-1] == "locked"

    # The lock ends after lockout_duration (moved into the past here).
    # (Locks are per (user, source address): tests/attacks/test_throttling.py.)
    with app.app_context():
        record = (
            database_of(app)
            .session.scalars(select(LoginLockout).where(LoginLockout.user_id == user["id"]))
            .one()
        )
        assert record.locked_until is not None
        record.locked_until = datetime.now(UTC) - timedelta(seconds=1)
        database_of(app).session.commit()
        database_of(app).session.remove()
    assert_valid(api, admin_token, api.login("alice", ALICE_PASSWORD))

    # Locked again; an administrator's password reset unlocks at once.
    for i in range(attempts):
        login_response(api.client, "alice", f"wrong-password-{i}")
    assert login_response(api.client, "alice", ALICE_PASSWORD).status_code == 401
    api.ok("PATCH", f"/v1/users/{user['id']}", admin_token, {"password": "reset-by-admin-4"})
    assert_valid(api, admin_token, api.login("alice", "reset-by-admin-4"))


def test_authentication_is_audited_without_secrets(app: Flask, api: Api, admin_token: str) -> None:
    create_user(api, admin_token)
    wrong_password = "Wrong-Secret-Sesame-42"
    unknown_password = "Unknown-User-Secret-43"
    assert login_response(api.client, "alice", wrong_password).status_code == 401
    assert login_response(api.client, "nobody", unknown_password).status_code == 401
    token = api.login("alice", ALICE_PASSWORD)
    api.call("DELETE", "/v1/auth/tokens", admin_token, headers={"X-Subject-Token": token})

    response = api.call("GET", "/v1/audit/events?type=authentication&limit=1000", admin_token)
    assert response.status_code == 200
    events = response.get_json()["events"]
    assert {e["type"] for e in events} == {"authentication"}
    alice_id = segments(token)[1]["sub"]
    by_outcome = [(e["outcome"], e["actor_id"], e["details"].get("reason")) for e in events]
    assert ("failure", alice_id, "wrong_password") in by_outcome
    assert ("failure", None, "unknown_user") in by_outcome
    assert ("success", alice_id, None) in by_outcome
    success = next(e for e in events if e["outcome"] == "success" and e["actor_id"] == alice_id)
    assert success["details"]["jti"] == segments(token)[1]["jti"]
    assert all(e["request_id"] for e in events)

    everything = api.call("GET", "/v1/audit/events?limit=1000", admin_token)
    for text in (response.get_data(as_text=True), everything.get_data(as_text=True)):
        for secret in (
            wrong_password,
            unknown_password,
            ALICE_PASSWORD,
            ADMIN_PASSWORD,
            token,
            admin_token,
            *token.split("."),
            *admin_token.split("."),
        ):
            assert secret not in text

    # Reading the audit trail needs an administrator.
    assert api.call("GET", "/v1/audit/events", token).status_code == 401  # revoked
    assert (
        api.call("GET", "/v1/audit/events", api.login("alice", ALICE_PASSWORD)).status_code == 403
    )
