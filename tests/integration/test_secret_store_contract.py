"""One SecretStore contract for every backend, against real servers; Barbican end to end.

The same tests run against the embedded store (``local``, in a SQLite
application), a real OpenBao (``bao server -dev``, tests/openbao_server.py) and
a real Barbican 23.0.0 (tests/barbican_server.py; installed into
``.venv-barbican`` by ``make services`` or by the fixture). The contract, as
``latchkey/secrets/backends/__init__.py`` states it: binary payloads up to Latchkey's
maximum round-trip; versions are independent; ``delete`` removes every version
and is idempotent; a payload that is not in the store is
``SecretPayloadMissing`` (404); one project never reads another's payload under
the same secret id; ``health`` answers; a store that cannot answer is
``SecretStoreUnavailable`` (503, naming the store).

Then Barbican's own parts: consumer protection and tracing; Barbican behind
keystonemiddleware with Latchkey (served over HTTP) as its Keystone and the
store using an application credential. Through the HTTP API with
``secret_store=barbican``: tenant secrets end to end, a Barbican outage (503, nothing
half-written, ``/readyz``, recovery without restarting Latchkey); and, for all
three stores, a store write whose database commit then fails: the payload is
taken out of the store again and no metadata row remains.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask, current_app
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError
from werkzeug.serving import make_server

from latchkey.identity.models import Project
from latchkey.secrets.backends import SecretPayloadMissing, SecretStore, SecretStoreUnavailable
from latchkey.secrets.backends.barbican import BarbicanSecretStore
from latchkey.secrets.backends.vault import VaultSecretStore
from latchkey.secrets.models import TenantSecret, TenantSecretVersion
from latchkey.secrets.service import MAX_PAYLOAD
from tests.barbican_server import PROJECT, BarbicanServer, KeystoneAuth
from tests.conftest import Api, build_app, database_of, make_settings, reset_database
from tests.openbao_server import OpenBao, free_port

pytest_plugins = ["tests.openbao_server", "tests.barbican_server"]

STORES = ["local", "vault", "barbican"]
PASSWORD = "contract-tests-password-1234"


def noop(*_: Any) -> None:
    pass


@dataclass
class Harness:
    store: SecretStore
    # The embedded store's blobs hang off metadata rows and live in Latchkey's session:
    declare: Callable[[str, str], None] = noop  # create the project and secret rows
    settle: Callable[[], None] = noop  # commit what the store did in the session
    absent: Callable[[str, str, int], str] = lambda p, s, n: ""  # a reference to nothing

    def put(self, project_id: str, secret_id: str, version: int, payload: bytes) -> str:
        reference = self.store.put(project_id, secret_id, version, payload)
        self.settle()
        return reference

    def delete(self, project_id: str, secret_id: str) -> None:
        self.store.delete(project_id, secret_id)
        self.settle()


def declare_rows(project_id: str, secret_id: str) -> None:
    session = database_of(current_app).session
    if session.get(Project, project_id) is None:
        session.add(Project(id=project_id, name=project_id, domain_id="default"))
    session.add(TenantSecret(id=secret_id, project_id=project_id, name=secret_id, store="local"))
    session.commit()


def barbican_store(url: str, timeout: float = 5) -> BarbicanSecretStore:
    return BarbicanSecretStore(url, auth="trusted-headers", project_id=PROJECT, timeout=timeout)


@pytest.fixture(params=STORES)
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    if request.param == "local":
        app: Flask = request.getfixturevalue("sqlite_app")
        with app.app_context():
            yield Harness(
                app.extensions["latchkey"].secret_store,
                declare=declare_rows,
                settle=database_of(app).session.commit,
                absent=lambda p, s, n: "local:999999999",
            )
            database_of(app).session.remove()
    elif request.param == "vault":
        bao: OpenBao = request.getfixturevalue("openbao")
        yield Harness(
            VaultSecretStore(bao.addr, token=bao.token, prefix="contract", timeout=3),
            absent=lambda p, s, n: f"vault:secret/contract/{p}/{s}#{n}",
        )
    else:
        server: BarbicanServer = request.getfixturevalue("barbican")
        yield Harness(barbican_store(server.url), absent=lambda p, s, n: f"barbican:{uuid.uuid4()}")


def fresh_ids(harness: Harness, secrets: int = 1) -> tuple[str, list[str]]:
    project_id = "p" + uuid.uuid4().hex[:12]
    secret_ids = ["s" + uuid.uuid4().hex[:12] for _ in range(secrets)]
    for secret_id in secret_ids:
        harness.declare(project_id, secret_id)
    return project_id, secret_ids


def assert_missing(
    harness: Harness, project_id: str, secret_id: str, version: int, ref: str
) -> None:
    with pytest.raises(SecretPayloadMissing) as caught:
        harness.store.get(project_id, secret_id, version, ref)
    assert caught.value.status == 404 and caught.value.code == "secret_payload_missing"


# -- 1. the contract, store by store ----------------------------------------------------


def test_round_trip_binary_and_largest_payloads(harness: Harness) -> None:
    pid, (sid,) = fresh_ids(harness)
    payloads = [
        b"x",
        bytes(range(256)),  # every byte value, NUL and invalid UTF-8 included
        "caf\u00e9 \u2603\n".encode(),
        os.urandom(MAX_PAYLOAD),  # the largest payload Latchkey accepts
    ]
    refs = [harness.put(pid, sid, n, payload) for n, payload in enumerate(payloads, 1)]
    for n, (payload, ref) in enumerate(zip(payloads, refs, strict=True), 1):
        assert harness.store.get(pid, sid, n, ref) == payload


def test_versions_are_independent(harness: Harness) -> None:
    pid, (sid,) = fresh_ids(harness)
    first = harness.put(pid, sid, 1, b"version one")
    assert harness.store.get(pid, sid, 1, first) == b"version one"
    second = harness.put(pid, sid, 2, b"version two")
    third = harness.put(pid, sid, 3, b"version three")
    assert len({first, second, third}) == 3
    # Writing later versions changes nothing about earlier ones, read in any order.
    assert harness.store.get(pid, sid, 3, third) == b"version three"
    assert harness.store.get(pid, sid, 1, first) == b"version one"
    assert harness.store.get(pid, sid, 2, second) == b"version two"


def test_delete_removes_every_version(harness: Harness) -> None:
    pid, (sid, other) = fresh_ids(harness, secrets=2)
    refs = [harness.put(pid, sid, n, f"payload {n}".encode()) for n in (1, 2, 3)]
    kept = harness.put(pid, other, 1, b"other secret")
    harness.delete(pid, sid)
    for n, ref in enumerate(refs, 1):
        assert_missing(harness, pid, sid, n, ref)
    harness.delete(pid, sid)  # deleting what is gone succeeds
    assert harness.store.get(pid, other, 1, kept) == b"other secret"


def test_a_payload_not_in_the_store_is_not_found(harness: Harness) -> None:
    pid, (sid,) = fresh_ids(harness)
    assert_missing(harness, pid, sid, 1, harness.absent(pid, sid, 1))  # never written
    ref = harness.put(pid, sid, 1, b"here")
    assert_missing(harness, pid, sid, 2, harness.absent(pid, sid, 2))  # a version never written
    harness.delete(pid, sid)
    assert_missing(harness, pid, sid, 1, ref)  # deleted


def test_projects_are_isolated(harness: Harness) -> None:
    alpha, (sid,) = fresh_ids(harness)
    beta = "p" + uuid.uuid4().hex[:12]  # the same secret id in another project
    ref_alpha = harness.put(alpha, sid, 1, b"alpha's payload")
    ref_beta = harness.put(beta, sid, 1, b"beta's payload")
    assert ref_alpha != ref_beta
    assert harness.store.get(alpha, sid, 1, ref_alpha) == b"alpha's payload"
    assert harness.store.get(beta, sid, 1, ref_beta) == b"beta's payload"
    # Another project's reference never yields that project's payload.
    for reference in (ref_alpha, ref_beta):
        try:
            payload = harness.store.get(beta, sid, 1, reference)
        except SecretPayloadMissing:
            continue
        assert payload == b"beta's payload"
    harness.delete(alpha, sid)
    assert_missing(harness, alpha, sid, 1, ref_alpha)
    assert harness.store.get(beta, sid, 1, ref_beta) == b"beta's payload"


def test_health(harness: Harness) -> None:
    health = harness.store.health()
    assert health["status"] == "ok", health
    assert health["store"] == harness.store.name


@pytest.mark.parametrize("backend", ["vault", "barbican"])
def test_a_store_that_does_not_answer_is_unavailable(backend: str) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    store: SecretStore = (
        VaultSecretStore(dead, token="root", timeout=1)
        if backend == "vault"
        else barbican_store(dead, timeout=1)
    )
    reference = "vault:secret/latchkey/p/s#1" if backend == "vault" else f"barbican:{uuid.uuid4()}"
    calls: list[Callable[[], Any]] = [
        lambda: store.put("p", "s", 1, b"never"),
        lambda: store.get("p", "s", 1, reference),
        lambda: store.delete("p", "s"),
    ]
    for call in calls:
        with pytest.raises(SecretStoreUnavailable) as caught:
            call()
        assert caught.value.status == 503 and caught.value.code == "secret_store_unavailable"
        assert backend in caught.value.detail and "never" not in caught.value.detail
    health = store.health()
    assert health["status"] == "unavailable" and health["store"] == backend


# -- 2. Barbican: what an operator sees, consumers ----------------------------------------


def test_barbican_secrets_are_traceable_and_protected_by_a_consumer(
    barbican: BarbicanServer,
) -> None:
    store = barbican_store(barbican.url)
    ref = store.put("proj-1", "sec-1", 1, b"traceable")
    secret_uuid = ref.removeprefix("barbican:")
    headers = {**barbican.headers(), "OpenStack-API-Version": "key-manager 1.2"}
    meta = requests.get(f"{barbican.url}/v1/secrets/{secret_uuid}", headers=headers, timeout=5)
    assert meta.status_code == 200
    assert meta.json()["name"] == "latchkey:proj-1:sec-1"
    assert meta.json()["consumers"] == [
        {"service": "latchkey", "resource_type": "secret-version", "resource_id": "proj-1/sec-1/1"}
    ]
    labels = requests.get(
        f"{barbican.url}/v1/secrets/{secret_uuid}/metadata", headers=headers, timeout=5
    )
    assert labels.json()["metadata"] == {
        "latchkey_project_id": "proj-1",
        "latchkey_secret_id": "sec-1",
        "latchkey_version": "1",
    }
    # Another Barbican client cannot delete a secret Latchkey still serves...
    refused = requests.delete(
        f"{barbican.url}/v1/secrets/{secret_uuid}", headers=headers, timeout=5
    )
    assert refused.status_code == 400 and "consumers" in refused.text
    assert store.get("proj-1", "sec-1", 1, ref) == b"traceable"
    # ...Latchkey removes its consumer, then deletes.
    store.delete("proj-1", "sec-1")
    gone = requests.get(f"{barbican.url}/v1/secrets/{secret_uuid}", headers=headers, timeout=5)
    assert gone.status_code == 404


@pytest.fixture
def keystone(tmp_path: Path) -> Iterator[tuple[str, Api]]:
    """Latchkey served over HTTP as the Keystone a production Barbican trusts."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    home = tmp_path / "keystone"
    app = build_app(make_settings(home, f"sqlite:///{home / 'latchkey.db'}", issuer=url))
    reset_database(app)
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield url, Api(app.test_client())
    server.shutdown()


