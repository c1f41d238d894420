"""Issue 13, class 3: one meaning per rule.

A glob (a ``glob`` condition's value, an action glob such as ``objects:*:delete``)
means the same to ``/v1/authorize``, ``/v1/authorize/actions`` and the SQL that
``/v1/authorize/plan``'s condition tree turns into, on SQLite and on PostgreSQL:
``[``, ``]``, ``?``, ``*``, escapes, backslashes, ``%``, ``_``, case, empty strings,
newlines, non-ASCII. Before: decisions read a pattern with ``fnmatch`` (``[ab]`` a
character class) and the plan's SQL with LIKE (``[ab]`` literal, and SQLite's LIKE
ignores ASCII case), so a listing showed secrets that a read of each refused.

Property tests, bounded (a few seconds per backend): the matcher against an
independent oracle; the SQL predicate against the matcher on both databases; and
end to end, random documents and resources through the API on both backends.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import (
    Column,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    delete,
    insert,
    select,
)

from latchkey.policy.documents import Condition, Rule
from latchkey.policy.engine import Principal, ResourceRef, rule_matches
from latchkey.policy.globs import GlobError, compile_glob, glob_match, glob_sql
from latchkey.policy.globs import check as glob_problem
from latchkey.policy.plan import ALWAYS, NEVER, plan, to_sql
from tests.conftest import Api, database_of

# -- the language, as docs/policy.md states it ------------------------------------------

LANGUAGE: list[tuple[str, str, bool]] = [
    ("stag*", "staging", True),
    ("stag*", "Staging", False),  # case counts
    ("STAG*", "staging", False),
    ("*", "", True),
    ("", "", True),
    ("", "a", False),
    ("?", "", False),
    ("?", "é", True),  # one character, not one byte
    ("?", "😀", True),
    ("??", "😀", False),
    ("a?c", "a\nc", True),  # wildcards cross newlines
    ("*", "x\ny", True),
    ("a*", "ab\n", True),
    ("%", "%", True),  # % and _ are themselves
    ("%", "anything", False),
    ("a_c", "abc", False),
    ("a_c", "a_c", True),
    ("100%*", "100% sure", True),
    (r"\*", "*", True),
    (r"\*", "x", False),
    (r"\?", "?", True),
    (r"\?", "x", False),
    (r"\\", "\\", True),
    (r"a\\*", "a\\bc", True),
    (r"\[ab\]", "[ab]", True),
    (r"\[ab\]", "a", False),
    ("objects:*:delete", "objects:container:delete", True),
    ("objects:*:delete", "objects:a:b:delete", True),  # `*` crosses colons
    ("*:*:read", "objects:container:read", True),
    ("objects:container:re?d", "objects:container:read", True),
    ("ß", "SS", False),
    ("İ", "i", False),
]
REFUSED = ["[ab]*", "[!a]", "a]b", "]", "[", "a\\", "\\a", "\\%", "\\n", "a\0b"]


@pytest.mark.parametrize(("pattern", "value", "expected"), LANGUAGE)
def test_the_glob_language(pattern: str, value: str, expected: bool) -> None:
    assert glob_match(pattern, value) is expected
    assert oracle(pattern, value) is expected


@pytest.mark.parametrize("pattern", REFUSED)
def test_patterns_outside_the_language_are_refused(pattern: str) -> None:
    with pytest.raises(GlobError):
        compile_glob(pattern)


def test_no_catastrophic_backtracking() -> None:
    text = "a" * 200_000
    started = time.perf_counter()
    adversarial = ("*?" + "a" * 200 + "b*", "*" + "a?" * 100 + "b*", "*" + "a" * 240 + "b*")
    for pattern in ("*a*a*a*a*b", "*?a*?a*a?*a*?b", "a*a*a*a*a*", *adversarial):
        assert glob_match(pattern, text) is ("b" not in pattern)
    assert time.perf_counter() - started < 1.0


def in_language(pattern: str) -> bool:
    """The language's grammar, written apart from latchkey/policy/globs.py."""
    return re.fullmatch(r"(?:[^\\\[\]\0]|\\[*?\[\]\\])*", pattern) is not None


# -- an oracle written apart from latchkey/policy/globs.py ------------------------------


