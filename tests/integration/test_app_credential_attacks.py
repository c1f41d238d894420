"""Attacks on application credentials, on SQLite and PostgreSQL.

Every failure to authenticate must be the same generic 401
``authentication_failed`` (only ``request_id`` differs): wrong, altered,
padded, truncated, expired or foreign secrets and unknown credentials look
alike. Keystone's bcrypt accepted a secret with its last 14 of 86 characters
altered (bcrypt reads 72 bytes); here every altered variant is refused.

Then the management attacks: a restricted credential minting credentials,
roles the owner lacks, scoping to another project, and acting on another
human's credentials. And last: no secret or token ever reaches the logs, the
audit trail, an error document or the database.
"""

from __future__ import annotations

import io
import json
import logging
import re
import secrets
import string
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from pythonjsonlogger.json import JsonFormatter
from sqlalchemy import select, update
from werkzeug.test import TestResponse

from latchkey.credentials.models import ApplicationCredential, CredentialSecret
from latchkey.credentials.service import SECRET_PREFIX, ApplicationCredentials
from tests.conftest import Api, database_of

PASSWORD = "attack-password-1234"
URLSAFE = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"  # base64url order
# The one answer to every failed authentication (apart from its request_id).
GENERIC_401 = {
    "type": "https://latchkey.dev/problems/authentication_failed",
    "title": "Authentication failed",
    "status": 401,
    "detail": "The credentials could not be verified.",
    "code": "authentication_failed",
}


# -- the world --------------------------------------------------------------------------


@dataclass
class World:
    app: Flask
    api: Api
    admin: str  # cloud admin token
    p1: str
    p2: str
    alice: str  # member of p1
    alice_token: str  # scoped to p1
    bob: str  # member of p1
    bob_token: str

    def create(self, token: str, owner: str, name: str, **body: Any) -> dict[str, Any]:
        body = {"name": name, "project_id": self.p1, **body}
        found: dict[str, Any] = self.api.ok(
            "POST", f"/v1/users/{owner}/application-credentials", token, body
        )
        return found

    def create_response(self, token: str | None, owner: str, **body: Any) -> TestResponse:
        body.setdefault("project_id", self.p1)
        return self.api.call("POST", f"/v1/users/{owner}/application-credentials", token, body)

    def rotate(self, token: str, owner: str, credential_id: str, **body: Any) -> dict[str, Any]:
        path = f"/v1/users/{owner}/application-credentials/{credential_id}/secrets"
        found: dict[str, Any] = self.api.ok("POST", path, token, body)
        return found


def authenticate(api: Api, secret: Any, scope: Any = None, **ref: Any) -> TestResponse:
    body: dict[str, Any] = {"auth": {"application_credential": {**ref, "secret": secret}}}
    if scope is not None:
        body["scope"] = scope
    return api.client.post("/v1/auth/tokens", json=body)


def assert_generic_401(response: TestResponse, label: str = "") -> None:
    body = response.get_json()
    assert response.status_code == 401, (label, response.status_code, body)
    assert response.mimetype == "application/problem+json", label
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="latchkey"', label
    assert body.pop("request_id", "").startswith("req-"), label
    assert body == GENERIC_401, (label, body)


def assert_token(response: TestResponse, credential_id: str) -> str:
    body = response.get_json()
    assert response.status_code == 201, body
    assert body["application_credential"]["id"] == credential_id
    assert body["methods"] == ["application_credential"]
    return str(body["token"])


def _user(api: Api, admin: str, name: str) -> str:
    body = {"name": name, "password": PASSWORD}
    return str(api.ok("POST", "/v1/users", admin, body)["id"])


def _grant(api: Api, admin: str, scope: str, user: str, role: str) -> None:
    api.ok("PUT", f"{scope}/users/{user}/roles/{role}", admin)


@pytest.fixture
def world(app: Flask, api: Api, admin_token: str) -> World:
    p1 = str(api.ok("POST", "/v1/projects", admin_token, {"name": "p1"})["id"])
    p2 = str(api.ok("POST", "/v1/projects", admin_token, {"name": "p2"})["id"])
    alice = _user(api, admin_token, "alice")
    bob = _user(api, admin_token, "bob")
    for user in (alice, bob):
        _grant(api, admin_token, f"/v1/projects/{p1}", user, "member")
    return World(
        app=app,
        api=api,
        admin=admin_token,
        p1=p1,
        p2=p2,
        alice=alice,
        alice_token=api.login("alice", PASSWORD, project="p1"),
        bob=bob,
        bob_token=api.login("bob", PASSWORD, project="p1"),
    )


