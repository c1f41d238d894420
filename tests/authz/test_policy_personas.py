"""Who may do what to which resource: persona x action x resource-attribute tables.

The decision API (``POST /v1/authorize``, ``/batch``, ``/actions``) is asked,
for every persona, about ``objects:container`` resources of project p1 whose
``env`` is ``staging`` or ``prod`` (and about resources of another project).
A decision is allowed only if the token's own limits, the operator boundary
and the tenant policy all allow it (``latchkey/policy/decisions.py``).

Personas (all tokens scoped to their project):

* ``admin``        — a human with ``admin`` on p1;
* ``member``       — a human with ``member`` on p1 (attribute ``team: blue``);
* ``reader``       — a human with ``reader`` on p1;
* ``bot``          — an application account owned by p1 with ``member``, through
  an application credential carrying all its roles;
* ``bot_reader``   — the same account through a credential whose roles are
  ``reader`` only;
* ``bot_identity`` — the same account through a credential whose access rules
  name only the ``identity`` service;
* ``outsider``     — a human with ``member`` on p2.

A table cell reads ``allow/<decided_by>/<rule>`` or ``deny/<decided_by>[/<rule>]``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import pytest
from flask import Flask

from latchkey.policy.engine import DEFAULT_BOUNDARY
from tests.conftest import Api

PASSWORD = "persona-password-1234"
SERVICE = {
    "type": "objects",
    "name": "Object store",
    "endpoints": [{"interface": "public", "url": "http://objects.example/v1", "region": "r1"}],
    "actions": ["objects:container:read", "objects:container:write", "objects:container:delete"],
    "resource_types": {
        "objects:container": {"attributes": {"env": "string", "size": "integer", "team": "string"}}
    },
}
VERBS = ("read", "write", "delete")
ENVS = ("staging", "prod")

ADMIN, MEMBER, READER = "admin", "member", "reader"
BOT, BOT_READER, BOT_IDENTITY = "bot", "bot_reader", "bot_identity"
OUTSIDER = "outsider"
PERSONAS = (ADMIN, MEMBER, READER, BOT, BOT_READER, BOT_IDENTITY, OUTSIDER)


@dataclass
class World:
    api: Api
    admin: str  # the cloud admin's token
    p1: str
    p2: str
    tokens: dict[str, str] = field(default_factory=dict)
    ids: dict[str, str] = field(default_factory=dict)  # user and credential ids

    def resource(
        self, env: str | None = "staging", project: str | None = None, **attributes: Any
    ) -> dict[str, Any]:
        if env is not None:
            attributes["env"] = env
        return {
            "type": "objects:container",
            "id": "c1",
            "project_id": project or self.p1,
            "attributes": attributes,
        }

    def authorize(
        self, persona: str, verb: str, resource: dict[str, Any], explain: bool = True
    ) -> dict[str, Any]:
        body = {"action": f"objects:container:{verb}", "resource": resource, "explain": explain}
        response = self.api.call("POST", "/v1/authorize", self.tokens[persona], body)
        assert response.status_code == 200, response.get_json()
        return dict(response.get_json())

    def actions(self, persona: str, resource: dict[str, Any]) -> list[str]:
        body = {"resource": resource}
        return list(
            self.api.ok("POST", "/v1/authorize/actions", self.tokens[persona], body, 200)["actions"]
        )

    def put_policy(self, rules: list[dict[str, Any]]) -> int:
        body = self.api.ok(
            "PUT", f"/v1/projects/{self.p1}/policy", self.tokens[ADMIN], {"rules": rules}, 200
        )
        return int(body["version"])


def credential_token(
    api: Api, owner_token: str, user_id: str, project: str, **extra: Any
) -> tuple[str, str]:
    body = {"name": extra.pop("name"), "project_id": project, **extra}
    cred = api.ok("POST", f"/v1/users/{user_id}/application-credentials", owner_token, body)
    login = {"auth": {"application_credential": {"id": cred["id"], "secret": cred["secret"]}}}
    response = api.call("POST", "/v1/auth/tokens", None, login)
    assert response.status_code == 201, response.get_json()
    return str(response.get_json()["token"]), str(cred["id"])


@pytest.fixture
def world(app: Flask, api: Api, admin_token: str) -> World:
    # The default boundary, stored and uncached (see tests/integration/test_policy.py).
    with app.app_context():
        app.extensions["latchkey"].boundaries.load_file(str(DEFAULT_BOUNDARY))
    api.ok("POST", "/v1/services", admin_token, SERVICE)
    p1 = api.ok("POST", "/v1/projects", admin_token, {"name": "web"})["id"]
    p2 = api.ok("POST", "/v1/projects", admin_token, {"name": "other"})["id"]
    w = World(api, admin_token, p1, p2)
    humans = {
        ADMIN: (p1, "admin", "web", {}),
        MEMBER: (p1, "member", "web", {"team": "blue"}),
        READER: (p1, "reader", "web", {}),
        OUTSIDER: (p2, "member", "other", {}),
    }
    for persona, (project, role, project_name, attributes) in humans.items():
        body = {"name": f"p-{persona}", "password": PASSWORD, "attributes": attributes}
        user = api.ok("POST", "/v1/users", admin_token, body)
        api.ok("PUT", f"/v1/projects/{project}/users/{user['id']}/roles/{role}", admin_token)
        w.ids[persona] = user["id"]
        w.tokens[persona] = api.login(f"p-{persona}", PASSWORD, project=project_name)
    bot = api.ok(
        "POST",
        "/v1/users",
        admin_token,
        {"name": "bot", "kind": "application", "owner_project_id": p1},
    )
    api.ok("PUT", f"/v1/projects/{p1}/users/{bot['id']}/roles/member", admin_token)
    w.ids[BOT] = bot["id"]
    owner = w.tokens[ADMIN]  # the project's admin manages the account's credentials
    w.tokens[BOT], w.ids["bot_cred"] = credential_token(api, owner, bot["id"], p1, name="ci")
    w.tokens[BOT_READER], w.ids["bot_reader_cred"] = credential_token(
        api, owner, bot["id"], p1, name="ci-read", roles=["reader"]
    )
    w.tokens[BOT_IDENTITY], w.ids["bot_identity_cred"] = credential_token(
        api,
        owner,
        bot["id"],
        p1,
        name="ci-identity",
        # Latchkey's own API is service `identity`: the decision API stays reachable.
        access_rules=[{"service": "identity", "method": "POST", "path": "/v1/authorize/**"}],
    )
    return w


def seed_rules(w: World) -> list[dict[str, Any]]:
    """The scenario of the issue: the bot reads only staging, admins all, apps never delete."""
    return [
        {
            "id": "bot-reads-staging",
            "effect": "allow",
            "description": "CI reads staging only",
            "actions": ["objects:container:read"],
            "principals": {"users": [w.ids[BOT]]},
            "resource": {
                "type": "objects:container",
                "conditions": [{"attribute": "env", "op": "=", "value": "staging"}],
            },
        },
        {
            "id": "admins-all",
            "effect": "allow",
            "actions": ["objects:*:*"],
            "principals": {"roles": ["admin"]},
        },
        {
            "id": "apps-never-delete",
            "effect": "deny",
            "actions": ["objects:*:delete"],
            "principals": {"kinds": ["application"]},
        },
    ]


# persona -> verb -> (staging, prod)
SEED_TABLE: dict[str, dict[str, tuple[str, str]]] = {
    ADMIN: {
        "read": ("allow/policy/admins-all", "allow/policy/admins-all"),
        "write": ("allow/policy/admins-all", "allow/policy/admins-all"),
        "delete": ("allow/policy/admins-all", "allow/policy/admins-all"),
    },
    MEMBER: {v: ("deny/policy", "deny/policy") for v in VERBS},  # no allow rule names them
    READER: {
        "read": ("deny/policy", "deny/policy"),
        "write": ("deny/boundary", "deny/boundary"),
        "delete": ("deny/boundary", "deny/boundary"),
    },
    BOT: {
        "read": ("allow/policy/bot-reads-staging", "deny/policy"),
        "write": ("deny/policy", "deny/policy"),
        "delete": ("deny/policy/apps-never-delete", "deny/policy/apps-never-delete"),
    },
    BOT_READER: {
        "read": ("allow/policy/bot-reads-staging", "deny/policy"),
        "write": ("deny/boundary", "deny/boundary"),  # the credential's roles: reader only
        "delete": ("deny/boundary", "deny/boundary"),
    },
    BOT_IDENTITY: {v: ("deny/token", "deny/token") for v in VERBS},  # access rules
    OUTSIDER: {v: ("deny/boundary", "deny/boundary") for v in VERBS},  # another project
}

# The boundary alone (no tenant policy): reader reads, member reads and writes
# (delete is a write verb of the default boundary), admin does everything.
NO_POLICY_TABLE: dict[str, dict[str, tuple[str, str]]] = {
    ADMIN: {v: ("allow/boundary", "allow/boundary") for v in VERBS},
    MEMBER: {v: ("allow/boundary", "allow/boundary") for v in VERBS},
    READER: {
        "read": ("allow/boundary", "allow/boundary"),
        "write": ("deny/boundary", "deny/boundary"),
        "delete": ("deny/boundary", "deny/boundary"),
    },
    BOT: {v: ("allow/boundary", "allow/boundary") for v in VERBS},
    BOT_READER: {
        "read": ("allow/boundary", "allow/boundary"),
        "write": ("deny/boundary", "deny/boundary"),
        "delete": ("deny/boundary", "deny/boundary"),
    },
    BOT_IDENTITY: {v: ("deny/token", "deny/token") for v in VERBS},
    OUTSIDER: {v: ("deny/boundary", "deny/boundary") for v in VERBS},
}


def parse_cell(cell: str) -> tuple[bool, str, str | None]:
    parts = cell.split("/")
    return parts[0] == "allow", parts[1], parts[2] if len(parts) > 2 else None


def check_explain(decision: dict[str, Any], has_policy: bool) -> None:
    """The explanation agrees with the decision and names only the deciding layer's rules."""
    explain = decision["explain"]
    if decision["decided_by"] == "token":
        assert set(explain) == {"token"}, explain
        return
    assert explain["tenant_policy"] is has_policy
    if decision["decided_by"] == "boundary":
        assert explain["boundary"] is decision["allowed"]
        # Past a refusing boundary no tenant rule is consulted.
        assert explain["allow_rules"] == [] and explain["deny_rules"] == []
        return
    assert explain["boundary"] is True
    rule = decision.get("rule")
    if decision["allowed"]:
        assert rule in explain["allow_rules"] and explain["deny_rules"] == []
    elif rule is not None:
        assert rule in explain["deny_rules"]
    else:
        assert explain["allow_rules"] == [] and explain["deny_rules"] == []