def oracle(pattern: str, text: str) -> bool:
    """Set-of-positions matcher: every prefix of ``text`` the pattern can consume."""
    reach = {0}
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            literal = pattern[i + 1]
            reach = {p + 1 for p in reach if p < len(text) and text[p] == literal}
            i += 2
            continue
        if char == "*":
            reach = set(range(min(reach), len(text) + 1)) if reach else set()
        elif char == "?":
            reach = {p + 1 for p in reach if p < len(text)}
        else:
            reach = {p + 1 for p in reach if p < len(text) and text[p] == char}
        i += 1
    return len(text) in reach


LITERALS = ["a", "A", "b", "%", "_", "-", ":", " ", "\n", "é", "É", "ß", "İ", "😀"]
ESCAPES = ["\\*", "\\?", "\\\\", "\\[", "\\]"]
VALUE_CHARS = [*LITERALS, "*", "?", "[", "]", "\\", "B"]
# Weighted towards what the databases treat specially: wildcards, ASCII case, % and _.
glob_parts = st.sampled_from([*"**??", *ESCAPES, *LITERALS, *"aAbB%_", *"aAbB%_"])
patterns = st.lists(glob_parts, max_size=7).map("".join).filter(lambda p: p.count("*") <= 5)
# What a tenant may try beyond the language (shell classes, stray backslashes): each
# document either is refused at PUT or means the same everywhere.
RAW_PARTS = ["[", "]", "[ab]", "[!a]", "[a-z]", "\\", "\\a", "\\%"]
any_patterns = (
    st.lists(st.one_of(*[glob_parts] * 12, st.sampled_from(RAW_PARTS)), max_size=7)
    .map("".join)
    .filter(lambda p: p.count("*") <= 5)
)
random_values = st.lists(st.sampled_from(VALUE_CHARS), max_size=8).map("".join)


def instances(pattern: str) -> st.SearchStrategy[str]:
    """Values made to match ``pattern`` (wildcards filled in), sometimes case-flipped."""
    pieces: list[st.SearchStrategy[str]] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            pieces.append(st.just(pattern[i + 1 : i + 2]))
            i += 2
            continue
        if char == "*":
            pieces.append(st.lists(st.sampled_from(VALUE_CHARS), max_size=3).map("".join))
        elif char == "?":
            pieces.append(st.sampled_from(VALUE_CHARS))
        else:
            pieces.append(st.just(char))
        i += 1
    joined = st.tuples(*pieces).map("".join)
    return st.one_of(
        joined,
        joined.map(str.swapcase),
        joined.map(str.upper),
        joined.map(str.lower),
        joined.map(lambda v: v[:-1]),
        st.tuples(joined, st.sampled_from(VALUE_CHARS)).map("".join),
    )


@st.composite
def pattern_and_values(draw: st.DrawFn) -> tuple[str, list[str]]:
    pattern = draw(patterns)
    values = draw(st.lists(st.one_of(instances(pattern), random_values), max_size=10))
    return pattern, values


@settings(max_examples=400, deadline=None)
@given(case=pattern_and_values())
def test_matcher_agrees_with_the_oracle(case: tuple[str, list[str]]) -> None:
    pattern, values = case
    for value in values:
        assert glob_match(pattern, value) is oracle(pattern, value), (pattern, value)


@settings(max_examples=300, deadline=None)
@given(pattern=any_patterns)
def test_validation_accepts_exactly_the_language(pattern: str) -> None:
    assert (glob_problem(pattern) is None) is in_language(pattern), pattern


# -- the SQL predicate, on SQLite and PostgreSQL ---------------------------------------

PROBE = MetaData()
PROBE_ROWS = Table(
    "glob_probe_rows",
    PROBE,
    Column("id", Integer, primary_key=True),
    Column("name", String),
    Column("env", String),
    Column("size", Integer),
)


