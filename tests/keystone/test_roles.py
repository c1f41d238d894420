"""Keystone v3 roles, implied roles, grants (project, domain, system, OS-INHERIT) and
role assignments, with the test client (both backends)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from latchkey.identity.models import Project
from tests.conftest import ADMIN_PASSWORD, database_of
from tests.integration.test_openstack_clients import (  # noqa: F401 (the fixtures)
    Served,
    latchkey,
    openstack,
    openstack_json,
    openstack_venv,
    password_env,
)

PASSWORD = "a-long-enough-password-1"


class V3:
    """/v3 calls with a token, and the native /v1 API for what other parts build."""

    def __init__(self, client: FlaskClient, app: Flask) -> None:
        self.client = client
        self.app = app
        self.admin = self.login("admin", ADMIN_PASSWORD, project="admin")

    def login(
        self,
        user: str,
        password: str,
        *,
        project: str | None = None,
        domain: str | None = None,
        user_domain: str = "default",
        project_domain: str = "default",
    ) -> str:
        response = self.auth(
            user,
            password,
            project=project,
            domain=domain,
            user_domain=user_domain,
            project_domain=project_domain,
        )
        assert response.status_code == 201, response.get_json()
        return str(response.headers["X-Subject-Token"])

    def auth(
        self,
        user: str,
        password: str,
        *,
        project: str | None = None,
        domain: str | None = None,
        user_domain: str = "default",
        project_domain: str = "default",
    ) -> TestResponse:
        body: dict[str, Any] = {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {
                            "name": user,
                            "domain": {"id": user_domain},
                            "password": password,
                        }
                    },
                }
            }
        }
        if project:
            body["auth"]["scope"] = {"project": {"name": project, "domain": {"id": project_domain}}}
        elif domain:
            body["auth"]["scope"] = {"domain": {"id": domain}}
        return self.client.post("/v3/auth/tokens", json=body)

    def call(
        self, method: str, path: str, json: Any = None, token: str | None = None
    ) -> TestResponse:
        return self.client.open(
            path, method=method, json=json, headers={"X-Auth-Token": token or self.admin}
        )

    def ok(
        self,
        method: str,
        path: str,
        json: Any = None,
        *,
        status: int | None = None,
        token: str | None = None,
    ) -> Any:
        response = self.call(method, path, json, token)
        expected = status or {"POST": 201, "PUT": 204, "DELETE": 204, "HEAD": 204}.get(method, 200)
        assert response.status_code == expected, (method, path, response.get_json(silent=True))
        return response.get_json(silent=True)

    def refused(
        self, method: str, path: str, status: int, json: Any = None, token: str | None = None
    ) -> dict[str, Any]:
        response = self.call(method, path, json, token)
        assert response.status_code == status, (method, path, response.get_json(silent=True))
        if method == "HEAD":
            return {}
        error = response.get_json()["error"]
        assert error["code"] == status and error["title"] and "message" in error
        return dict(error)

    # the native API, for the objects other parts of /v3 create
    def native(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self.client.post(
            f"/v1{path}", json=body, headers={"Authorization": f"Bearer {self.admin}"}
        )
        assert response.status_code == 201, response.get_json()
        return dict(response.get_json())

    def domain(self, name: str) -> str:
        return str(self.native("/domains", {"name": name})["id"])

    def project(self, name: str, domain_id: str = "default", parent_id: str | None = None) -> str:
        project_id = str(self.native("/projects", {"name": name, "domain_id": domain_id})["id"])
        if parent_id:
            with self.app.app_context():
                row = database_of(self.app).session.get(Project, project_id)
                assert row is not None
                row.parent_id = parent_id
                database_of(self.app).session.commit()
        return project_id

    def user(self, name: str, domain_id: str = "default") -> str:
        body = {"name": name, "domain_id": domain_id, "password": PASSWORD}
        return str(self.native("/users", body)["id"])

    def group(self, name: str, domain_id: str = "default") -> str:
        return str(self.native("/groups", {"name": name, "domain_id": domain_id})["id"])

    def add_member(self, group_id: str, user_id: str) -> None:
        response = self.client.put(
            f"/v1/groups/{group_id}/users/{user_id}",
            headers={"Authorization": f"Bearer {self.admin}"},
        )
        assert response.status_code == 204, response.get_json()

    def role(self, name: str, **fields: Any) -> dict[str, Any]:
        return dict(self.ok("POST", "/v3/roles", {"role": {"name": name, **fields}})["role"])

    def token_roles(self, token_response: TestResponse) -> set[str]:
        assert token_response.status_code == 201, token_response.get_json()
        return {r["name"] for r in token_response.get_json()["token"]["roles"]}


@pytest.fixture
def v3(client: FlaskClient, app: Flask) -> V3:
    return V3(client, app)


# -- roles ------------------------------------------------------------------------------


def test_role_create_show_list_update_delete(v3: V3) -> None:
    role = v3.role("observer", description="sees", colour="blue")
    assert role["name"] == "observer" and role["description"] == "sees"
    assert role["domain_id"] is None and role["options"] == {} and role["colour"] == "blue"
    assert role["links"]["self"].endswith(f"/v3/roles/{role['id']}")
    listed = v3.ok("GET", "/v3/roles")["roles"]
    assert role in listed  # the listing shows exactly what creation answered
    assert {"admin", "member", "reader"} <= {r["name"] for r in listed}
    assert [r["id"] for r in v3.ok("GET", "/v3/roles?name=observer")["roles"]] == [role["id"]]
    assert v3.ok("GET", f"/v3/roles/{role['id']}")["role"] == role

    updated = v3.ok("PATCH", f"/v3/roles/{role['id']}", {"role": {"name": "watcher"}})["role"]
    assert updated["name"] == "watcher" and updated["id"] == role["id"]
    assert updated["colour"] == "blue" and updated["description"] == "sees"
    assert v3.ok("GET", f"/v3/roles/{role['id']}")["role"]["name"] == "watcher"

    v3.refused("POST", "/v3/roles", 409, {"role": {"name": "watcher"}})
    v3.refused("PATCH", f"/v3/roles/{role['id']}", 409, {"role": {"name": "admin"}})
    admin = v3.ok("GET", "/v3/roles?name=admin")["roles"][0]
    v3.refused("PATCH", f"/v3/roles/{admin['id']}", 403, {"role": {"name": "boss"}})
    v3.ok("PATCH", f"/v3/roles/{admin['id']}", {"role": {"description": "operators"}})
    v3.ok("DELETE", f"/v3/roles/{role['id']}")
    v3.refused("GET", f"/v3/roles/{role['id']}", 404)
    v3.refused("DELETE", f"/v3/roles/{role['id']}", 404)


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"role": "x"},
        {"role": {}},
        {"role": {"name": ""}},
        {"role": {"name": 7}},
        {"role": {"name": "x" * 256}},
        {"role": {"name": "ok", "description": ["no"]}},
        {"role": {"name": "ok", "domain_id": 3}},
        {"role": {"name": "ok", "options": {"immutable": True}}},
        {"role": {"name": "ok", "options": "no"}},
    ],
)
def test_bad_role_bodies_are_400(v3: V3, body: dict[str, Any]) -> None:
    v3.refused("POST", "/v3/roles", 400, body)


def test_renaming_a_role_revokes_the_tokens_that_name_it(v3: V3) -> None:
    project = v3.project("p1")
    user = v3.user("alice")
    role = v3.role("operator")
    v3.ok("PUT", f"/v3/projects/{project}/users/{user}/roles/{role['id']}")
    token = v3.login("alice", PASSWORD, project="p1")
    v3.ok("PATCH", f"/v3/roles/{role['id']}", {"role": {"name": "operator2"}})
    response = v3.client.get(
        "/v3/auth/tokens", headers={"X-Auth-Token": v3.admin, "X-Subject-Token": token}
    )
    assert response.status_code == 404
    fresh = v3.auth("alice", PASSWORD, project="p1")
    assert "operator2" in v3.token_roles(fresh)


# -- domain-specific roles ----------------------------------------------------------------


def test_domain_roles_are_listed_apart_and_never_in_tokens(v3: V3) -> None:
    domain = v3.domain("d1")
    other = v3.domain("d2")
    project = v3.project("dp", domain)
    user = v3.user("dora", domain)
    domain_role = v3.role("d1-editor", domain_id=domain)
    assert domain_role["domain_id"] == domain
    assert domain_role not in v3.ok("GET", "/v3/roles")["roles"]
    assert v3.ok("GET", f"/v3/roles?domain_id={domain}")["roles"] == [domain_role]
    assert v3.ok("GET", f"/v3/roles?domain_id={other}")["roles"] == []
    member = v3.ok("GET", "/v3/roles?name=member")["roles"][0]

    # A global role never implies a domain role; a domain role implies anything.
    v3.refused("PUT", f"/v3/roles/{member['id']}/implies/{domain_role['id']}", 403)
    v3.ok("PUT", f"/v3/roles/{domain_role['id']}/implies/{member['id']}", status=201)
    other_role = v3.role("d2-editor", domain_id=other)
    v3.ok("PUT", f"/v3/roles/{domain_role['id']}/implies/{other_role['id']}", status=201)

    # Granted only inside its domain, never on the system.
    default_project = v3.project("elsewhere")
    v3.refused("PUT", f"/v3/projects/{default_project}/users/{user}/roles/{domain_role['id']}", 403)
    v3.refused("PUT", f"/v3/system/users/{user}/roles/{domain_role['id']}", 400)
    v3.ok("PUT", f"/v3/projects/{project}/users/{user}/roles/{domain_role['id']}")

    effective = v3.ok(
        "GET", f"/v3/role_assignments?effective&user.id={user}&scope.project.id={project}"
    )["role_assignments"]
    reader = v3.ok("GET", "/v3/roles?name=reader")["roles"][0]
    assert {a["role"]["id"] for a in effective} == {member["id"], reader["id"]}
    token = v3.auth("dora", PASSWORD, project="dp", user_domain=domain, project_domain=domain)
    names = v3.token_roles(token)
    assert names == {"member", "reader"}

    v3.ok("DELETE", f"/v3/roles/{domain_role['id']}")
    assert v3.ok("GET", f"/v3/roles?domain_id={domain}")["roles"] == []


# -- implied roles ----------------------------------------------------------------------


def test_implied_roles(v3: V3) -> None:
    a, b, c = (v3.role(n) for n in ("ra", "rb", "rc"))
    created = v3.ok("PUT", f"/v3/roles/{a['id']}/implies/{b['id']}", status=201)
    inference = created["role_inference"]
    assert inference["prior_role"]["id"] == a["id"] and inference["implies"]["id"] == b["id"]
    assert inference["prior_role"]["name"] == "ra" and "self" in inference["implies"]["links"]
    v3.ok("PUT", f"/v3/roles/{a['id']}/implies/{c['id']}", status=201)
    v3.ok("HEAD", f"/v3/roles/{a['id']}/implies/{b['id']}")
    shown = v3.ok("GET", f"/v3/roles/{a['id']}/implies/{b['id']}")
    assert shown["role_inference"] == inference

    listed = v3.ok("GET", f"/v3/roles/{a['id']}/implies")["role_inference"]
    assert listed["prior_role"]["id"] == a["id"]
    assert {r["id"] for r in listed["implies"]} == {b["id"], c["id"]}
    rules = v3.ok("GET", "/v3/role_inferences")["role_inferences"]
    ours = [r for r in rules if r["prior_role"]["id"] == a["id"]]
    assert len(ours) == 1 and len(ours[0]["implies"]) == 2

    v3.refused("PUT", f"/v3/roles/{b['id']}/implies/{a['id']}", 400)  # a cycle
    v3.refused("PUT", f"/v3/roles/{a['id']}/implies/nope", 404)
    v3.ok("DELETE", f"/v3/roles/{a['id']}/implies/{b['id']}")
    v3.refused("GET", f"/v3/roles/{a['id']}/implies/{b['id']}", 404)
    v3.refused("HEAD", f"/v3/roles/{a['id']}/implies/{b['id']}", 404)
    v3.refused("DELETE", f"/v3/roles/{a['id']}/implies/{b['id']}", 404)


def test_effective_assignments_follow_implications(v3: V3) -> None:
    project = v3.project("p1")
    user = v3.user("alice")
    a, b = v3.role("ra"), v3.role("rb")
    v3.ok("PUT", f"/v3/projects/{project}/users/{user}/roles/{a['id']}")
    v3.ok("PUT", f"/v3/roles/{a['id']}/implies/{b['id']}", status=201)
    query = f"/v3/role_assignments?scope.project.id={project}&user.id={user}&effective"
    found = v3.ok("GET", query)["role_assignments"]
    assert sorted(x["role"]["id"] for x in found) == sorted([a["id"], b["id"]])
    implied = next(x for x in found if x["role"]["id"] == b["id"])
    assert implied["links"]["prior_role"].endswith(f"/v3/roles/{a['id']}")
    v3.ok("DELETE", f"/v3/roles/{a['id']}/implies/{b['id']}")
    assert [x["role"]["id"] for x in v3.ok("GET", query)["role_assignments"]] == [a["id"]]


def test_removing_an_implication_revokes_tokens_that_hold_it_transitively(v3: V3) -> None:
    p1 = v3.project("p2")
    user = v3.user("alice")
    a, b, c = v3.role("ra"), v3.role("rb"), v3.role("rc")
    v3.ok("PUT", f"/v3/roles/{a['id']}/implies/{b['id']}", status=201)
    v3.ok("PUT", f"/v3/roles/{b['id']}/implies/{c['id']}", status=201)
    v3.ok("PUT", f"/v3/projects/{p1}/users/{user}/roles/{a['id']}")
    issued = v3.auth("alice", PASSWORD, project="p2")
    assert v3.token_roles(issued) == {"ra", "rb", "rc"}
    token = issued.headers["X-Subject-Token"]
    v3.ok("DELETE", f"/v3/roles/{b['id']}/implies/{c['id']}")
    response = v3.client.get(
        "/v3/auth/tokens", headers={"X-Auth-Token": v3.admin, "X-Subject-Token": token}
    )
    assert response.status_code == 404
    assert v3.token_roles(v3.auth("alice", PASSWORD, project="p2")) == {"ra", "rb"}


# -- grants -------------------------------------------------------------------------------


@pytest.mark.parametrize("scope", ["projects", "domains"])
@pytest.mark.parametrize("actor", ["users", "groups"])
def test_grant_list_check_revoke(v3: V3, scope: str, actor: str) -> None:
    scope_id = v3.project("p1") if scope == "projects" else v3.domain("d1")
    actor_id = v3.user("alice") if actor == "users" else v3.group("team")
    role = v3.role("operator")
    base = f"/v3/{scope}/{scope_id}/{actor}/{actor_id}/roles"
    assert v3.ok("GET", base)["roles"] == []
    v3.refused("HEAD", f"{base}/{role['id']}", 404)
    v3.ok("PUT", f"{base}/{role['id']}")
    v3.ok("PUT", f"{base}/{role['id']}")  # idempotent
    assert v3.ok("GET", base)["roles"] == [role]
    v3.ok("HEAD", f"{base}/{role['id']}")
    v3.ok("GET", f"{base}/{role['id']}", status=204)
    # a direct grant is not an inherited one
    v3.refused("HEAD", f"/v3/OS-INHERIT{base}/{role['id']}/inherited_to_projects", 404)
    v3.ok("DELETE", f"{base}/{role['id']}")
    v3.refused("DELETE", f"{base}/{role['id']}", 404)
    assert v3.ok("GET", base)["roles"] == []
    v3.refused("PUT", f"{base}/no-such-role", 404)
    v3.refused("PUT", f"/v3/{scope}/nope/{actor}/{actor_id}/roles/{role['id']}", 404)
    v3.refused("PUT", f"/v3/{scope}/{scope_id}/{actor}/nope/roles/{role['id']}", 404)


def test_group_grant_reaches_the_members_tokens(v3: V3) -> None:
    project = v3.project("p1")
    user = v3.user("alice")
    group = v3.group("team")
    role = v3.role("operator")
    v3.ok("PUT", f"/v3/projects/{project}/groups/{group}/roles/{role['id']}")
    v3.add_member(group, user)
    assert v3.token_roles(v3.auth("alice", PASSWORD, project="p1")) == {"operator"}
    found = v3.ok("GET", f"/v3/role_assignments?user.id={user}&effective")["role_assignments"]
    assert len(found) == 1 and found[0]["user"]["id"] == user
    assert found[0]["links"]["membership"].endswith(f"/v3/groups/{group}/users/{user}")
    assert found[0]["links"]["assignment"].endswith(
        f"/v3/projects/{project}/groups/{group}/roles/{role['id']}"
    )
    v3.refused("GET", f"/v3/role_assignments?group.id={group}&effective", 400)


@pytest.mark.parametrize("actor", ["users", "groups"])
def test_system_grants(v3: V3, app: Flask, actor: str) -> None:
    user = v3.user("sysop")
    actor_id = user if actor == "users" else v3.group("operators")
    if actor == "groups":
        v3.add_member(actor_id, user)
    role = v3.role("auditor")
    v3.ok("PUT", f"/v3/roles/{role['id']}/implies/{v3.role('viewer')['id']}", status=201)
    base = f"/v3/system/{actor}/{actor_id}/roles"
    v3.ok("PUT", f"{base}/{role['id']}")
    assert [r["id"] for r in v3.ok("GET", base)["roles"]] == [role["id"]]
    v3.ok("HEAD", f"{base}/{role['id']}")
    found = v3.ok("GET", "/v3/role_assignments?scope.system=all")["role_assignments"]
    ours = [a for a in found if a["role"]["id"] == role["id"]]
    assert ours[0]["scope"] == {"system": {"all": True}}
    assert ours[0]["links"]["assignment"].endswith(f"{base}/{role['id']}")
    with app.app_context():
        roles = app.extensions["latchkey"].roles
        assert roles.effective_system_role_names(user) == {"auditor", "viewer"}
        assert roles.effective_role_names(user, project_id="nope") == set()
    v3.ok("DELETE", f"{base}/{role['id']}")
    v3.refused("HEAD", f"{base}/{role['id']}", 404)
    with app.app_context():
        assert app.extensions["latchkey"].roles.effective_system_role_names(user) == set()


# -- OS-INHERIT ---------------------------------------------------------------------------


@pytest.mark.parametrize("actor", ["users", "groups"])
def test_inherited_domain_grant_reaches_every_project_not_the_domain(v3: V3, actor: str) -> None:
    domain = v3.domain("d1")
    parent = v3.project("parent", domain)
    leaf = v3.project("leaf", domain, parent_id=parent)
    user = v3.user("alice", domain)
    actor_id = user if actor == "users" else v3.group("team", domain)
    if actor == "groups":
        v3.add_member(actor_id, user)
    role = v3.role("operator")
    base = f"/v3/OS-INHERIT/domains/{domain}/{actor}/{actor_id}/roles"
    v3.ok("PUT", f"{base}/{role['id']}/inherited_to_projects")
    assert [r["id"] for r in v3.ok("GET", f"{base}/inherited_to_projects")["roles"]] == [role["id"]]
    v3.ok("HEAD", f"{base}/{role['id']}/inherited_to_projects")
    # not a grant on the domain itself
    assert v3.ok("GET", f"/v3/domains/{domain}/{actor}/{actor_id}/roles")["roles"] == []

    for project in (parent, leaf):
        query = f"/v3/role_assignments?effective&user.id={user}&scope.project.id={project}"
        (found,) = v3.ok("GET", query)["role_assignments"]
        assert found["scope"] == {"project": {"id": project}}
        assert found["links"]["assignment"].endswith(f"{base}/{role['id']}/inherited_to_projects")
    for name in ("parent", "leaf"):
        token = v3.auth("alice", PASSWORD, project=name, user_domain=domain, project_domain=domain)
        assert v3.token_roles(token) == {"operator"}
    assert v3.auth("alice", PASSWORD, domain=domain, user_domain=domain).status_code == 401

    listed = v3.ok("GET", "/v3/role_assignments?scope.OS-INHERIT:inherited_to=projects")
    (direct,) = [a for a in listed["role_assignments"] if a["role"]["id"] == role["id"]]
    assert direct["scope"] == {"domain": {"id": domain}, "OS-INHERIT:inherited_to": "projects"}

    v3.ok("DELETE", f"{base}/{role['id']}/inherited_to_projects")
    query = f"/v3/role_assignments?effective&user.id={user}&scope.project.id={leaf}"
    assert v3.ok("GET", query)["role_assignments"] == []


def test_inherited_project_grant_reaches_the_subtree_only(v3: V3) -> None:
    parent = v3.project("parent")
    child = v3.project("child", parent_id=parent)
    grandchild = v3.project("grandchild", parent_id=child)
    user = v3.user("alice")
    role = v3.role("operator")
    grant = (
        f"/v3/OS-INHERIT/projects/{parent}/users/{user}/roles/{role['id']}/inherited_to_projects"
    )
    v3.ok("PUT", grant)
    v3.ok("HEAD", grant)
    assert v3.auth("alice", PASSWORD, project="parent").status_code == 401
    for name in ("child", "grandchild"):
        assert v3.token_roles(v3.auth("alice", PASSWORD, project=name)) == {"operator"}
    subtree = v3.ok(
        "GET", f"/v3/role_assignments?scope.project.id={parent}&include_subtree=true&effective"
    )["role_assignments"]
    assert {a["scope"]["project"]["id"] for a in subtree} == {child, grandchild}
    with v3.app.app_context():
        found = v3.app.extensions["latchkey"].roles.effective_project_ids(user)
        assert found == {child, grandchild}
    v3.ok("DELETE", grant)
    query = f"/v3/role_assignments?effective&user.id={user}&scope.project.id={grandchild}"
    assert v3.ok("GET", query)["role_assignments"] == []


def test_inheritance_never_reaches_the_admin_project(v3: V3) -> None:
    other = v3.project("other")
    user = v3.user("alice")
    admin = v3.ok("GET", "/v3/roles?name=admin")["roles"][0]
    grant = f"/v3/OS-INHERIT/domains/default/users/{user}/roles/{admin['id']}/inherited_to_projects"
    v3.ok("PUT", grant)
    assert v3.token_roles(v3.auth("alice", PASSWORD, project="other")) >= {"admin"}
    assert v3.auth("alice", PASSWORD, project="admin").status_code == 401
    found = v3.ok("GET", f"/v3/role_assignments?effective&user.id={user}")["role_assignments"]
    assert {a["scope"]["project"]["id"] for a in found} == {other}


# -- role assignments ---------------------------------------------------------------------


def test_role_assignments_filters_and_names(v3: V3) -> None:
    domain = v3.domain("d1")
    project = v3.project("p1", domain)
    user = v3.user("alice", domain)
    group = v3.group("team", domain)
    role = v3.role("operator")
    v3.ok("PUT", f"/v3/projects/{project}/users/{user}/roles/{role['id']}")
    v3.ok("PUT", f"/v3/domains/{domain}/groups/{group}/roles/{role['id']}")

    by_user = v3.ok("GET", f"/v3/role_assignments?user.id={user}")["role_assignments"]
    assert by_user == [
        {
            "role": {"id": role["id"]},
            "user": {"id": user},
            "scope": {"project": {"id": project}},
            "links": {
                "assignment": by_user[0]["links"]["assignment"],
            },
        }
    ]
    assert by_user[0]["links"]["assignment"].endswith(
        f"/v3/projects/{project}/users/{user}/roles/{role['id']}"
    )
    by_group = v3.ok("GET", f"/v3/role_assignments?group.id={group}")["role_assignments"]
    assert [a["scope"] for a in by_group] == [{"domain": {"id": domain}}]
    by_role = v3.ok("GET", f"/v3/role_assignments?role.id={role['id']}")["role_assignments"]
    assert len(by_role) == 2
    on_domain = v3.ok("GET", f"/v3/role_assignments?scope.domain.id={domain}")
    assert [a["group"]["id"] for a in on_domain["role_assignments"]] == [group]
    assert v3.ok("GET", "/v3/role_assignments?role.id=nope")["role_assignments"] == []

    named = v3.ok("GET", f"/v3/role_assignments?user.id={user}&include_names=True")
    (one,) = named["role_assignments"]
    assert one["role"] == {"id": role["id"], "name": "operator"}
    assert one["user"] == {"id": user, "name": "alice", "domain": {"id": domain, "name": "d1"}}
    assert one["scope"]["project"] == {
        "id": project,
        "name": "p1",
        "domain": {"id": domain, "name": "d1"},
    }
    admin = v3.ok("GET", "/v3/role_assignments?include_names=1&scope.project.id=" + project)
    assert len(admin["role_assignments"]) == 1


@pytest.mark.parametrize(
    "query",
    [
        "user.id=a&group.id=b",
        "scope.project.id=a&scope.domain.id=b",
        "scope.system=all&scope.domain.id=b",
        "scope.system=some",
        "scope.OS-INHERIT:inherited_to=domains",
        "effective&scope.OS-INHERIT:inherited_to=projects",
        "include_subtree=true",
    ],
)
def test_bad_assignment_filters_are_400(v3: V3, query: str) -> None:
    v3.refused("GET", f"/v3/role_assignments?{query}", 400)


# -- who may ------------------------------------------------------------------------------


@pytest.fixture
def tenant(v3: V3) -> dict[str, Any]:
    """A project admin of p1 (holding admin and member there), another project p2, a
    domain admin of d1, and a user of the Default domain."""
    p1, p2 = v3.project("p1"), v3.project("p2")
    d1 = v3.domain("d1")
    dp = v3.project("dp", d1)
    boss, victim = v3.user("boss"), v3.user("victim")
    dadmin = v3.user("dadmin", d1)
    admin, member = (v3.ok("GET", f"/v3/roles?name={n}")["roles"][0] for n in ("admin", "member"))
    v3.ok("PUT", f"/v3/projects/{p1}/users/{boss}/roles/{admin['id']}")
    v3.ok("PUT", f"/v3/domains/{d1}/users/{dadmin}/roles/{admin['id']}")
    return {
        "p1": p1,
        "p2": p2,
        "d1": d1,
        "dp": dp,
        "victim": victim,
        "dadmin": dadmin,
        "admin": admin,
        "member": member,
        "secret": v3.role("secret-role"),
        "boss_token": v3.login("boss", PASSWORD, project="p1"),
        "dadmin_token": v3.login("dadmin", PASSWORD, domain=d1, user_domain=d1),
    }


def test_a_project_admin_stays_in_its_project(v3: V3, tenant: dict[str, Any]) -> None:
    token, victim, member = tenant["boss_token"], tenant["victim"], tenant["member"]["id"]
    v3.ok("PUT", f"/v3/projects/{tenant['p1']}/users/{victim}/roles/{member}", token=token)
    v3.ok("GET", f"/v3/role_assignments?scope.project.id={tenant['p1']}", token=token)
    for method, path in [
        ("PUT", f"/v3/projects/{tenant['p2']}/users/{victim}/roles/{member}"),
        ("GET", f"/v3/projects/{tenant['p2']}/users/{victim}/roles"),
        ("HEAD", f"/v3/projects/{tenant['p2']}/users/{victim}/roles/{member}"),
        ("GET", f"/v3/role_assignments?scope.project.id={tenant['p2']}"),
        ("GET", f"/v3/role_assignments?scope.project.id={tenant['p1']}&include_subtree=1"),
        ("GET", "/v3/role_assignments"),
        ("GET", "/v3/role_assignments?scope.system=all"),
        ("PUT", f"/v3/system/users/{victim}/roles/{member}"),
        ("PUT", f"/v3/domains/default/users/{victim}/roles/{member}"),
        (
            "PUT",
            f"/v3/OS-INHERIT/projects/{tenant['p2']}/users/{victim}/roles/{member}"
            "/inherited_to_projects",
        ),
        # its own project's subtree: other projects
        (
            "PUT",
            f"/v3/OS-INHERIT/projects/{tenant['p1']}/users/{victim}/roles/{member}"
            "/inherited_to_projects",
        ),
        ("POST", "/v3/roles"),
        ("PATCH", f"/v3/roles/{member}"),
        ("DELETE", f"/v3/roles/{member}"),
        ("PUT", f"/v3/roles/{member}/implies/{tenant['admin']['id']}"),
        # no escalation: a role the caller does not hold
        ("PUT", f"/v3/projects/{tenant['p1']}/users/{victim}/roles/{tenant['secret']['id']}"),
        # nor on the cloud's own project
        ("PUT", f"/v3/system/users/{victim}/roles/no-such-role"),
    ]:
        body = {"role": {"name": "x"}} if method in ("POST", "PATCH") else None
        v3.refused(method, path, 403, body, token=token)
    # reading roles is for everyone
    v3.ok("GET", "/v3/roles", token=token)


def test_a_domain_admin_cannot_reach_the_cloud_by_inheritance(
    v3: V3, tenant: dict[str, Any]
) -> None:
    token, dadmin, admin = tenant["dadmin_token"], tenant["dadmin"], tenant["admin"]["id"]
    d1 = tenant["d1"]
    # inside its domain: fine
    v3.ok(
        "PUT",
        f"/v3/OS-INHERIT/domains/{d1}/users/{dadmin}/roles/{admin}/inherited_to_projects",
        token=token,
    )
    # the Default domain holds the operators' admin project: cloud callers only
    for path in [
        f"/v3/OS-INHERIT/domains/default/users/{dadmin}/roles/{admin}/inherited_to_projects",
        f"/v3/system/users/{dadmin}/roles/{admin}",
        f"/v3/domains/default/users/{dadmin}/roles/{admin}",
    ]:
        v3.refused("PUT", path, 403, token=token)


def test_a_restricted_application_credential_changes_nothing(
    v3: V3, tenant: dict[str, Any]
) -> None:
    response = v3.client.post(
        f"/v3/users/{_user_id(v3, tenant['boss_token'])}/application_credentials",
        json={"application_credential": {"name": "ci"}},
        headers={"X-Auth-Token": tenant["boss_token"]},
    )
    assert response.status_code == 201, response.get_json()
    credential = response.get_json()["application_credential"]
    issued = v3.client.post(
        "/v3/auth/tokens",
        json={
            "auth": {
                "identity": {
                    "methods": ["application_credential"],
                    "application_credential": {
                        "id": credential["id"],
                        "secret": credential["secret"],
                    },
                }
            }
        },
    )
    assert issued.status_code == 201, issued.get_json()
    token = issued.headers["X-Subject-Token"]
    member = tenant["member"]["id"]
    v3.refused(
        "PUT",
        f"/v3/projects/{tenant['p1']}/users/{tenant['victim']}/roles/{member}",
        403,
        token=token,
    )
    v3.refused("POST", "/v3/roles", 403, {"role": {"name": "x"}}, token=token)
    v3.ok("GET", "/v3/roles", token=token)


def _user_id(v3: V3, token: str) -> str:
    response = v3.client.get(
        "/v3/auth/tokens", headers={"X-Auth-Token": token, "X-Subject-Token": token}
    )
    assert response.status_code == 200, response.get_json()
    return str(response.get_json()["token"]["user"]["id"])


# -- python-openstackclient -----------------------------------------------------------------


def test_openstack_role_commands(
    openstack_venv: Path,  # noqa: F811 (the fixture imported above)
    latchkey: Served,  # noqa: F811
    tmp_path: Path,
) -> None:
    """`openstack role *`, `implied role *`, `role assignment list` from .venv-openstack.

    (`role add/remove` resolve users and projects by name through the /v3 directory;
    their HTTP calls are the grants above.)"""
    run = (openstack_venv, tmp_path, password_env(latchkey))
    created = openstack_json(*run, "role", "create", "cli-role", "--description", "from the CLI")
    assert created["name"] == "cli-role" and created["description"] == "from the CLI"
    assert "cli-role" in [row["Name"] for row in openstack_json(*run, "role", "list")]
    assert openstack_json(*run, "role", "show", created["id"])["name"] == "cli-role"
    openstack(*run, "role", "set", created["id"], "--name", "cli-role-2")
    assert openstack_json(*run, "role", "show", created["id"])["name"] == "cli-role-2"

    openstack(*run, "implied", "role", "create", "cli-role-2", "--implied-role", "reader")
    rules = openstack_json(*run, "implied", "role", "list")
    assert {"Prior Role Name": "cli-role-2", "Implied Role Name": "reader"}.items() <= next(
        r for r in rules if r["Prior Role Name"] == "cli-role-2"
    ).items()

    names = openstack_json(*run, "role", "assignment", "list", "--names", "--effective")
    assert {
        (row["Role"], row["User"], row["Project"])
        for row in names
        if row["Project"] == "admin@Default"
    } >= {("admin", "admin@Default", "admin@Default"), ("reader", "admin@Default", "admin@Default")}
    # Bootstrap gives the admin the admin role on the system, as keystone-manage does.
    system = openstack_json(*run, "role", "assignment", "list", "--system", "all")
    assert [row["System"] for row in system] == ["all"]

    openstack(*run, "implied", "role", "delete", "cli-role-2", "--implied-role", "reader")
    openstack(*run, "role", "delete", "cli-role-2")
    assert "cli-role-2" not in [row["Name"] for row in openstack_json(*run, "role", "list")]
