from __future__ import annotations

from tests.conftest import Api


def test_admin_gets_token_and_lists_domains(api: Api, admin_token: str) -> None:
    body = api.ok("GET", "/v1/domains", admin_token)
    assert [d["id"] for d in body["domains"]] == ["default"]


def test_create_project_user_and_assign(api: Api, admin_token: str) -> None:
    project = api.ok("POST", "/v1/projects", admin_token, {"name": "web"})
    user = api.ok(
        "POST", "/v1/users", admin_token, {"name": "alice", "password": "alice-password-1"}
    )
    api.ok("PUT", f"/v1/projects/{project['id']}/users/{user['id']}/roles/member", admin_token)
    token = api.login("alice", "alice-password-1", project="web")
    response = api.call("GET", "/v1/auth/tokens", token, headers={"X-Subject-Token": token})
    assert response.status_code == 200, response.get_json()
    assert sorted(response.get_json()["roles"]) == ["member", "reader"]


def test_openapi_document_describes_the_api(api: Api) -> None:
    document = api.ok("GET", "/v1/openapi.json")
    assert document["openapi"].startswith("3.")
    for path in (
        "/v1/domains",
        "/v1/projects/{project_id}",
        "/v1/users",
        "/v1/groups",
        "/v1/role-assignments",
        "/v1/auth/tokens",
        "/v1/revocations",
        "/v1/audit/events",
        "/.well-known/jwks.json",
    ):
        assert path in document["paths"], path
    token_request = document["components"]["schemas"]["TokenRequest"]
    assert "auth" in token_request["properties"]


def test_readiness_reports_the_database(api: Api) -> None:
    assert api.ok("GET", "/readyz")["checks"]["database"]["status"] == "ok"
    assert api.ok("GET", "/healthz") == {"status": "ok"}
    metrics = api.client.get("/metrics")
    assert b"latchkey_http_requests_total" in metrics.data
