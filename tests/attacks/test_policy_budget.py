"""Issue 13, class 1: a tenant must not be able to starve the service.

A project admin writes the document, a member sends the requests: whatever both
do, a decision request costs a bounded amount of work. The document is capped
when it is put (rules, conditions, lists, strings, glob length and wildcards,
size, cost in units), the request when it is sent (attribute sizes, the cost of
a batch), and each decision and each batch has a wall-clock budget past which
it is a denial with ``decided_by: budget`` (fail closed). Nothing here depends
on timing: the budgets are forced with settings of 0 ms.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from latchkey.policy.documents import MAX_COST
from tests.attacks.worst_policy import (
    LAST_RULE,
    SLOW_PATTERN,
    SLOW_VALUE,
    document_cost,
    worst_check,
    worst_document,
)
from tests.conftest import Api, build_app, database_of, make_settings, reset_database
from tests.integration.test_policy import (
    READ,
    SERVICE,
    WRITE,
    Env,
    fresh_boundary,
    make_user,
)

PASSWORD = "policy-password-1234"
CONTAINER = "objects:container"
STRINGS = ["env"]  # the string attributes of tests.integration.test_policy's catalog


def set_up(app: Flask, api: Api) -> Env:
    admin = api.admin_token()
    api.ok("POST", "/v1/services", admin, SERVICE)
    p1 = api.ok("POST", "/v1/projects", admin, {"name": "web"})["id"]
    p2 = api.ok("POST", "/v1/projects", admin, {"name": "other"})["id"]
    env = Env(api, admin, p1, p2)
    fresh_boundary(app)
    for name, role in (("owner", "admin"), ("member", "member")):
        make_user(env, name, p1, role)
        env.tokens[name] = api.login(name, PASSWORD, project="web")
    return env


@pytest.fixture
def env(app: Flask, api: Api) -> Env:
    return set_up(app, api)


def problem(response: Any, status: int, code: str) -> dict[str, Any]:
    body = response.get_json()
    assert response.status_code == status, body
    assert body["code"] == code, body
    assert response.headers["Content-Type"].startswith("application/problem+json")
    return dict(body)


def check(env: Env, attributes: dict[str, Any], action: str = READ) -> dict[str, Any]:
    return {
        "action": action,
        "resource": {"type": CONTAINER, "project_id": env.p1, "attributes": attributes},
    }


def worst(env: Env, index: int = 0) -> dict[str, Any]:
    return worst_check(READ, CONTAINER, env.p1, STRINGS, index)


# -- the worst document the limits allow, and the worst batch ---------------------------


def test_the_worst_document_and_batch_are_answered(env: Env, app: Flask) -> None:
    api, member = env.api, env.tokens["member"]
    document = worst_document(READ, CONTAINER, "env")
    assert MAX_COST - 425 < document_cost(document) <= MAX_COST
    assert env.put(document["rules"]).status_code == 200
    # As many of its checks as LATCHKEY_DECISION_MAX_COST (200,000 units) allows.
    fits = 200_000 // document_cost(document)
    checks = [worst(env, i) for i in range(fits)]
    response = api.call("POST", "/v1/authorize/batch", member, {"checks": checks})
    assert response.status_code == 200, response.get_json()
    assert (
        response.get_json()["results"]
        == [{"allowed": True, "decided_by": "policy", "rule": LAST_RULE}] * fits
    )
    # One more is refused before anything is evaluated, naming the limit.
    body = problem(
        api.call("POST", "/v1/authorize/batch", member, {"checks": [*checks, worst(env)]}),
        422,
        "decision_cost_exceeded",
    )
    assert body["limit"] == "LATCHKEY_DECISION_MAX_COST"
    assert body["max"] == 200_000
    assert body["cost"] == (fits + 1) * document_cost(document)
    # Single decisions, /actions and /plan on the same document are answered.
    single = api.call("POST", "/v1/authorize", member, {**worst(env), "explain": True})
    assert single.status_code == 200
    assert single.get_json()["rule"] == LAST_RULE
    actions = api.call(
        "POST", "/v1/authorize/actions", member, {"resource": worst(env)["resource"]}
    )
    assert actions.status_code == 200
    assert actions.get_json()["actions"] == [READ]
    plan = api.call(
        "POST",
        "/v1/authorize/plan",
        member,
        {"action": READ, "resource_type": CONTAINER, "project_id": env.p1},
    )
    assert plan.status_code == 200
    assert plan.get_json()["kind"] == "always"
    assert api.call("GET", "/healthz").status_code == 200


def test_a_simulation_is_capped_like_a_batch(env: Env) -> None:
    document = worst_document(READ, CONTAINER, "env")
    assert env.put(document["rules"]).status_code == 200
    member_id = env.ids["member"]
    case = {"principal": {"user_id": member_id}, **worst(env)}
    path = f"/v1/projects/{env.p1}/policy/simulate"
    body = {"rules": document["rules"], "cases": [case] * 2, "recent": 0}
    ok = env.api.call("POST", path, env.tokens["owner"], body)
    assert ok.status_code == 200, ok.get_json()
    assert [c["draft"]["rule"] for c in ok.get_json()["cases"]] == [LAST_RULE] * 2
    body["cases"] = [case] * 3  # current and draft each cost ~50,000 per case
    problem(env.api.call("POST", path, env.tokens["owner"], body), 422, "decision_cost_exceeded")


# -- each document limit is a 4xx naming it ---------------------------------------------


def glob_rule(rule_id: str, pattern: str) -> dict[str, Any]:
    return {
        "id": rule_id,
        "effect": "allow",
        "actions": [READ],
        "resource": {
            "type": CONTAINER,
            "conditions": [{"attribute": "env", "op": "glob", "value": pattern}],
        },
    }


def condition_rule(rule_id: str, conditions: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": rule_id,
        "effect": "allow",
        "actions": [READ],
        "resource": {"type": CONTAINER, "conditions": conditions},
    }


ENV_EQ = {"attribute": "env", "op": "=", "value": "x"}
LIMIT_CASES: list[tuple[str, list[dict[str, Any]], str | None, str, str, int]] = [
    # (case, rules, rule named, pointer, setting, its default)
    (
        "rules",
        [{"id": f"r{i}", "effect": "allow", "actions": [READ]} for i in range(1001)],
        None,
        "/rules",
        "LATCHKEY_POLICY_MAX_RULES",
        1000,
    ),
    (
        "actions",
        [{"id": "many-actions", "effect": "allow", "actions": [READ] * 51}],
        "many-actions",
        "/rules/0/actions",
        "LATCHKEY_POLICY_MAX_ACTIONS",
        50,
    ),
    (
        "conditions",
        [condition_rule("many-conditions", [ENV_EQ] * 21)],
        "many-conditions",
        "/rules/0/resource/conditions",
        "LATCHKEY_POLICY_MAX_CONDITIONS",
        20,
    ),
    (
        "values",
        [condition_rule("long-in", [{"attribute": "env", "op": "in", "value": ["v"] * 1001}])],
        "long-in",
        "/rules/0/resource/conditions/0/value",
        "LATCHKEY_POLICY_MAX_LIST",
        1000,
    ),
    (
        "principals",
        [
            {
                "id": "many-kinds",
                "effect": "allow",
                "actions": [READ],
                "principals": {"kinds": ["human"] * 1001},
            }
        ],
        "many-kinds",
        "/rules/0/principals/kinds",
        "LATCHKEY_POLICY_MAX_LIST",
        1000,
    ),
    (
        "string",
        [condition_rule("long-value", [{"attribute": "env", "op": "=", "value": "x" * 1025}])],
        "long-value",
        "/rules/0/resource/conditions/0/value",
        "LATCHKEY_POLICY_MAX_STRING",
        1024,
    ),
    (
        "glob length",
        [glob_rule("long-glob", "a" * 129)],
        "long-glob",
        "/rules/0/resource/conditions/0/value",
        "LATCHKEY_POLICY_MAX_GLOB_LENGTH",
        128,
    ),
    (
        "glob stars",
        [glob_rule("starry", "*a" * 6)],
        "starry",
        "/rules/0/resource/conditions/0/value",
        "LATCHKEY_POLICY_MAX_GLOB_STARS",
        5,
    ),
    (
        "action stars",
        [{"id": "starry-action", "effect": "allow", "actions": ["*:*:*:*:*:*"]}],
        "starry-action",
        "/rules/0/actions/0",
        "LATCHKEY_POLICY_MAX_GLOB_STARS",
        5,
    ),
    (
        "glob wildcards",
        [glob_rule("wild", "?" * 17)],
        "wild",
        "/rules/0/resource/conditions/0/value",
        "LATCHKEY_POLICY_MAX_GLOB_WILDCARDS",
        16,
    ),
    (
        "distinct principals",  # each is a database query when the document is put
        [
            {
                "id": "many-kinds",
                "effect": "allow",
                "actions": [READ],
                "principals": {"kinds": [f"k{i}" for i in range(1000)]},
            },
            {
                "id": "one-more",
                "effect": "allow",
                "actions": [READ],
                "principals": {"kinds": ["k1000"]},
            },
        ],
        "one-more",
        "/rules/1/principals/kinds/0",
        "LATCHKEY_POLICY_MAX_PRINCIPALS",
        1000,
    ),
    (
        "document size",
        [
            {"id": f"d{i}", "effect": "allow", "actions": [READ], "description": "x" * 1024}
            for i in range(520)
        ],
        None,
        "",
        "LATCHKEY_POLICY_MAX_DOCUMENT_BYTES",
        524_288,
    ),
    (
        "cost",
        [glob_rule(f"g{i}", SLOW_PATTERN) for i in range(118)],
        "g117",  # the rule that goes past it
        "/rules/117",
        "LATCHKEY_POLICY_MAX_COST",
        50_000,
    ),
]


@pytest.mark.parametrize(
    ("rules", "rule", "pointer", "setting", "maximum"),
    [case[1:] for case in LIMIT_CASES],
    ids=[case[0] for case in LIMIT_CASES],
)
def test_each_document_limit_is_named(
    env: Env,
    rules: list[dict[str, Any]],
    rule: str | None,
    pointer: str,
    setting: str,
    maximum: int,
) -> None:
    owner = env.tokens["owner"]
    for method, path in (
        ("PUT", env.policy_path()),
        ("POST", env.policy_path() + "/validate"),
    ):
        body = problem(
            env.api.call(method, path, owner, {"rules": rules}), 422, "policy_limit_exceeded"
        )
        found = [e for e in body["errors"] if "limit" in e]
        assert found[0] == {
            "rule": rule,
            "pointer": pointer,
            "detail": found[0]["detail"],
            "limit": setting,
            "max": maximum,
        }, body
        assert pointer in body["detail"]
    assert env.api.ok("GET", env.policy_path(), owner)["version"] is None


def test_a_domains_document_has_the_same_limits(env: Env) -> None:
    path = "/v1/domains/default/policy"
    rules = [glob_rule(f"g{i}", SLOW_PATTERN) for i in range(118)]
    body = problem(
        env.api.call("PUT", path, env.admin, {"rules": rules}), 422, "policy_limit_exceeded"
    )
    assert body["errors"][0]["limit"] == "LATCHKEY_POLICY_MAX_COST"
    assert body["errors"][0]["rule"] == "g117"
    # Within the limits, the domain's rules count in each project's decisions.
    assert env.api.call("PUT", path, env.admin, {"rules": rules[:117]}).status_code == 200
    assert env.put(worst_document(READ, CONTAINER, "env")["rules"]).status_code == 200
    checks = {"checks": [worst(env)] * 2}
    response = env.api.call("POST", "/v1/authorize/batch", env.tokens["member"], checks)
    assert response.status_code == 200  # 2 x ~100,000 units
    checks["checks"].append(worst(env))
    problem(
        env.api.call("POST", "/v1/authorize/batch", env.tokens["member"], checks),
        422,
        "decision_cost_exceeded",
    )


# -- what a request may send ------------------------------------------------------------


@pytest.mark.parametrize(
    ("attributes", "pointer", "setting", "maximum"),
    [
        ({"env": "a" * 1025}, "/attributes/env", "LATCHKEY_DECISION_MAX_ATTRIBUTE_LENGTH", 1024),
        ({"tags": ["t"] * 101}, "/attributes/tags", "LATCHKEY_DECISION_MAX_ATTRIBUTE_ITEMS", 100),
        (
            {"tags": ["a" * 1025]},
            "/attributes/tags",
            "LATCHKEY_DECISION_MAX_ATTRIBUTE_LENGTH",
            1024,
        ),
    ],
    ids=["string", "list", "list item"],
)
def test_request_attribute_limits_are_named(
    env: Env, attributes: dict[str, Any], pointer: str, setting: str, maximum: int
) -> None:
    api, member = env.api, env.tokens["member"]
    one = check(env, attributes)
    calls = [
        ("/v1/authorize", one, "/resource" + pointer),
        (
            "/v1/authorize/batch",
            {"checks": [check(env, {"env": "ok"}), one]},
            "/checks/1/resource" + pointer,
        ),
        ("/v1/authorize/actions", {"resource": one["resource"]}, "/resource" + pointer),
    ]
    for path, body, where in calls:
        answer = problem(api.call("POST", path, member, body), 422, "attribute_limit_exceeded")
        assert (answer["limit"], answer["max"], answer["pointer"]) == (setting, maximum, where)
    # At the limit: decided.
    at_limit = {k: v[:-1] for k, v in attributes.items()}
    response = api.call("POST", "/v1/authorize", member, check(env, at_limit))
    assert response.status_code == 200, response.get_json()


# -- the wall-clock budgets, forced --------------------------------------------------------


def tiny_app(tmp_path_factory: pytest.TempPathFactory, name: str, **settings: Any) -> Flask:
    home: Path = tmp_path_factory.mktemp(name)
    return build_app(make_settings(home, f"sqlite:///{home / 'latchkey.db'}", **settings))


@pytest.fixture(scope="module")
def no_decision_budget(tmp_path_factory: pytest.TempPathFactory) -> Flask:
    # Every decision's own budget is spent at once; also small request limits.
    return tiny_app(
        tmp_path_factory,
        "no-decision-budget",
        decision_budget_ms=0,
        decision_max_attributes=2,
        policy_max_rules=3,
    )


@pytest.fixture(scope="module")
def no_batch_budget(tmp_path_factory: pytest.TempPathFactory) -> Flask:
    # A decision may take a minute, but a whole batch none at all.
    return tiny_app(
        tmp_path_factory, "no-batch-budget", decision_budget_ms=60_000, decision_batch_budget_ms=0
    )


def fresh(app: Flask) -> Iterator[Env]:
    reset_database(app)
    yield set_up(app, Api(app.test_client()))
    with app.app_context():
        database_of(app).session.remove()


@pytest.fixture
def starved(no_decision_budget: Flask) -> Iterator[Env]:
    yield from fresh(no_decision_budget)


@pytest.fixture
def batch_starved(no_batch_budget: Flask) -> Iterator[Env]:
    yield from fresh(no_batch_budget)


BUDGET_DENIAL = {"allowed": False, "decided_by": "budget", "code": "decision_budget_exceeded"}


def test_a_decision_past_its_budget_is_a_denial(starved: Env) -> None:
    env = starved
    api, member = env.api, env.tokens["member"]
    allow_all = [{"id": "allow-all", "effect": "allow", "actions": ["*"]}]
    assert env.put(allow_all).status_code == 200
    single = api.call("POST", "/v1/authorize", member, check(env, {"env": "x"}))
    assert single.status_code == 200
    assert single.get_json() == BUDGET_DENIAL
    explained = api.call("POST", "/v1/authorize", member, {**check(env, {}), "explain": True})
    assert explained.get_json()["decided_by"] == "budget"
    assert "budget" in explained.get_json()["explain"]
    batch = api.call(
        "POST", "/v1/authorize/batch", member, {"checks": [check(env, {}), check(env, {}, WRITE)]}
    )
    assert batch.get_json()["results"] == [BUDGET_DENIAL] * 2
    actions = api.call(
        "POST", "/v1/authorize/actions", member, {"resource": check(env, {})["resource"]}
    )
    assert actions.get_json() == {"actions": []}
    # Latchkey's own actions governed by the tenant's rules are refused too.
    refused = api.call(
        "PUT",
        f"/v1/projects/{env.p1}/users/{env.ids['member']}/roles/reader",
        env.tokens["owner"],
    )
    assert refused.status_code == 403
    assert refused.get_json()["decided_by"] == "budget"
    assert api.call("GET", "/healthz").status_code == 200


def test_the_limits_are_settings(starved: Env) -> None:
    env = starved
    body = problem(
        env.put([{"id": f"r{i}", "effect": "allow", "actions": [READ]} for i in range(4)]),
        422,
        "policy_limit_exceeded",
    )
    assert body["errors"][0]["max"] == 3
    answer = problem(
        env.api.call(
            "POST",
            "/v1/authorize",
            env.tokens["member"],
            check(env, {"env": "a", "size": 1, "public": True}),
        ),
        422,
        "attribute_limit_exceeded",
    )
    assert (answer["limit"], answer["max"]) == ("LATCHKEY_DECISION_MAX_ATTRIBUTES", 2)


def test_a_batch_past_its_budget_denies_what_is_left(batch_starved: Env) -> None:
    env = batch_starved
    api, member = env.api, env.tokens["member"]
    assert env.put(worst_document(READ, CONTAINER, "env")["rules"]).status_code == 200
    # Alone, a decision is well within its own minute: allowed.
    single = api.call("POST", "/v1/authorize", member, worst(env))
    assert single.get_json() == {"allowed": True, "decided_by": "policy", "rule": LAST_RULE}
    # In a batch, the batch's budget (0 ms) is spent before any check is decided.
    batch = api.call("POST", "/v1/authorize/batch", member, {"checks": [worst(env)] * 3})
    assert batch.get_json()["results"] == [BUDGET_DENIAL] * 3
    assert api.call("GET", "/healthz").status_code == 200


def test_budget_denials_are_never_allows_whatever_the_rules(batch_starved: Env) -> None:
    """Deny wins, allow is never granted past the budget: the same answers for
    a deny-only and an allow-all document."""
    env = batch_starved
    for rules in (
        [{"id": "allow-all", "effect": "allow", "actions": ["*"]}],
        [
            {"id": "allow-all", "effect": "allow", "actions": ["*"]},
            {"id": "deny-read", "effect": "deny", "actions": [READ]},
        ],
    ):
        assert env.put(rules).status_code == 200
        response = env.api.call(
            "POST",
            "/v1/authorize/batch",
            env.tokens["member"],
            {"checks": [check(env, {"env": SLOW_VALUE})] * 2},
        )
        assert response.get_json()["results"] == [BUDGET_DENIAL] * 2


# -- the faster rule loop answers as before ----------------------------------------------


def test_the_rule_loop_matches_rule_matches() -> None:
    """``TenantRules.matching`` (sets for `in`, fields read once) against the plain
    ``rule_matches`` over generated rules, principals and resources."""
    import random

    from latchkey.policy.documents import Condition, Rule
    from latchkey.policy.engine import (
        ActionRef,
        Principal,
        ResourceRef,
        TenantRules,
        rule_matches,
    )

    rng = random.Random(13)
    values: list[Any] = ["a", "b", "", 1, 2, 1.0, 2.5, True, False, None, ["a", "b"], [], {"a": 1}]
    lists = [("a", "b"), (1, 2.5), (True,), (), ("a", 1), (1.0,)]
    ops = ["=", "!=", "<", ">=", "in", "not in", "glob"]
    for _ in range(300):
        rules = []
        for i in range(rng.randint(1, 6)):
            conditions = []
            for _ in range(rng.randint(0, 3)):
                op = rng.choice(ops)
                attribute = rng.choice(["x", "y", "tags"])
                if rng.random() < 0.2:
                    conditions.append(Condition(attribute, op, None, rng.choice(["team", "id"])))
                elif op in ("in", "not in"):
                    conditions.append(Condition(attribute, op, rng.choice(lists)))
                elif op == "glob":
                    conditions.append(
                        Condition(attribute, op, rng.choice(["a*", "?", "[ab]", "*"]))
                    )
                else:
                    conditions.append(Condition(attribute, op, rng.choice(values[:9])))
            rules.append(
                Rule(
                    id=f"r{i}",
                    effect=rng.choice(["allow", "deny"]),
                    actions=(rng.choice(["s:t:read", "s:t:*", "*"]),),
                    resource_type=rng.choice([None, "s:t", "s:u"]),
                    conditions=tuple(conditions),
                    roles=rng.choice([None, frozenset({"member"}), frozenset({"admin"})]),
                    kinds=rng.choice([None, frozenset({"human"})]),
                )
            )
        actor = Principal(
            id="u",
            name="u",
            kind=rng.choice(["human", "application"]),
            domain_id="d",
            project_id="p",
            roles=rng.choice([(), ("member",), ("admin", "member")]),
            attributes={"team": rng.choice(values)},
        )
        attributes = {k: rng.choice(values) for k in ("x", "y", "tags") if rng.random() < 0.8}
        attributes = {k: v for k, v in attributes.items() if v is not None}
        resource = ResourceRef(
            type=rng.choice(["s:t", "s:u"]), project_id="p", attributes=attributes
        )
        expected = [[r.effect, r.id] for r in rules if rule_matches(r, actor, "s:t:read", resource)]
        found = TenantRules(tuple(rules)).matching(actor, ActionRef("s:t:read"), resource)
        assert found == expected, (rules, actor.attr("team"), attributes)