@pytest.fixture(params=["sqlite", "postgres"])
def sql_engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    url = "sqlite://" if request.param == "sqlite" else request.getfixturevalue("postgres_database")
    engine = create_engine(url)
    PROBE.create_all(engine)
    yield engine
    PROBE.drop_all(engine)
    engine.dispose()


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case=pattern_and_values())
def test_sql_predicate_selects_exactly_the_matches(
    sql_engine: Engine, case: tuple[str, list[str]]
) -> None:
    pattern, values = case
    with sql_engine.begin() as conn:
        conn.execute(delete(PROBE_ROWS))
        rows = [{"id": i, "name": v} for i, v in enumerate(values)]
        rows.append({"id": len(values), "name": None})  # NULL: never selected, nor negated
        conn.execute(insert(PROBE_ROWS), rows)
        where = glob_sql(PROBE_ROWS.c.name, pattern)
        chosen = [r.id for r in conn.execute(select(PROBE_ROWS.c.id).where(where))]
        refused = [r.id for r in conn.execute(select(PROBE_ROWS.c.id).where(~where))]
    expected = [i for i, v in enumerate(values) if glob_match(pattern, v)]
    assert sorted(chosen) == expected, (pattern, values)
    assert sorted(refused) == [i for i in range(len(values)) if i not in expected]


def test_stored_pattern_from_before_the_language_fails_closed() -> None:
    """A document saved before ``[``/``]`` were refused (not re-validated when read):
    its allow conditions never hold and its deny conditions always do, in decisions
    and plans alike."""
    actor = Principal(id="u", name="u", kind="human", domain_id="d", project_id="p", roles=())
    legacy = (Condition("env", "glob", "[ab]*"),)
    allow = Rule("a", "allow", ("objects:container:read",), "objects:container", legacy)
    everyone = Rule("e", "allow", ("objects:container:read",))
    deny = Rule("d", "deny", ("objects:container:read",), "objects:container", legacy)
    for env in ("a", "[ab]x", "zzz"):
        resource = ResourceRef(type="objects:container", project_id="p", attributes={"env": env})
        assert not rule_matches(allow, actor, "objects:container:read", resource)
        assert rule_matches(deny, actor, "objects:container:read", resource)
    assert plan((allow,), actor, "objects:container:read", "objects:container") == (NEVER, None)
    assert plan((everyone, allow), actor, "objects:container:read", "objects:container") == (
        ALWAYS,
        None,
    )
    assert plan((everyone, deny), actor, "objects:container:read", "objects:container") == (
        NEVER,
        None,
    )


# -- end to end: /v1/authorize, /actions and /plan's SQL, on both backends ----------------

ACTIONS = [f"objects:container:{verb}" for verb in ("read", "write", "delete", "list")]
SERVICE: dict[str, Any] = {
    "type": "objects",
    "name": "Object store",
    "endpoints": [{"interface": "public", "url": "http://objects.example/v1", "region": "r1"}],
    "actions": ACTIONS,
    "resource_types": {
        "objects:container": {"attributes": {"name": "string", "env": "string", "size": "integer"}}
    },
}
PASSWORD = "glob-semantics-password-1"


@st.composite
def action_globs(draw: st.DrawFn) -> str:
    """An action glob that matches at least the catalog action it was made from."""
    chars = list(draw(st.sampled_from(ACTIONS)))
    for _ in range(draw(st.integers(0, 2))):
        chars[draw(st.integers(0, len(chars) - 1))] = "?"
    for _ in range(draw(st.integers(0, 2))):
        start = draw(st.integers(0, len(chars)))
        chars[start : draw(st.integers(start, min(len(chars), start + 12)))] = ["*"]
    return draw(st.sampled_from(["".join(chars), "*", "objects:container:*", "*:*:read"]))


glob_conditions = st.fixed_dictionaries(
    {"attribute": st.sampled_from(["name", "env"]), "op": st.just("glob"), "value": patterns}
)
# Now and then a pattern beyond the language, which the PUT must refuse.
tried_globs = st.fixed_dictionaries(
    {"attribute": st.sampled_from(["name", "env"]), "op": st.just("glob"), "value": any_patterns}
)
conditions = st.one_of(
    glob_conditions,
    tried_globs,
    st.fixed_dictionaries(
        {
            "attribute": st.sampled_from(["name", "env"]),
            "op": st.sampled_from(["=", "!="]),
            "value": random_values,
        }
    ),
    st.fixed_dictionaries(
        {
            "attribute": st.just("env"),
            "op": st.sampled_from(["in", "not in"]),
            "value": st.lists(random_values, max_size=3),
        }
    ),
    st.fixed_dictionaries(
        {
            "attribute": st.just("size"),
            "op": st.sampled_from(["<", ">=", "="]),
            "value": st.integers(0, 3),
        }
    ),
)


