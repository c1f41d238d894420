"""python-openstackclient 10.5.0 against Latchkey's /v3, one test per resource family,
on SQLite and PostgreSQL.

The `openstack` command runs from `.venv-openstack` (scripts/openstack-clients.sh
installs it on first use) with a `clouds.yaml` as real ones are written: the
admin's password, `region_name: RegionOne`, the public interface. The app of
tests/conftest.py (fresh tables and `latchkey bootstrap` per test) is served over
HTTP from this process. The expected answers are Keystone 30's.

To check the tests themselves against a real Keystone, point them at one:
``OSC_TESTS_URL=http://127.0.0.1:5000 OSC_TESTS_PASSWORD=... pytest <this file>``
(for instance the peer `make tempest` starts: tests/openstack/tempest_run.py
``keystone_server``); they then run once, against it.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from werkzeug.serving import make_server

from tests.conftest import ADMIN_PASSWORD, BACKENDS, _app_for, reset_database
from tests.integration.test_keystone_compat import _free_port
from tests.integration.test_openstack_clients import (
    openstack,
    openstack_json,
    openstack_venv,  # noqa: F401 - the session fixture that installs the clients
)

CLOUDS_YAML = """\
clouds:
  latchkey:
    auth:
      auth_url: {url}/v3
      username: admin
      password: {password}
      project_name: admin
      user_domain_id: default
      project_domain_id: default
    region_name: RegionOne
    interface: public
    identity_api_version: 3
"""
PASSWORD = "a-user-password-for-the-cli"


@dataclass
class Cli:
    venv: Path
    home: Path

    def __call__(self, *args: str, ok: bool = True) -> str:
        return openstack(self.venv, self.home, {"OS_CLOUD": "latchkey"}, *args, ok=ok).stdout

    def json(self, *args: str) -> Any:
        return openstack_json(self.venv, self.home, {"OS_CLOUD": "latchkey"}, *args)

    def fails(self, *args: str) -> bool:
        return (
            openstack(self.venv, self.home, {"OS_CLOUD": "latchkey"}, *args, ok=False).returncode
            != 0
        )

    def names(self, *args: str, column: str = "Name") -> list[str]:
        return [row[column] for row in self.json(*args)]


def _serve(app: Flask) -> Iterator[str]:
    port = _free_port()
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()


@pytest.fixture(params=BACKENDS)
def cli(
    request: pytest.FixtureRequest,
    apps: dict[str, Flask],
    tmp_path_factory: pytest.TempPathFactory,
    openstack_venv: Path,  # noqa: F811
    tmp_path: Path,
) -> Iterator[Cli]:
    external = os.environ.get("OSC_TESTS_URL")
    if external:
        if request.param != BACKENDS[0]:
            pytest.skip("OSC_TESTS_URL: one run against that server")
        served: Iterator[str] = iter([external.rstrip("/")])
        password = os.environ["OSC_TESTS_PASSWORD"]
    else:
        app = _app_for(request.param, apps, request, tmp_path_factory)
        reset_database(app)
        served = _serve(app)
        password = ADMIN_PASSWORD
    url = next(served)
    (tmp_path / "clouds.yaml").write_text(CLOUDS_YAML.format(url=url, password=password))
    yield Cli(openstack_venv, tmp_path)
    for _ in served:  # shuts the server down
        pass


def unique(prefix: str) -> str:
    """Names that do not collide when the tests run against one long-lived Keystone."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# -- tokens --------------------------------------------------------------------------------


def test_token_issue(cli: Cli) -> None:
    token = cli.json("token", "issue")
    assert token["id"] and token["expires"]
    assert token["project_id"] == cli.json("project", "show", "admin")["id"]
    assert token["user_id"] == cli.json("user", "show", "admin")["id"]


# -- projects, users, groups, domains ---------------------------------------------------------


