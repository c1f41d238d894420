"""Tenant secrets end to end: the seed scenario, CRUD, crypto, rotation, outages, audit.

The seed scenario (issue 6): an orchestrator's application account holds an
application credential and a tenant rule letting it read exactly one secret,
``kubernetes``; it reads that payload and nothing else, in its project or any
other. Then: create / versions / delete (metadata and blobs) on both backends;
the embedded store's envelope encryption (no clear text at rest, blobs bound to
their project, secret and version, the master key file 0600); master key
rotation and rewrap through the CLI; an unavailable store leaving nothing
half-written; and the audit trail, which records every change and payload read
but never a payload.
"""

from __future__ import annotations

import json
import secrets as random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from flask import Flask
from sqlalchemy import func, select, update
from werkzeug.test import TestResponse

from latchkey.frontdoors.cli.main import main
from latchkey.secrets.backends import SecretStoreUnavailable
from latchkey.secrets.backends.local import LocalSecretStore
from latchkey.secrets.backends.master_key import MasterKeyFile
from latchkey.secrets.models import LocalSecretBlob, TenantSecret, TenantSecretVersion
from latchkey.secrets.service import MAX_PAYLOAD
from latchkey.secrets.system import SYSTEM_NAMESPACE
from tests.conftest import ADMIN_PASSWORD, Api, build_app, database_of, make_settings

PASSWORD = "secrets-password-1234"
PROBLEM_MEMBERS = {"type", "title", "status", "detail", "code"}
K8S_PAYLOAD = "apiVersion: v1\nkind: Config\nclusters: [kubeconfig-for-the-orchestrator]"
DB_PAYLOAD = "postgres://orchestrator:db-password-never-shown@db.example/app"


def secrets_path(project_id: str, *rest: str) -> str:
    return "/".join([f"/v1/projects/{project_id}/secrets", *rest])


def problem(
    response: TestResponse, status: int, code: str | None = None, *, leak: tuple[str, ...] = ()
) -> dict[str, Any]:
    """A problem document with this status (and code); none of ``leak`` in it."""
    text = response.get_data(as_text=True)
    where = f"{response.request.method} {response.request.path}"
    assert response.status_code == status, (where, response.status_code, text[:400])
    assert response.mimetype == "application/problem+json", (where, response.mimetype)
    assert "Traceback" not in text, where
    body = json.loads(text)
    assert body.keys() >= PROBLEM_MEMBERS, (where, body)
    assert body["status"] == status, (where, body)
    if code is not None:
        assert body["code"] == code, (where, body)
    for value in leak:
        assert value not in text, (where, "payload leaked into an error")
    return dict(body)


def app_credential_token(api: Api, credential: dict[str, Any]) -> str:
    response = api.call(
        "POST",
        "/v1/auth/tokens",
        None,
        {
            "auth": {
                "application_credential": {"id": credential["id"], "secret": credential["secret"]}
            }
        },
    )
    assert response.status_code == 201, response.get_json()
    return str(response.get_json()["token"])


def put_policy(api: Api, token: str, project_id: str, rules: list[dict[str, Any]]) -> None:
    response = api.call("PUT", f"/v1/projects/{project_id}/policy", token, {"rules": rules})
    assert response.status_code == 200, response.get_json()


def make_user(
    api: Api, admin: str, name: str, project: dict[str, Any], role: str, **extra: Any
) -> dict[str, Any]:
    body = {"name": name, **extra}
    if extra.get("kind") != "application":
        body["password"] = PASSWORD
    user = api.ok("POST", "/v1/users", admin, body)
    api.ok("PUT", f"/v1/projects/{project['id']}/users/{user['id']}/roles/{role}", admin)
    return dict(user)


@dataclass
class World:
    api: Api
    admin: str  # cloud admin
    orch: dict[str, Any]  # the orchestrator's project
    other: dict[str, Any]  # someone else's project
    owner: str  # orch's project admin
    bot: dict[str, Any]  # orch's application account (reader)
    bot_token: str  # from its application credential
    stranger: str  # a member of the other project
    k8s: dict[str, Any]
    database: dict[str, Any]
    foreign: dict[str, Any]  # a secret of the other project


ADMIN_RULE = {
    "id": "admins",
    "effect": "allow",
    "actions": ["secrets:*:*"],
    "principals": {"roles": ["admin"]},
}