@st.composite
def documents(draw: st.DrawFn) -> list[dict[str, Any]]:
    rules = []
    for index in range(draw(st.sampled_from([0, 0, 1, 2, 3, 4]))):
        rule: dict[str, Any] = {
            "id": f"r{index}",
            "effect": draw(st.sampled_from(["allow", "allow", "allow", "deny"])),
            "actions": draw(st.lists(action_globs(), min_size=1, max_size=3)),
        }
        if not draw(st.integers(0, 3)):
            rule["principals"] = {"roles": [draw(st.sampled_from(["member", "admin"]))]}
        if draw(st.integers(0, 4)):
            first = draw(st.one_of(glob_conditions, glob_conditions, conditions))
            rule["resource"] = {
                "type": "objects:container",
                "conditions": [first, *draw(st.lists(conditions, max_size=2))],
            }
        rules.append(rule)
    # At least one rule about everyone, with a glob first, so most plans carry one.
    anchor = draw(st.sampled_from(["allow", "allow", "allow", "deny"]))
    rules.insert(
        draw(st.integers(0, len(rules))),
        {
            "id": "anchor",
            "effect": anchor,
            "actions": [draw(st.sampled_from(["objects:container:*", "*", "objects:*:?e*"]))],
            "resource": {
                "type": "objects:container",
                "conditions": [draw(glob_conditions), *draw(st.lists(conditions, max_size=1))],
            },
        },
    )
    if anchor == "deny":  # something for it to take away
        rules.append({"id": "base", "effect": "allow", "actions": ["objects:*"]})
    return rules


def glob_values(rules: list[dict[str, Any]], attribute: str | None = None) -> list[str]:
    return [
        c["value"]
        for r in rules
        for c in r.get("resource", {}).get("conditions", [])
        if c["op"] == "glob" and attribute in (None, c["attribute"])
    ]