def expected_decision(cell: str) -> dict[str, Any]:
    allowed, decided_by, rule = parse_cell(cell)
    body: dict[str, Any] = {"allowed": allowed, "decided_by": decided_by}
    if rule is not None:
        body["rule"] = rule
    return body


def run_table(w: World, table: dict[str, dict[str, tuple[str, str]]], has_policy: bool) -> None:
    mismatches = []
    for persona, verb, (i, env) in itertools.product(PERSONAS, VERBS, enumerate(ENVS)):
        expected = expected_decision(table[persona][verb][i])
        decision = w.authorize(persona, verb, w.resource(env))
        got = {k: v for k, v in decision.items() if k != "explain"}
        if got != expected:
            mismatches.append((persona, verb, env, got, expected))
            continue
        check_explain(decision, has_policy)
    assert not mismatches, "\n".join(map(str, mismatches))
    # /actions lists exactly what /authorize allows, per persona and resource.
    for persona, (i, env) in itertools.product(PERSONAS, enumerate(ENVS)):
        allowed = [f"objects:container:{v}" for v in VERBS if parse_cell(table[persona][v][i])[0]]
        assert w.actions(persona, w.resource(env)) == sorted(allowed), (persona, env)


def test_seed_policy_table(world: World) -> None:
    assert world.put_policy(seed_rules(world)) == 1
    run_table(world, SEED_TABLE, has_policy=True)
    bot_delete = world.authorize(BOT, "delete", world.resource("staging"))
    assert bot_delete["explain"] == {
        "boundary": True,
        "tenant_policy": True,
        "allow_rules": [],
        "deny_rules": ["apps-never-delete"],
    }
    bot_read = world.authorize(BOT, "read", world.resource("staging"))
    assert bot_read["explain"]["allow_rules"] == ["bot-reads-staging"]
    # Without explain, no explanation.
    assert "explain" not in world.authorize(BOT, "read", world.resource("staging"), explain=False)


