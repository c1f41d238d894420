"""/plan agrees with per-resource decisions, on random policies and resources.

The same random rules are decided three ways for every resource: by the engine's
own rule matching (what /v1/authorize does past the boundary), by evaluating the
plan's condition tree, and by the SQL the plan turns into (on a real SQLite).
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, insert, select

from latchkey.policy.documents import Condition, Rule
from latchkey.policy.engine import Principal, ResourceRef, rule_matches
from latchkey.policy.plan import ALWAYS, CONDITIONAL, NEVER, evaluate, plan, to_sql

ACTION = "objects:container:read"
TYPE = "objects:container"
ENVS = ["staging", "prod", "dev", "qa"]
TEAMS = ["blue", "red"]

string_conditions = st.one_of(
    st.builds(Condition, st.just("env"), st.sampled_from(["=", "!="]), st.sampled_from(ENVS)),
    st.builds(
        Condition,
        st.just("env"),
        st.sampled_from(["in", "not in"]),
        st.lists(st.sampled_from(ENVS), max_size=3).map(tuple),
    ),
    st.builds(Condition, st.just("env"), st.just("glob"), st.sampled_from(["s*", "*o*", "?a"])),
    st.builds(Condition, st.just("team"), st.sampled_from(["=", "!="]), st.none(), st.just("team")),
)
integer_conditions = st.builds(
    Condition,
    st.just("size"),
    st.sampled_from(["=", "!=", "<", "<=", ">", ">="]),
    st.integers(min_value=0, max_value=4),
)
rules = st.lists(
    st.builds(
        Rule,
        id=st.uuids().map(lambda u: u.hex[:8]),
        effect=st.sampled_from(["allow", "deny"]),
        actions=st.sampled_from([(ACTION,), ("objects:*:read",), ("objects:*:delete",)]),
        resource_type=st.sampled_from([TYPE, None]),
        conditions=st.lists(st.one_of(string_conditions, integer_conditions), max_size=3).map(
            tuple
        ),
        roles=st.sampled_from([None, frozenset({"member"}), frozenset({"admin"})]),
    ),
    max_size=5,
)
attribute_sets = st.fixed_dictionaries(
    {},
    optional={
        "env": st.sampled_from(ENVS),
        "size": st.integers(min_value=0, max_value=4),
        "team": st.sampled_from(TEAMS),
    },
)
resources = st.lists(attribute_sets, min_size=1, max_size=8)
principal_team = st.sampled_from([*TEAMS, None])


def decide(policy: list[Rule], actor: Principal, attributes: dict[str, Any]) -> bool:
    resource = ResourceRef(type=TYPE, project_id="p", attributes=attributes)
    allows = [r for r in policy if r.effect == "allow" and rule_matches(r, actor, ACTION, resource)]
    denies = [r for r in policy if r.effect == "deny" and rule_matches(r, actor, ACTION, resource)]
    return bool(allows) and not denies


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policy=rules, items=resources, team=principal_team)
def test_plan_agrees_with_decisions(
    policy: list[Rule], items: list[dict[str, Any]], team: str | None
) -> None:
    actor = Principal(
        id="u",
        name="u",
        kind="human",
        domain_id="d",
        project_id="p",
        roles=("member", "reader"),
        attributes={"team": team} if team else {},
    )
    kind, condition = plan(tuple(policy), actor, ACTION, TYPE)
    expected = [decide(policy, actor, attrs) for attrs in items]
    if kind == ALWAYS:
        assert all(expected)
    elif kind == NEVER:
        assert not any(expected)
    else:
        assert kind == CONDITIONAL
        assert [evaluate(condition, attrs) for attrs in items] == expected
        assert sql_selects(condition, items) == [i for i, ok in enumerate(expected) if ok]


def sql_selects(condition: dict[str, Any] | None, items: list[dict[str, Any]]) -> list[int]:
    metadata = MetaData()
    table = Table(
        "resource",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("env", String),
        Column("size", Integer),
        Column("team", String),
    )
    engine = create_engine("sqlite://")
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            insert(table),
            [
                {"id": i, "env": a.get("env"), "size": a.get("size"), "team": a.get("team")}
                for i, a in enumerate(items)
            ],
        )
        columns = {"env": table.c.env, "size": table.c.size, "team": table.c.team}
        query = select(table.c.id).where(to_sql(condition, columns)).order_by(table.c.id)
        return [row.id for row in conn.execute(query)]