def v3_token(url: str, name: str, project: str) -> str:
    body = {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {"name": name, "domain": {"id": "default"}, "password": PASSWORD}
                },
            },
            "scope": {"project": {"name": project, "domain": {"id": "default"}}},
        }
    }
    answer = requests.post(url + "/v3/auth/tokens", json=body, timeout=30)
    assert answer.status_code == 201, answer.text
    return answer.headers["X-Subject-Token"]


def test_barbican_behind_keystone_with_an_application_credential(
    keystone: tuple[str, Api], barbican_python: Path, tmp_path: Path
) -> None:
    url, api = keystone
    admin = api.admin_token()

    def account(name: str, project: dict[str, Any], role: str) -> dict[str, Any]:
        user = api.ok("POST", "/v1/users", admin, {"name": name, "password": PASSWORD})
        api.ok("PUT", f"/v1/projects/{project['id']}/users/{user['id']}/roles/{role}", admin)
        return dict(user)

    # Barbican's own service account, and the account whose project holds the payloads.
    account("barbican", api.ok("POST", "/v1/projects", admin, {"name": "service"}), "service")
    owner = api.ok("POST", "/v1/projects", admin, {"name": "latchkey-payloads"})
    keeper = account("payload-keeper", owner, "member")
    (tmp_path / "barbican").mkdir()
    server = BarbicanServer(
        tmp_path / "barbican", barbican_python, KeystoneAuth(url, "barbican", PASSWORD)
    )
    api.ok(  # keystonemiddleware needs its service type in the token's catalog
        "POST",
        "/v1/services",
        admin,
        {
            "type": "key-manager",
            "name": "Barbican",
            "endpoints": [{"interface": "public", "url": server.url, "region": "r1"}],
        },
    )
    server.start()
    try:
        token = v3_token(url, "payload-keeper", "latchkey-payloads")
        created = requests.post(
            f"{url}/v3/users/{keeper['id']}/application_credentials",
            json={"application_credential": {"name": "latchkey-to-barbican"}},
            headers={"X-Auth-Token": token},
            timeout=30,
        )
        assert created.status_code == 201, created.text
        credential = created.json()["application_credential"]
        store = BarbicanSecretStore(
            server.url,
            auth="keystone",
            keystone_url=url + "/v3",
            application_credential_id=credential["id"],
            application_credential_secret=credential["secret"],
            timeout=10,
        )
        assert store.health() == {"status": "ok", "store": "barbican"}
        ref = store.put("p-ks", "s-ks", 1, b"via a keystone token")
        assert store.get("p-ks", "s-ks", 1, ref) == b"via a keystone token"

        # Its token revoked in Keystone: Barbican answers 401, the store fetches a new one.
        used = store._keystone._session.get_token()
        revoked = requests.delete(
            url + "/v3/auth/tokens",
            headers={"X-Auth-Token": used, "X-Subject-Token": used},
            timeout=30,
        )
        assert revoked.status_code == 204, revoked.text
        assert store.get("p-ks", "s-ks", 1, ref) == b"via a keystone token"
        assert store._keystone._session.get_token() != used

        # Behind Keystone, trusted headers are worth nothing: refused credentials, 503.
        with pytest.raises(SecretStoreUnavailable) as caught:
            barbican_store(server.url).get("p-ks", "s-ks", 1, ref)
        assert "credentials" in caught.value.detail
        store.delete("p-ks", "s-ks")
        assert_missing(Harness(store), "p-ks", "s-ks", 1, ref)
    finally:
        server.stop()