def test_boundary_alone_without_a_policy(world: World) -> None:
    run_table(world, NO_POLICY_TABLE, has_policy=False)
    # An empty document is a policy too: nothing is allowed without an allow rule.
    world.put_policy([])
    for persona in (ADMIN, MEMBER, BOT):
        assert world.authorize(persona, "read", world.resource())["allowed"] is False


def test_cross_project_resources_are_refused_by_the_boundary(world: World) -> None:
    world.put_policy(seed_rules(world))
    foreign = world.resource("staging", project=world.p2)
    for persona, verb in itertools.product(PERSONAS, VERBS):
        decision = world.authorize(persona, verb, foreign)
        if persona == OUTSIDER:
            # p2 has no tenant policy: the outsider's own project, boundary alone.
            assert decision["allowed"] is True and decision["decided_by"] == "boundary"
        elif persona == BOT_IDENTITY:
            assert decision["decided_by"] == "token" and decision["allowed"] is False
        else:
            assert decision["allowed"] is False, (persona, verb)
            assert decision["decided_by"] == "boundary", (persona, verb)
        assert world.actions(persona, foreign) == (
            [f"objects:container:{v}" for v in sorted(VERBS)] if persona == OUTSIDER else []
        )
    # A project that does not exist, or none at all.
    for project in ("no-such-project",):
        decision = world.authorize(ADMIN, "read", world.resource("staging", project=project))
        assert decision["allowed"] is False and decision["decided_by"] == "boundary"


