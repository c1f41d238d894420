"""The Keystone v3 subset: wire shapes with the test client, and keystoneauth1 over HTTP.

keystonemiddleware and python-openstackclient run in their own virtual environment:
tests/integration/test_openstack_clients.py.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from keystoneauth1 import loading
from keystoneauth1 import session as ks_session
from werkzeug.serving import make_server
from werkzeug.test import TestResponse

from tests.conftest import ADMIN_PASSWORD, build_app, make_settings, reset_database

SUBJECT = "X-Subject-Token"


def keystone_password_body(project: str | None = "admin") -> dict[str, Any]:
    body: dict[str, Any] = {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {
                        "name": "admin",
                        "domain": {"id": "default"},
                        "password": ADMIN_PASSWORD,
                    }
                },
            }
        }
    }
    if project:
        body["auth"]["scope"] = {"project": {"name": project, "domain": {"id": "default"}}}
    return body


def issue(client: FlaskClient, body: dict[str, Any] | None = None) -> TestResponse:
    response = client.post("/v3/auth/tokens", json=body or keystone_password_body())
    assert response.status_code == 201, response.get_json()
    return response


def admin_token(client: FlaskClient) -> tuple[str, dict[str, Any]]:
    response = issue(client)
    return response.headers[SUBJECT], response.get_json()["token"]


def create_credential(
    client: FlaskClient, token: str, user_id: str, **fields: Any
) -> dict[str, Any]:
    response = client.post(
        f"/v3/users/{user_id}/application_credentials",
        json={"application_credential": {"name": "ci", **fields}},
        headers={"X-Auth-Token": token},
    )
    assert response.status_code == 201, response.get_json()
    credential: dict[str, Any] = response.get_json()["application_credential"]
    return credential


# -- wire shapes (both backends) -----------------------------------------------------------


def test_version_discovery(client: FlaskClient) -> None:
    root = client.get("/")
    assert root.status_code == 300
    (value,) = root.get_json()["versions"]["values"]
    assert value["id"] == "v3.14" and value["status"] == "stable"
    assert value["links"][0]["href"].endswith("/v3/")
    assert value["media-types"]
    for path in ("/v3", "/v3/"):
        response = client.get(path)
        assert response.status_code == 200
        assert response.get_json()["version"]["id"] == "v3.14"
    # The native API is untouched.
    assert client.get("/v1/openapi.json").status_code == 200


def test_password_token_shape(client: FlaskClient) -> None:
    response = issue(client)
    assert response.headers[SUBJECT].count(".") == 2
    assert "no-store" in response.headers["Cache-Control"]
    token = response.get_json()["token"]
    assert token["methods"] == ["password"]
    assert token["user"]["name"] == "admin"
    assert token["user"]["domain"] == {"id": "default", "name": token["user"]["domain"]["name"]}
    assert token["project"]["name"] == "admin"
    assert set(token["project"]["domain"]) == {"id", "name"}
    assert token["roles"] and all(set(r) == {"id", "name"} for r in token["roles"])
    assert len(token["audit_ids"]) == 1
    assert token["expires_at"].endswith("Z") and token["issued_at"].endswith("Z")
    identity = [entry for entry in token["catalog"] if entry["type"] == "identity"]
    assert identity and all(e["url"].endswith("/v3") for e in identity[0]["endpoints"])
    assert {e["interface"] for e in identity[0]["endpoints"]} >= {"public"}


def test_user_by_id_and_unscoped(client: FlaskClient) -> None:
    _, token = admin_token(client)
    body = keystone_password_body(project=None)
    body["auth"]["identity"]["password"]["user"] = {
        "id": token["user"]["id"],
        "password": ADMIN_PASSWORD,
    }
    unscoped = issue(client, body).get_json()["token"]
    assert "project" not in unscoped and "catalog" not in unscoped
    assert unscoped["user"]["id"] == token["user"]["id"]


def test_user_domain_by_name_and_project_by_id(client: FlaskClient) -> None:
    _, token = admin_token(client)
    body = keystone_password_body(project=None)
    body["auth"]["identity"]["password"]["user"]["domain"] = {
        "name": token["user"]["domain"]["name"]
    }
    body["auth"]["scope"] = {"project": {"id": token["project"]["id"]}}
    scoped = issue(client, body).get_json()["token"]
    assert scoped["project"]["id"] == token["project"]["id"]
    domain = keystone_password_body(project=None)
    domain["auth"]["scope"] = {"domain": {"id": "default"}}
    assert issue(client, domain).get_json()["token"]["domain"]["id"] == "default"


def test_bad_requests_are_keystone_errors(client: FlaskClient) -> None:
    wrong = keystone_password_body()
    wrong["auth"]["identity"]["password"]["user"]["password"] = "not-the-password"
    response = client.post("/v3/auth/tokens", json=wrong)
    assert response.status_code == 401
    error = response.get_json()["error"]
    assert error["code"] == 401 and error["title"] == "Unauthorized" and error["message"]
    for body in (
        {},
        {"auth": []},
        {"auth": {"identity": {"methods": ["password"]}}},
        {"auth": {"identity": {"methods": ["password"], "password": {"user": "x"}}}},
        {"auth": {"identity": {"methods": "password"}}},
    ):
        response = client.post("/v3/auth/tokens", json=body)
        assert response.status_code == 400, (body, response.get_json())
        assert response.get_json()["error"]["code"] == 400
    totp = client.post("/v3/auth/tokens", json={"auth": {"identity": {"methods": ["totp"]}}})
    assert totp.status_code == 401
    assert client.post("/v3/auth/tokens", data="nope").status_code == 400


def test_validate_head_and_revoke(client: FlaskClient) -> None:
    service_token, _ = admin_token(client)
    subject, _ = admin_token(client)
    headers = {"X-Auth-Token": service_token, SUBJECT: subject}
    valid = client.get("/v3/auth/tokens", headers=headers)
    assert valid.status_code == 200
    assert valid.headers[SUBJECT] == subject
    assert "catalog" in valid.get_json()["token"]
    assert (
        "catalog"
        not in client.get("/v3/auth/tokens?nocatalog", headers=headers).get_json()["token"]
    )
    # The answer is built once per token (frontdoors/keystone/tokens.py _token_core): the same
    # every time, and a catalog asked for once never sticks to a nocatalog answer.
    again = client.get("/v3/auth/tokens", headers=headers).get_json()
    assert again == valid.get_json()
    nocatalog = client.get("/v3/auth/tokens?nocatalog", headers=headers).get_json()["token"]
    assert nocatalog == {k: v for k, v in again["token"].items() if k != "catalog"}
    assert client.head("/v3/auth/tokens", headers=headers).status_code == 200
    assert client.get("/v3/auth/tokens", headers={"X-Auth-Token": service_token}).status_code == 404
    assert client.get("/v3/auth/tokens", headers={SUBJECT: subject}).status_code == 401
    assert client.delete("/v3/auth/tokens", headers=headers).status_code == 204
    gone = client.get("/v3/auth/tokens", headers=headers)
    assert gone.status_code == 404
    assert gone.get_json()["error"]["code"] == 404
    assert client.head("/v3/auth/tokens", headers=headers).status_code == 404


def test_role_ids_follow_a_role_deleted_and_created_again(client: FlaskClient) -> None:
    """/v3 answers name roles by id too, remembered per process: a role deleted and
    created again under its name answers with its new id."""
    token, _ = admin_token(client)
    v1 = {"Authorization": f"Bearer {token}"}
    admin_project = client.get("/v1/projects?name=admin", headers=v1).get_json()["projects"][0]
    admin_user = client.get("/v1/users?name=admin", headers=v1).get_json()["users"][0]
    grant = f"/v1/projects/{admin_project['id']}/users/{admin_user['id']}/roles/auditor"

    def auditor_id() -> str:
        fresh, _ = admin_token(client)
        answer = client.get("/v3/auth/tokens", headers={"X-Auth-Token": fresh, SUBJECT: fresh})
        assert answer.status_code == 200, answer.get_json()
        roles = {r["name"]: r["id"] for r in answer.get_json()["token"]["roles"]}
        return roles["auditor"]

    first = client.post("/v1/roles", json={"name": "auditor"}, headers=v1).get_json()
    assert client.put(grant, headers=v1).status_code == 204
    assert auditor_id() == first["id"]
    token, _ = admin_token(client)  # deleting the role revokes the admin's tokens
    v1 = {"Authorization": f"Bearer {token}"}
    assert client.delete("/v1/roles/auditor", headers=v1).status_code == 204
    token, _ = admin_token(client)
    v1 = {"Authorization": f"Bearer {token}"}
    second = client.post("/v1/roles", json={"name": "auditor"}, headers=v1).get_json()
    assert client.put(grant, headers=v1).status_code == 204
    assert second["id"] != first["id"]
    assert auditor_id() == second["id"]


def test_projects_and_catalog(client: FlaskClient) -> None:
    token, _ = admin_token(client)
    projects = client.get("/v3/auth/projects", headers={"X-Auth-Token": token})
    assert projects.status_code == 200
    assert "admin" in [p["name"] for p in projects.get_json()["projects"]]
    catalog = client.get("/v3/auth/catalog", headers={"X-Auth-Token": token}).get_json()
    assert "identity" in [entry["type"] for entry in catalog["catalog"]]
    # Services without endpoints are listed as Keystone lists them (keystonemiddleware
    # enforces access rules only for a service type the catalog holds).
    secrets = [entry for entry in catalog["catalog"] if entry["type"] == "secrets"]
    assert secrets and secrets[0]["endpoints"] == []
    assert client.get("/v3/auth/catalog").status_code == 401


def test_application_credential_lifecycle(client: FlaskClient) -> None:
    token, info = admin_token(client)
    user_id = info["user"]["id"]
    auth = {"X-Auth-Token": token}
    created = create_credential(
        client, token, user_id, description="for CI", roles=[{"name": info["roles"][0]["name"]}]
    )
    assert created["secret"] and created["project_id"] == info["project"]["id"]
    assert created["roles"][0]["name"] == info["roles"][0]["name"]
    # openstackclient sends "roles": [] without --role: Keystone reads it as every role
    # the caller holds on the project.
    every = create_credential(client, token, user_id, name="every", roles=[])
    assert {r["name"] for r in every["roles"]} == {r["name"] for r in info["roles"]}
    assert (
        client.delete(
            f"/v3/users/{user_id}/application_credentials/{every['id']}", headers=auth
        ).status_code
        == 204
    )
    base = f"/v3/users/{user_id}/application_credentials"
    listed = client.get(base, headers=auth).get_json()["application_credentials"]
    assert [c["id"] for c in listed] == [created["id"]] and "secret" not in listed[0]
    assert client.get(f"{base}?name=ci", headers=auth).get_json()["application_credentials"]
    shown = client.get(f"{base}/{created['id']}", headers=auth)
    assert shown.status_code == 200 and shown.get_json()["application_credential"]["name"] == "ci"
    # openstackclient looks a name up as an id first and needs a 404 to fall back to a list.
    by_name = client.get(f"{base}/ci", headers=auth)
    assert by_name.status_code == 404 and by_name.get_json()["error"]["code"] == 404

    body = {
        "auth": {
            "identity": {
                "methods": ["application_credential"],
                "application_credential": {"id": created["id"], "secret": created["secret"]},
            }
        }
    }
    issued = issue(client, body).get_json()["token"]
    assert issued["methods"] == ["application_credential"]
    assert issued["application_credential"]["id"] == created["id"]
    assert issued["project"]["id"] == info["project"]["id"]
    by_user = {
        "auth": {
            "identity": {
                "methods": ["application_credential"],
                "application_credential": {
                    "name": "ci",
                    "user": {"id": user_id},
                    "secret": created["secret"],
                },
            }
        }
    }
    issue(client, by_user)

    assert client.delete(f"{base}/{created['id']}", headers=auth).status_code == 204
    assert client.post("/v3/auth/tokens", json=body).status_code == 401
    assert client.get(f"{base}/{created['id']}", headers=auth).status_code == 404


def test_access_rules_need_the_header(client: FlaskClient) -> None:
    token, info = admin_token(client)
    user_id = info["user"]["id"]
    rule = {"service": "compute", "method": "GET", "path": "/v2.1/servers"}
    created = create_credential(client, token, user_id, access_rules=[rule])
    (shaped,) = created["access_rules"]
    assert shaped["id"] and {k: shaped[k] for k in rule} == rule
    rules = client.get(f"/v3/users/{user_id}/access_rules", headers={"X-Auth-Token": token})
    assert rules.get_json()["access_rules"] == [shaped]
    one = client.get(
        f"/v3/users/{user_id}/access_rules/{shaped['id']}", headers={"X-Auth-Token": token}
    )
    assert one.get_json()["access_rule"] == shaped
    # A second credential may reuse a rule by id, as in Keystone.
    reused = create_credential(
        client, token, user_id, name="ci2", access_rules=[{"id": shaped["id"]}]
    )
    assert reused["access_rules"] == [shaped]

    body = {
        "auth": {
            "identity": {
                "methods": ["application_credential"],
                "application_credential": {"id": created["id"], "secret": created["secret"]},
            }
        }
    }
    response = issue(client, body)
    subject = response.headers[SUBJECT]
    assert response.get_json()["token"]["application_credential"]["access_rules"] == [shaped]
    headers = {"X-Auth-Token": token, SUBJECT: subject}
    assert client.get("/v3/auth/tokens", headers=headers).status_code == 404
    allowed = client.get(
        "/v3/auth/tokens", headers={**headers, "OpenStack-Identity-Access-Rules": "1"}
    )
    assert allowed.status_code == 200
    # Latchkey's own API is service type "identity": this token may not call it.
    denied = client.get("/v3/auth/projects", headers={"X-Auth-Token": subject})
    assert denied.status_code == 403 and denied.get_json()["error"]["code"] == 403


def test_access_rule_delete_follows_keystone(client: FlaskClient) -> None:
    token, info = admin_token(client)
    user_id = info["user"]["id"]
    auth = {"X-Auth-Token": token}
    rule = {"service": "compute", "method": "GET", "path": "/v2.1/servers"}
    first = create_credential(client, token, user_id, access_rules=[rule])
    second = create_credential(client, token, user_id, name="ci2", access_rules=[rule])
    rule_id = first["access_rules"][0]["id"]
    path = f"/v3/users/{user_id}/access_rules/{rule_id}"
    base = f"/v3/users/{user_id}/application_credentials"
    # Keystone: 403 while an application credential still uses the rule.
    for credential in (first, second):
        in_use = client.delete(path, headers=auth)
        assert in_use.status_code == 403, in_use.get_json()
        assert in_use.get_json()["error"]["title"] == "Forbidden"
        assert "used by an application credential" in in_use.get_json()["error"]["message"]
        assert client.delete(f"{base}/{credential['id']}", headers=auth).status_code == 204
    # As in Keystone, the rule outlives its last credential: listed, reusable by id,
    # deleted on request.
    listed = client.get(f"/v3/users/{user_id}/access_rules", headers=auth).get_json()
    assert [r["id"] for r in listed["access_rules"]] == [rule_id]
    assert client.delete(path, headers=auth).status_code == 204
    gone = client.delete(path, headers=auth)
    assert gone.status_code == 404 and gone.get_json()["error"]["code"] == 404
    assert client.get(path, headers=auth).status_code == 404
    assert client.delete(path).status_code == 401


def test_routing_errors_are_keystone_shaped_under_v3(client: FlaskClient) -> None:
    token, info = admin_token(client)
    auth = {"X-Auth-Token": token}
    for method, path in (
        ("PUT", "/v3/auth/tokens"),
        ("PATCH", f"/v3/users/{info['user']['id']}/application_credentials"),
        ("POST", f"/v3/users/{info['user']['id']}/access_rules"),
        ("POST", "/v3"),
        ("DELETE", "/"),
    ):
        response = client.open(path, method=method, headers=auth)
        assert response.status_code == 405, (method, path)
        assert response.get_json() == {
            "error": {
                "code": 405,
                "title": "Method Not Allowed",
                "message": "The method is not allowed for the requested URL.",
            }
        }
        assert "GET" in response.headers["Allow"]
    missing = client.get("/v3/no-such-thing", headers=auth)
    assert missing.status_code == 404
    assert missing.get_json()["error"] == {
        "code": 404,
        "title": "Not Found",
        "message": "The resource could not be found.",
    }
    # The native API keeps its problem documents.
    native = client.open("/v1/auth/tokens", method="PATCH")
    assert native.status_code == 405 and native.mimetype == "application/problem+json"
    assert native.get_json()["code"] == "method_not_allowed" and native.headers["Allow"]
    unknown = client.get("/v1/no-such-thing")
    assert unknown.status_code == 404 and unknown.get_json()["code"] == "not_found"


def test_credential_create_refuses_what_latchkey_cannot_honour(client: FlaskClient) -> None:
    token, info = admin_token(client)
    base = f"/v3/users/{info['user']['id']}/application_credentials"
    auth = {"X-Auth-Token": token}
    for body in (
        {"application_credential": {"name": "x", "secret": "mine"}},
        {"application_credential": {}},
        {"application_credential": {"name": "x", "roles": "admin"}},
        {"application_credential": {"name": "x", "expires_at": "soon"}},
        {"application_credential": {"name": "x", "access_rules": [{"service": "x"}]}},
        {"nope": 1},
    ):
        response = client.post(base, json=body, headers=auth)
        assert response.status_code == 400, (body, response.get_json())
        assert response.get_json()["error"]["code"] == 400


# -- keystoneauth1 over HTTP -----------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Flask]]:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    home = tmp_path / "home"
    app = build_app(make_settings(home, f"sqlite:///{tmp_path / 'lk.db'}", issuer=url))
    reset_database(app)
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield url, app
    server.shutdown()


def _session(plugin: str, **options: Any) -> ks_session.Session:
    auth = loading.get_plugin_loader(plugin).load_from_options(**options)
    return ks_session.Session(auth=auth)


@pytest.mark.parametrize("auth_path", ["/v3", ""])
def test_keystoneauth_password_and_application_credential(
    served: tuple[str, Flask], auth_path: str
) -> None:
    url, _ = served
    password = _session(
        "v3password",
        auth_url=url + auth_path,
        username="admin",
        password=ADMIN_PASSWORD,
        user_domain_id="default",
        project_name="admin",
        project_domain_id="default",
    )
    token = password.get_token()
    assert token
    assert password.get_endpoint(service_type="identity", interface="public") == url + "/v3"
    projects = password.get(url + "/v3/auth/projects").json()["projects"]
    assert "admin" in [p["name"] for p in projects]
    user_id = password.get_user_id()
    assert password.get_project_id()

    created = password.post(
        f"{url}/v3/users/{user_id}/application_credentials",
        json={"application_credential": {"name": "ksa"}},
    ).json()["application_credential"]
    credential = _session(
        "v3applicationcredential",
        auth_url=url + auth_path,
        application_credential_id=created["id"],
        application_credential_secret=created["secret"],
    )
    assert credential.get_token()
    catalog = credential.get(url + "/v3/auth/catalog").json()["catalog"]
    assert "identity" in [entry["type"] for entry in catalog]
    by_name = _session(
        "v3applicationcredential",
        auth_url=url + auth_path,
        application_credential_name="ksa",
        application_credential_secret=created["secret"],
        user_id=user_id,
    )
    assert by_name.get_project_id() == password.get_project_id()
    # The service-side validation that keystonemiddleware performs, by hand.
    validated = password.get(
        url + "/v3/auth/tokens", headers={"X-Subject-Token": credential.get_token()}
    ).json()["token"]
    assert validated["application_credential"]["id"] == created["id"]
