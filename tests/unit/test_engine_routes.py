"""Two shortcuts of latchkey/policy/engine.py decide exactly as the plain route does:

- a boundary's answers are kept (``BoundaryVerdicts``) and reused for the same
  principal, action, resource type, project and domain;
- once the boundary has answered, the tenant rules' matching is called directly
  instead of through Polar's ``tenant_rule``.

Checked on random rules, principals and resources, for a full decision (asked
twice: the second answer comes from the kept verdicts) and for the tenant rules
alone (Latchkey's own actions), against an engine with both shortcuts off.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from latchkey.policy.documents import PolicyDocument, Rule
from latchkey.policy.engine import (
    DEFAULT_BOUNDARY,
    ActionRef,
    PolicyEngine,
    Principal,
    ResourceRef,
    Verdict,
)
from tests.unit.test_plan import TEAMS, TYPE, attribute_sets, rules

ACTIONS = ["objects:container:read", "objects:container:delete", "objects:container:write"]
BOUNDARY = DEFAULT_BOUNDARY.read_text()
WITH_OWN_TENANT_RULE = BOUNDARY + '\ntenant_rule(_a, _b, _c, _d, "deny", "operator") if false;\n'

checks = st.lists(
    st.tuples(st.sampled_from(ACTIONS), st.sampled_from(["p", "other"]), attribute_sets),
    min_size=1,
    max_size=10,
)
principals = st.builds(
    lambda roles, team: Principal(
        id="u1",
        name="u1",
        kind="human",
        domain_id="d",
        project_id="p",
        roles=roles,
        attributes={"team": team} if team else {},
    ),
    st.sampled_from([(), ("reader",), ("member",), ("admin",)]),
    st.sampled_from([*TEAMS, None]),
)


def verdicts(
    engine: PolicyEngine, actor: Principal, items: list[tuple[str, str, dict[str, Any]]]
) -> list[tuple[Verdict, Verdict, Verdict]]:
    out = []
    for action, project, attributes in items:
        resource = ResourceRef(type=TYPE, project_id=project, attributes=attributes)
        out.append(
            (
                engine.evaluate(actor, ActionRef(action), resource),
                engine.evaluate(actor, ActionRef(action), resource),
                engine.evaluate(actor, ActionRef(action), resource, consult_boundary=False),
            )
        )
    return out


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policy=rules, actor=principals, items=checks)
def test_direct_matching_decides_as_the_polar_route(
    policy: list[Rule], actor: Principal, items: list[tuple[str, str, dict[str, Any]]]
) -> None:
    document = PolicyDocument(tuple({r.id: r for r in policy}.values()))
    shortcuts = PolicyEngine(BOUNDARY, document)
    plain = PolicyEngine(BOUNDARY, document)
    plain.tenant_rules_direct = False
    plain._verdicts = None
    assert shortcuts.tenant_rules_direct and shortcuts._verdicts is not None
    assert verdicts(shortcuts, actor, items) == verdicts(plain, actor, items)


def test_kept_verdicts_are_per_principal_action_and_project() -> None:
    engine = PolicyEngine(BOUNDARY, None)
    container = ResourceRef(type=TYPE, project_id="p")
    read, delete = ActionRef("objects:container:read"), ActionRef("objects:container:delete")

    def person(*roles: str, project: str = "p") -> Principal:
        return Principal(
            id="u1", name="u1", kind="human", domain_id="d", project_id=project, roles=roles
        )

    assert engine.evaluate(person("reader"), read, container).boundary
    assert not engine.evaluate(person("reader"), delete, container).boundary
    # Same user, more roles (or another scope): another question, not the kept answer.
    assert engine.evaluate(person("admin"), delete, container).boundary
    assert not engine.evaluate(person("admin", project="q"), delete, container).boundary
    other_project = ResourceRef(type=TYPE, project_id="q")
    assert not engine.evaluate(person("admin"), delete, other_project).boundary
    assert engine.evaluate(person("reader"), read, container).boundary


def test_a_boundary_reading_resource_details_keeps_no_verdicts() -> None:
    reads_env = BOUNDARY.replace("boundary(", "old_boundary(") + (
        "\nboundary(actor: Principal, action: ActionRef, resource: ResourceRef) if"
        '\n    old_boundary(actor, action, resource) and resource.attr("env") != "prod";\n'
    )
    engine = PolicyEngine(reads_env, None)
    assert engine._verdicts is None
    reader = Principal(
        id="u1", name="u1", kind="human", domain_id="d", project_id="p", roles=("reader",)
    )
    read = ActionRef("objects:container:read")
    for env, allowed in [("staging", True), ("prod", False), ("dev", True)]:
        resource = ResourceRef(type=TYPE, project_id="p", attributes={"env": env})
        assert engine.evaluate(reader, read, resource).boundary is allowed


def test_a_boundary_with_its_own_tenant_rule_keeps_the_polar_route() -> None:
    engine = PolicyEngine(WITH_OWN_TENANT_RULE, PolicyDocument(()))
    assert not engine.tenant_rules_direct
