"""Restricted application credentials never change what anyone may do (issue 13,
class 2).

The story: a tenant admin gives a CI job a credential (restricted, the default)
carrying `admin`, and a deny rule aimed at that credential. The job's token
tries to lift the rule — by PUTting the policy without it, by activating the
older version that lacked it, and (an operator's CI credential, scoped to the
admin project) by replacing the domain-wide rules. Each attempt is refused with
403 ``application_credential_restricted``, and the deny still applies
afterwards. The owner's password token and an unrestricted credential keep
working.

The rule itself is named once (``latchkey.policy.enforcer.changes_privileges``):
every action whose verb is not a read. The last tests pin which of the rule
table's actions a restricted credential may still perform, so that a new
action is refused to them unless someone decides otherwise here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from flask import Flask
from werkzeug.test import TestResponse

from latchkey.errors import Forbidden
from latchkey.policy.context import AuthContext
from latchkey.policy.enforcer import RULES, Enforcer, Target, changes_privileges
from latchkey.policy.engine import DEFAULT_BOUNDARY
from tests.conftest import ADMIN_PASSWORD, Api

PASSWORD = "restricted-password-1234"
RESTRICTED = "application_credential_restricted"
SERVICE = {
    "type": "objects",
    "name": "Object store",
    "actions": ["objects:container:read", "objects:container:delete"],
    "resource_types": {"objects:container": {"attributes": {"env": "string"}}},
}
ADMINS_ALL = {
    "id": "admins-all",
    "effect": "allow",
    "actions": ["objects:*:*"],
    "principals": {"roles": ["admin"]},
}


def deny_for(credential_id: str) -> dict[str, Any]:
    return {
        "id": "ci-never-deletes",
        "effect": "deny",
        "actions": ["objects:container:delete"],
        "principals": {"application_credentials": [credential_id]},
    }


@dataclass
class World:
    api: Api
    admin: str  # the cloud admin's password token
    web: str  # project `web`
    alice: str  # admin on `web`
    alice_token: str  # her password token, scoped to `web`
    ci: dict[str, Any]  # her restricted credential (admin, the default kind)
    ci_token: str

    def login_with(self, credential: dict[str, Any]) -> str:
        body = {"auth": {"application_credential": {"id": credential["id"]}}}
        body["auth"]["application_credential"]["secret"] = credential["secret"]
        response = self.api.call("POST", "/v1/auth/tokens", None, body)
        assert response.status_code == 201, response.get_json()
        return str(response.get_json()["token"])

    def credential(self, name: str, **extra: Any) -> dict[str, Any]:
        body = {"name": name, "project_id": self.web, **extra}
        path = f"/v1/users/{self.alice}/application-credentials"
        created: dict[str, Any] = self.api.ok("POST", path, self.alice_token, body)
        return created

    def delete_decision(self, token: str, project: str | None = None) -> dict[str, Any]:
        resource = {"type": "objects:container", "id": "c1", "project_id": project or self.web}
        body = {"action": "objects:container:delete", "resource": resource}
        decision: dict[str, Any] = self.api.ok("POST", "/v1/authorize", token, body, 200)
        return decision


def refused(response: TestResponse) -> None:
    problem = response.get_json() or {}
    if "error" in problem:  # the Keystone door's shape
        problem = {"code": RESTRICTED} if "restricted" in problem["error"]["message"] else problem
    assert response.status_code == 403, (response.request.path, problem)
    assert problem.get("code") == RESTRICTED, (response.request.path, problem)


@pytest.fixture
def world(app: Flask, api: Api, admin_token: str) -> World:
    with app.app_context():
        app.extensions["latchkey"].boundaries.load_file(str(DEFAULT_BOUNDARY))
    api.ok("POST", "/v1/services", admin_token, SERVICE)
    web = api.ok("POST", "/v1/projects", admin_token, {"name": "web"})["id"]
    alice = api.ok("POST", "/v1/users", admin_token, {"name": "alice", "password": PASSWORD})["id"]
    api.ok("PUT", f"/v1/projects/{web}/users/{alice}/roles/admin", admin_token)
    alice_token = api.login("alice", PASSWORD, project="web")
    w = World(api, admin_token, web, alice, alice_token, {}, "")
    w.ci = w.credential("ci")
    assert w.ci["unrestricted"] is False and "admin" in w.ci["roles"]
    w.ci_token = w.login_with(w.ci)
    return w


def test_a_restricted_admin_credential_cannot_lift_a_deny_aimed_at_itself(world: World) -> None:
    api, w = world.api, world
    root = w.credential("root", unrestricted=True)  # before the policy (identity actions too)
    policy = f"/v1/projects/{w.web}/policy"
    assert api.ok("PUT", policy, w.alice_token, {"rules": [ADMINS_ALL]}, 200)["version"] == 1
    locked = {"rules": [ADMINS_ALL, deny_for(w.ci["id"])]}
    assert api.ok("PUT", policy, w.alice_token, locked, 200)["version"] == 2
    assert w.delete_decision(w.ci_token)["rule"] == "ci-never-deletes"

    # 1. PUT the policy without the deny rule.
    refused(api.call("PUT", policy, w.ci_token, {"rules": [ADMINS_ALL]}))
    # 2. Roll back to version 1, which lacked it.
    refused(api.call("POST", f"{policy}/versions/1/activate", w.ci_token))
    # 3. Make itself (or a new account) something the deny does not name.
    refused(api.call("PUT", f"/v1/projects/{w.web}/users/{w.alice}/roles/member", w.ci_token))
    body = {"name": "ci-2", "project_id": w.web, "unrestricted": True}
    refused(api.call("POST", f"/v1/users/{w.alice}/application-credentials", w.ci_token, body))

    # Nothing changed: version 2 is active, the deny still applies.
    current = api.ok("GET", policy, w.alice_token)
    assert current["version"] == 2
    assert [v["version"] for v in api.ok("GET", f"{policy}/versions", w.ci_token)["versions"]] == [
        1,
        2,
    ]
    decision = w.delete_decision(w.ci_token)
    assert (decision["allowed"], decision["rule"]) == (False, "ci-never-deletes")

    # Reading, validating and simulating change nothing: still allowed.
    assert api.ok("GET", policy, w.ci_token)["version"] == 2
    validated = api.ok("POST", f"{policy}/validate", w.ci_token, {"rules": [ADMINS_ALL]}, 200)
    assert validated == {"valid": True, "rules": 1}
    api.ok("POST", f"{policy}/simulate", w.ci_token, {"rules": [ADMINS_ALL]}, 200)

    # The owner's password token, and an unrestricted credential of hers, still manage.
    api.ok("POST", f"{policy}/versions/1/activate", w.alice_token, None, 200)
    assert w.delete_decision(w.ci_token)["allowed"] is True
    root_token = w.login_with(root)
    assert api.ok("POST", f"{policy}/versions/2/activate", root_token, None, 200)["version"] == 2
    assert w.delete_decision(w.ci_token)["rule"] == "ci-never-deletes"


def test_an_operators_restricted_credential_cannot_lift_a_domain_deny(world: World) -> None:
    """Domain-wide rules: a cloud admin's CI credential (scoped to the admin project)."""
    api, w = world.api, world
    admin_id = api.ok("GET", "/v1/users?name=admin", w.admin)["users"][0]["id"]
    admin_project = api.ok("GET", "/v1/projects?name=admin", w.admin)["projects"][0]["id"]
    path = f"/v1/users/{admin_id}/application-credentials"
    ops_ci = api.ok("POST", path, w.admin, {"name": "ops-ci", "project_id": admin_project})
    ops_token = w.login_with(ops_ci)
    domain_policy = "/v1/domains/default/policy"
    assert api.ok("PUT", domain_policy, w.admin, {"rules": []}, 200)["version"] == 1
    locked = {"rules": [deny_for(ops_ci["id"])]}
    assert api.ok("PUT", domain_policy, w.admin, locked, 200)["version"] == 2
    assert w.delete_decision(ops_token, admin_project)["rule"] == "domain/ci-never-deletes"

    refused(api.call("PUT", domain_policy, ops_token, {"rules": []}))
    refused(api.call("POST", f"{domain_policy}/versions/1/activate", ops_token))
    # Nor through the project's own document or the catalog.
    refused(api.call("PUT", f"/v1/projects/{admin_project}/policy", ops_token, {"rules": []}))
    refused(api.call("DELETE", "/v1/services/objects", ops_token))

    assert api.ok("GET", domain_policy, w.admin)["version"] == 2
    decision = w.delete_decision(ops_token, admin_project)
    assert (decision["allowed"], decision["rule"]) == (False, "domain/ci-never-deletes")
    # The cloud admin's password token still manages the domain's rules.
    api.ok("POST", f"{domain_policy}/versions/1/activate", w.admin, None, 200)
    assert w.delete_decision(ops_token, admin_project)["allowed"] is True