def seed(api: Api, admin: str) -> World:
    orch = api.ok("POST", "/v1/projects", admin, {"name": "orch"})
    other = api.ok("POST", "/v1/projects", admin, {"name": "other"})
    make_user(api, admin, "owner", orch, "admin")
    make_user(api, admin, "other-owner", other, "admin")
    make_user(api, admin, "stranger", other, "member")
    bot = make_user(
        api, admin, "orchestrator", orch, "reader", kind="application", owner_project_id=orch["id"]
    )
    owner = api.login("owner", PASSWORD, project="orch")
    other_owner = api.login("other-owner", PASSWORD, project="other")
    stranger = api.login("stranger", PASSWORD, project="other")

    k8s = api.ok(
        "POST", secrets_path(orch["id"]), owner, {"name": "kubernetes", "payload": K8S_PAYLOAD}
    )
    database = api.ok(
        "POST", secrets_path(orch["id"]), owner, {"name": "database", "payload": DB_PAYLOAD}
    )
    foreign = api.ok(
        "POST",
        secrets_path(other["id"]),
        other_owner,
        {"name": "kubernetes", "payload": "the other project's kubeconfig"},
    )
    credential = api.ok(
        "POST",
        f"/v1/users/{bot['id']}/application-credentials",
        owner,
        {"name": "orchestrator-credential", "project_id": orch["id"]},
    )
    put_policy(
        api,
        owner,
        orch["id"],
        [
            ADMIN_RULE,
            {
                "id": "orchestrator-reads-kubernetes",
                "effect": "allow",
                "actions": ["secrets:secret:read", "secrets:secret:list"],
                "principals": {"users": [bot["id"]]},
                "resource": {
                    "type": "secrets:secret",
                    "conditions": [{"attribute": "name", "op": "=", "value": "kubernetes"}],
                },
            },
        ],
    )
    return World(
        api=api,
        admin=admin,
        orch=orch,
        other=other,
        owner=owner,
        bot=bot,
        bot_token=app_credential_token(api, credential),
        stranger=stranger,
        k8s=k8s,
        database=database,
        foreign=foreign,
    )


@pytest.fixture
def world(api: Api, admin_token: str) -> World:
    return seed(api, admin_token)


# -- 1. the seed scenario ------------------------------------------------------------


def test_application_credential_reads_exactly_the_secret_it_was_granted(world: World) -> None:
    api, orch, bot = world.api, world.orch["id"], world.bot_token
    k8s, database = world.k8s["id"], world.database["id"]

    response = api.call("GET", secrets_path(orch, k8s, "payload"), bot)
    assert response.status_code == 200, response.get_json()
    assert response.get_json() == {
        "id": k8s,
        "name": "kubernetes",
        "version": 1,
        "content_type": "text/plain",
        "payload": K8S_PAYLOAD,
    }
    assert "no-store" in response.headers["Cache-Control"]
    assert api.ok("GET", secrets_path(orch, k8s), bot)["name"] == "kubernetes"

    # Everything else in its own project is refused by the tenant rules.
    for path in [secrets_path(orch, database, "payload"), secrets_path(orch, database)]:
        body = problem(api.call("GET", path, bot), 403, "policy_denied", leak=(DB_PAYLOAD,))
        assert body["action"] == "secrets:secret:read"
    listed = api.ok("GET", secrets_path(orch), bot)["secrets"]
    assert [s["name"] for s in listed] == ["kubernetes"]
    assert all("payload" not in s for s in listed)
    # An unknown id has no name: a rule about names does not let it through (no 404 oracle).
    problem(api.call("GET", secrets_path(orch, "no-such-secret", "payload"), bot), 403)
    problem(
        api.call("PUT", secrets_path(orch, k8s, "payload"), bot, {"payload": "hijacked"}),
        403,
        "policy_denied",
    )
    problem(api.call("DELETE", secrets_path(orch, k8s), bot), 403, "policy_denied")
    problem(
        api.call("POST", secrets_path(orch), bot, {"name": "new", "payload": "x"}),
        403,
        "policy_denied",
    )
    assert api.ok("GET", secrets_path(orch, k8s, "payload"), world.owner)["payload"] == K8S_PAYLOAD
    assert api.ok("GET", secrets_path(orch, k8s), world.owner)["current_version"] == 1

    # Another project's secret — even one with the granted name — is the boundary's to refuse.
    other, foreign = world.other["id"], world.foreign["id"]
    for path in [secrets_path(other, foreign, "payload"), secrets_path(other, foreign)]:
        body = problem(api.call("GET", path, bot), 403, "policy_denied", leak=("other project",))
        assert body["decided_by"] == "boundary", body
    # The list is planned, not decided: refused, without naming who refused.
    problem(api.call("GET", secrets_path(other), bot), 403, "policy_denied")
    # Its own project's path with the other project's secret id: not found there.
    problem(api.call("GET", secrets_path(orch, foreign, "payload"), bot), 403)
    problem(api.call("GET", secrets_path(orch, foreign, "payload"), world.owner), 404)


def test_a_member_of_another_project_reads_nothing(world: World) -> None:
    api, orch, stranger = world.api, world.orch["id"], world.stranger
    for secret in [world.k8s["id"], world.database["id"]]:
        for method, path, body in [
            ("GET", secrets_path(orch, secret, "payload"), None),
            ("GET", secrets_path(orch, secret), None),
            ("PUT", secrets_path(orch, secret, "payload"), {"payload": "overwritten"}),
            ("DELETE", secrets_path(orch, secret), None),
        ]:
            refused = problem(
                api.call(method, path, stranger, body),
                403,
                "policy_denied",
                leak=(K8S_PAYLOAD, DB_PAYLOAD),
            )
            assert refused["decided_by"] == "boundary", (method, path, refused)
    problem(api.call("GET", secrets_path(orch), stranger), 403, "policy_denied")
    planted = {"name": "planted", "payload": "x"}
    refused = problem(api.call("POST", secrets_path(orch), stranger, planted), 403)
    assert refused["decided_by"] == "boundary"
    # Nothing changed for the owner.
    names = [s["name"] for s in api.ok("GET", secrets_path(orch), world.owner)["secrets"]]
    assert names == ["database", "kubernetes"]
    payload = api.ok("GET", secrets_path(orch, world.k8s["id"], "payload"), world.owner)
    assert payload["payload"] == K8S_PAYLOAD and payload["version"] == 1
    # In their own project (no tenant policy there) the default roles let a member read.
    foreign = api.call(
        "GET", secrets_path(world.other["id"], world.foreign["id"], "payload"), stranger
    )
    assert foreign.status_code == 200, foreign.get_json()
    assert foreign.get_json()["payload"] == "the other project's kubeconfig"
    problem(api.call("GET", "/v1/projects/no-such-project/secrets", stranger), 403)


