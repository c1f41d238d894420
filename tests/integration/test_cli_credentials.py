"""`latchkey app-cred …` and `latchkey app-account …` end to end, on SQLite in a fresh home.

The commands act with a token from ``LATCHKEY_TOKEN`` (issued by ``latchkey
token issue``); the secrets they print are checked against the HTTP API of
an application built on the same home, and the tokens obtained with them by
``latchkey token verify``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from latchkey.app import create_app
from latchkey.frontdoors.cli.main import main
from latchkey.settings import Settings

PASSWORD = "bootstrap-password-1"
BASE_ENV = {
    "LATCHKEY_PASSWORD_HASH_TIME_COST": "1",
    "LATCHKEY_PASSWORD_HASH_MEMORY_KIB": "1024",
    "LATCHKEY_LOG_LEVEL": "WARNING",
}


def run(home: Path, *args: str, token: str | None = None, **env: str) -> Result:
    environ = {"LATCHKEY_HOME": str(home), **BASE_ENV, "LATCHKEY_TOKEN": token or "", **env}
    return CliRunner().invoke(main, list(args), env=environ, catch_exceptions=False)


def ok(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    return json.loads(result.output)


def refused(result: Result, *expected: str) -> None:
    """A clean failure: non-zero, a readable message, no traceback."""
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    assert result.output.startswith(("Error: ", "Usage: ")), result.output
    for text in expected:
        assert text in result.output, result.output


@dataclass
class Deployment:
    home: Path
    client: FlaskClient  # the HTTP API on the same home
    admin: str  # cloud admin token from `latchkey token issue`

    def cli(self, *args: str, token: str | None = None, **env: str) -> Result:
        return run(self.home, *args, token=self.admin if token is None else token, **env)

    def authenticate(self, credential_id: str, secret: str) -> TestResponse:
        body = {"auth": {"application_credential": {"id": credential_id, "secret": secret}}}
        return self.client.post("/v1/auth/tokens", json=body)

    def token_with(self, credential_id: str, secret: str) -> dict[str, Any]:
        response = self.authenticate(credential_id, secret)
        assert response.status_code == 201, response.get_json()
        body: dict[str, Any] = response.get_json()
        return body

    def refused_login(self, credential_id: str, secret: str) -> None:
        response = self.authenticate(credential_id, secret)
        assert response.status_code == 401, response.get_json()
        assert response.get_json()["code"] == "authentication_failed"

    def api(self, method: str, path: str, body: Any = None) -> Any:
        headers = {"Authorization": f"Bearer {self.admin}"}
        response = self.client.open(path, method=method, json=body, headers=headers)
        assert response.status_code < 300, (method, path, response.get_json())
        return response.get_json(silent=True)


@pytest.fixture
def deployment(tmp_path: Path) -> Deployment:
    home = tmp_path / "home"
    assert run(home, "db", "upgrade").exit_code == 0
    assert run(home, "bootstrap", LATCHKEY_ADMIN_PASSWORD=PASSWORD).exit_code == 0
    issued = run(
        home, "token", "issue", "--user", "admin", "--project", "admin", LATCHKEY_PASSWORD=PASSWORD
    )
    assert issued.exit_code == 0, issued.output
    app = create_app(Settings.load(environ={"LATCHKEY_HOME": str(home), **BASE_ENV}))
    return Deployment(home=home, client=app.test_client(), admin=issued.output.strip())


def test_app_cred_create_list_show_rotate_delete(deployment: Deployment) -> None:
    d = deployment
    created = ok(d.cli("app-cred", "create", "--name", "ci", "--project", "admin"))
    cred_id, first = created["id"], created["secret"]
    assert first.startswith("lkac_") and created["name"] == "ci"
    assert created["roles"] == ["admin", "member", "reader"]  # all the owner's, implied expanded
    assert created["unrestricted"] is False
    assert [s["id"] for s in created["secrets"]] == [created["secret_id"]]

    # The printed secret authenticates; `latchkey token verify` accepts the token.
    token = d.token_with(cred_id, first)
    assert token["methods"] == ["application_credential"]
    claims = ok(run(d.home, "token", "verify", token["token"]))
    assert claims["application_credential"]["id"] == cred_id
    assert claims["application_credential"]["restricted"] is True
    assert claims["project"]["name"] == "admin"

    listed = d.cli("app-cred", "list")
    assert [c["id"] for c in ok(listed)] == [cred_id]
    shown = d.cli("app-cred", "show", cred_id)
    assert ok(shown)["name"] == "ci" and len(ok(shown)["secrets"]) == 1
    for output in (listed.output, shown.output):
        assert first not in output and '"secret":' not in output

    # Rotation prints a second secret; both work until one is deleted.
    rotated = ok(d.cli("app-cred", "rotate", cred_id))
    second = rotated["secret"]
    assert second.startswith("lkac_") and second != first
    d.token_with(cred_id, first)
    d.token_with(cred_id, second)
    assert {s["id"] for s in ok(d.cli("app-cred", "show", cred_id))["secrets"]} == {
        created["secret_id"],
        rotated["id"],
    }
    deleted = d.cli("app-cred", "delete", cred_id, "--secret", created["secret_id"])
    assert deleted.exit_code == 0 and deleted.output.strip() == "deleted", deleted.output
    d.refused_login(cred_id, first)
    d.token_with(cred_id, second)
    # The token obtained with the deleted secret is revoked.
    refused(run(d.home, "token", "verify", token["token"]))
    refused(d.cli("app-cred", "delete", cred_id, "--secret", rotated["id"]), "(last_secret)")

    deleted = d.cli("app-cred", "delete", cred_id)
    assert deleted.exit_code == 0 and deleted.output.strip() == "deleted", deleted.output
    d.refused_login(cred_id, second)
    refused(d.cli("app-cred", "show", cred_id), "application_credential_not_found")
    assert ok(d.cli("app-cred", "list")) == []


def test_app_cred_create_options(deployment: Deployment) -> None:
    d = deployment
    created = ok(
        d.cli(
            "app-cred",
            "create",
            "--name",
            "scoped",
            "--project",
            "admin",
            "--role",
            "reader",
            "--expires-at",
            "2099-01-01T00:00:00Z",
            "--access-rule",
            "identity:GET:/v1/users/*",
            "--allowed-cidr",
            "127.0.0.0/8",
            "--description",
            "read only",
            "--unrestricted",
        )
    )
    assert created["roles"] == ["reader"]
    assert created["expires_at"].startswith("2099-01-01T00:00:00")
    assert created["access_rules"] == [
        {"service": "identity", "method": "GET", "path": "/v1/users/*"}
    ]
    assert created["allowed_cidrs"] == ["127.0.0.0/8"]
    assert created["description"] == "read only" and created["unrestricted"] is True
    token = d.token_with(created["id"], created["secret"])
    assert token["roles"] == ["reader"]
    assert token["expires_at"] < "2099"
    rotated = ok(d.cli("app-cred", "rotate", created["id"], "--expires-at", "2098-01-01T00:00:00Z"))
    assert rotated["expires_at"].startswith("2098-01-01T00:00:00")
    assert d.token_with(created["id"], rotated["secret"])["roles"] == ["reader"]


def test_app_account_create_list_delete(deployment: Deployment) -> None:
    d = deployment
    project = d.api("POST", "/v1/projects", {"name": "web"})["id"]
    account = ok(d.cli("app-account", "create", "--name", "deploy-bot", "--project", "web"))
    assert account["name"] == "deploy-bot" and account["owner_project_id"] == project
    listed = ok(d.cli("app-account", "list", "--project", "web"))
    assert [(a["id"], a["name"]) for a in listed] == [(account["id"], "deploy-bot")]
    assert ok(d.cli("app-account", "list", "--project", project)) == listed  # by id too

    # The account needs a role on its project before it can hold a credential.
    refused(
        d.cli("app-cred", "create", "--user", account["id"], "--name", "x", "--project", "web"),
        "(no_roles_on_project)",
    )
    d.api("PUT", f"/v1/projects/{project}/users/{account['id']}/roles/member")
    created = ok(
        d.cli("app-cred", "create", "--user", account["id"], "--name", "deploy", "--project", "web")
    )
    assert created["user_id"] == account["id"]
    assert created["roles"] == ["member", "reader"]
    token = d.token_with(created["id"], created["secret"])
    assert token["user"]["id"] == account["id"]
    assert token["project"]["id"] == project
    assert [c["id"] for c in ok(d.cli("app-cred", "list", "--user", account["id"]))] == [
        created["id"]
    ]

    deleted = d.cli("app-account", "delete", account["id"])
    assert deleted.exit_code == 0 and deleted.output.strip() == "deleted", deleted.output
    d.refused_login(created["id"], created["secret"])
    refused(run(d.home, "token", "verify", token["token"]))
    assert ok(d.cli("app-account", "list", "--project", "web")) == []


def test_errors_are_readable(deployment: Deployment, tmp_path: Path) -> None:
    d = deployment
    refused(d.cli("app-cred", "list", token=""), "LATCHKEY_TOKEN or --token-file")
    refused(d.cli("app-account", "list", "--project", "admin", token=""), "LATCHKEY_TOKEN")
    refused(d.cli("app-cred", "list", token="not-a-token"))
    forged = d.admin[:-4] + ("AAAA" if not d.admin.endswith("AAAA") else "BBBB")
    refused(d.cli("app-cred", "create", "--name", "x", "--project", "admin", token=forged))
    missing = tmp_path / "no-such-file"
    refused(d.cli("app-cred", "list", "--token-file", str(missing), token=""), "cannot read")
    token_file = tmp_path / "token"
    token_file.write_text(d.admin + "\n")
    assert ok(d.cli("app-cred", "list", "--token-file", str(token_file), token="")) == []

    for command in ("show", "rotate", "delete"):
        refused(
            d.cli("app-cred", command, "no-such-credential"), "application_credential_not_found"
        )
    created = ok(d.cli("app-cred", "create", "--name", "ci", "--project", "admin"))
    refused(
        d.cli("app-cred", "delete", created["id"], "--secret", "nope"),
        "(credential_secret_not_found)",
    )
    refused(
        d.cli("app-cred", "create", "--name", "ci", "--project", "admin"),
        "(application_credential_name_taken)",
    )
    refused(d.cli("app-cred", "create", "--name", "y", "--project", "nowhere"), "no project")
    refused(
        d.cli("app-cred", "create", "--name", "y", "--project", "admin", "--role", "service"),
        "(role_not_held)",
    )
    refused(
        d.cli("app-cred", "create", "--name", "y", "--project", "admin", "--access-rule", "bad"),
        "service:METHOD:/path",
    )
    refused(
        d.cli(
            "app-cred",
            "create",
            "--name",
            "y",
            "--project",
            "admin",
            "--expires-at",
            "2000-01-01T00:00:00Z",
        ),
        "(expires_at_in_past)",
    )
    refused(d.cli("app-account", "delete", "no-such-user"), "not_found")
    refused(d.cli("app-account", "create", "--name", "z", "--project", "nowhere"), "no project")

    # A restricted credential's token may not mint credentials, from the CLI either.
    restricted = d.token_with(created["id"], created["secret"])["token"]
    refused(
        d.cli("app-cred", "create", "--name", "minted", "--project", "admin", token=restricted),
        "(application_credential_restricted)",
    )
    refused(
        d.cli("app-cred", "rotate", created["id"], token=restricted),
        "(application_credential_restricted)",
    )
    assert [c["name"] for c in ok(d.cli("app-cred", "list", token=restricted))] == ["ci"]
    # No secret is ever echoed in an error.
    result = d.cli("app-cred", "list", token=created["secret"])
    refused(result)
    assert created["secret"] not in result.output
