"""Latchkey's own identity actions answer to a project's tenant policy too.

The rule table (latchkey/policy/enforcer.py) is the ceiling; inside it, an
action on a project's resource must also be allowed by the project's rules
when it has any, deny winning — the same semantics as for any service in the
catalog. Exempt: callers scoped to the admin project (operators), and
``policy:policy:*`` so a project's admins can always repair their policy.

Personas (project ``web``):

* ``admin``  — a human with ``admin`` on web;
* ``member`` — a human with ``member`` on web;
* ``bot``    — an application account owned by web with ``admin``, through an
  *unrestricted* application credential (so the table lets it manage credentials);
* the cloud admin (token on the admin project).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from flask import Flask

from latchkey.policy.engine import DEFAULT_BOUNDARY
from tests.authz.test_policy_personas import credential_token
from tests.conftest import Api

PASSWORD = "persona-password-1234"
ALLOW_ADMINS_EVERYTHING = {
    "id": "admins-all",
    "effect": "allow",
    "actions": ["*"],
    "principals": {"roles": ["admin"]},
}


@dataclass
class Web:
    api: Api
    cloud: str
    project: str
    tokens: dict[str, str] = field(default_factory=dict)
    ids: dict[str, str] = field(default_factory=dict)

    def put_policy(self, rules: list[dict[str, Any]], token: str | None = None) -> None:
        self.api.ok(
            "PUT",
            f"/v1/projects/{self.project}/policy",
            token or self.tokens["admin"],
            {"rules": rules},
            200,
        )

    def create_credential(self, persona: str, owner: str, **extra: Any) -> Any:
        body = {"name": extra.pop("name", "c"), "project_id": self.project, **extra}
        return self.api.call(
            "POST",
            f"/v1/users/{self.ids[owner]}/application-credentials",
            self.tokens[persona],
            body,
        )


@pytest.fixture
def web(app: Flask, api: Api, admin_token: str) -> Web:
    with app.app_context():
        app.extensions["latchkey"].boundaries.load_file(str(DEFAULT_BOUNDARY))
    project = api.ok("POST", "/v1/projects", admin_token, {"name": "web"})["id"]
    w = Web(api, admin_token, project)
    for persona, role in (("admin", "admin"), ("member", "member")):
        body = {"name": f"own-{persona}", "password": PASSWORD}
        user = api.ok("POST", "/v1/users", admin_token, body)
        api.ok("PUT", f"/v1/projects/{project}/users/{user['id']}/roles/{role}", admin_token)
        w.ids[persona] = user["id"]
        w.tokens[persona] = api.login(f"own-{persona}", PASSWORD, project="web")
    bot = api.ok(
        "POST",
        "/v1/users",
        admin_token,
        {"name": "own-bot", "kind": "application", "owner_project_id": project},
    )
    api.ok("PUT", f"/v1/projects/{project}/users/{bot['id']}/roles/admin", admin_token)
    w.ids["bot"] = bot["id"]
    w.tokens["bot"], _ = credential_token(
        api, w.tokens["admin"], bot["id"], project, name="bot-root", unrestricted=True
    )
    return w


def problem(response: Any) -> tuple[int, str, str | None]:
    body = response.get_json()
    return response.status_code, body.get("code"), body.get("rule")


def test_without_a_policy_the_rule_table_alone_decides(web: Web) -> None:
    assert web.create_credential("bot", "bot", name="b1").status_code == 201
    assert web.create_credential("member", "member", name="m1").status_code == 201


def test_apps_never_mint_credentials(web: Web) -> None:
    web.put_policy(
        [
            ALLOW_ADMINS_EVERYTHING,
            {
                "id": "apps-never-mint",
                "effect": "deny",
                "actions": ["identity:application_credential:create"],
                "principals": {"kinds": ["application"]},
            },
        ]
    )
    assert problem(web.create_credential("bot", "bot", name="b1")) == (
        403,
        "policy_denied",
        "apps-never-mint",
    )
    # The project's human admin still manages the account's credentials.
    assert web.create_credential("admin", "bot", name="b2").status_code == 201
    # The bot keeps what the deny rule does not name: reading its own credentials.
    listed = web.api.call(
        "GET", f"/v1/users/{web.ids['bot']}/application-credentials", web.tokens["bot"]
    )
    assert listed.status_code == 200


def test_a_policy_that_does_not_allow_identity_actions_refuses_them(web: Web) -> None:
    """Same semantics as any other service: a project with rules refuses what they
    do not allow — and its admins can still repair the policy (policy:policy:* is exempt)."""
    objects_only = {
        "id": "admins-read-services",
        "effect": "allow",
        "actions": ["identity:service:*"],
        "principals": {"roles": ["admin"]},
    }
    web.put_policy([objects_only])
    assert problem(web.create_credential("admin", "admin", name="a1")) == (
        403,
        "policy_denied",
        None,
    )
    project = web.api.call("GET", f"/v1/projects/{web.project}", web.tokens["admin"])
    assert problem(project) == (403, "policy_denied", None)
    # Repair: the policy endpoints never answer to the tenant's own rules.
    web.put_policy([objects_only, ALLOW_ADMINS_EVERYTHING])
    assert web.create_credential("admin", "admin", name="a1").status_code == 201
    assert (
        web.api.call("GET", f"/v1/projects/{web.project}", web.tokens["admin"]).status_code == 200
    )


def test_operators_are_not_bound_by_a_tenant_policy(web: Web) -> None:
    web.put_policy([{"id": "nobody", "effect": "deny", "actions": ["*"]}])
    assert web.api.call("GET", f"/v1/projects/{web.project}", web.cloud).status_code == 200
    body = {"name": "app2", "kind": "application", "owner_project_id": web.project}
    assert web.api.call("POST", "/v1/users", web.cloud, body).status_code == 201
    assert (
        web.api.call("GET", f"/v1/projects/{web.project}", web.tokens["admin"]).status_code == 403
    )


def test_conditions_on_identity_attributes(web: Web) -> None:
    """Admins may grant roles but not `admin`; nobody mints unrestricted credentials."""
    web.put_policy(
        [
            ALLOW_ADMINS_EVERYTHING,
            {
                "id": "no-admin-grants",
                "effect": "deny",
                "actions": ["identity:role_assignment:grant"],
                "resource": {
                    "type": "identity:role_assignment",
                    "conditions": [{"attribute": "role", "op": "=", "value": "admin"}],
                },
            },
            {
                "id": "no-unrestricted",
                "effect": "deny",
                "actions": ["identity:application_credential:create"],
                "resource": {
                    "type": "identity:application_credential",
                    "conditions": [{"attribute": "unrestricted", "op": "=", "value": True}],
                },
            },
        ]
    )
    member, admin = web.ids["member"], web.tokens["admin"]
    grant = f"/v1/projects/{web.project}/users/{member}/roles"
    assert web.api.call("PUT", f"{grant}/reader", admin).status_code == 204
    assert problem(web.api.call("PUT", f"{grant}/admin", admin)) == (
        403,
        "policy_denied",
        "no-admin-grants",
    )
    assert web.create_credential("admin", "admin", name="ok").status_code == 201
    assert problem(web.create_credential("admin", "admin", name="root", unrestricted=True)) == (
        403,
        "policy_denied",
        "no-unrestricted",
    )


def test_named_credentials_only(web: Web) -> None:
    """A human's credential belongs to its project: that project's rules decide, with
    the credential's name (deleting any credential but `ci-*` is refused)."""
    web.put_policy(
        [
            {
                "id": "members-manage-ci-credentials",
                "effect": "allow",
                "actions": ["identity:application_credential:*"],
                "principals": {"roles": ["member"]},
                "resource": {
                    "type": "identity:application_credential",
                    "conditions": [{"attribute": "name", "op": "glob", "value": "ci-*"}],
                },
            },
            ALLOW_ADMINS_EVERYTHING,
        ]
    )
    assert web.create_credential("member", "member", name="ci-build").status_code == 201
    assert problem(web.create_credential("member", "member", name="laptop")) == (
        403,
        "policy_denied",
        None,
    )


def test_identity_decisions_are_recorded_for_simulation(web: Web) -> None:
    """A draft is replayed against identity traffic too: it would flip the bot's minting."""
    rules = [ALLOW_ADMINS_EVERYTHING]
    web.put_policy(rules)
    assert web.create_credential("bot", "bot", name="b1").status_code == 201
    draft = {
        "rules": [
            *rules,
            {
                "id": "apps-never-mint",
                "effect": "deny",
                "actions": ["identity:application_credential:create"],
                "principals": {"kinds": ["application"]},
            },
        ]
    }
    result = web.api.ok(
        "POST",
        f"/v1/projects/{web.project}/policy/simulate",
        web.tokens["admin"],
        {**draft, "recent": 100},
        200,
    )
    flipped = {flip["action"] for flip in result["recent"]["flips"]}
    assert "identity:application_credential:create" in flipped