# -- 2. CRUD and versions ------------------------------------------------------------


def project_admin(api: Api, admin: str, name: str) -> tuple[str, str]:
    """A new project and a token of its admin (the cloud admin's token is scoped elsewhere)."""
    created = api.ok("POST", "/v1/projects", admin, {"name": name})
    make_user(api, admin, f"{name}-admin", created, "admin")
    return created["id"], api.login(f"{name}-admin", PASSWORD, project=name)


@pytest.fixture
def project(api: Api, admin_token: str) -> tuple[str, str]:
    return project_admin(api, admin_token, "crud")


def blobs(app: Flask, *, system: bool = False, **where: Any) -> list[LocalSecretBlob]:
    """Tenant secrets' blobs (or, with ``system``, Latchkey's own: signing keys, pepper)."""
    namespace = LocalSecretBlob.project_id == SYSTEM_NAMESPACE
    with app.app_context():
        query = (
            select(LocalSecretBlob)
            .where(namespace if system else ~namespace)
            .filter_by(**where)
            .order_by(LocalSecretBlob.id)
        )
        rows = list(database_of(app).session.scalars(query))
        database_of(app).session.expunge_all()
        database_of(app).session.remove()
        return rows


def count(app: Flask, model: Any, **where: Any) -> int:
    with app.app_context():
        value = database_of(app).session.scalar(
            select(func.count()).select_from(model).filter_by(**where)
        )
        database_of(app).session.remove()
        return int(value or 0)


def test_create_versions_and_delete(app: Flask, api: Api, project: tuple[str, str]) -> None:
    pid, token = project
    created = api.call(
        "POST",
        secrets_path(pid),
        token,
        {
            "name": "api-key",
            "payload": "version-one-payload",
            "description": "the partner API",
            "content_type": "application/json",
        },
    )
    assert created.status_code == 201, created.get_json()
    secret = created.get_json()
    assert "payload" not in secret and "version-one-payload" not in created.get_data(as_text=True)
    assert secret["name"] == "api-key" and secret["project_id"] == pid
    assert secret["current_version"] == 1 and secret["store"] == "local"
    assert secret["content_type"] == "application/json"
    sid = secret["id"]

    problem(
        api.call("POST", secrets_path(pid), token, {"name": "api-key", "payload": "again"}),
        409,
        "secret_name_taken",
        leak=("again",),
    )
    response = api.call("PUT", secrets_path(pid, sid, "payload"), token, {"payload": "version-two"})
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["current_version"] == 2
    assert "version-two" not in response.get_data(as_text=True)
    assert (
        api.ok("PUT", secrets_path(pid, sid, "payload"), token, {"payload": "v3"}, 200)[
            "current_version"
        ]
        == 3
    )

    current = api.call("GET", secrets_path(pid, sid, "payload"), token)
    assert current.get_json()["payload"] == "v3" and current.get_json()["version"] == 3
    assert current.headers["Cache-Control"] == "no-store"
    for version, expected in [(1, "version-one-payload"), (2, "version-two"), (3, "v3")]:
        old = api.call("GET", secrets_path(pid, sid, f"payload?version={version}"), token)
        assert old.status_code == 200 and old.headers["Cache-Control"] == "no-store"
        assert old.get_json()["payload"] == expected and old.get_json()["version"] == version
    problem(
        api.call("GET", secrets_path(pid, sid, "payload?version=4"), token),
        404,
        "secret_version_not_found",
    )
    for bad in ["0", "-1", "abc", "1.5", str(2**40)]:
        problem(api.call("GET", secrets_path(pid, sid, f"payload?version={bad}"), token), 422)
    problem(api.call("GET", secrets_path(pid, "nope"), token), 404, "secret_not_found")
    problem(api.call("GET", secrets_path(pid, "nope", "payload"), token), 404, "secret_not_found")
    metadata = api.ok("GET", secrets_path(pid, sid), token)
    assert metadata["current_version"] == 3 and "payload" not in metadata
    assert [s["id"] for s in api.ok("GET", secrets_path(pid), token)["secrets"]] == [sid]
    assert [b.version for b in blobs(app, secret_id=sid)] == [1, 2, 3]

    keep = api.ok("POST", secrets_path(pid), token, {"name": "keep", "payload": "kept"})
    api.ok("DELETE", secrets_path(pid, sid), token)
    problem(api.call("GET", secrets_path(pid, sid), token), 404, "secret_not_found")
    problem(api.call("DELETE", secrets_path(pid, sid), token), 404, "secret_not_found")
    assert blobs(app, secret_id=sid) == []
    assert count(app, TenantSecretVersion, secret_id=sid) == 0
    assert count(app, TenantSecret, id=sid) == 0
    # The name is free again, and the other secret is untouched.
    again = api.ok("POST", secrets_path(pid), token, {"name": "api-key", "payload": "fresh"})
    assert again["id"] != sid and again["current_version"] == 1
    assert api.ok("GET", secrets_path(pid, again["id"], "payload"), token)["payload"] == "fresh"
    assert api.ok("GET", secrets_path(pid, keep["id"], "payload"), token)["payload"] == "kept"