def test_a_tenant_rule_never_exceeds_the_boundary(world: World) -> None:
    world.put_policy(
        [
            {
                "id": "readers-delete",
                "effect": "allow",
                "actions": ["objects:container:delete", "objects:container:write"],
                "principals": {"roles": ["reader"]},
            },
            {"id": "everyone-everything", "effect": "allow", "actions": ["*"]},
        ]
    )
    for verb in ("write", "delete"):
        decision = world.authorize(READER, verb, world.resource())
        assert decision["allowed"] is False and decision["decided_by"] == "boundary"
        assert decision["explain"]["boundary"] is False
        assert decision["explain"]["allow_rules"] == []
        # The credential with reader-only roles: the same.
        decision = world.authorize(BOT_READER, verb, world.resource())
        assert decision["allowed"] is False and decision["decided_by"] == "boundary"
    # Everyone of p1 within the boundary; nobody of another project.
    assert world.authorize(READER, "read", world.resource())["rule"] in (
        "everyone-everything",
        "readers-delete",
    )
    for verb in VERBS:
        decision = world.authorize(OUTSIDER, verb, world.resource())
        assert decision["allowed"] is False and decision["decided_by"] == "boundary"


def test_credential_limits_override_what_the_policy_allows(world: World) -> None:
    world.put_policy(
        [
            {
                "id": "bot-uses-staging",
                "effect": "allow",
                "actions": ["objects:container:*"],
                "principals": {"users": [world.ids[BOT]]},
                "resource": {
                    "type": "objects:container",
                    "conditions": [{"attribute": "env", "op": "=", "value": "staging"}],
                },
            },
            {
                "id": "reader-cred-reads-prod",
                "effect": "allow",
                "actions": ["objects:container:read"],
                "principals": {"application_credentials": [world.ids["bot_reader_cred"]]},
            },
        ]
    )
    staging, prod = world.resource("staging"), world.resource("prod")
    assert world.authorize(BOT, "write", staging)["allowed"] is True
    assert world.authorize(BOT, "delete", staging)["allowed"] is True
    # The credential's roles are reader only: the policy cannot give it write.
    for verb in ("write", "delete"):
        decision = world.authorize(BOT_READER, verb, staging)
        assert (decision["allowed"], decision["decided_by"]) == (False, "boundary")
    # A rule naming one credential: that credential only.
    assert world.authorize(BOT_READER, "read", prod)["rule"] == "reader-cred-reads-prod"
    assert world.authorize(BOT, "read", prod)["allowed"] is False
    # Access rules naming only identity: nothing of objects, whatever the policy says.
    for verb in VERBS:
        decision = world.authorize(BOT_IDENTITY, verb, staging)
        assert (decision["allowed"], decision["decided_by"]) == (False, "token")
    assert world.actions(BOT_IDENTITY, staging) == []
    assert world.actions(BOT_READER, staging) == ["objects:container:read"]
    assert world.actions(BOT, staging) == [f"objects:container:{v}" for v in sorted(VERBS)]