# -- 3. through the HTTP API with secret_store=barbican ----------------------------------


def barbican_settings(home: Path, url: str) -> Any:
    return make_settings(
        home,
        f"sqlite:///{home / 'latchkey.db'}",
        secret_store="barbican",
        barbican_url=url,
        barbican_auth="trusted-headers",
        barbican_project_id=PROJECT,
        barbican_timeout_seconds=3,
    )


@pytest.fixture(scope="session")
def shared_barbican_app(
    barbican: BarbicanServer, tmp_path_factory: pytest.TempPathFactory
) -> Flask:
    return build_app(barbican_settings(tmp_path_factory.mktemp("home-barbican"), barbican.url))


@pytest.fixture
def barbican_app(shared_barbican_app: Flask) -> Iterator[Flask]:
    reset_database(shared_barbican_app)
    yield shared_barbican_app
    with shared_barbican_app.app_context():
        database_of(shared_barbican_app).session.remove()


def secrets_path(project_id: str, *rest: str) -> str:
    return "/".join([f"/v1/projects/{project_id}/secrets", *rest])


def project_admin(api: Api, name: str) -> tuple[str, str]:
    admin = api.admin_token()
    project = api.ok("POST", "/v1/projects", admin, {"name": name})
    user = api.ok("POST", "/v1/users", admin, {"name": f"{name}-admin", "password": PASSWORD})
    api.ok("PUT", f"/v1/projects/{project['id']}/users/{user['id']}/roles/admin", admin)
    return project["id"], api.login(f"{name}-admin", PASSWORD, project=name)


