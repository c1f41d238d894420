"""Keystone v3 authentication: methods (password, token, both), scopes (project, domain,
system), default projects, /v3/auth/{projects,domains,system}, HEAD and GET on tokens,
and the system scope's reach (is_cloud, the middleware's Identity)."""

from __future__ import annotations

from typing import Any

from flask import Flask, jsonify, request
from flask.testing import FlaskClient
from sqlalchemy import select
from werkzeug.test import Client, TestResponse

from latchkey.identity.models import Role, RoleAssignment, User
from latchkey.middleware import LatchkeyMiddleware, authorize, current_identity
from latchkey.middleware.wsgi import Identity
from latchkey.policy.context import AuthContext
from tests.conftest import ADMIN_PASSWORD, Api, database_of
from tests.integration.test_middleware import PASSWORD as SERVICE_TESTS_PASSWORD
from tests.integration.test_middleware import READ, Env, env, served  # noqa: F401

SUBJECT = "X-Subject-Token"
PASSWORD = "trust-me-not-42"


def password_identity(name: str, password: str, *, user_domain: str = "default") -> dict[str, Any]:
    return {
        "methods": ["password"],
        "password": {"user": {"name": name, "domain": {"id": user_domain}, "password": password}},
    }


def auth_body(identity: dict[str, Any], scope: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"auth": {"identity": identity}}
    if scope is not None:
        body["auth"]["scope"] = scope
    return body


def post_token(client: FlaskClient, body: dict[str, Any]) -> TestResponse:
    return client.post("/v3/auth/tokens", json=body)