def test_a_deny_overrides_an_allow(world: World) -> None:
    world.put_policy(
        [
            {
                "id": "members-read",
                "effect": "allow",
                "actions": ["objects:container:read"],
                "principals": {"roles": ["member"]},
            },
            {
                "id": "no-prod",
                "effect": "deny",
                "actions": ["objects:container:*"],
                "resource": {
                    "type": "objects:container",
                    "conditions": [{"attribute": "env", "op": "=", "value": "prod"}],
                },
            },
        ]
    )
    allowed = world.authorize(MEMBER, "read", world.resource("staging"))
    assert allowed == {
        "allowed": True,
        "decided_by": "policy",
        "rule": "members-read",
        "explain": {
            "boundary": True,
            "tenant_policy": True,
            "allow_rules": ["members-read"],
            "deny_rules": [],
        },
    }
    denied = world.authorize(MEMBER, "read", world.resource("prod"))
    assert denied == {
        "allowed": False,
        "decided_by": "policy",
        "rule": "no-prod",
        "explain": {
            "boundary": True,
            "tenant_policy": True,
            "allow_rules": ["members-read"],
            "deny_rules": ["no-prod"],
        },
    }
    # A deny rule fails closed: a resource without the attribute it tests is denied.
    missing = world.authorize(MEMBER, "read", world.resource(None))
    assert (missing["allowed"], missing.get("rule")) == (False, "no-prod")


def test_a_wrongly_typed_attribute_does_not_slip_past_a_deny(world: World) -> None:
    world.put_policy(
        [
            {"id": "members-read", "effect": "allow", "actions": ["objects:container:read"]},
            {
                "id": "no-prod",
                "effect": "deny",
                "actions": ["objects:container:*"],
                "resource": {
                    "type": "objects:container",
                    "conditions": [
                        {"attribute": "env", "op": "=", "value": "prod"},
                        {"attribute": "size", "op": ">", "value": 10},
                    ],
                },
            },
        ]
    )
    assert world.authorize(MEMBER, "read", world.resource("prod", size=11))["rule"] == "no-prod"
    for env, size in ((["prod"], 11), ({"prod": 1}, 11), ("prod", True), ("prod", 11.5)):
        resource = world.resource(None, size=size)
        resource["attributes"]["env"] = env
        decision = world.authorize(MEMBER, "read", resource)
        assert decision["allowed"] is False, (env, size, decision)