@pytest.fixture
def cred(world: World) -> dict[str, Any]:
    """Alice's credential on p1: a working id and secret."""
    created = world.create(world.alice_token, world.alice, "ci")
    assert_token(authenticate(world.api, created["secret"], id=created["id"]), created["id"])
    return created


def _neighbour(char: str, step: int = 1) -> str:
    return URLSAFE[(URLSAFE.index(char) + step) % len(URLSAFE)]


def _set_expiry(app: Flask, model: Any, row_id: str, when: datetime) -> None:
    with app.app_context():
        database_of(app).session.execute(
            update(model).where(model.id == row_id).values(expires_at=when)
        )
        database_of(app).session.commit()
        database_of(app).session.remove()


# -- secrets that are not the secret -----------------------------------------------------


def test_wrong_secret_and_unknown_credential_get_the_same_answer(
    world: World, cred: dict[str, Any]
) -> None:
    wrong = authenticate(world.api, SECRET_PREFIX + secrets.token_urlsafe(32), id=cred["id"])
    unknown = authenticate(world.api, cred["secret"], id="no-such-credential")
    unknown_wellformed = authenticate(world.api, cred["secret"], id=secrets.token_hex(16))
    for label, response in (
        ("wrong", wrong),
        ("unknown", unknown),
        ("unknown-hex", unknown_wellformed),
    ):
        assert_generic_401(response, label)
    bodies = [r.get_json() for r in (wrong, unknown, unknown_wellformed)]
    for body in bodies:
        body.pop("request_id")
    assert bodies[0] == bodies[1] == bodies[2]
    assert {k: v for k, v in wrong.headers.items() if k not in ("X-Request-Id",)} == {
        k: v for k, v in unknown.headers.items() if k not in ("X-Request-Id",)
    }


def test_by_name_failures_are_generic(world: World, cred: dict[str, Any]) -> None:
    good = authenticate(world.api, cred["secret"], name="ci", user={"id": world.alice})
    assert_token(good, cred["id"])
    by_domain = {"name": "alice", "domain": {"id": "default"}}
    assert_token(authenticate(world.api, cred["secret"], name="ci", user=by_domain), cred["id"])
    for label, ref in (
        ("wrong-secret", {"name": "ci", "user": {"id": world.alice}}),
        ("unknown-name", {"name": "nope", "user": {"id": world.alice}}),
        ("other-owner", {"name": "ci", "user": {"id": world.bob}}),
        ("unknown-user", {"name": "ci", "user": {"name": "mallory", "domain": {"id": "default"}}}),
        ("unknown-domain", {"name": "ci", "user": {"name": "alice", "domain": {"id": "nowhere"}}}),
    ):
        secret = cred["secret"] + ("x" if label == "wrong-secret" else "")
        assert_generic_401(authenticate(world.api, secret, **ref), label)


def test_another_credentials_secret(world: World, cred: dict[str, Any]) -> None:
    own_second = world.create(world.alice_token, world.alice, "second")
    bobs = world.create(world.bob_token, world.bob, "ci")
    for label, ref, secret in (
        ("same-owner", {"id": cred["id"]}, own_second["secret"]),
        ("same-owner-reverse", {"id": own_second["id"]}, cred["secret"]),
        ("other-owner", {"id": cred["id"]}, bobs["secret"]),
        ("other-owner-reverse", {"id": bobs["id"]}, cred["secret"]),
        # Both are named "ci": the name finds Bob's, Alice's secret does not open it.
        ("same-name-other-owner", {"name": "ci", "user": {"id": world.bob}}, cred["secret"]),
        ("same-name-reverse", {"name": "ci", "user": {"id": world.alice}}, bobs["secret"]),
    ):
        assert_generic_401(authenticate(world.api, secret, **ref), label)
    # Each still works with its own secret.
    for created in (cred, own_second, bobs):
        assert_token(authenticate(world.api, created["secret"], id=created["id"]), created["id"])