def issue(client: FlaskClient, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    response = post_token(client, body)
    assert response.status_code == 201, response.get_json()
    return response.headers[SUBJECT], response.get_json()["token"]


def admin_v3(client: FlaskClient) -> tuple[str, dict[str, Any]]:
    return issue(
        client,
        auth_body(
            password_identity("admin", ADMIN_PASSWORD),
            {"project": {"name": "admin", "domain": {"id": "default"}}},
        ),
    )


def make_user(api: Api, token: str, name: str, **fields: Any) -> dict[str, Any]:
    user: dict[str, Any] = api.ok(
        "POST", "/v1/users", token, {"name": name, "password": PASSWORD, **fields}
    )
    return user


def make_project(api: Api, token: str, name: str) -> dict[str, Any]:
    project: dict[str, Any] = api.ok("POST", "/v1/projects", token, {"name": name})
    return project


def grant(api: Api, token: str, project_id: str, user_id: str, role: str) -> None:
    api.ok("PUT", f"/v1/projects/{project_id}/users/{user_id}/roles/{role}", token)


def grant_system(app: Flask, user_id: str, role_name: str) -> None:
    """A system grant straight in the table (PUT /v3/system/... is another part's)."""
    with app.app_context():
        role = database_of(app).session.scalars(select(Role).where(Role.name == role_name)).one()
        database_of(app).session.add(
            RoleAssignment(
                key=f"user:{user_id}:system:all:{role.id}",
                role_id=role.id,
                user_id=user_id,
                system="all",
            )
        )
        database_of(app).session.commit()
        database_of(app).session.remove()


SYSTEM = {"system": {"all": True}}


# -- password, scopes, default project ------------------------------------------------------


def test_unscoped_token_has_no_roles_and_no_catalog(client: FlaskClient, api: Api) -> None:
    admin = api.admin_token()
    make_user(api, admin, "ursula")
    _, token = issue(client, auth_body(password_identity("ursula", PASSWORD)))
    assert "roles" not in token and "catalog" not in token and "project" not in token
    assert token["methods"] == ["password"]


def test_default_project_scopes_an_unscoped_login(
    app: Flask, client: FlaskClient, api: Api
) -> None:
    admin = api.admin_token()
    project = make_project(api, admin, "home")
    user = make_user(api, admin, "dora")
    with app.app_context():
        database_of(app).session.get(User, user["id"]).default_project_id = project["id"]  # type: ignore[union-attr]
        database_of(app).session.commit()
        database_of(app).session.remove()
    # No role there yet: an unscoped token.
    _, token = issue(client, auth_body(password_identity("dora", PASSWORD)))
    assert "project" not in token
    grant(api, admin, project["id"], user["id"], "member")
    _, token = issue(client, auth_body(password_identity("dora", PASSWORD)))
    assert token["project"]["id"] == project["id"]
    assert {r["name"] for r in token["roles"]} == {"member", "reader"}
    assert isinstance(token["catalog"], list)
    # Asked explicitly, an unscoped token all the same.
    _, token = issue(client, auth_body(password_identity("dora", PASSWORD), "unscoped"))
    assert "project" not in token and "roles" not in token


def test_user_by_id_and_by_domain_name(client: FlaskClient, api: Api) -> None:
    admin = api.admin_token()
    user = make_user(api, admin, "ida")
    by_id = {
        "methods": ["password"],
        "password": {"user": {"id": user["id"], "password": PASSWORD}},
    }
    _, token = issue(client, auth_body(by_id))
    assert token["user"]["id"] == user["id"]
    by_name = {
        "methods": ["password"],
        "password": {"user": {"name": "ida", "domain": {"name": "Default"}, "password": PASSWORD}},
    }
    response = post_token(client, auth_body(by_name))
    assert response.status_code in (201, 401)  # the default domain's name is deployment's


# -- the token method ------------------------------------------------------------------------


def test_rescope_an_unscoped_token_keeps_its_expiry(client: FlaskClient, api: Api) -> None:
    admin = api.admin_token()
    one, two = make_project(api, admin, "one"), make_project(api, admin, "two")
    user = make_user(api, admin, "rita")
    grant(api, admin, one["id"], user["id"], "member")
    grant(api, admin, two["id"], user["id"], "reader")
    unscoped, original = issue(client, auth_body(password_identity("rita", PASSWORD)))
    token_identity = {"methods": ["token"], "token": {"id": unscoped}}
    scope = {"project": {"name": "one", "domain": {"id": "default"}}}
    scoped, token = issue(client, auth_body(token_identity, scope))
    assert token["expires_at"] == original["expires_at"]
    assert set(token["methods"]) == {"password", "token"}
    assert token["user"] == original["user"]
    assert token["project"]["id"] == one["id"]
    assert token["audit_ids"][-1] == original["audit_ids"][0]
    # Revoking the scoped token leaves the unscoped one usable.
    headers = {"X-Auth-Token": admin, SUBJECT: scoped}
    assert client.delete("/v3/auth/tokens", headers=headers).status_code == 204
    scope = {"project": {"id": two["id"]}}
    _, token = issue(client, auth_body(token_identity, scope))
    assert token["project"]["id"] == two["id"]
    assert [r["name"] for r in token["roles"]] == ["reader"]
    # Nowhere the user holds no role.
    response = post_token(
        client,
        auth_body(token_identity, {"project": {"name": "admin", "domain": {"id": "default"}}}),
    )
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == 401


def test_rescope_to_the_system(app: Flask, client: FlaskClient, api: Api) -> None:
    admin = api.admin_token()
    user = make_user(api, admin, "sys")
    grant_system(app, user["id"], "reader")
    unscoped, _ = issue(client, auth_body(password_identity("sys", PASSWORD)))
    _, token = issue(client, auth_body({"methods": ["token"], "token": {"id": unscoped}}, SYSTEM))
    assert token["system"] == {"all": True}
    assert [r["name"] for r in token["roles"]] == ["reader"]


def test_password_and_token_must_name_the_same_user(client: FlaskClient, api: Api) -> None:
    admin = api.admin_token()
    make_user(api, admin, "ann")
    make_user(api, admin, "bob")
    anns, _ = issue(client, auth_body(password_identity("ann", PASSWORD)))
    both = password_identity("ann", PASSWORD)
    both["methods"] = ["password", "token"]
    both["token"] = {"id": anns}
    _, token = issue(client, auth_body(both))
    assert set(token["methods"]) == {"password", "token"}
    mixed = password_identity("bob", PASSWORD)
    mixed["methods"] = ["password", "token"]
    mixed["token"] = {"id": anns}
    response = post_token(client, auth_body(mixed))
    assert response.status_code == 401


def test_bad_or_revoked_tokens_cannot_be_rescoped(client: FlaskClient, api: Api) -> None:
    admin = api.admin_token()
    make_user(api, admin, "val")
    unscoped, _ = issue(client, auth_body(password_identity("val", PASSWORD)))
    for bad in ("garbage", unscoped[:-4] + "AAAA"):
        response = post_token(client, auth_body({"methods": ["token"], "token": {"id": bad}}))
        assert response.status_code == 401
    headers = {"X-Auth-Token": admin, SUBJECT: unscoped}
    assert client.delete("/v3/auth/tokens", headers=headers).status_code == 204
    response = post_token(client, auth_body({"methods": ["token"], "token": {"id": unscoped}}))
    assert response.status_code == 401


def test_application_credential_tokens_cannot_be_rescoped(client: FlaskClient, api: Api) -> None:
    admin, body = admin_v3(client)
    user_id = body["user"]["id"]
    created = client.post(
        f"/v3/users/{user_id}/application_credentials",
        json={"application_credential": {"name": "ci"}},
        headers={"X-Auth-Token": admin},
    ).get_json()["application_credential"]
    identity = {
        "methods": ["application_credential"],
        "application_credential": {"id": created["id"], "secret": created["secret"]},
    }
    credential_token, _ = issue(client, auth_body(identity))
    response = post_token(
        client, auth_body({"methods": ["token"], "token": {"id": credential_token}}, SYSTEM)
    )
    assert response.status_code == 401
    # An application credential authenticates alone.
    identity["methods"] = ["application_credential", "password"]
    identity["password"] = password_identity("admin", ADMIN_PASSWORD)["password"]
    assert post_token(client, auth_body(identity)).status_code == 401


def test_malformed_requests_are_keystone_400s(client: FlaskClient) -> None:
    bodies: list[Any] = [
        {"auth": {"identity": {"methods": ["token"], "token": {}}}},
        {"auth": {"identity": {"methods": ["token"], "token": "x"}}},
        {"auth": {"identity": {"methods": ["token"], "token": {"id": 5}}}},
        auth_body(password_identity("admin", ADMIN_PASSWORD), {"system": {"all": False}}),
        auth_body(password_identity("admin", ADMIN_PASSWORD), {"system": "all"}),
        auth_body(password_identity("admin", ADMIN_PASSWORD), {"OS-TRUST:trust": {}}),
        auth_body(
            password_identity("admin", ADMIN_PASSWORD),
            {"system": {"all": True}, "domain": {"id": "default"}},
        ),
    ]
    for body in bodies:
        response = post_token(client, body)
        assert response.status_code == 400, (body, response.get_json())
        assert response.get_json()["error"]["code"] == 400
    response = post_token(client, {"auth": {"identity": {"methods": ["totp"], "totp": {}}}})
    assert response.status_code == 401


# -- the system scope -------------------------------------------------------------------------


def test_system_scoped_token(app: Flask, client: FlaskClient, api: Api) -> None:
    admin = api.admin_token()
    user = make_user(api, admin, "operator")
    refused = post_token(client, auth_body(password_identity("operator", PASSWORD), SYSTEM))
    assert refused.status_code == 401
    grant_system(app, user["id"], "admin")
    token_id, token = issue(client, auth_body(password_identity("operator", PASSWORD), SYSTEM))
    assert token["system"] == {"all": True}
    assert {r["name"] for r in token["roles"]} == {"admin", "member", "reader"}
    assert "project" not in token and "domain" not in token
    assert isinstance(token["catalog"], list)
    # Validated online, through both doors.
    headers = {"X-Auth-Token": token_id, SUBJECT: token_id}
    validated = client.get("/v3/auth/tokens", headers=headers)
    assert validated.status_code == 200
    assert validated.get_json()["token"]["system"] == {"all": True}
    native = api.call("GET", "/v1/auth/tokens", token_id, headers={SUBJECT: token_id})
    assert native.status_code == 200 and native.get_json()["system"] == {"all": True}
    # A system admin is the cloud admin: Latchkey's and Keystone's endpoints alike.
    api.ok("POST", "/v1/domains", token_id, {"name": "by-the-system"})
    api.ok("GET", "/v1/users", token_id)
    api.ok("POST", "/v1/roles", token_id, {"name": "custom"})
    assert client.get("/v3/auth/system", headers={"X-Auth-Token": token_id}).get_json()[
        "system"
    ] == [{"all": True}]
    # The native door issues system tokens too.
    response = client.post(
        "/v1/auth/tokens",
        json={
            "auth": {
                "password": {
                    "user": {"name": "operator", "domain": {"id": "default"}},
                    "password": PASSWORD,
                }
            },
            "scope": {"system": {"all": True}},
        },
    )
    assert response.status_code == 201 and response.get_json()["system"] == {"all": True}


def test_system_reader_reads_but_does_not_write(app: Flask, client: FlaskClient, api: Api) -> None:
    admin = api.admin_token()
    user = make_user(api, admin, "auditor")
    grant_system(app, user["id"], "reader")
    token_id, _ = issue(client, auth_body(password_identity("auditor", PASSWORD), SYSTEM))
    api.ok("GET", "/v1/users", token_id)
    api.ok("GET", "/v1/domains", token_id)
    assert api.call("POST", "/v1/domains", token_id, {"name": "nope"}).status_code == 403
    assert api.call("POST", "/v1/roles", token_id, {"name": "nope"}).status_code == 403


def test_auth_context_and_middleware_see_system_scope() -> None:
    claims = {
        "sub": "u",
        "jti": "j",
        "user": {"id": "u", "name": "u", "domain": {"id": "default", "name": "Default"}},
        "roles": ["admin", "reader"],
        "system": {"all": True},
    }
    auth = AuthContext.from_claims(claims)
    assert auth.system_scoped and auth.is_cloud("admin") and auth.is_cloud("reader")
    assert not auth.is_cloud("service")
    project_scoped = AuthContext.from_claims(
        {**claims, "system": None, "project": {"id": "p", "domain": {"id": "default"}}}
    )
    assert not project_scoped.system_scoped and not project_scoped.is_cloud("admin")
    identity = Identity.from_claims(claims, "t")
    assert identity.system_scoped and identity.project_id is None
    assert identity.domain_id == "default"


# -- what a user may scope to -----------------------------------------------------------------


def test_auth_projects_domains_system(app: Flask, client: FlaskClient, api: Api) -> None:
    admin = api.admin_token()
    project = make_project(api, admin, "mine")
    user = make_user(api, admin, "carol")
    grant(api, admin, project["id"], user["id"], "reader")
    api.ok("PUT", f"/v1/domains/default/users/{user['id']}/roles/reader", admin)
    token_id, _ = issue(client, auth_body(password_identity("carol", PASSWORD)))
    headers = {"X-Auth-Token": token_id}
    projects = client.get("/v3/auth/projects", headers=headers).get_json()["projects"]
    assert [p["id"] for p in projects] == [project["id"]]
    domains = client.get("/v3/auth/domains", headers=headers).get_json()["domains"]
    assert [d["id"] for d in domains] == ["default"]
    assert client.get("/v3/auth/system", headers=headers).get_json()["system"] == []
    grant_system(app, user["id"], "reader")
    assert client.get("/v3/auth/system", headers=headers).get_json()["system"] == [{"all": True}]
    for path in ("/v3/auth/projects", "/v3/auth/domains", "/v3/auth/system"):
        assert client.get(path).status_code == 401


def test_auth_domains_through_a_group(client: FlaskClient, api: Api) -> None:
    admin = api.admin_token()
    user = make_user(api, admin, "gina")
    group = api.ok("POST", "/v1/groups", admin, {"name": "ops"})
    api.ok("PUT", f"/v1/groups/{group['id']}/users/{user['id']}", admin)
    api.ok("PUT", f"/v1/domains/default/groups/{group['id']}/roles/reader", admin)
    token_id, _ = issue(client, auth_body(password_identity("gina", PASSWORD)))
    domains = client.get("/v3/auth/domains", headers={"X-Auth-Token": token_id}).get_json()
    assert [d["id"] for d in domains["domains"]] == ["default"]


def test_head_token(client: FlaskClient) -> None:
    admin, _ = admin_v3(client)
    ok = client.head("/v3/auth/tokens", headers={"X-Auth-Token": admin, SUBJECT: admin})
    assert ok.status_code == 200
    missing = client.head("/v3/auth/tokens", headers={"X-Auth-Token": admin, SUBJECT: "nope"})
    assert missing.status_code == 404


def test_a_domain_admin_cannot_take_over_a_system_admin(
    app: Flask, client: FlaskClient, api: Api
) -> None:
    """A system admin is a cloud operator: a domain admin of its domain may neither
    reset its password nor disable it (the way to its system-scoped token)."""
    admin = api.admin_token()
    operator = make_user(api, admin, "root2")
    grant_system(app, operator["id"], "admin")
    keeper = make_user(api, admin, "keeper")
    api.ok("PUT", f"/v1/domains/default/users/{keeper['id']}/roles/admin", admin)
    domain_admin = api.login("keeper", PASSWORD, domain_scope="default")
    path = f"/v1/users/{operator['id']}"
    assert api.call("PATCH", path, domain_admin, {"password": "taken-over-1"}).status_code == 403
    assert api.call("DELETE", path, domain_admin).status_code == 403
    # A project admin holds no system role: no system-scoped token.
    project = make_project(api, admin, "theirs")
    grant(api, admin, project["id"], keeper["id"], "admin")
    refused = post_token(client, auth_body(password_identity("keeper", PASSWORD), SYSTEM))
    assert refused.status_code == 401


# -- a relying service's middleware ----------------------------------------------------------


def relying_service() -> Flask:
    app = Flask("relying")

    @app.route("/whoami")
    def whoami() -> Any:
        identity = current_identity(request.environ)
        assert identity is not None
        resource = {"type": "objects:container", "id": "x", "attributes": {"env": "x"}}
        return jsonify(
            user_id=identity.user_id,
            project_id=identity.project_id,
            system=identity.system_scoped,
            trust_id=identity.trust_id,
            roles=sorted(identity.roles),
            may_read=authorize(request.environ, READ, resource),
        )

    return app


def middleware(e: Env) -> LatchkeyMiddleware:
    return LatchkeyMiddleware(
        relying_service(),
        latchkey_url=e.served.url,
        service_type="objects",
        service_token=e.service_token,
        clock=e.clock,
    )


def test_system_scoped_token_through_the_middleware(env: Env) -> None:  # noqa: F811
    user = env.api.ok("POST", "/v1/users", env.admin, {"name": "op", "password": PASSWORD})
    grant_system(env.served.app, user["id"], "reader")
    client = env.served.app.test_client()
    response = client.post(
        "/v3/auth/tokens", json=auth_body(password_identity("op", PASSWORD), SYSTEM)
    )
    assert response.status_code == 201, response.get_json()
    token = response.headers[SUBJECT]
    answer = Client(middleware(env)).get("/whoami", headers={"X-Auth-Token": token})
    assert answer.status_code == 200, answer.get_data(as_text=True)
    body = answer.get_json()
    assert body["system"] is True and body["project_id"] is None
    assert body["user_id"] == user["id"] and body["roles"] == ["reader"]
    assert body["trust_id"] is None


def test_trust_token_through_the_middleware(env: Env) -> None:  # noqa: F811
    """A trust's token reaches the service as the trust's; deleting the trust refuses it
    at the next poll of the revocation feed (kind ``trust``)."""
    client = env.served.app.test_client()
    api = env.api
    trustee = api.ok("POST", "/v1/users", env.admin, {"name": "tee", "password": PASSWORD})
    trustor_token, _ = issue(
        client,
        auth_body(
            password_identity("alice", SERVICE_TESTS_PASSWORD),
            {"project": {"id": env.project_id}},
        ),
    )
    created = client.post(
        "/v3/OS-TRUST/trusts",
        json={
            "trust": {
                "trustor_user_id": env.alice_id,
                "trustee_user_id": trustee["id"],
                "project_id": env.project_id,
                "roles": [{"name": "member"}],
                "impersonation": False,
            }
        },
        headers={"X-Auth-Token": trustor_token},
    )
    assert created.status_code == 201, created.get_json()
    trust_id = created.get_json()["trust"]["id"]
    token, _ = issue(
        client,
        auth_body(password_identity("tee", PASSWORD), {"OS-TRUST:trust": {"id": trust_id}}),
    )
    service = Client(middleware(env))
    answer = service.get("/whoami", headers={"X-Auth-Token": token})
    assert answer.status_code == 200, answer.get_data(as_text=True)
    body = answer.get_json()
    assert body["trust_id"] == trust_id and body["project_id"] == env.project_id
    assert body["user_id"] == trustee["id"] and body["system"] is False
    deleted = client.delete(
        f"/v3/OS-TRUST/trusts/{trust_id}", headers={"X-Auth-Token": trustor_token}
    )
    assert deleted.status_code == 204
    env.clock.advance(6)
    assert service.get("/whoami", headers={"X-Auth-Token": token}).status_code == 401