def test_conditions_on_principal_attributes(world: World) -> None:
    world.put_policy(
        [
            {
                "id": "own-team",
                "effect": "allow",
                "actions": ["objects:container:*"],
                "principals": {"roles": ["member", "reader"]},
                "resource": {
                    "type": "objects:container",
                    "conditions": [
                        {"attribute": "team", "op": "=", "principal_attribute": "team"},
                        {"attribute": "size", "op": "<", "value": 100},
                    ],
                },
            }
        ]
    )
    blue = world.resource("staging", team="blue", size=10)
    assert world.authorize(MEMBER, "write", blue)["rule"] == "own-team"
    assert world.authorize(MEMBER, "write", world.resource(team="red", size=10))["allowed"] is False
    assert (
        world.authorize(MEMBER, "write", world.resource(team="blue", size=100))["allowed"] is False
    )
    assert world.authorize(MEMBER, "write", world.resource(size=10))["allowed"] is False
    # The reader has no team attribute: an allow rule fails open to "no match".
    assert world.authorize(READER, "read", blue)["allowed"] is False
    # Attributes of the principal follow the user's record.
    world.api.ok(
        "PATCH",
        f"/v1/users/{world.ids[READER]}",
        world.admin,
        {"attributes": {"team": "blue"}},
        200,
    )
    assert world.authorize(READER, "read", blue)["rule"] == "own-team"


def test_batch_keeps_order_and_its_limit(world: World) -> None:
    world.put_policy(seed_rules(world))
    combos = list(itertools.product(VERBS, ENVS))
    checks = [
        {"action": f"objects:container:{verb}", "resource": world.resource(env)}
        for verb, env in reversed(combos)
    ]
    for persona in (BOT, BOT_READER, ADMIN):
        body = world.api.ok(
            "POST", "/v1/authorize/batch", world.tokens[persona], {"checks": checks}, 200
        )
        expected = [
            expected_decision(SEED_TABLE[persona][verb][ENVS.index(env)])
            for verb, env in reversed(combos)
        ]
        assert body["results"] == expected, persona
    explained = world.api.ok(
        "POST", "/v1/authorize/batch", world.tokens[BOT], {"checks": checks, "explain": True}, 200
    )
    assert all("explain" in r for r in explained["results"])

    many = [checks[i % len(checks)] for i in range(1000)]
    body = world.api.ok("POST", "/v1/authorize/batch", world.tokens[BOT], {"checks": many}, 200)
    results = body["results"]
    assert len(results) == 1000
    cycle = [expected_decision(SEED_TABLE[BOT][v][ENVS.index(e)]) for v, e in reversed(combos)]
    assert results == [cycle[i % len(cycle)] for i in range(1000)]

    too_many = world.api.call(
        "POST", "/v1/authorize/batch", world.tokens[BOT], {"checks": many + checks[:1]}
    )
    assert too_many.status_code == 422
    assert (
        world.api.call("POST", "/v1/authorize/batch", world.tokens[BOT], {"checks": []}).status_code
        == 422
    )


def test_a_service_asks_on_a_users_behalf(world: World, api: Api) -> None:
    world.put_policy(seed_rules(world))
    svc = api.ok("POST", "/v1/users", world.admin, {"name": "objects-svc", "password": PASSWORD})
    api.ok("PUT", f"/v1/projects/{world.p2}/users/{svc['id']}/roles/service", world.admin)
    service_token = api.login("objects-svc", PASSWORD, project="other")
    cases = [
        (p, v, e) for p in (BOT, BOT_READER, BOT_IDENTITY, MEMBER) for v in VERBS for e in ENVS
    ]
    for persona, verb, env in cases:
        body = {
            "action": f"objects:container:{verb}",
            "resource": world.resource(env),
            "subject_token": world.tokens[persona],
        }
        on_behalf = api.ok("POST", "/v1/authorize", service_token, body, 200)
        assert on_behalf == expected_decision(SEED_TABLE[persona][verb][ENVS.index(env)])
    # Without the service role, asking on someone's behalf is refused.
    body = {
        "action": "objects:container:read",
        "resource": world.resource("staging"),
        "subject_token": world.tokens[BOT],
    }
    assert api.call("POST", "/v1/authorize", world.tokens[MEMBER], body).status_code == 403
    # And an anonymous caller gets nothing.
    body.pop("subject_token")
    assert api.call("POST", "/v1/authorize", None, body).status_code == 401


