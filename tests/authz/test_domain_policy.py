"""Domain-wide rules: one document per domain, in force in every project of it.

Domain ``acme`` holds projects ``web`` and ``data``; domain ``other`` holds
``elsewhere``. In each project: ``member`` (a human with ``member``) and ``bot``
(an application account with ``member``, through a credential). ``acme-admin``
holds ``admin`` on the domain and uses a domain-scoped token.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from flask import Flask

from latchkey.policy.engine import DEFAULT_BOUNDARY
from tests.authz.test_policy_personas import SERVICE, credential_token
from tests.conftest import Api

PASSWORD = "persona-password-1234"
APPS_NEVER_DELETE = {
    "id": "apps-never-delete",
    "effect": "deny",
    "actions": ["objects:*:delete"],
    "principals": {"kinds": ["application"]},
}


@dataclass
class Acme:
    api: Api
    cloud: str
    domains: dict[str, str] = field(default_factory=dict)
    projects: dict[str, str] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)
    ids: dict[str, str] = field(default_factory=dict)

    def decide(self, who: str, verb: str, project: str, env: str = "staging") -> str:
        body = {
            "action": f"objects:container:{verb}",
            "resource": {
                "type": "objects:container",
                "project_id": self.projects[project],
                "attributes": {"env": env},
            },
        }
        answer = self.api.ok("POST", "/v1/authorize", self.tokens[who], body, 200)
        verdict = "allow" if answer["allowed"] else "deny"
        rule = f"/{answer['rule']}" if answer.get("rule") else ""
        return f"{verdict}/{answer['decided_by']}{rule}"

    def put_domain_policy(self, rules: list[dict[str, Any]], token: str | None = None) -> Any:
        return self.api.call(
            "PUT",
            f"/v1/domains/{self.domains['acme']}/policy",
            token or self.tokens["acme-admin"],
            {"rules": rules},
        )


@pytest.fixture
def acme(app: Flask, api: Api, admin_token: str) -> Acme:
    with app.app_context():
        app.extensions["latchkey"].boundaries.load_file(str(DEFAULT_BOUNDARY))
    api.ok("POST", "/v1/services", admin_token, SERVICE)
    w = Acme(api, admin_token)
    for domain, projects in (("acme", ("web", "data")), ("other", ("elsewhere",))):
        did = api.ok("POST", "/v1/domains", admin_token, {"name": domain})["id"]
        w.domains[domain] = did
        for name in projects:
            body = {"name": name, "domain_id": did}
            pid = api.ok("POST", "/v1/projects", admin_token, body)["id"]
            w.projects[name] = pid
            user = api.ok(
                "POST",
                "/v1/users",
                admin_token,
                {"name": f"member-{name}", "password": PASSWORD, "domain_id": did},
            )
            api.ok("PUT", f"/v1/projects/{pid}/users/{user['id']}/roles/member", admin_token)
            w.ids[f"member-{name}"] = user["id"]
            w.tokens[f"member-{name}"] = api.login(
                f"member-{name}", PASSWORD, project=name, user_domain=did, project_domain=did
            )
            bot = api.ok(
                "POST",
                "/v1/users",
                admin_token,
                {
                    "name": f"bot-{name}",
                    "kind": "application",
                    "owner_project_id": pid,
                    "domain_id": did,
                },
            )
            api.ok("PUT", f"/v1/projects/{pid}/users/{bot['id']}/roles/member", admin_token)
            w.ids[f"bot-{name}"] = bot["id"]
            w.tokens[f"bot-{name}"], _ = credential_token(
                api, admin_token, bot["id"], pid, name="ci"
            )
    acme_id = w.domains["acme"]
    body = {"name": "acme-admin", "password": PASSWORD, "domain_id": acme_id}
    admin = api.ok("POST", "/v1/users", admin_token, body)
    api.ok("PUT", f"/v1/domains/{acme_id}/users/{admin['id']}/roles/admin", admin_token)
    w.tokens["acme-admin"] = api.login(
        "acme-admin", PASSWORD, domain_scope=acme_id, user_domain=acme_id
    )
    return w


def test_domain_denies_apply_in_every_project_of_the_domain(acme: Acme) -> None:
    assert acme.put_domain_policy([APPS_NEVER_DELETE]).status_code == 200
    for project in ("web", "data"):
        # Deny-only domain rules take away; the boundary still decides the rest.
        assert acme.decide(f"bot-{project}", "delete", project) == (
            "deny/policy/domain/apps-never-delete"
        )
        assert acme.decide(f"bot-{project}", "read", project) == "allow/boundary"
        assert acme.decide(f"member-{project}", "delete", project) == "allow/boundary"
    # Another domain's projects never see them.
    assert acme.decide("bot-elsewhere", "write", "elsewhere") == "allow/boundary"


def test_a_project_policy_cannot_override_a_domain_deny(acme: Acme) -> None:
    acme.put_domain_policy([APPS_NEVER_DELETE])
    admin = acme.cloud
    everything = {"id": "members-all", "effect": "allow", "actions": ["objects:*:*"]}
    acme.api.ok(
        "PUT", f"/v1/projects/{acme.projects['web']}/policy", admin, {"rules": [everything]}, 200
    )
    assert acme.decide("bot-web", "delete", "web") == "deny/policy/domain/apps-never-delete"
    assert acme.decide("bot-web", "write", "web") == "allow/policy/members-all"
    # A project rule may reuse the id: domain rules are named domain/<id>.
    same_id = {**everything, "id": "apps-never-delete"}
    acme.api.ok(
        "PUT", f"/v1/projects/{acme.projects['web']}/policy", admin, {"rules": [same_id]}, 200
    )
    assert acme.decide("bot-web", "write", "web") == "allow/policy/apps-never-delete"


def test_domain_allow_rules_make_every_project_require_an_allow(acme: Acme) -> None:
    readers = {"id": "everyone-reads", "effect": "allow", "actions": ["objects:*:read"]}
    acme.put_domain_policy([readers, APPS_NEVER_DELETE])
    assert acme.decide("member-data", "read", "data") == "allow/policy/domain/everyone-reads"
    assert acme.decide("member-data", "write", "data") == "deny/policy"
    assert acme.decide("bot-elsewhere", "write", "elsewhere") == "allow/boundary"


def test_plan_sees_domain_rules(acme: Acme) -> None:
    prod_guard = {
        "id": "no-prod-deletes",
        "effect": "deny",
        "actions": ["objects:*:delete"],
        "resource": {
            "type": "objects:container",
            "conditions": [{"attribute": "env", "op": "=", "value": "prod"}],
        },
    }
    acme.put_domain_policy([prod_guard])
    body = {
        "action": "objects:container:delete",
        "resource_type": "objects:container",
        "project_id": acme.projects["web"],
    }
    admin_token = acme.cloud
    # The member of web has no delete in the boundary; ask as the project's admin.
    web = acme.projects["web"]
    acme.api.ok(
        "PUT", f"/v1/projects/{web}/users/{acme.ids['member-web']}/roles/admin", admin_token
    )
    token = acme.api.login(
        "member-web",
        PASSWORD,
        project="web",
        user_domain=acme.domains["acme"],
        project_domain=acme.domains["acme"],
    )
    answer = acme.api.ok("POST", "/v1/authorize/plan", token, body, 200)
    assert answer["kind"] == "conditional", answer
    assert answer["condition"] == {"not": {"attribute": "env", "op": "=", "value": "prod"}}


def test_domain_rules_govern_latchkeys_own_actions(acme: Acme) -> None:
    no_admin_grants = {
        "id": "no-admin-grants",
        "effect": "deny",
        "actions": ["identity:role_assignment:grant"],
        "resource": {
            "type": "identity:role_assignment",
            "conditions": [{"attribute": "role", "op": "=", "value": "admin"}],
        },
    }
    acme.put_domain_policy([no_admin_grants])
    grants = f"/v1/projects/{acme.projects['web']}/users/{acme.ids['member-web']}/roles"
    token = acme.tokens["acme-admin"]  # a domain admin is a tenant, not an operator
    assert acme.api.call("PUT", f"{grants}/reader", token).status_code == 204
    refused = acme.api.call("PUT", f"{grants}/admin", token)
    assert refused.status_code == 403
    assert refused.get_json()["code"] == "policy_denied"
    assert refused.get_json()["rule"] == "domain/no-admin-grants"
    assert acme.api.call("PUT", f"{grants}/admin", acme.cloud).status_code == 204


def test_who_may_edit_domain_rules(acme: Acme, api: Api) -> None:
    assert acme.put_domain_policy([APPS_NEVER_DELETE], acme.tokens["member-web"]).status_code == 403
    assert acme.put_domain_policy([APPS_NEVER_DELETE], acme.cloud).status_code == 200
    # The admin project's domain reaches the operators: the cloud's alone.
    body = {"name": "default-admin", "password": PASSWORD}
    user = api.ok("POST", "/v1/users", acme.cloud, body)
    api.ok("PUT", f"/v1/domains/default/users/{user['id']}/roles/admin", acme.cloud)
    default_admin = api.login("default-admin", PASSWORD, domain_scope="default")
    refused = api.call("PUT", "/v1/domains/default/policy", default_admin, {"rules": []})
    assert refused.status_code == 403
    assert api.call("GET", "/v1/domains/nope/policy", acme.cloud).status_code == 404


def test_domain_rules_name_only_the_domains_principals(acme: Acme) -> None:
    outsider = {
        "id": "outsider",
        "effect": "allow",
        "actions": ["objects:*:read"],
        "principals": {"users": [acme.ids["member-elsewhere"]]},
    }
    response = acme.put_domain_policy([outsider])
    assert response.status_code == 422
    body = response.get_json()
    assert body["code"] == "invalid_policy"
    assert body["errors"][0]["rule"] == "outsider"
    insider = {**outsider, "principals": {"users": [acme.ids["member-data"]]}}
    assert acme.put_domain_policy([insider]).status_code == 200


def test_domain_versions_and_rollback(acme: Acme) -> None:
    acme.put_domain_policy([APPS_NEVER_DELETE])
    acme.put_domain_policy([])
    assert acme.decide("bot-web", "delete", "web") == "allow/boundary"
    acme.api.ok(
        "POST",
        f"/v1/domains/{acme.domains['acme']}/policy/versions/1/activate",
        acme.tokens["acme-admin"],
        None,
        200,
    )
    assert acme.decide("bot-web", "delete", "web") == "deny/policy/domain/apps-never-delete"
    versions = acme.api.ok(
        "GET", f"/v1/domains/{acme.domains['acme']}/policy/versions", acme.cloud
    )["versions"]
    assert [(v["version"], v["active"]) for v in versions] == [(1, True), (2, False)]
