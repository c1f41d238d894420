"""Application credentials end to end, on SQLite and PostgreSQL: creation, login by id
and by name, rotation without downtime, the decided lifecycle (docs/credentials.md),
application accounts, restricted credentials, access rules, allowed CIDRs,
last_used_at and concurrent rotations and deletes.

States the API would never produce (an expired secret or credential) are crafted by
updating the database inside ``app.app_context()``.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select, update
from werkzeug.test import TestResponse

from latchkey.credentials.models import ApplicationCredential, CredentialSecret
from tests.conftest import Api, database_of

PASSWORD = "person-password-1"


# -- helpers ----------------------------------------------------------------------------


@dataclass
class Person:
    user: dict[str, Any]
    token: str  # password token scoped to the person's first project

    @property
    def id(self) -> str:
        return str(self.user["id"])


def claims_of(token: str) -> dict[str, Any]:
    """The payload of a token, unverified (the API validates it elsewhere)."""
    payload = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return decoded


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def project(api: Api, admin: str, name: str) -> dict[str, Any]:
    created: dict[str, Any] = api.ok("POST", "/v1/projects", admin, {"name": name})
    return created


def grant(api: Api, token: str, project_id: str, user_id: str, role: str) -> None:
    api.ok("PUT", f"/v1/projects/{project_id}/users/{user_id}/roles/{role}", token)


def revoke(api: Api, token: str, project_id: str, user_id: str, role: str) -> None:
    api.ok("DELETE", f"/v1/projects/{project_id}/users/{user_id}/roles/{role}", token)


def person(api: Api, admin: str, name: str, on: dict[str, Any], *roles: str) -> Person:
    """A human with ``roles`` on project ``on`` and a password token scoped to it."""
    user = api.ok("POST", "/v1/users", admin, {"name": name, "password": PASSWORD})
    for role in roles or ("member",):
        grant(api, admin, on["id"], user["id"], role)
    return Person(user, api.login(name, PASSWORD, project=on["name"]))


def creds_path(user_id: str, credential_id: str | None = None) -> str:
    path = f"/v1/users/{user_id}/application-credentials"
    return f"{path}/{credential_id}" if credential_id else path


def create_credential(
    api: Api, token: str, owner_id: str, project_id: str, **fields: Any
) -> dict[str, Any]:
    fields.setdefault("name", "ci")
    response = api.call("POST", creds_path(owner_id), token, {"project_id": project_id, **fields})
    assert response.status_code == 201, response.get_json()
    body: dict[str, Any] = response.get_json()
    return body


def refused(response: TestResponse, status: int, code: str) -> None:
    body = response.get_json()
    assert response.status_code == status, body
    assert body["code"] == code, body
    assert response.headers["Content-Type"].startswith("application/problem+json")


def credential_login(
    api: Api,
    secret: str,
    *,
    credential_id: str | None = None,
    name: str | None = None,
    user: dict[str, Any] | None = None,
    scope: dict[str, Any] | None = None,
    **kwargs: Any,
) -> TestResponse:
    method: dict[str, Any] = {"secret": secret}
    if credential_id:
        method["id"] = credential_id
    else:
        method.update(name=name, user=user)
    body: dict[str, Any] = {"auth": {"application_credential": method}}
    if scope:
        body["scope"] = scope
    return api.call("POST", "/v1/auth/tokens", json=body, **kwargs)


def credential_token(api: Api, credential: dict[str, Any], secret: str | None = None) -> str:
    response = credential_login(api, secret or credential["secret"], credential_id=credential["id"])
    assert response.status_code == 201, response.get_json()
    return str(response.get_json()["token"])


def validity(api: Api, admin: str, token: str) -> int:
    """200 while the token is good, 404 once invalid/expired/revoked."""
    status = api.call("GET", "/v1/auth/tokens", admin, headers={"X-Subject-Token": token})
    return status.status_code


def login_fails(api: Api, credential: dict[str, Any], secret: str | None = None) -> None:
    response = credential_login(api, secret or credential["secret"], credential_id=credential["id"])
    refused(response, 401, "authentication_failed")


def db_rows(app: Flask, model: type[Any], **where: Any) -> list[Any]:
    with app.app_context():
        query = select(model).filter_by(**where)
        rows = list(database_of(app).session.scalars(query))
        database_of(app).session.remove()
        return rows


def db_set(app: Flask, model: type[Any], row_id: str, **values: Any) -> None:
    with app.app_context():
        database_of(app).session.execute(update(model).where(model.id == row_id).values(**values))
        database_of(app).session.commit()
        database_of(app).session.remove()


@pytest.fixture
def web(api: Api, admin_token: str) -> dict[str, Any]:
    return project(api, admin_token, "web")


@pytest.fixture
def alice(api: Api, admin_token: str, web: dict[str, Any]) -> Person:
    return person(api, admin_token, "alice", web, "member")


# -- 1. creation ------------------------------------------------------------------------


def test_create_defaults_to_all_effective_roles_and_shows_secret_once(
    api: Api, alice: Person, web: dict[str, Any]
) -> None:
    response = api.call(
        "POST", creds_path(alice.id), alice.token, {"name": "ci", "project_id": web["id"]}
    )
    assert response.status_code == 201, response.get_json()
    assert response.headers["Cache-Control"] == "no-store"
    created = response.get_json()
    secret = created["secret"]
    assert secret.startswith("lkac_") and len(secret) >= len("lkac_") + 43  # 256 bits
    # member implies reader: the default is everything alice holds there, expanded.
    assert created["roles"] == ["member", "reader"]
    assert created["project_id"] == web["id"] and created["user_id"] == alice.id
    assert created["unrestricted"] is False
    assert [s["id"] for s in created["secrets"]] == [created["secret_id"]]

    subset = create_credential(api, alice.token, alice.id, web["id"], name="ro", roles=["reader"])
    assert subset["roles"] == ["reader"]
    explicit = create_credential(api, alice.token, alice.id, web["id"], name="rw", roles=["member"])
    assert explicit["roles"] == ["member", "reader"]  # implied roles expanded
    no_rules = create_credential(
        api, alice.token, alice.id, web["id"], name="empty-rules", access_rules=[], allowed_cidrs=[]
    )
    assert no_rules["access_rules"] == [] and no_rules["allowed_cidrs"] == []
    # An empty role list would make a credential that can do nothing: refused.
    empty = api.call(
        "POST",
        creds_path(alice.id),
        alice.token,
        {"name": "none", "project_id": web["id"], "roles": []},
    )
    assert empty.status_code == 422 and empty.get_json()["code"] == "no_roles_requested"

    # The secret is never shown again: not by GET, not in the list.
    shown = api.call("GET", creds_path(alice.id, created["id"]), alice.token)
    assert shown.status_code == 200
    assert "secret" not in shown.get_json()
    assert secret not in shown.get_data(as_text=True)
    assert shown.get_json()["secrets"][0]["id"] == created["secret_id"]
    listed = api.call("GET", creds_path(alice.id), alice.token)
    assert listed.status_code == 200
    names = [c["name"] for c in listed.get_json()["application_credentials"]]
    assert names == ["ci", "empty-rules", "ro", "rw"]
    assert all("secret" not in c for c in listed.get_json()["application_credentials"])
    for value in (secret, subset["secret"], explicit["secret"]):
        assert value not in listed.get_data(as_text=True)
    by_name = api.ok("GET", creds_path(alice.id) + "?name=ro", alice.token)
    assert [c["id"] for c in by_name["application_credentials"]] == [subset["id"]]


def test_create_refusals(api: Api, admin_token: str, alice: Person, web: dict[str, Any]) -> None:
    other = project(api, admin_token, "other")
    url = creds_path(alice.id)

    def attempt(**fields: Any) -> TestResponse:
        return api.call("POST", url, alice.token, {"name": "x", "project_id": web["id"], **fields})

    refused(attempt(roles=["admin"]), 403, "role_not_held")
    refused(attempt(roles=["reader", "admin"]), 403, "role_not_held")
    refused(attempt(project_id=other["id"]), 403, "no_roles_on_project")
    past = iso(datetime.now(UTC) - timedelta(minutes=1))
    refused(attempt(expires_at=past), 422, "expires_at_in_past")
    for rule in (
        {"service": "identity", "method": "FETCH", "path": "/v1/users"},
        {"service": "identity", "method": "GET", "path": "no-leading-slash"},
        {"service": "identity", "method": "GET", "path": "/v1/us*rs"},
        {"service": "Not A Type", "method": "GET", "path": "/v1/users"},
    ):
        refused(attempt(access_rules=[rule]), 422, "invalid_access_rule")
    for cidr in ("10.0.0.300/8", "not-a-network", "10.0.0.0/33"):
        refused(attempt(allowed_cidrs=[cidr]), 422, "invalid_cidr")
    assert api.ok("GET", url, alice.token)["application_credentials"] == []

    create_credential(api, alice.token, alice.id, web["id"], name="ci")
    refused(attempt(name="ci"), 409, "application_credential_name_taken")
    # Names are unique per owner: bob may use the same one.
    bob = person(api, admin_token, "bob", web, "member")
    create_credential(api, bob.token, bob.id, web["id"], name="ci")
    assert len(api.ok("GET", url, alice.token)["application_credentials"]) == 1


# -- 2. authentication ------------------------------------------------------------------


def test_authenticate_by_id_and_by_name(
    api: Api, admin_token: str, alice: Person, web: dict[str, Any]
) -> None:
    rules = [{"service": "identity", "method": "GET", "path": "/v1/users/*"}]
    cred = create_credential(api, alice.token, alice.id, web["id"], access_rules=rules)
    secret = cred["secret"]
    ways = [
        credential_login(api, secret, credential_id=cred["id"]),
        credential_login(api, secret, name="ci", user={"id": alice.id}),
        credential_login(
            api, secret, name="ci", user={"name": "alice", "domain": {"id": "default"}}
        ),
        credential_login(
            api, secret, credential_id=cred["id"], scope={"project": {"id": web["id"]}}
        ),
        credential_login(
            api,
            secret,
            credential_id=cred["id"],
            scope={"project": {"name": "web", "domain": {"id": "default"}}},
        ),
    ]
    for response in ways:
        assert response.status_code == 201, response.get_json()
        body = response.get_json()
        assert body["methods"] == ["application_credential"]
        assert body["project"]["id"] == web["id"]
        assert body["user"]["id"] == alice.id
        assert body["roles"] == ["member", "reader"]
        claims = claims_of(body["token"])
        assert claims["client_id"] == cred["id"]
        assert claims["application_credential"] == {
            "id": cred["id"],
            "name": "ci",
            "secret_id": cred["secret_id"],
            "restricted": True,
            "access_rules": rules,
        }
        assert validity(api, admin_token, body["token"]) == 200

    # Wrong name, wrong owner, wrong secret: one generic 401.
    bob = person(api, admin_token, "bob", web, "member")
    for response in (
        credential_login(api, secret, name="nope", user={"id": alice.id}),
        credential_login(api, secret, name="ci", user={"id": bob.id}),
        credential_login(api, secret, name="ci", user={"name": "alice", "domain": {"id": "nope"}}),
        credential_login(
            api, secret[:-1] + ("A" if secret[-1] != "A" else "B"), credential_id=cred["id"]
        ),
        credential_login(api, secret[:-14], credential_id=cred["id"]),
        credential_login(api, secret + "=", credential_id=cred["id"]),
        credential_login(api, "lkac_" + "A" * 43, credential_id="no-such-credential"),
    ):
        refused(response, 401, "authentication_failed")

    # The scope is the credential's own project, whatever alice holds elsewhere.
    other = project(api, admin_token, "other")
    grant(api, admin_token, other["id"], alice.id, "admin")
    for scope in (
        {"project": {"id": other["id"]}},
        {"project": {"name": "other", "domain": {"id": "default"}}},
        {"domain": {"id": "default"}},
    ):
        refused(
            credential_login(api, secret, credential_id=cred["id"], scope=scope),
            403,
            "scope_mismatch",
        )


def test_token_lifetime_never_exceeds_credential_or_secret_expiry(
    api: Api, alice: Person, web: dict[str, Any]
) -> None:
    cred_expiry = datetime.now(UTC) + timedelta(minutes=2)
    cred = create_credential(api, alice.token, alice.id, web["id"], expires_at=iso(cred_expiry))
    response = credential_login(api, cred["secret"], credential_id=cred["id"])
    assert response.status_code == 201
    exp = claims_of(response.get_json()["token"])["exp"]
    assert cred_expiry.timestamp() - 5 < exp <= cred_expiry.timestamp()  # capped, not the TTL
    assert datetime.fromisoformat(response.get_json()["expires_at"]) <= cred_expiry
    # The first secret inherits the credential's expiry.
    assert datetime.fromisoformat(cred["secrets"][0]["expires_at"]) == cred_expiry

    plain = create_credential(api, alice.token, alice.id, web["id"], name="plain")
    secret_expiry = datetime.now(UTC) + timedelta(seconds=90)
    added = api.ok(
        "POST",
        creds_path(alice.id, plain["id"]) + "/secrets",
        alice.token,
        {"expires_at": iso(secret_expiry)},
    )
    capped = claims_of(credential_token(api, plain, added["secret"]))["exp"]
    assert secret_expiry.timestamp() - 5 < capped <= secret_expiry.timestamp()
    uncapped = claims_of(credential_token(api, plain))["exp"]
    assert uncapped > secret_expiry.timestamp()  # the default TTL is longer than 90 s


# -- 3. rotation --------------------------------------------------------------------------


def test_rotation_without_downtime(
    app: Flask, api: Api, admin_token: str, alice: Person, web: dict[str, Any]
) -> None:
    cred = create_credential(api, alice.token, alice.id, web["id"])
    first_secret, first_id = cred["secret"], cred["secret_id"]
    response = api.call("POST", creds_path(alice.id, cred["id"]) + "/secrets", alice.token, {})
    assert response.status_code == 201, response.get_json()
    assert response.headers["Cache-Control"] == "no-store"
    second = response.get_json()
    assert second["secret"].startswith("lkac_") and second["secret"] != first_secret

    token_one = credential_token(api, cred, first_secret)
    token_two = credential_token(api, cred, second["secret"])
    assert claims_of(token_one)["application_credential"]["secret_id"] == first_id
    assert claims_of(token_two)["application_credential"]["secret_id"] == second["id"]
    shown = api.call("GET", creds_path(alice.id, cred["id"]), alice.token)
    assert {s["id"] for s in shown.get_json()["secrets"]} == {first_id, second["id"]}
    assert second["secret"] not in shown.get_data(as_text=True)

    api.ok("DELETE", creds_path(alice.id, cred["id"]) + f"/secrets/{first_id}", alice.token)
    login_fails(api, cred, first_secret)
    assert validity(api, admin_token, token_one) == 404
    assert validity(api, admin_token, token_two) == 200
    assert validity(api, admin_token, credential_token(api, cred, second["secret"])) == 200
    refused(
        api.call("DELETE", creds_path(alice.id, cred["id"]) + f"/secrets/{first_id}", alice.token),
        404,
        "credential_secret_not_found",
    )

    refused(
        api.call(
            "DELETE", creds_path(alice.id, cred["id"]) + f"/secrets/{second['id']}", alice.token
        ),
        409,
        "last_secret",
    )
    assert validity(api, admin_token, credential_token(api, cred, second["secret"])) == 200

    # An expired secret is refused, the other live one still works.
    third = api.ok("POST", creds_path(alice.id, cred["id"]) + "/secrets", alice.token, {})
    credential_token(api, cred, third["secret"])
    db_set(app, CredentialSecret, third["id"], expires_at=datetime.now(UTC) - timedelta(seconds=1))
    login_fails(api, cred, third["secret"])
    credential_token(api, cred, second["secret"])
    # A secret added with an expiry in the past is refused outright.
    refused(
        api.call(
            "POST",
            creds_path(alice.id, cred["id"]) + "/secrets",
            alice.token,
            {"expires_at": iso(datetime.now(UTC) - timedelta(minutes=1))},
        ),
        422,
        "expires_at_in_past",
    )

    # An expired credential is refused whatever the secret.
    db_set(
        app, ApplicationCredential, cred["id"], expires_at=datetime.now(UTC) - timedelta(seconds=1)
    )
    login_fails(api, cred, second["secret"])


def test_another_credentials_secret_is_refused(
    api: Api, admin_token: str, alice: Person, web: dict[str, Any]
) -> None:
    mine = create_credential(api, alice.token, alice.id, web["id"], name="mine")
    bob = person(api, admin_token, "bob", web, "member")
    theirs = create_credential(api, bob.token, bob.id, web["id"], name="mine")
    login_fails(api, mine, theirs["secret"])
    refused(
        credential_login(api, theirs["secret"], name="mine", user={"id": alice.id}),
        401,
        "authentication_failed",
    )


# -- 4. lifecycle -------------------------------------------------------------------------


def test_owner_deleted_deletes_credentials_and_revokes_tokens(
    app: Flask, api: Api, admin_token: str, alice: Person, web: dict[str, Any]
) -> None:
    cred = create_credential(api, alice.token, alice.id, web["id"])
    token = credential_token(api, cred)
    api.ok("DELETE", f"/v1/users/{alice.id}", admin_token)
    assert validity(api, admin_token, token) == 404
    login_fails(api, cred)
    assert db_rows(app, ApplicationCredential, user_id=alice.id) == []
    assert db_rows(app, CredentialSecret, credential_id=cred["id"]) == []
    # A new human with the same name does not inherit anything.
    newcomer = person(api, admin_token, "alice", web, "member")
    assert api.ok("GET", creds_path(newcomer.id), newcomer.token)["application_credentials"] == []
    refused(
        credential_login(
            api, cred["secret"], name="ci", user={"name": "alice", "domain": {"id": "default"}}
        ),
        401,
        "authentication_failed",
    )


def test_owner_disabled_refuses_then_reenabled_works(
    api: Api, admin_token: str, alice: Person, web: dict[str, Any]
) -> None:
    cred = create_credential(api, alice.token, alice.id, web["id"])
    token = credential_token(api, cred)
    api.ok("PATCH", f"/v1/users/{alice.id}", admin_token, {"enabled": False})
    assert validity(api, admin_token, token) == 404
    login_fails(api, cred)
    api.ok("PATCH", f"/v1/users/{alice.id}", admin_token, {"enabled": True})
    fresh = credential_token(api, cred)
    assert validity(api, admin_token, fresh) == 200
    assert validity(api, admin_token, token) == 404  # the old one stays revoked


def test_role_removed_narrows_later_tokens_and_revokes_live_ones(
    api: Api, admin_token: str, web: dict[str, Any]
) -> None:
    alice = person(api, admin_token, "alice", web, "admin", "member")
    cred = create_credential(api, alice.token, alice.id, web["id"])
    assert cred["roles"] == ["admin", "member", "reader"]
    wide = credential_token(api, cred)
    assert claims_of(wide)["roles"] == ["admin", "member", "reader"]

    revoke(api, admin_token, web["id"], alice.id, "admin")
    assert validity(api, admin_token, wide) == 404
    narrow = credential_token(api, cred)
    assert claims_of(narrow)["roles"] == ["member", "reader"]
    assert validity(api, admin_token, narrow) == 200
    # The credential keeps its recorded roles; the intersection is taken at login.
    assert validity(api, admin_token, alice.token) == 404  # her password token too
    fresh = api.login("alice", PASSWORD, project="web")
    assert api.ok("GET", creds_path(alice.id, cred["id"]), fresh)["roles"] == [
        "admin",
        "member",
        "reader",
    ]

    revoke(api, admin_token, web["id"], alice.id, "member")
    assert validity(api, admin_token, narrow) == 404
    refused(
        credential_login(api, cred["secret"], credential_id=cred["id"]),
        401,
        "authentication_failed",
    )
    # Granting the role again makes the credential usable again, with what she holds.
    grant(api, admin_token, web["id"], alice.id, "reader")
    assert claims_of(credential_token(api, cred))["roles"] == ["reader"]


def test_credential_deleted_revokes_its_tokens(
    api: Api, admin_token: str, alice: Person, web: dict[str, Any]
) -> None:
    doomed = create_credential(api, alice.token, alice.id, web["id"], name="doomed")
    kept = create_credential(api, alice.token, alice.id, web["id"], name="kept")
    doomed_token, kept_token = credential_token(api, doomed), credential_token(api, kept)
    api.ok("DELETE", creds_path(alice.id, doomed["id"]), alice.token)
    assert validity(api, admin_token, doomed_token) == 404
    assert validity(api, admin_token, kept_token) == 200
    assert validity(api, admin_token, alice.token) == 200  # her other tokens are untouched
    login_fails(api, doomed)
    refused(
        api.call("GET", creds_path(alice.id, doomed["id"]), alice.token),
        404,
        "application_credential_not_found",
    )
    refused(
        api.call("DELETE", creds_path(alice.id, doomed["id"]), alice.token),
        404,
        "application_credential_not_found",
    )


def test_project_deleted_removes_its_credentials(
    app: Flask, api: Api, admin_token: str, alice: Person, web: dict[str, Any]
) -> None:
    other = project(api, admin_token, "other")
    grant(api, admin_token, other["id"], alice.id, "member")
    gone = create_credential(api, alice.token, alice.id, web["id"], name="gone")
    stays = create_credential(api, alice.token, alice.id, other["id"], name="stays")
    token = credential_token(api, gone)
    api.ok("DELETE", f"/v1/projects/{web['id']}", admin_token)
    assert validity(api, admin_token, token) == 404
    login_fails(api, gone)
    assert db_rows(app, ApplicationCredential, project_id=web["id"]) == []
    alice_other = api.login("alice", PASSWORD, project="other")
    listed = api.ok("GET", creds_path(alice.id), alice_other)["application_credentials"]
    assert [c["id"] for c in listed] == [stays["id"]]
    refused(
        api.call("GET", creds_path(alice.id, gone["id"]), alice_other),
        404,
        "application_credential_not_found",
    )
    credential_token(api, stays)


# -- 5. application accounts and who manages what ---------------------------------------


def test_application_account_survives_its_humans(
    api: Api, admin_token: str, web: dict[str, Any]
) -> None:
    pat = person(api, admin_token, "pat", web, "admin")
    quinn = person(api, admin_token, "quinn", web, "admin")
    bot = api.ok(
        "POST",
        "/v1/users",
        pat.token,
        {"name": "ci-bot", "kind": "application", "owner_project_id": web["id"]},
    )
    assert bot["kind"] == "application" and bot["owner_project_id"] == web["id"]
    grant(api, pat.token, web["id"], bot["id"], "member")
    cred = create_credential(api, pat.token, bot["id"], web["id"], name="deploy")
    assert cred["user_id"] == bot["id"] and cred["roles"] == ["member", "reader"]
    token = credential_token(api, cred)
    claims = claims_of(token)
    assert claims["sub"] == bot["id"] and claims["user"]["kind"] == "application"
    assert claims["roles"] == ["member", "reader"]
    # Another admin of the project manages it too (rotation).
    rotated = api.ok("POST", creds_path(bot["id"], cred["id"]) + "/secrets", quinn.token, {})
    listed = api.ok("GET", creds_path(bot["id"]), quinn.token)["application_credentials"]
    assert [c["id"] for c in listed] == [cred["id"]]

    # The humans who set it up leave: one disabled, one deleted.
    api.ok("PATCH", f"/v1/users/{quinn.id}", admin_token, {"enabled": False})
    api.ok("DELETE", f"/v1/users/{pat.id}", admin_token)
    assert validity(api, admin_token, pat.token) == 404
    assert validity(api, admin_token, token) == 200
    for secret in (cred["secret"], rotated["secret"]):
        assert validity(api, admin_token, credential_token(api, cred, secret)) == 200

    # An admin of another project cannot touch it.
    oscar = person(api, admin_token, "oscar", project(api, admin_token, "other"), "admin")
    refused(api.call("GET", creds_path(bot["id"]), oscar.token), 403, "action_forbidden")
    refused(
        api.call("GET", creds_path(bot["id"], cred["id"]), oscar.token), 403, "action_forbidden"
    )
    refused(
        api.call(
            "POST", creds_path(bot["id"]), oscar.token, {"name": "x", "project_id": web["id"]}
        ),
        403,
        "action_forbidden",
    )
    refused(
        api.call("DELETE", creds_path(bot["id"], cred["id"]), oscar.token), 403, "action_forbidden"
    )
    refused(
        api.call("POST", creds_path(bot["id"], cred["id"]) + "/secrets", oscar.token, {}),
        403,
        "action_forbidden",
    )
    # A mere member of the owning project cannot either.
    mia = person(api, admin_token, "mia", web, "member")
    refused(
        api.call("DELETE", creds_path(bot["id"], cred["id"]), mia.token), 403, "action_forbidden"
    )
    assert validity(api, admin_token, credential_token(api, cred)) == 200

    # The remaining project admin retires it.
    rita = person(api, admin_token, "rita", web, "admin")
    api.ok("DELETE", creds_path(bot["id"], cred["id"]), rita.token)
    assert validity(api, admin_token, token) == 404
    login_fails(api, cred)


def test_application_account_deleted_with_its_credentials(
    app: Flask, api: Api, admin_token: str, web: dict[str, Any]
) -> None:
    pat = person(api, admin_token, "pat", web, "admin")
    bot = api.ok(
        "POST",
        "/v1/users",
        pat.token,
        {"name": "ci-bot", "kind": "application", "owner_project_id": web["id"]},
    )
    grant(api, pat.token, web["id"], bot["id"], "reader")
    cred = create_credential(api, pat.token, bot["id"], web["id"])
    token = credential_token(api, cred)
    api.ok("DELETE", f"/v1/users/{bot['id']}", pat.token)
    assert validity(api, admin_token, token) == 404
    login_fails(api, cred)
    assert db_rows(app, ApplicationCredential, user_id=bot["id"]) == []


def test_nobody_else_manages_a_humans_credentials(
    api: Api, admin_token: str, web: dict[str, Any]
) -> None:
    alice = person(api, admin_token, "alice", web, "member")
    web_admin = person(api, admin_token, "pat", web, "admin")
    cred = create_credential(api, alice.token, alice.id, web["id"])
    domain_admin = api.login("admin", "admin-password-for-tests", domain_scope="default")
    for caller in (admin_token, domain_admin, web_admin.token):
        refused(
            api.call("POST", creds_path(alice.id), caller, {"name": "x", "project_id": web["id"]}),
            403,
            "action_forbidden",
        )
        refused(api.call("GET", creds_path(alice.id), caller), 403, "action_forbidden")
        refused(api.call("GET", creds_path(alice.id, cred["id"]), caller), 403, "action_forbidden")
        refused(
            api.call("DELETE", creds_path(alice.id, cred["id"]), caller), 403, "action_forbidden"
        )
        refused(
            api.call("POST", creds_path(alice.id, cred["id"]) + "/secrets", caller, {}),
            403,
            "action_forbidden",
        )
        refused(
            api.call(
                "DELETE", creds_path(alice.id, cred["id"]) + f"/secrets/{cred['secret_id']}", caller
            ),
            403,
            "action_forbidden",
        )
    # Unknown users look the same as others' (no probing for ids).
    refused(api.call("GET", creds_path("no-such-user"), admin_token), 403, "action_forbidden")
    # Nor can alice manage the admin's, and her credential still works.
    admin_id = claims_of(admin_token)["sub"]
    refused(api.call("GET", creds_path(admin_id), alice.token), 403, "action_forbidden")
    credential_token(api, cred)
    assert len(api.ok("GET", creds_path(alice.id), alice.token)["application_credentials"]) == 1


# -- 6. restricted and unrestricted -----------------------------------------------------


def test_restricted_credential_cannot_manage_identity(
    api: Api, admin_token: str, web: dict[str, Any]
) -> None:
    # alice is admin of web: her roles alone would allow every call below.
    alice = person(api, admin_token, "alice", web, "admin")
    bob = api.ok("POST", "/v1/users", admin_token, {"name": "bob", "password": PASSWORD})
    other_cred = create_credential(api, alice.token, alice.id, web["id"], name="other")
    cred = create_credential(api, alice.token, alice.id, web["id"])
    token = credential_token(api, cred)
    assert claims_of(token)["application_credential"]["restricted"] is True

    attempts = [
        (
            "POST",
            creds_path(alice.id),
            {"name": "more", "project_id": web["id"], "roles": ["reader"]},
        ),
        ("DELETE", creds_path(alice.id, other_cred["id"]), None),
        ("POST", creds_path(alice.id, other_cred["id"]) + "/secrets", {}),
        (
            "DELETE",
            creds_path(alice.id, other_cred["id"]) + f"/secrets/{other_cred['secret_id']}",
            None,
        ),
        (
            "POST",
            f"/v1/users/{alice.id}/password",
            {"original_password": PASSWORD, "password": "new-password-2"},
        ),
        (
            "POST",
            "/v1/users",
            {"name": "bot", "kind": "application", "owner_project_id": web["id"]},
        ),
        ("PUT", f"/v1/projects/{web['id']}/users/{bob['id']}/roles/member", None),
        ("PATCH", f"/v1/users/{bob['id']}", {"enabled": False}),
    ]
    for method, path, body in attempts:
        refused(api.call(method, path, token, body), 403, "application_credential_restricted")
    # It may read its owner's own credentials, never anyone else's.
    assert len(api.ok("GET", creds_path(alice.id), token)["application_credentials"]) == 2
    refused(api.call("GET", creds_path(bob["id"]), token), 403, "application_credential_restricted")
    # Nothing happened: the other credential and alice's password still work.
    credential_token(api, other_cred)
    api.login("alice", PASSWORD, project="web")
    # Control: her password token does what the credential could not.
    grant(api, alice.token, web["id"], bob["id"], "member")


def test_unrestricted_credential_mints_only_within_what_it_holds(
    api: Api, admin_token: str, web: dict[str, Any]
) -> None:
    alice = person(api, admin_token, "alice", web, "admin")
    other = project(api, admin_token, "other")
    grant(api, admin_token, other["id"], alice.id, "member")
    cred = create_credential(
        api, alice.token, alice.id, web["id"], unrestricted=True, roles=["member"]
    )
    token = credential_token(api, cred)
    assert claims_of(token)["application_credential"]["restricted"] is False
    assert claims_of(token)["roles"] == ["member", "reader"]

    minted = create_credential(api, token, alice.id, web["id"], name="minted", roles=["reader"])
    assert minted["roles"] == ["reader"] and minted["unrestricted"] is False
    assert claims_of(credential_token(api, minted))["roles"] == ["reader"]
    same = create_credential(api, token, alice.id, web["id"], name="same", roles=["member"])
    assert same["roles"] == ["member", "reader"]

    url = creds_path(alice.id)
    # alice holds admin on web, the credential does not: neither explicitly nor by default.
    refused(
        api.call("POST", url, token, {"name": "x", "project_id": web["id"], "roles": ["admin"]}),
        403,
        "role_not_held",
    )
    refused(
        api.call("POST", url, token, {"name": "y", "project_id": web["id"]}), 403, "role_not_held"
    )
    refused(
        api.call("POST", url, token, {"name": "z", "project_id": other["id"], "roles": ["reader"]}),
        403,
        "role_not_held",
    )
    # Nor for anyone else.
    bob = person(api, admin_token, "bob", web, "member")
    refused(
        api.call("POST", creds_path(bob.id), token, {"name": "b", "project_id": web["id"]}),
        403,
        "action_forbidden",
    )
    names = [c["name"] for c in api.ok("GET", url, token)["application_credentials"]]
    assert names == ["ci", "minted", "same"]
    # It may delete the ones it minted.
    api.ok("DELETE", creds_path(alice.id, minted["id"]), token)


# -- 7. access rules on Latchkey's own API ----------------------------------------------


def test_access_rules_apply_to_latchkeys_own_api(
    api: Api, alice: Person, web: dict[str, Any]
) -> None:
    users_only = create_credential(
        api,
        alice.token,
        alice.id,
        web["id"],
        name="users-only",
        access_rules=[{"service": "identity", "method": "GET", "path": "/v1/users/*"}],
    )
    token = credential_token(api, users_only)
    assert api.ok("GET", f"/v1/users/{alice.id}", token)["id"] == alice.id
    refused(api.call("GET", f"/v1/projects/{web['id']}", token), 403, "access_rule_denied")
    refused(
        api.call("GET", creds_path(alice.id), token), 403, "access_rule_denied"
    )  # two segments more
    refused(
        api.call("PATCH", f"/v1/users/{alice.id}", token, {"description": "x"}),
        403,
        "access_rule_denied",
    )
    # Control: without rules the same roles may read the project.
    assert api.ok("GET", f"/v1/projects/{web['id']}", alice.token)["id"] == web["id"]

    elsewhere = create_credential(
        api,
        alice.token,
        alice.id,
        web["id"],
        name="objects-only",
        access_rules=[{"service": "objects", "method": "GET", "path": "/**"}],
    )
    token = credential_token(api, elsewhere)
    for path in (
        f"/v1/users/{alice.id}",
        f"/v1/projects/{web['id']}",
        creds_path(alice.id),
        "/v1/roles",
    ):
        refused(api.call("GET", path, token), 403, "access_rule_denied")


# -- 8. allowed_cidrs ---------------------------------------------------------------------


def test_allowed_cidrs(api: Api, alice: Person, web: dict[str, Any]) -> None:
    cred = create_credential(api, alice.token, alice.id, web["id"], allowed_cidrs=["10.0.0.0/8"])
    assert cred["allowed_cidrs"] == ["10.0.0.0/8"]
    login_fails(api, cred)  # from 127.0.0.1
    outside = credential_login(
        api, cred["secret"], credential_id=cred["id"], environ_base={"REMOTE_ADDR": "192.168.1.1"}
    )
    refused(outside, 401, "authentication_failed")
    inside = credential_login(
        api, cred["secret"], credential_id=cred["id"], environ_base={"REMOTE_ADDR": "10.1.2.3"}
    )
    assert inside.status_code == 201, inside.get_json()
    # A host address is normalised to a network.
    host = create_credential(
        api, alice.token, alice.id, web["id"], name="host", allowed_cidrs=["10.9.8.7"]
    )
    assert host["allowed_cidrs"] == ["10.9.8.7/32"]
    ok = credential_login(
        api, host["secret"], credential_id=host["id"], environ_base={"REMOTE_ADDR": "10.9.8.7"}
    )
    assert ok.status_code == 201


# -- 9. last_used_at ------------------------------------------------------------------------


def test_last_used_at_is_recorded_at_most_once_a_minute(
    app: Flask, api: Api, alice: Person, web: dict[str, Any]
) -> None:
    cred = create_credential(api, alice.token, alice.id, web["id"])
    url = creds_path(alice.id, cred["id"])
    before = api.ok("GET", url, alice.token)
    assert before["last_used_at"] is None and before["secrets"][0]["last_used_at"] is None
    credential_token(api, cred)
    after = api.ok("GET", url, alice.token)
    assert after["last_used_at"] is not None and after["secrets"][0]["last_used_at"] is not None
    used = datetime.fromisoformat(after["last_used_at"])
    assert abs((datetime.now(UTC) - used).total_seconds()) < 60

    (row,) = db_rows(app, ApplicationCredential, id=cred["id"])
    (secret_row,) = db_rows(app, CredentialSecret, id=cred["secret_id"])
    credential_token(api, cred)
    credential_token(api, cred)
    (again,) = db_rows(app, ApplicationCredential, id=cred["id"])
    (secret_again,) = db_rows(app, CredentialSecret, id=cred["secret_id"])
    assert again.last_used_at == row.last_used_at
    assert secret_again.last_used_at == secret_row.last_used_at


# -- 10. concurrency ------------------------------------------------------------------------


Call = Callable[[FlaskClient], TestResponse]


def concurrently(app: Flask, *calls: Call) -> list[tuple[int, str | None]]:
    """Run each call in its own thread with its own client, all released at once;
    the (status, problem code) of each, in order."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(index: int, call: Call) -> None:
        client = app.test_client()
        barrier.wait()
        try:
            response = call(client)
            results[index] = (response.status_code, response.get_json(silent=True))
        except BaseException as exc:  # ServerErrorSeen from the checked client included
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors
    outcomes = []
    for status, body in results:
        assert status < 500, body
        outcomes.append((status, body["code"] if status >= 400 else None))
    return outcomes