def test_unknown_actions_and_types_are_refused(world: World) -> None:
    for action, type_ in (
        ("objects:container:destroy", "objects:container"),
        ("objects:container:read", "objects:bucket"),
    ):
        body = {
            "action": action,
            "resource": {"type": type_, "project_id": world.p1, "attributes": {}},
        }
        response = world.api.call("POST", "/v1/authorize", world.tokens[ADMIN], body)
        assert response.status_code == 422, response.get_json()
        assert response.get_json()["code"] in ("unknown_action", "unknown_resource_type")


# -- who may change the policy (issue 13, class 2) ---------------------------------------

BOT_ADMIN, BOT_ADMIN_UNRESTRICTED = "bot_admin", "bot_admin_unrestricted"
RESTRICTED = "application_credential_restricted"
# persona -> (get, versions, validate, simulate, put, activate): status or status/code.
MANAGEMENT_TABLE: dict[str, tuple[str, ...]] = {
    ADMIN: ("200", "200", "200", "200", "200", "200"),
    MEMBER: ("200", "200", "403", "403", "403", "403"),
    READER: ("200", "200", "403", "403", "403", "403"),
    # Restricted credentials: reads (validating and simulating change nothing), never a
    # change, whatever their roles; refused by that rule before the table is consulted.
    BOT: ("200", "200", "403", "403", f"403/{RESTRICTED}", f"403/{RESTRICTED}"),
    BOT_READER: ("200", "200", "403", "403", f"403/{RESTRICTED}", f"403/{RESTRICTED}"),
    BOT_ADMIN: ("200", "200", "200", "200", f"403/{RESTRICTED}", f"403/{RESTRICTED}"),
    BOT_ADMIN_UNRESTRICTED: ("200", "200", "200", "200", "200", "200"),
    OUTSIDER: ("403", "403", "403", "403", "403", "403"),
}


def test_who_may_change_the_policy(world: World, api: Api, subtests: pytest.Subtests) -> None:
    """Restricted credentials read, validate and simulate, and never PUT or activate."""
    bot = world.ids[BOT]
    api.ok("PUT", f"/v1/projects/{world.p1}/users/{bot}/roles/admin", world.admin)
    owner = world.tokens[ADMIN]
    world.tokens[BOT_ADMIN], _ = credential_token(api, owner, bot, world.p1, name="ci-admin")
    world.tokens[BOT_ADMIN_UNRESTRICTED], _ = credential_token(
        api, owner, bot, world.p1, name="ci-root", unrestricted=True
    )
    base = f"/v1/projects/{world.p1}/policy"
    document = {"rules": seed_rules(world)}
    world.put_policy(seed_rules(world))  # version 1, to activate
    requests = (
        ("GET", base, None),
        ("GET", f"{base}/versions", None),
        ("POST", f"{base}/validate", document),
        ("POST", f"{base}/simulate", document),
        ("PUT", base, document),
        ("POST", f"{base}/versions/1/activate", None),
    )
    for persona, cells in MANAGEMENT_TABLE.items():
        for (method, path, body), cell in zip(requests, cells, strict=True):
            status, _, code = cell.partition("/")
            with subtests.test(msg=f"{persona}-{method}-{path.rsplit('/', 1)[-1]}"):
                response = api.call(method, path, world.tokens[persona], body)
                problem = response.get_json(silent=True) or {}
                assert response.status_code == int(status), (persona, method, path, problem)
                if status == "403":
                    assert problem["code"] == (code or "action_forbidden"), (persona, problem)
    # Only the allowed personas' PUTs made versions: the seed, then ADMIN's and the
    # unrestricted credential's.
    versions = api.ok("GET", f"{base}/versions", world.admin)["versions"]
    assert [v["version"] for v in versions] == [1, 2, 3]