@st.composite
def cases(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rules = draw(documents())
    values: dict[str, st.SearchStrategy[str]] = {}
    for attribute in ("name", "env"):
        made = glob_values(rules, attribute)
        values[attribute] = random_values
        if made:  # mostly values near the attribute's own patterns: matches and near misses
            near = st.sampled_from(made).flatmap(instances)
            values[attribute] = st.one_of(near, near, near, random_values)
    resources = draw(
        st.lists(
            st.fixed_dictionaries({}, optional={**values, "size": st.integers(0, 3)}),
            min_size=3,
            max_size=6,
        )
    )
    return rules, resources


@pytest.fixture
def tenant(app: Flask, api: Api, admin_token: str) -> Iterator[tuple[Api, str, str, str, Engine]]:
    api.ok("POST", "/v1/services", admin_token, SERVICE)
    project = api.ok("POST", "/v1/projects", admin_token, {"name": "globs"})["id"]
    tokens = {}
    for name, role in (("glob-owner", "admin"), ("glob-member", "member")):
        user = api.ok("POST", "/v1/users", admin_token, {"name": name, "password": PASSWORD})
        api.ok("PUT", f"/v1/projects/{project}/users/{user['id']}/roles/{role}", admin_token)
        tokens[name] = api.login(name, PASSWORD, project="globs")
    with app.app_context():
        engine = database_of(app).engine
    # Requests must not run inside this app context: Flask would share its `g` with them.
    PROBE.create_all(engine)
    try:
        yield api, project, tokens["glob-owner"], tokens["glob-member"], engine
    finally:
        PROBE.drop_all(engine)


def planned_rows(condition: dict[str, Any] | None, engine: Engine) -> list[int]:
    columns = {"name": PROBE_ROWS.c.name, "env": PROBE_ROWS.c.env, "size": PROBE_ROWS.c.size}
    with engine.connect() as conn:
        query = select(PROBE_ROWS.c.id).where(to_sql(condition, columns)).order_by(PROBE_ROWS.c.id)
        return [row.id for row in conn.execute(query)]


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=cases())
def test_decisions_actions_and_planned_sql_agree(
    tenant: tuple[Api, str, str, str, Engine],
    case: tuple[list[dict[str, Any]], list[dict[str, Any]]],
) -> None:
    api, project, owner, member, engine = tenant
    rules, resources = case
    put = api.call("PUT", f"/v1/projects/{project}/policy", owner, {"rules": rules})
    outside = [p for p in glob_values(rules) if not in_language(p)]
    if outside:
        # Refused, naming the rule and the pattern; nothing else to compare.
        body = put.get_json()
        assert put.status_code == 422 and body["code"] == "invalid_policy", body
        assert {e["pointer"].rsplit("/", 1)[-1] for e in body["errors"]} == {"value"}, body
        event("refused: outside the glob language")
        return
    assert put.status_code == 200, put.get_json()
    with engine.begin() as conn:
        conn.execute(delete(PROBE_ROWS))
        conn.execute(
            insert(PROBE_ROWS),
            [
                {"id": i, "name": a.get("name"), "env": a.get("env"), "size": a.get("size")}
                for i, a in enumerate(resources)
            ],
        )
    allowed: dict[str, list[int]] = {action: [] for action in ACTIONS}
    for i, attributes in enumerate(resources):
        resource = {"type": "objects:container", "project_id": project, "attributes": attributes}
        listed = api.ok("POST", "/v1/authorize/actions", member, {"resource": resource}, 200)
        for action in ACTIONS:
            body = {"action": action, "resource": resource}
            decision = api.ok("POST", "/v1/authorize", member, body, 200)
            assert (action in listed["actions"]) is decision["allowed"], (action, attributes)
            if decision["allowed"]:
                allowed[action].append(i)
    for action in ACTIONS:
        body = {"action": action, "resource_type": "objects:container", "project_id": project}
        planned = api.ok("POST", "/v1/authorize/plan", member, body, 200)
        if planned["kind"] == "never":
            selected = []
        else:
            selected = planned_rows(planned.get("condition"), engine)
        assert selected == allowed[action], (action, planned, resources)
        glob_leaf = '"op": "glob"' in json.dumps(planned.get("condition"))
        event(f"plan {planned['kind']}{' with a glob' if glob_leaf else ''}")
        event(f"{'some' if allowed[action] else 'no'} rows allowed")


def test_patterns_outside_the_language_are_refused_at_put(
    tenant: tuple[Api, str, str, str, Engine], admin_token: str
) -> None:
    api, project, owner, _, _ = tenant
    for pattern in ("[ab]*", "a]", "\\d", "trailing\\", "[!a]"):
        rules = [
            {
                "id": "bad-glob",
                "effect": "allow",
                "actions": ["objects:container:read"],
                "resource": {
                    "type": "objects:container",
                    "conditions": [{"attribute": "name", "op": "glob", "value": pattern}],
                },
            }
        ]
        response = api.call("PUT", f"/v1/projects/{project}/policy", owner, {"rules": rules})
        body = response.get_json()
        assert response.status_code == 422 and response.mimetype == "application/problem+json"
        assert body["code"] == "invalid_policy"
        (error,) = body["errors"]
        assert error["rule"] == "bad-glob"
        assert error["pointer"] == "/rules/0/resource/conditions/0/value"
        assert "glob" in error["detail"]
    for pattern in ("objects:container:[rw]*", "objects:container:re\\ad"):
        rules = [{"id": "bad-action", "effect": "allow", "actions": [pattern]}]
        response = api.call("PUT", f"/v1/projects/{project}/policy", owner, {"rules": rules})
        assert response.status_code == 422
        assert [(e["rule"], e["pointer"]) for e in response.get_json()["errors"]] == [
            ("bad-action", "/rules/0/actions/0")
        ]
    # A domain's document is checked the same way (and so is validate).
    domain_rules = [
        {
            "id": "bad-domain-glob",
            "effect": "deny",
            "actions": ["objects:container:delete"],
            "resource": {
                "type": "objects:container",
                "conditions": [{"attribute": "name", "op": "glob", "value": "[ab]*"}],
            },
        }
    ]
    domain = api.ok("POST", "/v1/domains", admin_token, {"name": "glob-domain"})["id"]
    for method, path in (
        ("PUT", f"/v1/domains/{domain}/policy"),
        ("POST", f"/v1/domains/{domain}/policy/validate"),
        ("POST", f"/v1/projects/{project}/policy/validate"),
    ):
        response = api.call(method, path, admin_token, {"rules": domain_rules})
        assert response.status_code == 422, (path, response.get_json())
        assert [(e["rule"], e["pointer"]) for e in response.get_json()["errors"]] == [
            ("bad-domain-glob", "/rules/0/resource/conditions/0/value")
        ]
    # Escaped, the same characters are fine, and mean themselves.
    escaped = [
        {
            "id": "escaped",
            "effect": "allow",
            "actions": ["objects:container:re?d"],
            "resource": {
                "type": "objects:container",
                "conditions": [{"attribute": "name", "op": "glob", "value": "\\[ab\\]\\*\\\\"}],
            },
        }
    ]
    put = api.call("PUT", f"/v1/projects/{project}/policy", owner, {"rules": escaped})
    assert put.status_code == 200, put.get_json()
    member = tenant[3]
    for name, expected in (("[ab]*\\", True), ("a", False), ("[ab]x\\", False)):
        resource = {
            "type": "objects:container",
            "project_id": project,
            "attributes": {"name": name},
        }
        decision = api.ok(
            "POST",
            "/v1/authorize",
            member,
            {"action": "objects:container:read", "resource": resource},
            200,
        )
        assert decision["allowed"] is expected, name