def count(app: Flask, model: Any, **where: Any) -> int:
    with app.app_context():
        value = database_of(app).session.scalar(
            select(func.count()).select_from(model).filter_by(**where)
        )
        database_of(app).session.remove()
        return int(value or 0)


def in_barbican(server: BarbicanServer, project_id: str, secret_id: str) -> list[dict[str, Any]]:
    name = f"latchkey:{project_id}:{secret_id}"
    answer = requests.get(
        f"{server.url}/v1/secrets",
        params={"name": name, "limit": 100},
        headers={**server.headers(), "OpenStack-API-Version": "key-manager 1.1"},
        timeout=5,
    )
    assert answer.status_code == 200
    return [s for s in answer.json()["secrets"] if s["name"] == name]


def problem(response: Any, status: int, code: str) -> dict[str, Any]:
    text = response.get_data(as_text=True)
    assert response.status_code == status, text[:400]
    assert response.mimetype == "application/problem+json"
    body = json.loads(text)
    assert body["code"] == code, body
    return dict(body)


def test_tenant_secrets_through_barbican(barbican_app: Flask, barbican: BarbicanServer) -> None:
    api = Api(barbican_app.test_client())
    pid, token = project_admin(api, "barbicaned")
    created = api.ok("POST", secrets_path(pid), token, {"name": "k8s", "payload": "kube-v1"})
    sid = created["id"]
    assert created["store"] == "barbican" and created["current_version"] == 1
    assert api.ok("GET", secrets_path(pid, sid, "payload"), token)["payload"] == "kube-v1"

    api.ok("PUT", secrets_path(pid, sid, "payload"), token, {"payload": "kube-v2"}, 200)
    current = api.call("GET", secrets_path(pid, sid, "payload"), token)
    assert current.get_json()["payload"] == "kube-v2" and current.get_json()["version"] == 2
    assert current.headers["Cache-Control"] == "no-store"
    old = api.ok("GET", secrets_path(pid, sid, "payload?version=1"), token)
    assert old["payload"] == "kube-v1" and old["version"] == 1

    # Each version is its own Barbican secret; Latchkey keeps their references.
    with barbican_app.app_context():
        refs = [
            v.reference
            for v in database_of(barbican_app).session.scalars(
                select(TenantSecretVersion).filter_by(secret_id=sid).order_by("version")
            )
        ]
        database_of(barbican_app).session.remove()
    stored = in_barbican(barbican, pid, sid)
    assert sorted(refs) == sorted(f"barbican:{s['secret_ref'].rsplit('/', 1)[-1]}" for s in stored)
    assert all(len(s["consumers"]) == 1 for s in stored)

    ready = api.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json()["checks"]["secret_store"] == {"status": "ok", "store": "barbican"}

    api.ok("DELETE", secrets_path(pid, sid), token)
    assert api.call("GET", secrets_path(pid, sid), token).status_code == 404
    assert count(barbican_app, TenantSecretVersion, secret_id=sid) == 0
    assert in_barbican(barbican, pid, sid) == []