def test_secret_with_its_last_characters_changed(
    world: World, cred: dict[str, Any], subtests: pytest.Subtests
) -> None:
    secret: str = cred["secret"]
    assert len(secret) == len(SECRET_PREFIX) + 43  # 256 bits of base64url
    variants: dict[str, str] = {
        "last-char": secret[:-1] + _neighbour(secret[-1]),
        "last-14-replaced": secret[:-14] + "".join(_neighbour(c, 7) for c in secret[-14:]),
        "last-14-zeroed": secret[:-14] + "A" * 14,
        "last-14-of-another-secret": secret[:-14] + secrets.token_urlsafe(32)[-14:],
    }
    for offset in range(1, 15):  # each of the last 14 characters, one at a time
        position = len(secret) - offset
        for step in (1, 32):
            changed = _neighbour(secret[position], step)
            variants[f"char-{-offset}-step-{step}"] = (
                secret[:position] + changed + secret[position + 1 :]
            )
    # 43 base64url characters carry 258 bits: the last one's two low bits are padding.
    # A check that decoded the secret would accept these other spellings of the same bytes.
    last = URLSAFE.index(secret[-1])
    for low in range(4):
        if (last & ~3) | low != last:
            variants[f"same-bytes-low-bits-{low}"] = secret[:-1] + URLSAFE[(last & ~3) | low]
    variants["swapcase"] = SECRET_PREFIX + secret[len(SECRET_PREFIX) :].swapcase()
    letter = next(i for i, c in enumerate(secret) if i >= len(SECRET_PREFIX) and c.isalpha())
    # NFKC folds the fullwidth letter to the ASCII one: no normalisation may happen.
    fullwidth = chr(ord(secret[letter]) + 0xFEE0)
    variants["fullwidth-letter"] = secret[:letter] + fullwidth + secret[letter + 1 :]
    for label, variant in variants.items():
        assert variant != secret, label
        with subtests.test(msg=label):
            assert_generic_401(authenticate(world.api, variant, id=cred["id"]), label)
    assert_token(authenticate(world.api, secret, id=cred["id"]), cred["id"])