def test_project_lifecycle(cli: Cli) -> None:
    name = unique("osc-project")
    created = cli.json("project", "create", name, "--domain", "default", "--description", "one")
    assert created["name"] == name and created["domain_id"] == "default"
    assert created["description"] == "one" and created["enabled"] is True
    assert name in cli.names("project", "list")
    shown = cli.json("project", "show", name)  # by name: a 404 by id, then ?name=
    assert shown["id"] == created["id"]
    cli("project", "set", name, "--description", "two", "--disable", "--tag", "blue")
    shown = cli.json("project", "show", created["id"])
    assert shown["description"] == "two" and shown["enabled"] is False
    assert shown["tags"] == ["blue"]
    cli("project", "delete", created["id"])
    assert name not in cli.names("project", "list")
    assert cli.fails("project", "show", created["id"])


def test_user_lifecycle(cli: Cli) -> None:
    name = unique("osc-user")
    created = cli.json(
        "user", "create", name, "--domain", "default", "--password", PASSWORD,
        "--email", "one@example.org", "--description", "a user",
    )  # fmt: skip
    assert created["name"] == name and created["domain_id"] == "default"
    assert created["enabled"] is True and created["email"] == "one@example.org"
    assert "password" not in created
    assert name in cli.names("user", "list")
    assert cli.json("user", "show", name)["id"] == created["id"]
    cli("user", "set", name, "--email", "two@example.org", "--disable")
    shown = cli.json("user", "show", created["id"])
    assert shown["email"] == "two@example.org" and shown["enabled"] is False
    cli("user", "delete", name)
    assert name not in cli.names("user", "list")


def test_group_membership(cli: Cli) -> None:
    group, user = unique("osc-group"), unique("osc-member")
    created = cli.json("group", "create", group, "--domain", "default", "--description", "g")
    assert created["name"] == group and created["domain_id"] == "default"
    cli("user", "create", user, "--domain", "default", "--password", PASSWORD)
    cli("group", "add", "user", group, user)
    assert " in group " in cli("group", "contains", "user", group, user)
    assert group in cli.names("group", "list")
    assert group in cli.names("group", "list", "--user", user)
    assert user in cli.names("user", "list", "--group", group)
    cli("group", "remove", "user", group, user)
    assert group not in cli.names("group", "list", "--user", user)
    cli("group", "delete", group)
    assert group not in cli.names("group", "list")
    cli("user", "delete", user)


def test_domain_lifecycle(cli: Cli) -> None:
    name = unique("osc-domain")
    created = cli.json("domain", "create", name, "--description", "one")
    assert created["name"] == name and created["enabled"] is True
    assert name in cli.names("domain", "list")
    assert "Default" in cli.names("domain", "list")
    assert cli.json("domain", "show", name)["id"] == created["id"]
    # Keystone deletes only a disabled domain.
    assert cli.fails("domain", "delete", name)
    cli("domain", "set", name, "--description", "two", "--disable")
    shown = cli.json("domain", "show", created["id"])
    assert shown["description"] == "two" and shown["enabled"] is False
    cli("domain", "delete", name)
    assert name not in cli.names("domain", "list")


# -- roles and assignments ----------------------------------------------------------------------


def test_roles_and_assignments(cli: Cli) -> None:
    role, project, user = unique("osc-role"), unique("osc-rproject"), unique("osc-ruser")
    created = cli.json("role", "create", role)
    assert created["name"] == role
    assert role in cli.names("role", "list")
    assert {"admin", "member", "reader"} <= set(cli.names("role", "list"))
    cli("project", "create", project, "--domain", "default")
    cli("user", "create", user, "--domain", "default", "--password", PASSWORD)
    cli("role", "add", "--project", project, "--user", user, role)
    rows = cli.json("role", "assignment", "list", "--user", user, "--names")
    assert [(r["Role"], r["User"], r["Project"]) for r in rows] == [
        (role, f"{user}@Default", f"{project}@Default")
    ]
    by_project = cli.json("role", "assignment", "list", "--project", project, "--names")
    assert (role, f"{user}@Default") in [(r["Role"], r["User"]) for r in by_project]
    cli("role", "add", "--domain", "default", "--user", user, role)
    on_domain = cli.json("role", "assignment", "list", "--user", user, "--domain", "default")
    assert len(on_domain) == 1 and on_domain[0]["Domain"] == "default"
    cli("role", "remove", "--domain", "default", "--user", user, role)
    cli("role", "remove", "--project", project, "--user", user, role)
    assert cli.json("role", "assignment", "list", "--user", user) == []
    cli("role", "delete", role)
    assert role not in cli.names("role", "list")
    cli("user", "delete", user)
    cli("project", "delete", project)