def test_every_privilege_changing_request_is_refused(world: World) -> None:
    """An operator's restricted credential (cloud admin: the table would allow all of
    these) against one request per kind of privilege-changing action."""
    api, w = world.api, world
    admin_id = api.ok("GET", "/v1/users?name=admin", w.admin)["users"][0]["id"]
    admin_project = api.ok("GET", "/v1/projects?name=admin", w.admin)["projects"][0]["id"]
    path = f"/v1/users/{admin_id}/application-credentials"
    ops_ci = api.ok("POST", path, w.admin, {"name": "ops-ci", "project_id": admin_project})
    token = w.login_with(ops_ci)
    group = api.ok("POST", "/v1/groups", w.admin, {"name": "staff"})["id"]
    bob = api.ok("POST", "/v1/users", w.admin, {"name": "bob", "password": PASSWORD})["id"]
    api.ok("PUT", f"/v1/groups/{group}/users/{bob}", w.admin)
    alice_creds = f"/v1/users/{w.alice}/application-credentials"
    requests: list[tuple[str, str, Any]] = [
        ("POST", "/v1/domains", {"name": "d2"}),
        ("PATCH", "/v1/domains/default", {"description": "x"}),
        ("POST", "/v1/projects", {"name": "p2"}),
        ("PATCH", f"/v1/projects/{w.web}", {"description": "x"}),
        ("DELETE", f"/v1/projects/{w.web}", None),
        ("POST", "/v1/users", {"name": "carol", "password": PASSWORD}),
        ("PATCH", f"/v1/users/{bob}", {"password": PASSWORD + "-new"}),
        ("DELETE", f"/v1/users/{bob}", None),
        (
            "POST",
            f"/v1/users/{admin_id}/password",
            {"original_password": ADMIN_PASSWORD, "password": PASSWORD + "-new"},
        ),
        ("POST", "/v1/groups", {"name": "g2"}),
        ("PATCH", f"/v1/groups/{group}", {"description": "x"}),
        ("DELETE", f"/v1/groups/{group}", None),
        ("PUT", f"/v1/groups/{group}/users/{w.alice}", None),
        ("DELETE", f"/v1/groups/{group}/users/{bob}", None),
        ("POST", "/v1/roles", {"name": "r2"}),
        ("DELETE", "/v1/roles/member", None),
        ("PUT", "/v1/roles/reader/implies/admin", None),
        ("DELETE", "/v1/roles/admin/implies/member", None),
        ("PUT", f"/v1/projects/{w.web}/users/{bob}/roles/admin", None),
        ("DELETE", f"/v1/projects/{w.web}/users/{w.alice}/roles/admin", None),
        ("PUT", f"/v1/projects/{w.web}/groups/{group}/roles/admin", None),
        ("PUT", f"/v1/domains/default/users/{bob}/roles/admin", None),
        ("PUT", f"/v1/domains/default/groups/{group}/roles/admin", None),
        ("POST", path, {"name": "minted", "project_id": admin_project}),
        ("POST", f"{path}/{ops_ci['id']}/secrets", {}),
        ("DELETE", f"{path}/{ops_ci['id']}/secrets/{ops_ci['secret_id']}", None),
        ("DELETE", f"{path}/{ops_ci['id']}", None),
        ("DELETE", f"{alice_creds}/{w.ci['id']}", None),
        ("POST", "/v1/services", {**SERVICE, "type": "other"}),
        ("PUT", "/v1/services/objects", SERVICE),
        ("PUT", f"/v1/projects/{w.web}/policy", {"rules": []}),
        ("PUT", "/v1/domains/default/policy", {"rules": []}),
    ]
    for method, url, body in requests:
        refused(api.call(method, url, token, body))
    # Revoking someone else's token; its own token stays its own to revoke (logging out).
    other = {"X-Subject-Token": w.alice_token}
    refused(api.call("DELETE", "/v1/auth/tokens", token, headers=other))
    # Through the Keystone door: refused before the body is even read.
    refused(api.call("POST", f"/v3/users/{admin_id}/application_credentials", token, {}))
    body = {"application_credential": {"name": "minted"}}
    refused(api.call("POST", f"/v3/users/{admin_id}/application_credentials", token, body))
    # Nothing happened.
    assert api.ok("GET", f"/v1/users/{bob}", w.admin)["enabled"] is True
    assert api.ok("GET", f"/v1/groups/{group}/users", w.admin)["users"][0]["id"] == bob
    names = [c["name"] for c in api.ok("GET", path, w.admin)["application_credentials"]]
    assert names == ["ops-ci"]
    assert api.ok("GET", "/v1/users?name=carol", w.admin)["users"] == []
    # Reads still work, and its own logout.
    api.ok("GET", "/v1/users", token)
    api.ok("GET", "/v1/audit/events", token)
    api.ok("GET", path, token)
    own = api.call("DELETE", "/v1/auth/tokens", token, headers={"X-Subject-Token": token})
    assert own.status_code == 204, own.get_json()