def test_padded_and_truncated_secrets(
    world: World, cred: dict[str, Any], subtests: pytest.Subtests
) -> None:
    secret: str = cred["secret"]
    body = secret[len(SECRET_PREFIX) :]
    variants = {
        "one-char-appended": secret + "A",
        "last-char-doubled": secret + secret[-1],
        "base64-padding": secret + "=",
        "base64-padding-2": secret + "==",
        "many-chars-appended": secret + "x" * 100,  # past bcrypt's 72 bytes
        "appended-secret": secret + secret,
        "trailing-space": secret + " ",
        "leading-space": " " + secret,
        "trailing-newline": secret + "\n",
        "tabs-around": "\t" + secret + "\t",
        "crlf": secret + "\r\n",
        "one-char-short": secret[:-1],
        "half": secret[: len(secret) // 2],
        "first-char-dropped": secret[1:],
        "without-prefix": body,
        "prefix-twice": SECRET_PREFIX + secret,
        "prefix-upper": SECRET_PREFIX.upper() + body,
        "prefix-alone": SECRET_PREFIX,
        "one-char": secret[0],
        "space": " ",
    }
    for label, variant in variants.items():
        with subtests.test(msg=label):
            assert_generic_401(authenticate(world.api, variant, id=cred["id"]), label)
    odd: tuple[tuple[str, Any], ...] = (
        ("empty", ""),
        ("nul-appended", secret + "\x00"),
        ("null", None),
        ("number", 12345),
        ("list", [secret]),
    )
    for label, strange in odd:
        with subtests.test(msg=label):
            response = authenticate(world.api, strange, id=cred["id"])
            assert response.status_code in (401, 422), (label, response.get_json())
            if response.status_code == 401:
                assert_generic_401(response, label)
            assert secret not in response.get_data(as_text=True)
    for label, variant in (("10kB", "A" * 10_240), ("10kB-after-secret", secret + "A" * 10_240)):
        with subtests.test(msg=label):
            response = authenticate(world.api, variant, id=cred["id"])
            assert 400 <= response.status_code < 500, (label, response.status_code)
            assert secret not in response.get_data(as_text=True)
    assert_token(authenticate(world.api, secret, id=cred["id"]), cred["id"])


def test_the_stored_hash_is_not_a_secret(world: World, cred: dict[str, Any]) -> None:
    """Pass-the-hash: what a database copy holds does not authenticate."""
    with world.app.app_context():
        stored = database_of(world.app).session.scalar(
            select(CredentialSecret.secret_hash).where(CredentialSecret.id == cred["secret_id"])
        )
        database_of(world.app).session.remove()
    assert stored
    for label, variant in (
        ("stored", stored),
        ("hex", stored.partition("$")[2]),
        ("prefixed-hex", SECRET_PREFIX + stored.partition("$")[2]),
    ):
        assert_generic_401(authenticate(world.api, variant, id=cred["id"]), label)


def test_expired_credential(world: World) -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    created = world.create(world.alice_token, world.alice, "expiring", expires_at=later.isoformat())
    assert_token(authenticate(world.api, created["secret"], id=created["id"]), created["id"])
    _set_expiry(world.app, ApplicationCredential, created["id"], datetime.now(UTC) - timedelta(1))
    assert_generic_401(authenticate(world.api, created["secret"], id=created["id"]), "expired")
    rotated = world.rotate(world.alice_token, world.alice, created["id"])
    assert_generic_401(authenticate(world.api, rotated["secret"], id=created["id"]), "new secret")


def test_expired_secret(world: World, cred: dict[str, Any]) -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    rotated = world.rotate(world.alice_token, world.alice, cred["id"], expires_at=later.isoformat())
    assert_token(authenticate(world.api, rotated["secret"], id=cred["id"]), cred["id"])
    _set_expiry(world.app, CredentialSecret, rotated["id"], datetime.now(UTC) - timedelta(1))
    assert_generic_401(authenticate(world.api, rotated["secret"], id=cred["id"]), "expired")
    # The credential's other secret is untouched.
    assert_token(authenticate(world.api, cred["secret"], id=cred["id"]), cred["id"])


def test_deleted_secret_and_deleted_credential(world: World, cred: dict[str, Any]) -> None:
    base = f"/v1/users/{world.alice}/application-credentials/{cred['id']}"
    rotated = world.rotate(world.alice_token, world.alice, cred["id"])
    world.api.ok("DELETE", f"{base}/secrets/{cred['secret_id']}", world.alice_token)
    assert_generic_401(authenticate(world.api, cred["secret"], id=cred["id"]), "deleted secret")
    assert_token(authenticate(world.api, rotated["secret"], id=cred["id"]), cred["id"])
    world.api.ok("DELETE", base, world.alice_token)
    assert_generic_401(authenticate(world.api, rotated["secret"], id=cred["id"]), "deleted")


def test_refusals_after_the_secret_was_checked_are_generic_too(world: World) -> None:
    """A right secret with a disabled owner or from outside allowed_cidrs: the same 401."""
    cred = world.create(world.alice_token, world.alice, "ci")
    fenced = world.create(world.alice_token, world.alice, "fenced", allowed_cidrs=["10.0.0.0/8"])
    assert_generic_401(authenticate(world.api, fenced["secret"], id=fenced["id"]), "cidr")
    world.api.ok("PATCH", f"/v1/users/{world.alice}", world.admin, {"enabled": False})
    assert_generic_401(authenticate(world.api, cred["secret"], id=cred["id"]), "disabled")
    world.api.ok("PATCH", f"/v1/users/{world.alice}", world.admin, {"enabled": True})
    assert_token(authenticate(world.api, cred["secret"], id=cred["id"]), cred["id"])
    world.api.ok("DELETE", f"/v1/users/{world.alice}", world.admin)
    assert_generic_401(authenticate(world.api, cred["secret"], id=cred["id"]), "owner deleted")


def test_no_roles_left_or_disabled_project_is_the_generic_401(world: World) -> None:
    cred = world.create(world.alice_token, world.alice, "ci")
    world.api.ok("PATCH", f"/v1/projects/{world.p1}", world.admin, {"enabled": False})
    assert_generic_401(authenticate(world.api, cred["secret"], id=cred["id"]), "project disabled")
    world.api.ok("PATCH", f"/v1/projects/{world.p1}", world.admin, {"enabled": True})
    revoke = f"/v1/projects/{world.p1}/users/{world.alice}/roles/member"
    world.api.ok("DELETE", revoke, world.admin)
    assert_generic_401(authenticate(world.api, cred["secret"], id=cred["id"]), "no roles left")


# -- management attacks -------------------------------------------------------------------


def _problem(response: TestResponse, status: int, code: str) -> None:
    body = response.get_json()
    assert response.status_code == status, (status, code, response.status_code, body)
    assert body["code"] == code, body


def test_restricted_credential_cannot_mint_or_manage(world: World, cred: dict[str, Any]) -> None:
    token = assert_token(authenticate(world.api, cred["secret"], id=cred["id"]), cred["id"])
    base = f"/v1/users/{world.alice}/application-credentials"
    restricted = "application_credential_restricted"
    _problem(world.create_response(token, world.alice, name="minted"), 403, restricted)
    _problem(
        world.create_response(token, world.alice, name="minted", roles=["reader"]), 403, restricted
    )
    _problem(world.api.call("POST", f"{base}/{cred['id']}/secrets", token, {}), 403, restricted)
    _problem(world.api.call("DELETE", f"{base}/{cred['id']}", token), 403, restricted)
    _problem(world.create_response(token, world.bob, name="minted"), 403, restricted)
    _problem(
        world.api.call("GET", f"/v1/users/{world.bob}/application-credentials", token),
        403,
        restricted,
    )
    # Reading its owner's own credentials is allowed; nothing was minted.
    listed = world.api.ok("GET", base, token)["application_credentials"]
    assert [c["name"] for c in listed] == ["ci"]


def test_unrestricted_credential_never_mints_more_than_it_holds(world: World) -> None:
    _grant(world.api, world.admin, f"/v1/projects/{world.p2}", world.alice, "member")
    created = world.create(
        world.alice_token, world.alice, "minter", unrestricted=True, roles=["reader"]
    )
    token = assert_token(
        authenticate(world.api, created["secret"], id=created["id"]), created["id"]
    )
    for label, body in (
        ("all-owner-roles", {}),
        ("member", {"roles": ["member"]}),
        ("other-project", {"project_id": world.p2, "roles": ["reader"]}),
    ):
        response = world.create_response(token, world.alice, name=label, **body)
        _problem(response, 403, "role_not_held")
    minted = world.create_response(token, world.alice, name="ok", roles=["reader"])
    assert minted.status_code == 201, minted.get_json()
    assert minted.get_json()["roles"] == ["reader"]
    # Never for someone else, unrestricted or not.
    _problem(
        world.create_response(token, world.bob, name="x", roles=["reader"]), 403, "action_forbidden"
    )


def test_roles_the_owner_lacks(world: World) -> None:
    for label, body, code in (
        ("admin", {"roles": ["admin"]}, "role_not_held"),
        ("service", {"roles": ["service"]}, "role_not_held"),
        ("member-and-admin", {"roles": ["member", "admin"]}, "role_not_held"),
        ("no-role-on-project", {"project_id": world.p2}, "no_roles_on_project"),
        (
            "no-role-on-project-subset",
            {"project_id": world.p2, "roles": ["reader"]},
            "no_roles_on_project",
        ),
    ):
        response = world.create_response(world.alice_token, world.alice, name=label, **body)
        _problem(response, 403, code)
    listed = world.api.ok(
        "GET", f"/v1/users/{world.alice}/application-credentials", world.alice_token
    )
    assert listed["application_credentials"] == []


def test_scoping_to_another_project(world: World, cred: dict[str, Any]) -> None:
    secret = cred["secret"]
    for label, scope in (
        ("p2-by-id", {"project": {"id": world.p2}}),
        ("p2-by-name", {"project": {"name": "p2", "domain": {"id": "default"}}}),
        ("admin-project", {"project": {"name": "admin", "domain": {"id": "default"}}}),
        ("unknown-project", {"project": {"id": "nope"}}),
        ("domain", {"domain": {"id": "default"}}),
    ):
        _problem(authenticate(world.api, secret, scope, id=cred["id"]), 403, "scope_mismatch")
        # With a wrong secret, the scope is never looked at: the generic 401.
        assert_generic_401(authenticate(world.api, secret + "x", scope, id=cred["id"]), label)
    own = authenticate(world.api, secret, {"project": {"id": world.p1}}, id=cred["id"])
    assert_token(own, cred["id"])
    assert own.get_json()["project"]["id"] == world.p1


def test_no_one_creates_a_credential_for_another_human(world: World) -> None:
    world.api.ok("PUT", f"/v1/domains/default/users/{world.bob}/roles/admin", world.admin)
    domain_admin = world.api.login("bob", PASSWORD, domain_scope="default")
    bobs = world.create(world.bob_token, world.bob, "bobs", unrestricted=True)
    bobs_token = assert_token(authenticate(world.api, bobs["secret"], id=bobs["id"]), bobs["id"])
    for label, token in (
        ("another-human", world.bob_token),
        ("domain-admin", domain_admin),
        ("cloud-admin", world.admin),
        ("unrestricted-credential-of-another-human", bobs_token),
    ):
        response = world.create_response(token, world.alice, name=label)
        _problem(response, 403, "action_forbidden")
    listed = world.api.ok(
        "GET", f"/v1/users/{world.alice}/application-credentials", world.alice_token
    )
    assert listed["application_credentials"] == []


# -- no secret leaks -----------------------------------------------------------------------


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """Every record, formatted by the JSON formatter the service logs with."""
    root = logging.getLogger()
    formatter = next(
        (h.formatter for h in root.handlers if isinstance(h.formatter, JsonFormatter)),
        None,
    ) or JsonFormatter(  # as latchkey.logs.configure_logging builds it
        "%(asctime)s %(levelname)s %(name)s %(message)s",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
    )
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.setLevel(logging.DEBUG)
    root.addHandler(handler)
    try:
        yield stream
    finally:
        root.removeHandler(handler)


def _record_text(record: logging.LogRecord) -> str:
    parts = [record.getMessage(), repr(record.args), repr(vars(record))]
    if record.exc_info:
        parts.append(logging.Formatter().formatException(record.exc_info))
    return "\n".join(parts)


def test_no_secret_in_logs_audit_errors_or_database(
    world: World,
    caplog: pytest.LogCaptureFixture,
    json_log: io.StringIO,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, SQLAlchemy's statements included
    api, alice, token = world.api, world.alice, world.alice_token
    base = f"/v1/users/{alice}/application-credentials"
    errors: list[TestResponse] = []

    def failing(response: TestResponse, status: int) -> None:
        assert response.status_code == status, response.get_json()
        errors.append(response)

    first = world.create(token, alice, "ci", description="deploys")
    rotated = world.rotate(token, alice, first["id"])
    other = world.create(token, alice, "other", unrestricted=True, roles=["reader"])
    created_secrets = [first["secret"], rotated["secret"], other["secret"]]
    tokens = [world.admin, world.alice_token, world.bob_token]
    tokens += [
        assert_token(authenticate(api, first["secret"], id=first["id"]), first["id"]),
        assert_token(authenticate(api, rotated["secret"], id=first["id"]), first["id"]),
        assert_token(authenticate(api, other["secret"], id=other["id"]), other["id"]),
    ]
    secret = first["secret"]
    for bad in (
        {"id": first["id"], "secret": secret + "x"},
        {"id": first["id"], "secret": secret[:-1]},
        {"id": other["id"], "secret": secret},
        {"id": "unknown", "secret": secret},
        {"id": secret, "secret": first["id"]},  # id and secret swapped by mistake
        {"name": "ci", "user": {"id": world.bob}, "secret": secret},
        {"name": "ci", "user": {"name": "alice", "domain": {"id": "nope"}}, "secret": secret},
    ):
        failing(
            api.client.post("/v1/auth/tokens", json={"auth": {"application_credential": bad}}), 401
        )
    failing(authenticate(api, secret, {"project": {"id": world.p2}}, id=first["id"]), 403)
    failing(authenticate(api, secret + "A" * 10_240, id=first["id"]), 422)
    failing(authenticate(api, secret + "\x00", id=first["id"]), 422)
    failing(authenticate(api, secret, id=first["id"], unexpected=secret), 422)
    failing(
        api.client.post(
            "/v1/auth/tokens",
            json={
                "auth": {
                    "application_credential": {"id": first["id"], "secret": secret},
                    "password": {"user": {"id": alice}, "password": secret},
                }
            },
        ),
        422,
    )
    credential_json = json.dumps({"id": first["id"], "secret": secret})
    truncated_json = '{"auth": {"application_credential": ' + credential_json[:-1]
    failing(
        api.client.post("/v1/auth/tokens", data=truncated_json, content_type="application/json"),
        400,
    )
    failing(
        api.client.post("/v1/auth/tokens", data=truncated_json + "}}}", content_type="text/plain"),
        422,
    )
    failing(api.call("POST", base, token, {"name": "ci", "project_id": world.p1}), 409)
    failing(api.call("POST", base, tokens[3], {"name": "minted", "project_id": world.p1}), 403)
    failing(api.call("POST", base, tokens[5], {"name": "more", "project_id": world.p1}), 403)
    failing(api.call("POST", f"{base}/nope/secrets", token, {}), 404)
    failing(api.call("DELETE", f"{base}/{other['id']}/secrets/{other['secret_id']}", token), 409)
    failing(api.call("GET", base, world.bob_token), 403)
    failing(api.call("GET", base, secret), 401)  # a secret sent as a bearer token
    # An unexpected failure after the secret was checked: logged with its traceback.
    monkeypatch.setattr(ApplicationCredentials, "record_use", _broken_record_use)
    api.client.allow_5xx = True  # type: ignore[attr-defined]
    failing(authenticate(api, secret, id=first["id"]), 500)
    api.client.allow_5xx = False  # type: ignore[attr-defined]
    monkeypatch.undo()
    listed = api.ok("GET", base, token)
    shown = api.ok("GET", f"{base}/{first['id']}", token)
    events = api.ok("GET", "/v1/audit/events?limit=1000", world.admin)
    rows = _database_dump(world.app)

    needles = [s[len(SECRET_PREFIX) :] for s in created_secrets]
    needles += tokens + [t.rsplit(".", 1)[1] for t in tokens]

    def leaked(text: str) -> list[str]:
        return [needle[:12] + "..." for needle in needles if needle in text]

    assert any("simulated failure" in r.getMessage() or r.exc_info for r in caplog.records)
    assert any(r.name == "latchkey.access" for r in caplog.records)
    for record in caplog.records:
        assert not leaked(_record_text(record)), (record.name, record.getMessage()[:200])
    assert "simulated failure" in json_log.getvalue()
    assert not leaked(json_log.getvalue())
    assert not leaked(caplog.text)
    for response in errors:
        assert response.mimetype == "application/problem+json"
        assert not leaked(response.get_data(as_text=True)), response.get_json()
        assert not leaked(json.dumps(dict(response.headers)))
    assert not leaked(json.dumps([listed, shown]))
    assert "secret" not in shown and all("secret" not in s for s in shown["secrets"])
    actions = {(e["action"], e["outcome"]) for e in events["events"]}
    assert ("identity:application_credential:add_secret", "success") in actions
    assert ("identity:auth:application_credential", "failure") in actions
    assert ("identity:auth:application_credential", "success") in actions
    assert not leaked(json.dumps(events))
    assert not leaked(rows)
    with world.app.app_context():
        stored = database_of(world.app).session.scalars(select(CredentialSecret.secret_hash)).all()
        database_of(world.app).session.remove()
    assert len(stored) == 3
    for value in stored:
        assert re.fullmatch(r"[A-Za-z0-9_.-]+\$[0-9a-f]{64}", value), value
        assert not any(s in value or s[len(SECRET_PREFIX) :] in value for s in created_secrets)


def _broken_record_use(self: ApplicationCredentials, verified: Any) -> None:
    raise RuntimeError("simulated failure")


def _database_dump(app: Flask) -> str:
    """Every row of every table, as text."""
    with app.app_context():
        with database_of(app).engine.connect() as conn:
            dump = [
                repr(list(conn.execute(table.select()).all()))
                for table in database_of(app).metadata.sorted_tables
            ]
        database_of(app).session.remove()
    return "\n".join(dump)
