"""Real OpenStack clients against a served Latchkey.

keystonemiddleware's ``auth_token`` (in front of tests/openstack/protected_app.py)
and python-openstackclient's ``openstack`` command run as subprocesses from
``.venv-openstack``, which scripts/openstack-clients.sh installs from the
package index on first use (pinned; a stamp file makes later runs instant).
Latchkey itself is served over HTTP from this process on SQLite.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from joserfc import jwt
from joserfc.jwk import ECKey
from werkzeug.serving import make_server

from tests.conftest import ADMIN_PASSWORD, Api, build_app, make_settings, reset_database
from tests.integration.test_keystone_compat import _free_port, keystone_password_body

ROOT = Path(__file__).resolve().parents[2]
INSTALL_SCRIPT = ROOT / "scripts" / "openstack-clients.sh"
PROTECTED_APP = ROOT / "tests" / "openstack" / "protected_app.py"
SERVICE_TYPE = "objects"
SERVICE_USER = "objects"
SERVICE_PASSWORD = "objects-service-password-for-tests"
SUBJECT = "X-Subject-Token"

# The [keystone_authtoken] section docs/integrating.md shows (token_cache_time
# aside: the tests turn the cache off so that a revocation shows at once).
AUTHTOKEN_CONFIG = """\
[keystone_authtoken]
www_authenticate_uri = {url}/v3
auth_url = {url}/v3
auth_type = password
username = {username}
password = {password}
user_domain_id = default
project_name = service
project_domain_id = default
interface = public
service_type = {service_type}
token_cache_time = -1
"""


@dataclass
class Served:
    url: str
    app: Flask
    api: Api
    admin_token: str
    admin_project_id: str
    admin_user_id: str


# -- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def openstack_venv() -> Path:
    """The clients' own virtual environment, installed on first use (no stdin needed)."""
    result = subprocess.run(
        [shutil.which("bash") or "/bin/bash", str(INSTALL_SCRIPT)],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        # The interpreter Latchkey's venv was made from (3.11/3.12), not the venv's.
        env={**os.environ, "PYTHON": os.environ.get("PYTHON") or sys.base_prefix + "/bin/python3"},
        timeout=900,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"{INSTALL_SCRIPT} failed:\n{result.stderr[-4000:]}")
    return Path(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def latchkey(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("openstack-latchkey")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    app = build_app(make_settings(tmp / "home", f"sqlite:///{tmp / 'lk.db'}", issuer=url))
    reset_database(app)
    api = Api(app.test_client())
    admin = api.admin_token()
    # The relying service's own account, as an OpenStack deployment has one per service.
    project = api.ok("POST", "/v1/projects", admin, {"name": "service"})
    user = api.ok("POST", "/v1/users", admin, {"name": SERVICE_USER, "password": SERVICE_PASSWORD})
    api.ok("PUT", f"/v1/projects/{project['id']}/users/{user['id']}/roles/service", admin)
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    issued = requests.post(url + "/v3/auth/tokens", json=keystone_password_body(), timeout=30)
    assert issued.status_code == 201, issued.text
    token = issued.json()["token"]
    yield Served(
        url=url,
        app=app,
        api=api,
        admin_token=issued.headers[SUBJECT],
        admin_project_id=token["project"]["id"],
        admin_user_id=token["user"]["id"],
    )
    server.shutdown()


@pytest.fixture(scope="module")
def protected(
    openstack_venv: Path, latchkey: Served, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """tests/openstack/protected_app.py behind auth_token, configured against Latchkey."""
    tmp = tmp_path_factory.mktemp("protected-app")
    config = tmp / "service.conf"
    config.write_text(
        AUTHTOKEN_CONFIG.format(
            url=latchkey.url,
            username=SERVICE_USER,
            password=SERVICE_PASSWORD,
            service_type=SERVICE_TYPE,
        )
    )
    log = (tmp / "stderr.log").open("w+")
    process = subprocess.Popen(
        [str(openstack_venv / "bin" / "python"), str(PROTECTED_APP), str(config)],
        stdout=subprocess.PIPE,
        stderr=log,
        stdin=subprocess.DEVNULL,
        text=True,
        cwd=tmp,
        env=_client_env(tmp),
    )
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], 60)
        line = process.stdout.readline() if ready else ""
        if not line.startswith("listening "):
            log.seek(0)
            pytest.fail(f"protected app did not start: {line!r}\n{log.read()[-4000:]}")
        url = f"http://127.0.0.1:{int(line.split()[1])}"
        # Registered as an OpenStack deployment registers a service and its endpoint;
        # keystonemiddleware needs its service_type in the token's catalog.
        latchkey.api.ok(
            "POST",
            "/v1/services",
            latchkey.api.admin_token(),
            {
                "type": SERVICE_TYPE,
                "name": "Object store",
                "endpoints": [{"interface": "public", "url": url, "region": "r1"}],
                "actions": ["objects:thing:read"],
                "resource_types": {"objects:thing": {"attributes": {}}},
            },
        )
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


def _client_env(home: Path, **os_vars: str) -> dict[str, str]:
    """A clean environment: no OS_* or clouds.yaml from the machine running the tests."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8"}
    env.update(os_vars)
    return env


# -- helpers --------------------------------------------------------------------------------


def v3_token(latchkey: Served, body: dict[str, Any] | None = None) -> str:
    response = requests.post(
        latchkey.url + "/v3/auth/tokens", json=body or keystone_password_body(), timeout=30
    )
    assert response.status_code == 201, response.text
    return response.headers[SUBJECT]


def v3_credential(latchkey: Served, name: str, **fields: Any) -> dict[str, Any]:
    response = requests.post(
        f"{latchkey.url}/v3/users/{latchkey.admin_user_id}/application_credentials",
        json={"application_credential": {"name": name, **fields}},
        headers={"X-Auth-Token": latchkey.admin_token},
        timeout=30,
    )
    assert response.status_code == 201, response.text
    credential: dict[str, Any] = response.json()["application_credential"]
    return credential


def credential_token(latchkey: Served, credential: dict[str, Any]) -> str:
    body = {
        "auth": {
            "identity": {
                "methods": ["application_credential"],
                "application_credential": {
                    "id": credential["id"],
                    "secret": credential["secret"],
                },
            }
        }
    }
    return v3_token(latchkey, body)


def call(protected: str, token: str | None, method: str = "GET", path: str = "/v1/things/a"):
    headers = {"X-Auth-Token": token} if token else {}
    return requests.request(method, protected + path, headers=headers, timeout=30)


def forge(token: str) -> str:
    """The same claims and key id, signed with a key Latchkey never issued."""
    header_b64, payload_b64, _ = token.split(".")
    header = json.loads(base64.urlsafe_b64decode(header_b64 + "=" * (-len(header_b64) % 4)))
    claims = json.loads(base64.urlsafe_b64decode(payload_b64 + "=" * (-len(payload_b64) % 4)))
    return jwt.encode(header, claims, ECKey.generate_key("P-256"))


# -- keystonemiddleware auth_token -----------------------------------------------------------


def test_auth_token_accepts_latchkey_tokens(protected: str, latchkey: Served) -> None:
    for token in (v3_token(latchkey), latchkey.api.admin_token()):  # /v3 and /v1 alike
        response = call(protected, token)
        assert response.status_code == 200, response.text
        seen = response.json()
        assert seen["identity_status"] == "Confirmed"
        assert seen["user_id"] == latchkey.admin_user_id
        assert seen["project_id"] == latchkey.admin_project_id
        assert "admin" in seen["roles"].split(",")


def test_auth_token_rejects_missing_forged_and_revoked(protected: str, latchkey: Served) -> None:
    missing = call(protected, None)
    assert missing.status_code == 401
    assert "Keystone uri=" in missing.headers["WWW-Authenticate"]
    assert call(protected, "not-a-token").status_code == 401
    token = v3_token(latchkey)
    assert call(protected, forge(token)).status_code == 401
    tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    assert call(protected, tampered).status_code == 401

    assert call(protected, token).status_code == 200
    revoked = requests.delete(
        latchkey.url + "/v3/auth/tokens",
        headers={"X-Auth-Token": latchkey.admin_token, SUBJECT: token},
        timeout=30,
    )
    assert revoked.status_code == 204
    assert call(protected, token).status_code == 401


def test_auth_token_enforces_access_rules(protected: str, latchkey: Served) -> None:
    rules = [
        {"service": SERVICE_TYPE, "method": "GET", "path": "/v1/things/*"},
        {"service": SERVICE_TYPE, "method": "PUT", "path": "/v1/things/{name}/tags/**"},
        {"service": "compute", "method": "DELETE", "path": "/v1/things/*"},
    ]
    credential = v3_credential(latchkey, "middleware-rules", access_rules=rules)
    token = credential_token(latchkey, credential)
    assert call(protected, token, "GET", "/v1/things/a").status_code == 200
    assert call(protected, token, "PUT", "/v1/things/a/tags/x/y").status_code == 200
    assert call(protected, token, "GET", "/v1/things/a/b").status_code == 401
    assert call(protected, token, "GET", "/v1/other").status_code == 401
    # A rule for another service type grants nothing here.
    assert call(protected, token, "DELETE", "/v1/things/a").status_code == 401

    unruled = credential_token(latchkey, v3_credential(latchkey, "middleware-open"))
    assert call(protected, unruled, "DELETE", "/v1/things/a").status_code == 200
    # Deleting the credential revokes its tokens.
    deleted = requests.delete(
        f"{latchkey.url}/v3/users/{latchkey.admin_user_id}/application_credentials/"
        f"{credential['id']}",
        headers={"X-Auth-Token": latchkey.admin_token},
        timeout=30,
    )
    assert deleted.status_code == 204
    assert call(protected, token, "GET", "/v1/things/a").status_code == 401


# -- python-openstackclient ----------------------------------------------------------------


def openstack(
    venv: Path, home: Path, env: dict[str, str], *args: str, ok: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(venv / "bin" / "openstack"), *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        cwd=home,
        env=_client_env(home, **env),
        timeout=120,
        check=False,
    )
    if ok:
        assert result.returncode == 0, (args, result.stdout, result.stderr[-3000:])
    return result


def openstack_json(venv: Path, home: Path, env: dict[str, str], *args: str) -> Any:
    return json.loads(openstack(venv, home, env, *args, "-f", "json").stdout)


def password_env(latchkey: Served) -> dict[str, str]:
    return {
        "OS_AUTH_TYPE": "password",
        "OS_AUTH_URL": latchkey.url + "/v3",
        "OS_IDENTITY_API_VERSION": "3",
        "OS_INTERFACE": "public",
        "OS_USERNAME": "admin",
        "OS_PASSWORD": ADMIN_PASSWORD,
        "OS_USER_DOMAIN_ID": "default",
        "OS_PROJECT_NAME": "admin",
        "OS_PROJECT_DOMAIN_ID": "default",
    }


def credential_env(latchkey: Served, credential_id: str, secret: str) -> dict[str, str]:
    return {
        "OS_AUTH_TYPE": "v3applicationcredential",
        "OS_AUTH_URL": latchkey.url + "/v3",
        "OS_IDENTITY_API_VERSION": "3",
        "OS_INTERFACE": "public",
        "OS_APPLICATION_CREDENTIAL_ID": credential_id,
        "OS_APPLICATION_CREDENTIAL_SECRET": secret,
    }


def test_openstack_application_credential_lifecycle(
    openstack_venv: Path, latchkey: Served, tmp_path: Path
) -> None:
    run = (openstack_venv, tmp_path, password_env(latchkey))
    created = openstack_json(
        *run, "application", "credential", "create", "cli", "--description", "from the CLI"
    )
    assert created["Name"] == "cli" and created["Secret"]
    assert created["Project ID"] == latchkey.admin_project_id
    # No --role: every role the caller holds on the project, as in Keystone.
    assert {"admin", "member", "reader"} <= {role["name"] for role in created["Roles"]}

    listed = openstack_json(*run, "application", "credential", "list")
    assert "cli" in [row["Name"] for row in listed]
    shown = openstack_json(*run, "application", "credential", "show", "cli")  # by name
    assert shown["ID"] == created["ID"] and shown["Description"] == "from the CLI"
    assert "Secret" not in shown

    as_credential = (
        openstack_venv,
        tmp_path,
        credential_env(latchkey, created["ID"], created["Secret"]),
    )
    token = openstack_json(*as_credential, "token", "issue")
    assert token["project_id"] == latchkey.admin_project_id
    assert token["user_id"] == latchkey.admin_user_id
    validated = requests.get(
        latchkey.url + "/v3/auth/tokens",
        headers={"X-Auth-Token": latchkey.admin_token, SUBJECT: token["id"]},
        timeout=30,
    )
    assert validated.json()["token"]["application_credential"]["id"] == created["ID"]
    openstack(*run, "token", "revoke", token["id"])
    gone = requests.get(
        latchkey.url + "/v3/auth/tokens",
        headers={"X-Auth-Token": latchkey.admin_token, SUBJECT: token["id"]},
        timeout=30,
    )
    assert gone.status_code == 404

    openstack(*run, "application", "credential", "delete", "cli")  # by name
    listed = openstack_json(*run, "application", "credential", "list")
    assert "cli" not in [row["Name"] for row in listed]
    refused = openstack(*as_credential, "token", "issue", ok=False)
    assert refused.returncode != 0


def test_openstack_access_rules(
    openstack_venv: Path, latchkey: Served, protected: str, tmp_path: Path
) -> None:
    run = (openstack_venv, tmp_path, password_env(latchkey))
    rules = [{"service": SERVICE_TYPE, "method": "GET", "path": "/v1/things/**"}]
    created = openstack_json(
        *run,
        "application",
        "credential",
        "create",
        "cli-rules",
        "--role",
        "member",
        "--access-rules",
        json.dumps(rules),
    )
    assert [role["name"] for role in created["Roles"]] == ["member", "reader"]
    (rule,) = created["Access Rules"]
    assert {k: rule[k] for k in ("service", "method", "path")} == rules[0]
    listed = openstack_json(*run, "access", "rule", "list")
    assert rule["id"] in [row["ID"] for row in listed]
    shown = openstack_json(*run, "access", "rule", "show", rule["id"])
    assert shown["Path"] == "/v1/things/**"

    token = openstack_json(
        openstack_venv,
        tmp_path,
        credential_env(latchkey, created["ID"], created["Secret"]),
        "token",
        "issue",
    )["id"]
    seen = call(protected, token, "GET", "/v1/things/a/b")
    assert seen.status_code == 200 and seen.json()["roles"].split(",")[0] in ("member", "reader")
    assert "admin" not in seen.json()["roles"].split(",")
    assert call(protected, token, "POST", "/v1/things/a").status_code == 401

    # Keystone refuses to delete a rule a credential still uses (403)...
    in_use = openstack(*run, "access", "rule", "delete", rule["id"], ok=False)
    assert in_use.returncode != 0 and "403" in in_use.stderr + in_use.stdout
    openstack(*run, "application", "credential", "delete", "cli-rules")
    # ...and, as in Keystone, the rule outlives the credential until deleted.
    openstack(*run, "access", "rule", "delete", rule["id"])
    gone = openstack(*run, "access", "rule", "delete", rule["id"], ok=False)
    assert gone.returncode != 0 and "Could not find access rule" in gone.stderr + gone.stdout