def test_barbican_outage_is_503_then_recovers(
    barbican_python: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "barbican").mkdir()
    server = BarbicanServer(tmp_path / "barbican", barbican_python)
    server.start()
    try:
        app = build_app(barbican_settings(tmp_path / "home", server.url))
        reset_database(app)
        api = Api(app.test_client())
        pid, token = project_admin(api, "outage")
        sid = api.ok("POST", secrets_path(pid), token, {"name": "kept", "payload": "v1"})["id"]

        server.stop()
        api.client.allow_5xx = True  # type: ignore[attr-defined]
        try:
            responses = [
                api.call("POST", secrets_path(pid), token, {"name": "new", "payload": "lost"}),
                api.call("PUT", secrets_path(pid, sid, "payload"), token, {"payload": "lost"}),
                api.call("GET", secrets_path(pid, sid, "payload"), token),
                api.call("DELETE", secrets_path(pid, sid), token),
            ]
            ready = api.client.get("/readyz")
        finally:
            api.client.allow_5xx = False  # type: ignore[attr-defined]
        for response in responses:
            body = problem(response, 503, "secret_store_unavailable")
            assert "barbican" in body["detail"] and "lost" not in json.dumps(body)
        assert ready.status_code == 503
        assert ready.get_json()["checks"]["secret_store"]["status"] == "unavailable"
        assert ready.get_json()["checks"]["secret_store"]["store"] == "barbican"
        # Nothing half-written; tokens still issued.
        assert count(app, TenantSecret, name="new") == 0
        assert count(app, TenantSecretVersion, secret_id=sid) == 1
        fresh = api.login("outage-admin", PASSWORD, project="outage")

        server.start()  # same port, same SQLite file; Latchkey is not restarted
        assert api.client.get("/readyz").status_code == 200
        assert api.ok("GET", secrets_path(pid, sid, "payload"), fresh)["payload"] == "v1"
        api.ok("PUT", secrets_path(pid, sid, "payload"), fresh, {"payload": "v2"}, 200)
        assert api.ok("GET", secrets_path(pid, sid, "payload"), fresh)["payload"] == "v2"
        api.ok("POST", secrets_path(pid), fresh, {"name": "new", "payload": "n"})
    finally:
        server.stop()