def test_tenant_secrets_stay_data_for_restricted_credentials(world: World) -> None:
    """Tenant secrets are data, not privileges: the project's policy decides alone."""
    api, w = world.api, world
    path = f"/v1/projects/{w.web}/secrets"
    created = api.ok("POST", path, w.ci_token, {"name": "db", "payload": "s3cret"})
    api.ok("PUT", f"{path}/{created['id']}/payload", w.ci_token, {"payload": "n3w"}, 200)
    assert api.ok("GET", f"{path}/{created['id']}/payload", w.ci_token)["payload"] == "n3w"
    api.ok("DELETE", f"{path}/{created['id']}", w.ci_token)


# -- the rule, named once -------------------------------------------------------------

# What a restricted credential may still ask of Latchkey's own API: reads, and asking
# decisions on a user's behalf (a relying service). Everything else is refused.
MAY_PERFORM = {
    "audit:event:list",
    "identity:application_credential:get",  # its owner's own only
    "identity:application_credential:list",  # its owner's own only
    "identity:domain:get",
    "identity:domain_config:get",
    "identity:domain:list",
    "identity:endpoint:get",  # the catalog (issue 14)
    "identity:endpoint:list",
    "identity:endpoint_group:get",
    "identity:endpoint_group:list",
    "identity:group:get",
    "identity:group:list",
    "identity:group:list_members",
    "identity:policy_blob:get",
    "identity:policy_blob:list",
    "identity:oauth1_consumer:get",  # no secret in the answer
    "identity:oauth1_consumer:list",
    "identity:project:get",
    "identity:project:list",
    "identity:region:get",  # the catalog (issue 14)
    "identity:region:list",
    "identity:revocation:list",
    "identity:role:get",
    "identity:role:list",
    "identity:role_assignment:list",
    "identity:service:get",
    "identity:service:list",
    "identity:token:introspect",  # reads another client's token, changes nothing
    "identity:token:revoke",  # its owner's own tokens only
    "identity:token:validate",
    "identity:trust:get",  # reads (issue 14)
    "identity:trust:list",
    "identity:user:get",
    "identity:user:list",
    "identity:user:list_projects",
    "identity:user:list_groups",
    "policy:decision:on_behalf",
    "policy:domain_policy:get",
    "policy:domain_policy:validate",
    "policy:policy:get",
    "policy:policy:validate",
}