def calling(method: str, url: str, token: str, body: Any = None) -> Call:
    def call(client: FlaskClient) -> TestResponse:
        headers = {"Authorization": f"Bearer {token}"}
        return client.open(url, method=method, json=body, headers=headers)

    return call


def test_concurrent_deletes_of_one_credential(
    app: Flask, api: Api, admin_token: str, alice: Person, web: dict[str, Any]
) -> None:
    for round_ in range(3):
        cred = create_credential(api, alice.token, alice.id, web["id"], name=f"ci-{round_}")
        token = credential_token(api, cred)
        url = creds_path(alice.id, cred["id"])
        outcomes = concurrently(
            app, calling("DELETE", url, alice.token), calling("DELETE", url, alice.token)
        )
        assert sorted(outcomes) == [(204, None), (404, "application_credential_not_found")]
        assert validity(api, admin_token, token) == 404
        assert db_rows(app, ApplicationCredential, id=cred["id"]) == []


def test_concurrent_secret_additions(
    app: Flask, api: Api, alice: Person, web: dict[str, Any]
) -> None:
    cred = create_credential(api, alice.token, alice.id, web["id"])
    url = creds_path(alice.id, cred["id"]) + "/secrets"
    outcomes = concurrently(
        app, calling("POST", url, alice.token, {}), calling("POST", url, alice.token, {})
    )
    assert outcomes == [(201, None), (201, None)]
    with app.app_context():
        count = database_of(app).session.scalar(
            select(func.count())
            .select_from(CredentialSecret)
            .where(CredentialSecret.credential_id == cred["id"])
        )
        database_of(app).session.remove()
    assert count == 3
    assert len(api.ok("GET", creds_path(alice.id, cred["id"]), alice.token)["secrets"]) == 3


def test_concurrent_deletes_of_the_two_last_secrets(
    app: Flask, api: Api, admin_token: str, alice: Person, web: dict[str, Any]
) -> None:
    for round_ in range(3):
        cred = create_credential(api, alice.token, alice.id, web["id"], name=f"ci-{round_}")
        second = api.ok("POST", creds_path(alice.id, cred["id"]) + "/secrets", alice.token, {})
        base = creds_path(alice.id, cred["id"]) + "/secrets/"
        outcomes = concurrently(
            app,
            calling("DELETE", base + cred["secret_id"], alice.token),
            calling("DELETE", base + second["id"], alice.token),
        )
        assert outcomes.count((204, None)) == 1, outcomes
        (other,) = [o for o in outcomes if o != (204, None)]
        assert other in {(409, "last_secret"), (404, "credential_secret_not_found")}, outcomes
        remaining = db_rows(app, CredentialSecret, credential_id=cred["id"])
        assert len(remaining) == 1
        # The survivor is the secret whose deletion failed, and it still logs in.
        survivor = cred["secret"] if remaining[0].id == cred["secret_id"] else second["secret"]
        assert validity(api, admin_token, credential_token(api, cred, survivor)) == 200