def test_deleting_the_project_removes_its_secrets_and_blobs(
    app: Flask, api: Api, admin_token: str, project: tuple[str, str]
) -> None:
    pid, token = project
    survivor, survivor_token = project_admin(api, admin_token, "survivor")
    kept = api.ok("POST", secrets_path(survivor), survivor_token, {"name": "s", "payload": "k"})
    for name in ["a", "b"]:
        secret = api.ok("POST", secrets_path(pid), token, {"name": name, "payload": name * 10})
        api.ok("PUT", secrets_path(pid, secret["id"], "payload"), token, {"payload": "v2"}, 200)
    assert count(app, TenantSecret, project_id=pid) == 2
    assert len(blobs(app, project_id=pid)) == 4
    api.ok("DELETE", f"/v1/projects/{pid}", admin_token)
    assert count(app, TenantSecret, project_id=pid) == 0
    assert blobs(app, project_id=pid) == []
    assert count(app, TenantSecretVersion) == 1
    assert len(blobs(app)) == 1
    assert (
        api.ok("GET", secrets_path(survivor, kept["id"], "payload"), survivor_token)["payload"]
        == "k"
    )


def test_payload_size_limit(app: Flask, api: Api, project: tuple[str, str]) -> None:
    pid, token = project
    exact = api.call(
        "POST", secrets_path(pid), token, {"name": "max", "payload": "x" * MAX_PAYLOAD}
    )
    assert exact.status_code == 201, exact.get_json()
    sid = exact.get_json()["id"]
    assert len(api.ok("GET", secrets_path(pid, sid, "payload"), token)["payload"]) == MAX_PAYLOAD
    # Counted in bytes, not characters: 32 769 two-byte characters are 65 538 bytes.
    for payload in ["x" * (MAX_PAYLOAD + 1), "\u00e9" * (MAX_PAYLOAD // 2 + 1)]:
        problem(
            api.call("POST", secrets_path(pid), token, {"name": "big", "payload": payload}),
            422,
            "payload_too_large",
        )
        problem(
            api.call("PUT", secrets_path(pid, sid, "payload"), token, {"payload": payload}),
            422,
            "payload_too_large",
        )
    assert count(app, TenantSecret, project_id=pid) == 1
    assert api.ok("GET", secrets_path(pid, sid), token)["current_version"] == 1
    assert len(blobs(app, secret_id=sid)) == 1


def test_bad_input_is_a_problem_document(app: Flask, api: Api, project: tuple[str, str]) -> None:
    pid, token = project
    sid = api.ok("POST", secrets_path(pid), token, {"name": "ok", "payload": "p"})["id"]
    create, new_version = secrets_path(pid), secrets_path(pid, sid, "payload")
    cases: list[tuple[str, str, Any]] = [
        ("POST", create, {"name": "missing-payload"}),
        ("POST", create, {"payload": "missing-name"}),
        ("POST", create, {}),
        ("POST", create, {"name": "n", "payload": 42}),
        ("POST", create, {"name": "n", "payload": None}),
        ("POST", create, {"name": "n", "payload": ["a"]}),
        ("POST", create, {"name": "n", "payload": {"a": "b"}}),
        ("POST", create, {"name": 7, "payload": "p"}),
        ("POST", create, {"name": "", "payload": "p"}),
        ("POST", create, {"name": "n" * 256, "payload": "p"}),
        ("POST", create, {"name": "n", "payload": "p", "description": 5}),
        ("POST", create, {"name": "n", "payload": "p", "content_type": "x" * 129}),
        ("POST", create, {"name": "n", "payload": "p", "content_type": False}),
        ("POST", create, {"name": "n", "payload": "p", "unknown": "field"}),
        ("POST", create, {"name": "n", "payload": "p", "id": "chosen-id"}),
        ("POST", create, {"name": "n", "payload": "p", "current_version": 9}),
        ("POST", create, {"name": "n", "payload": "p", "store": "vault"}),
        ("POST", create, ["name", "payload"]),
        ("POST", create, "a string"),
        ("PUT", new_version, {}),
        ("PUT", new_version, {"payload": 1}),
        ("PUT", new_version, {"payload": None}),
        ("PUT", new_version, {"payload": "p", "version": 7}),
        ("PUT", new_version, [1]),
    ]
    for method, path, body in cases:
        response = api.call(method, path, token, body)
        assert 400 <= response.status_code < 500, (method, body, response.status_code)
        problem(response, response.status_code)
    for raw in [b"{not json", b"", b'{"name": "n", "payload": "\\u0000"}']:
        response = api.client.post(
            create,
            data=raw,
            headers={"Authorization": f"Bearer {token}"},
            content_type="application/json",
        )
        assert 400 <= response.status_code < 500, (raw, response.status_code)
        problem(response, response.status_code)
    # Nothing was created or changed by any of it.
    assert [s["name"] for s in api.ok("GET", create, token)["secrets"]] == ["ok"]
    assert api.ok("GET", secrets_path(pid, sid), token)["current_version"] == 1
    assert len(blobs(app, project_id=pid)) == 1


# -- 3. the embedded store's crypto --------------------------------------------------


def test_no_payload_in_clear_text_at_rest(app: Flask, api: Api, project: tuple[str, str]) -> None:
    pid, token = project
    marker = "CLEARTEXT-" + random.token_hex(16)
    payloads = [marker + "-one", marker + "-two", marker + "-\u00e9\u00e8"]
    sid = api.ok("POST", secrets_path(pid), token, {"name": "scan", "payload": payloads[0]})["id"]
    for payload in payloads[1:]:
        api.ok("PUT", secrets_path(pid, sid, "payload"), token, {"payload": payload}, 200)
    stored = blobs(app, secret_id=sid)
    assert len(stored) == 3
    for blob in stored:
        for column in (blob.ciphertext, blob.sealed_data_key, blob.nonce):
            assert marker.encode() not in bytes(column)
        assert len(blob.nonce) == 12
    # Fresh data key and nonce per version.
    assert len({bytes(b.sealed_data_key) for b in stored}) == 3
    assert len({bytes(b.nonce) for b in stored}) == 3
    with app.app_context():
        values = [
            json.dumps(
                [
                    list(map(str, row))
                    for row in database_of(app).session.execute(select(table)).all()
                ]
            )
            for table in database_of(app).metadata.sorted_tables
        ]
        database_of(app).session.remove()
    assert not any(marker in value for value in values)
    # On SQLite the whole home (database, journal, key file) holds no clear text either.
    home = app.extensions["latchkey"].settings.home_path
    if database_of(app).engine.dialect.name == "sqlite":
        scanned = [path for path in home.rglob("*") if path.is_file()]
        assert any(path.suffix == ".db" for path in scanned)
        for path in scanned:
            assert marker.encode() not in path.read_bytes(), path
    master = home / "master.key"
    assert master.stat().st_mode & 0o777 == 0o600
    assert marker.encode() not in master.read_bytes()


def swap(app: Flask, blob_id: int, **values: Any) -> None:
    with app.app_context():
        database_of(app).session.execute(
            update(LocalSecretBlob).where(LocalSecretBlob.id == blob_id).values(**values)
        )
        database_of(app).session.commit()
        database_of(app).session.remove()


def crypto(blob: LocalSecretBlob) -> dict[str, bytes]:
    return {
        "sealed_data_key": bytes(blob.sealed_data_key),
        "nonce": bytes(blob.nonce),
        "ciphertext": bytes(blob.ciphertext),
    }


def test_moved_or_tampered_blobs_do_not_decrypt(
    app: Flask, api: Api, admin_token: str, project: tuple[str, str]
) -> None:
    pid, token = project
    other, other_token = project_admin(api, admin_token, "elsewhere")
    alpha = api.ok("POST", secrets_path(pid), token, {"name": "alpha", "payload": "ALPHA-v1"})
    api.ok("PUT", secrets_path(pid, alpha["id"], "payload"), token, {"payload": "ALPHA-v2"}, 200)
    bravo = api.ok("POST", secrets_path(pid), token, {"name": "bravo", "payload": "BRAVO-v1"})
    charlie = api.ok(
        "POST", secrets_path(other), other_token, {"name": "alpha", "payload": "CHARLIE-v1"}
    )
    a1, a2 = blobs(app, secret_id=alpha["id"])
    (b1,) = blobs(app, secret_id=bravo["id"])
    (c1,) = blobs(app, secret_id=charlie["id"])
    leaks = ("ALPHA", "BRAVO", "CHARLIE")

    def refused(secret_id: str, version: int, project_id: str = pid) -> None:
        path = secrets_path(project_id, secret_id, f"payload?version={version}")
        api.client.allow_5xx = True  # type: ignore[attr-defined]
        try:
            response = api.call("GET", path, token if project_id == pid else other_token)
        finally:
            api.client.allow_5xx = False  # type: ignore[attr-defined]
        problem(response, 503, "secret_store_unavailable", leak=leaks)
        with app.app_context():
            store = app.extensions["latchkey"].secret_store
            with pytest.raises(SecretStoreUnavailable):
                store.get(project_id, secret_id, version, "unused")
            database_of(app).session.remove()

    def readable() -> None:
        for sid, version, expected, project_id in [
            (alpha["id"], 1, "ALPHA-v1", pid),
            (alpha["id"], 2, "ALPHA-v2", pid),
            (bravo["id"], 1, "BRAVO-v1", pid),
            (charlie["id"], 1, "CHARLIE-v1", other),
        ]:
            path = secrets_path(project_id, sid, f"payload?version={version}")
            who = token if project_id == pid else other_token
            assert api.ok("GET", path, who)["payload"] == expected

    readable()
    # Another secret's blob, same project and version.
    swap(app, a1.id, **crypto(b1))
    refused(alpha["id"], 1)
    swap(app, a1.id, **crypto(a1))
    # The same secret's other version.
    swap(app, a2.id, **crypto(a1))
    refused(alpha["id"], 2)
    swap(app, a2.id, **crypto(a2))
    # Another project's secret's blob.
    swap(app, a1.id, **crypto(c1))
    refused(alpha["id"], 1)
    swap(app, a1.id, **crypto(a1))
    # Only the sealed data key moved (the ciphertext is the right one).
    swap(app, a1.id, sealed_data_key=crypto(b1)["sealed_data_key"])
    refused(alpha["id"], 1)
    swap(app, a1.id, **crypto(a1))
    # The row relabelled to another project: the associated data no longer matches.
    swap(app, c1.id, project_id=pid)
    with app.app_context():
        with pytest.raises(SecretStoreUnavailable):
            app.extensions["latchkey"].secret_store.get(pid, charlie["id"], 1, "unused")
        database_of(app).session.remove()
    swap(app, c1.id, project_id=other)
    # The row relabelled to another version.
    swap(app, a1.id, version=9)
    swap(app, a2.id, version=1)
    refused(alpha["id"], 1)
    swap(app, a2.id, version=2)
    swap(app, a1.id, version=1)
    # Flipped bits in the ciphertext, the nonce, the sealed key.
    for column in ["ciphertext", "nonce", "sealed_data_key"]:
        tampered = bytearray(crypto(a1)[column])
        tampered[-1] ^= 0x01
        swap(app, a1.id, **{column: bytes(tampered)})
        refused(alpha["id"], 1)
        swap(app, a1.id, **crypto(a1))
    readable()


# -- 4. master key rotation ----------------------------------------------------------


def cli(home: Path, *args: str) -> Result:
    environ = {
        "LATCHKEY_HOME": str(home),
        "LATCHKEY_PASSWORD_HASH_TIME_COST": "1",
        "LATCHKEY_PASSWORD_HASH_MEMORY_KIB": "1024",
        "LATCHKEY_LOG_LEVEL": "WARNING",
    }
    result = CliRunner().invoke(main, list(args), env=environ, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def own_app(home: Path) -> Flask:
    """An application of its own on SQLite in ``home`` (bootstrapped on first build)."""
    app = build_app(make_settings(home, f"sqlite:///{home / 'latchkey.db'}"))
    with app.app_context():
        app.extensions["latchkey"].bootstrap.run(ADMIN_PASSWORD)
        database_of(app).session.remove()
    return app


def sealed_versions(app: Flask, home: Path) -> dict[tuple[str, int], str]:
    ring = MasterKeyFile(home / "master.key")
    return {(b.secret_id, b.version): ring.sealed_version(b.sealed_data_key) for b in blobs(app)}


def test_master_key_rotation_and_rewrap_through_the_cli(tmp_path: Path) -> None:
    home = tmp_path / "home"
    app = own_app(home)
    api = Api(app.test_client())
    pid, admin = project_admin(api, api.admin_token(), "rot")
    first = api.ok("POST", secrets_path(pid), admin, {"name": "first", "payload": "first-1"})
    api.ok("PUT", secrets_path(pid, first["id"], "payload"), admin, {"payload": "first-2"}, 200)
    second = api.ok("POST", secrets_path(pid), admin, {"name": "second", "payload": "second-1"})
    assert set(sealed_versions(app, home).values()) == {"1"}

    out = cli(home, "secrets", "rotate-master")
    assert "master key version 2 is now current" in out.output
    assert (home / "master.key").stat().st_mode & 0o777 == 0o600
    # A server started before the rotation and still running seals with the new version.
    running = Api(api.client)
    third = running.ok("POST", secrets_path(pid), admin, {"name": "third", "payload": "third-1"})
    # So does a restarted one; the old secrets still open.
    app = own_app(home)
    api = Api(app.test_client())
    admin = api.login("rot-admin", PASSWORD, project="rot")
    fourth = api.ok("POST", secrets_path(pid), admin, {"name": "fourth", "payload": "fourth-1"})
    versions = sealed_versions(app, home)
    assert [versions[(third["id"], 1)], versions[(fourth["id"], 1)]] == ["2", "2"]
    assert [versions[(first["id"], 1)], versions[(first["id"], 2)]] == ["1", "1"]
    assert versions[(second["id"], 1)] == "1"
    own = len(blobs(app, system=True))  # Latchkey's own secrets, sealed before the rotation
    with app.app_context():
        assert app.extensions["latchkey"].secret_store.stale_count() == 3 + own
        database_of(app).session.remove()
    expected = [
        (first["id"], 1, "first-1"),
        (first["id"], 2, "first-2"),
        (second["id"], 1, "second-1"),
        (third["id"], 1, "third-1"),
        (fourth["id"], 1, "fourth-1"),
    ]

    def all_readable(api: Api, admin: str) -> None:
        for sid, version, payload in expected:
            path = secrets_path(pid, sid, f"payload?version={version}")
            assert api.ok("GET", path, admin)["payload"] == payload

    all_readable(running, admin)
    all_readable(api, admin)

    out = cli(home, "secrets", "rewrap")
    expected_out = f"rewrapped {3 + own} of {5 + own} secret versions; 0 still under an older"
    assert expected_out in out.output
    assert set(sealed_versions(app, home).values()) == {"2"}
    with app.app_context():
        assert app.extensions["latchkey"].secret_store.stale_count() == 0
        database_of(app).session.remove()
    # Servers running during the rewrap still read them (the new key is read from the file).
    all_readable(api, admin)
    all_readable(running, admin)
    all_readable(Api(own_app(home).test_client()), admin)
    again = cli(home, "secrets", "rewrap")
    assert f"rewrapped 0 of {5 + own}" in again.output


def test_master_key_rotation_in_process(sqlite_app: Flask) -> None:
    api = Api(sqlite_app.test_client())
    home = sqlite_app.extensions["latchkey"].settings.home_path
    pid, admin = project_admin(api, api.admin_token(), "rot")
    old = api.ok("POST", secrets_path(pid), admin, {"name": "old", "payload": "old-payload"})
    with sqlite_app.app_context():
        store = sqlite_app.extensions["latchkey"].secret_store
        before = store._master.current_version
        after = store.rotate_master()
        assert int(after) == int(before) + 1
        database_of(sqlite_app).session.remove()
    new = api.ok("POST", secrets_path(pid), admin, {"name": "new", "payload": "new-payload"})
    versions = sealed_versions(sqlite_app, home)
    assert versions[(new["id"], 1)] == after and versions[(old["id"], 1)] == before
    own = len(blobs(sqlite_app, system=True))  # sealed at bootstrap, before the rotation
    with sqlite_app.app_context():
        assert store.stale_count() == 1 + own
        assert store.rewrap() == 1 + own
        assert store.stale_count() == 0
        database_of(sqlite_app).session.remove()
    assert set(sealed_versions(sqlite_app, home).values()) == {after}
    for secret, payload in [(old, "old-payload"), (new, "new-payload")]:
        assert (
            api.ok("GET", secrets_path(pid, secret["id"], "payload"), admin)["payload"] == payload
        )
    # Token signing keys sealed under the old master version still work.
    assert api.admin_token()
    assert (home / "master.key").stat().st_mode & 0o777 == 0o600


def test_a_key_file_that_vanishes_or_breaks_keeps_the_keys_in_memory(tmp_path: Path) -> None:
    ring = MasterKeyFile(tmp_path / "master.key")
    sealed = ring.seal(b"data key", "context")
    (tmp_path / "master.key").unlink()
    assert ring.unseal(sealed, "context") == b"data key"
    assert ring.seal(b"x", "c") and not (tmp_path / "master.key").exists()  # never a new key
    (tmp_path / "master.key").write_text("{not json")
    assert ring.unseal(sealed, "context") == b"data key"
    assert ring.current_version == "1"


# -- 5. an unavailable store: nothing half-written -----------------------------------


class BrokenStore(LocalSecretStore):
    """Fails every write; ``after_write`` fails only once the blob is in the session."""

    after_write = False

    def put(self, project_id: str, secret_id: str, version: int, payload: bytes) -> str:
        if self.after_write:
            super().put(project_id, secret_id, version, payload)
        raise SecretStoreUnavailable("the store is down (injected)")


class UnreadableStore(LocalSecretStore):
    def get(self, project_id: str, secret_id: str, version: int, reference: str) -> bytes:
        raise SecretStoreUnavailable("the store is down (injected)")


@pytest.fixture
def fault_app(tmp_path: Path) -> Iterator[Flask]:
    yield own_app(tmp_path / "home")


def swap_store(app: Flask, store: LocalSecretStore) -> LocalSecretStore:
    services = app.extensions["latchkey"]
    previous: LocalSecretStore = services.secret_store
    object.__setattr__(services, "secret_store", store)  # Services is a frozen dataclass
    services.secrets._store = store
    return previous


@pytest.mark.parametrize("after_write", [False, True], ids=["before-write", "after-write"])
def test_store_outage_leaves_nothing_half_written(fault_app: Flask, after_write: bool) -> None:
    app, api = fault_app, Api(fault_app.test_client())
    cloud_admin = api.admin_token()
    pid, admin = project_admin(api, cloud_admin, "outage")
    existing = api.ok("POST", secrets_path(pid), admin, {"name": "existing", "payload": "v1"})
    sid = existing["id"]
    real = app.extensions["latchkey"].secret_store
    broken = BrokenStore(real._session, real._master)
    broken.after_write = after_write
    swap_store(app, broken)
    api.client.allow_5xx = True  # type: ignore[attr-defined]
    try:
        create = api.call("POST", secrets_path(pid), admin, {"name": "new", "payload": "lost"})
        update_ = api.call("PUT", secrets_path(pid, sid, "payload"), admin, {"payload": "lost"})
    finally:
        api.client.allow_5xx = False  # type: ignore[attr-defined]
        swap_store(app, real)
    problem(create, 503, "secret_store_unavailable", leak=("lost",))
    problem(update_, 503, "secret_store_unavailable", leak=("lost",))

    assert count(app, TenantSecret, project_id=pid) == 1
    assert count(app, TenantSecret, name="new") == 0
    assert count(app, TenantSecretVersion, secret_id=sid) == 1
    assert [b.version for b in blobs(app)] == [1]
    assert api.ok("GET", secrets_path(pid, sid), admin)["current_version"] == 1
    assert api.ok("GET", secrets_path(pid, sid, "payload"), admin)["payload"] == "v1"
    events = api.ok("GET", f"/v1/audit/events?project_id={pid}&limit=1000", cloud_admin)
    events = events["events"]
    changes = [e["action"] for e in events if e["type"] == "change"]
    assert [a for a in changes if a.startswith("secrets:")] == ["secrets:secret:create"]
    # Back up: the same requests now succeed, the name was never taken.
    assert (
        api.ok("POST", secrets_path(pid), admin, {"name": "new", "payload": "n"})["current_version"]
        == 1
    )
    assert (
        api.ok("PUT", secrets_path(pid, sid, "payload"), admin, {"payload": "v2"}, 200)[
            "current_version"
        ]
        == 2
    )


def test_store_outage_on_read(fault_app: Flask) -> None:
    app, api = fault_app, Api(fault_app.test_client())
    cloud_admin = api.admin_token()
    pid, admin = project_admin(api, cloud_admin, "outage")
    sid = api.ok("POST", secrets_path(pid), admin, {"name": "s", "payload": "still-here"})["id"]
    real = app.extensions["latchkey"].secret_store
    swap_store(app, UnreadableStore(real._session, real._master))
    api.client.allow_5xx = True  # type: ignore[attr-defined]
    try:
        read = api.call("GET", secrets_path(pid, sid, "payload"), admin)
    finally:
        api.client.allow_5xx = False  # type: ignore[attr-defined]
        swap_store(app, real)
    problem(read, 503, "secret_store_unavailable")
    assert "Cache-Control" not in read.headers or "no-store" in read.headers["Cache-Control"]
    assert api.ok("GET", secrets_path(pid, sid, "payload"), admin)["payload"] == "still-here"
    ready = api.call("GET", "/readyz").get_json()
    assert ready["checks"]["secret_store"]["status"] == "ok"


# -- 6. audit ------------------------------------------------------------------------


def test_audit_records_changes_and_reads_but_no_payload(world: World) -> None:
    api, orch, owner = world.api, world.orch["id"], world.owner
    k8s = world.k8s["id"]
    new_payload = "rotated-kubeconfig-" + random.token_hex(8)
    api.ok("PUT", secrets_path(orch, k8s, "payload"), owner, {"payload": new_payload}, 200)
    assert api.ok("GET", secrets_path(orch, k8s, "payload"), world.bot_token)["version"] == 2
    assert api.ok("GET", secrets_path(orch, k8s, "payload?version=1"), owner)["version"] == 1
    problem(
        api.call("GET", secrets_path(orch, world.database["id"], "payload"), world.bot_token), 403
    )
    api.ok("DELETE", secrets_path(orch, world.database["id"]), owner)

    response = api.call("GET", "/v1/audit/events?limit=1000", world.admin)
    assert response.status_code == 200
    text = response.get_data(as_text=True)
    for payload in [K8S_PAYLOAD, DB_PAYLOAD, new_payload, "the other project's kubeconfig"]:
        assert payload not in text and json.dumps(payload)[1:-1] not in text
    events = response.get_json()["events"]
    secret_events = [e for e in events if e["action"].startswith("secrets:secret:")]
    changes = [
        (e["action"], e["target_id"], e["outcome"]) for e in secret_events if e["type"] == "change"
    ]
    assert ("secrets:secret:create", k8s, "success") in changes
    assert ("secrets:secret:create", world.database["id"], "success") in changes
    assert ("secrets:secret:update", k8s, "success") in changes
    assert ("secrets:secret:delete", world.database["id"], "success") in changes
    reads = [
        e
        for e in secret_events
        if e["type"] == "decision"
        and e["action"] == "secrets:secret:read"
        and e["target_type"] == "secret"
    ]
    bot_reads = [e for e in reads if e["actor_id"] == world.bot["id"]]
    assert bot_reads and bot_reads[0]["target_id"] == k8s
    assert bot_reads[0]["details"]["version"] == 2 and bot_reads[0]["project_id"] == orch
    assert any(e["details"].get("version") == 1 for e in reads if e["actor_id"] != world.bot["id"])
    # The type filter finds the reads too.
    decisions = api.ok(
        "GET", f"/v1/audit/events?type=decision&project_id={orch}&limit=1000", world.admin
    )
    assert {e["type"] for e in decisions["events"]} == {"decision"}
    assert any(e["target_id"] == k8s for e in decisions["events"])
    for payload in [K8S_PAYLOAD, new_payload]:
        assert payload not in json.dumps(decisions)