def _auth(restricted: bool, user_id: str = "u1") -> AuthContext:
    return AuthContext(
        user_id=user_id,
        user_domain_id="default",
        token_id="t",
        roles=frozenset({"admin", "member", "reader", "service"}),
        project_id="admin-project",
        is_admin_project=True,
        application_credential_id="c1",
        restricted=restricted,
    )


def test_the_table_actions_a_restricted_credential_may_perform() -> None:
    enforcer = Enforcer()
    allowed = set()
    for action in RULES:
        # About its own user (`self`): the most a restricted credential can get.
        try:
            enforcer.enforce(_auth(True), action, Target(user_id="u1"))
        except Forbidden as exc:
            assert exc.code == RESTRICTED, (action, exc.code)
        else:
            allowed.add(action)
        # Unrestricted, the same cloud admin may do all of it.
        enforcer.enforce(_auth(False), action, Target(user_id="u1"))
    assert allowed == MAY_PERFORM


def test_a_new_action_is_refused_unless_it_only_reads() -> None:
    for action in ("identity:subscription:create", "identity:trust:update", "x:y:purge"):
        assert changes_privileges(action)
    for action in ("identity:subscription:get", "identity:trust:list", "x:y:list_things"):
        assert not changes_privileges(action)
    rules = {"identity:subscription:create": RULES["identity:domain:create"]}
    with pytest.raises(Forbidden) as refused_:
        Enforcer(rules).enforce(_auth(True), "identity:subscription:create", Target())
    assert refused_.value.code == RESTRICTED
    # Reads about someone else are refused where they are "own only".
    with pytest.raises(Forbidden):
        Enforcer().enforce(_auth(True), "identity:token:revoke", Target(user_id="u2"))