# -- Latchkey's own listing: secrets filtered in SQL by the plan -----------------------

SECRET_NAMES = ["ci-one", "CI-two", "Ci-three", "ci_four", "ci%five", "[ci]-x", "\\c-y", "ci-"]


def test_secret_listing_shows_exactly_what_each_read_allows(
    app: Flask, api: Api, admin_token: str
) -> None:
    """The secrets service lists with the plan's SQL; /v1/authorize decides each secret.
    Before: SQLite's LIKE listed `CI-two` and `Ci-three` under `ci-*`, which a
    decision refused; `[ci]-?` listed `[ci]-x` on no backend and decided `\\c-y`."""
    project = api.ok("POST", "/v1/projects", admin_token, {"name": "vault"})["id"]
    tokens = {}
    for name, role in (("vault-owner", "admin"), ("vault-member", "member")):
        user = api.ok("POST", "/v1/users", admin_token, {"name": name, "password": PASSWORD})
        api.ok("PUT", f"/v1/projects/{project}/users/{user['id']}/roles/{role}", admin_token)
        tokens[name] = api.login(name, PASSWORD, project="vault")
    owner, member = tokens["vault-owner"], tokens["vault-member"]
    for name in SECRET_NAMES:
        api.ok("POST", f"/v1/projects/{project}/secrets", owner, {"name": name, "payload": "p"})
    rules = [
        {
            "id": "admins",
            "effect": "allow",
            "actions": ["secrets:*:*"],
            "principals": {"roles": ["admin"]},
        },
        {
            "id": "ci-secrets",
            "effect": "allow",
            "actions": ["secrets:secret:list", "secrets:secret:read"],
            "resource": {
                "type": "secrets:secret",
                "conditions": [{"attribute": "name", "op": "glob", "value": "ci-*"}],
            },
        },
        {
            "id": "bracketed",
            "effect": "allow",
            "actions": ["secrets:secret:list", "secrets:secret:read"],
            "resource": {
                "type": "secrets:secret",
                "conditions": [{"attribute": "name", "op": "glob", "value": "\\[ci\\]-?"}],
            },
        },
    ]
    put = api.call("PUT", f"/v1/projects/{project}/policy", owner, {"rules": rules})
    assert put.status_code == 200, put.get_json()
    listed = [
        s["name"] for s in api.ok("GET", f"/v1/projects/{project}/secrets", member)["secrets"]
    ]
    decided = []
    for name in SECRET_NAMES:
        resource = {"type": "secrets:secret", "project_id": project, "attributes": {"name": name}}
        body = {"action": "secrets:secret:list", "resource": resource}
        if api.ok("POST", "/v1/authorize", member, body, 200)["allowed"]:
            decided.append(name)
    assert sorted(listed) == sorted(decided) == sorted(["ci-one", "ci-", "[ci]-x"])