# -- catalog: regions, services, endpoints -----------------------------------------------------


def test_region_lifecycle(cli: Cli) -> None:
    region = unique("OscRegion")
    created = cli.json("region", "create", region, "--description", "a region")
    assert created["region"] == region and created["description"] == "a region"
    assert region in cli.names("region", "list", column="Region")
    assert "RegionOne" in cli.names("region", "list", column="Region")
    cli("region", "delete", region)
    assert region not in cli.names("region", "list", column="Region")


def test_service_endpoint_and_catalog(cli: Cli) -> None:
    name, kind = unique("osc-service"), unique("osc-type")
    service = cli.json("service", "create", "--name", name, "--description", "d", kind)
    assert service["name"] == name and service["type"] == kind and service["enabled"] is True
    assert name in cli.names("service", "list")
    url = "http://127.0.0.1:9/" + name
    endpoint = cli.json("endpoint", "create", "--region", "RegionOne", name, "public", url)
    assert endpoint["url"] == url and endpoint["interface"] == "public"
    assert endpoint["region"] == "RegionOne" and endpoint["service_id"] == service["id"]
    listed = cli.json("endpoint", "list", "--service", name)
    assert [row["ID"] for row in listed] == [endpoint["id"]]
    # A new token's catalog holds the new service, and identity in RegionOne.
    catalog = {row["Type"]: row for row in cli.json("catalog", "list")}
    assert kind in catalog and "identity" in catalog
    assert "RegionOne" in str(catalog["identity"]["Endpoints"])
    cli("endpoint", "delete", endpoint["id"])
    assert cli.json("endpoint", "list", "--service", name) == []
    cli("service", "delete", name)
    assert name not in cli.names("service", "list")


# -- application credentials, access rules, trusts, EC2 credentials ------------------------------


def test_application_credentials_and_access_rules(cli: Cli) -> None:
    name = unique("osc-appcred")
    rules = '[{"service": "compute", "method": "GET", "path": "/v2.1/servers"}]'
    created = cli.json("application", "credential", "create", name, "--access-rules", rules)
    assert created["Name"] == name and created["Secret"]
    assert name in cli.names("application", "credential", "list")
    listed = cli.json("access", "rule", "list")
    assert "/v2.1/servers" in [row["Path"] for row in listed]
    cli("application", "credential", "delete", name)
    assert name not in cli.names("application", "credential", "list")


def test_trust_lifecycle(cli: Cli) -> None:
    trustee = unique("osc-trustee")
    cli("user", "create", trustee, "--domain", "default", "--password", PASSWORD)
    trust = cli.json("trust", "create", "--project", "admin", "--role", "member", "admin", trustee)
    assert trust["project_id"] == cli.json("project", "show", "admin")["id"]
    assert trust["trustee_user_id"] == cli.json("user", "show", trustee)["id"]
    assert trust["is_impersonation"] is False
    assert trust["id"] in cli.names("trust", "list", column="ID")
    assert cli.json("trust", "show", trust["id"])["id"] == trust["id"]
    cli("trust", "delete", trust["id"])
    assert trust["id"] not in cli.names("trust", "list", column="ID")
    cli("user", "delete", trustee)


def test_ec2_credentials(cli: Cli) -> None:
    created = cli.json("ec2", "credentials", "create")
    assert created["access"] and created["secret"]
    assert created["project_id"] == cli.json("project", "show", "admin")["id"]
    assert created["access"] in cli.names("ec2", "credentials", "list", column="Access")
    cli("ec2", "credentials", "delete", created["access"])
    assert created["access"] not in cli.names("ec2", "credentials", "list", column="Access")