# -- 4. a store write whose database commit fails: the payload is taken back out ------------


class CommitFault:
    """The application's real store, arming a database fault after each successful put."""

    def __init__(self, store: SecretStore) -> None:
        self.real = store
        self.name = store.name
        self.armed = False
        self.written: list[tuple[str, str, int, str]] = []

    def put(self, project_id: str, secret_id: str, version: int, payload: bytes) -> str:
        reference = self.real.put(project_id, secret_id, version, payload)
        self.written.append((project_id, secret_id, version, reference))
        self.armed = True
        return reference

    def __getattr__(self, name: str) -> Any:  # get, delete, health, delete_version
        return getattr(self.real, name)


def swap_store(app: Flask, store: Any) -> None:
    services = app.extensions["latchkey"]
    object.__setattr__(services, "secret_store", store)  # Services is a frozen dataclass
    services.secrets._store = store


@pytest.fixture
def store_app(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Flask:
    backend = request.param
    if backend == "local":
        app: Flask = request.getfixturevalue("sqlite_app")
        return app
    if backend == "barbican":
        return request.getfixturevalue("barbican_app")  # type: ignore[no-any-return]
    bao: OpenBao = request.getfixturevalue("openbao")
    home = tmp_path_factory.mktemp("home-vault-fault")
    app = build_app(
        make_settings(
            home,
            f"sqlite:///{home / 'latchkey.db'}",
            secret_store="vault",
            vault_addr=bao.addr,
            vault_token=bao.token,
            vault_timeout_seconds=3,
        )
    )
    reset_database(app)
    return app


@pytest.mark.parametrize("store_app", STORES, indirect=True)
def test_a_failed_commit_takes_the_payload_back_out_of_the_store(
    store_app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, api = store_app, Api(store_app.test_client())
    pid, token = project_admin(api, "faulty")
    sid = api.ok("POST", secrets_path(pid), token, {"name": "kept", "payload": "v1"})["id"]
    real = app.extensions["latchkey"].secret_store
    fault = CommitFault(real)
    real_commit = database_of(app).session.commit

    def commit() -> None:
        if fault.armed:
            fault.armed = False
            raise OperationalError("COMMIT", None, ConnectionError("injected: database gone"))
        real_commit()

    swap_store(app, fault)
    monkeypatch.setattr(database_of(app).session, "commit", commit)
    api.client.allow_5xx = True  # type: ignore[attr-defined]
    try:
        create = api.call("POST", secrets_path(pid), token, {"name": "doomed", "payload": "lost-1"})
        update = api.call("PUT", secrets_path(pid, sid, "payload"), token, {"payload": "lost-2"})
    finally:
        api.client.allow_5xx = False  # type: ignore[attr-defined]
        monkeypatch.undo()
        swap_store(app, real)
    for response in (create, update):
        body = problem(response, 503, "database_unavailable")
        assert "lost" not in json.dumps(body)

    # The store accepted both payloads; both were removed again, and no metadata remains.
    assert [(version) for _, _, version, _ in fault.written] == [1, 2]
    with app.app_context():
        for project_id, secret_id, version, reference in fault.written:
            with pytest.raises(SecretPayloadMissing):
                real.get(project_id, secret_id, version, reference)
        database_of(app).session.remove()
    assert count(app, TenantSecret, name="doomed") == 0
    assert count(app, TenantSecretVersion, secret_id=sid) == 1
    # And the secret carries on: the next version and the same name work.
    assert api.ok("GET", secrets_path(pid, sid), token)["current_version"] == 1
    api.ok("PUT", secrets_path(pid, sid, "payload"), token, {"payload": "v2"}, 200)
    assert api.ok("GET", secrets_path(pid, sid, "payload"), token)["payload"] == "v2"
    assert api.ok("GET", secrets_path(pid, sid, "payload?version=1"), token)["payload"] == "v1"
    again = api.ok("POST", secrets_path(pid), token, {"name": "doomed", "payload": "kept now"})
    assert api.ok("GET", secrets_path(pid, again["id"], "payload"), token)["payload"] == "kept now"
