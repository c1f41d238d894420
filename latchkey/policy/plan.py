"""Query plans: which resources of a type may a principal list? (like Cerbos PlanResources)

The answer is ``always``, ``never`` or ``conditional`` with a condition tree over
resource attributes that the caller turns into its own query (see ``to_sql``):

  leaf:  {"attribute": "env", "op": "=", "value": "staging"}
  node:  {"and": [...]}, {"or": [...]}, {"not": {...}}

The tree is: (some allow rule's conditions) AND NOT (some deny rule's conditions),
with principal attributes already replaced by this principal's values. It
assumes the boundary does not look at resource attributes (the shipped one does
not); a boundary that does is evaluated for an attribute-less resource.

Missing attributes: an allow condition on a missing attribute is false and a deny
condition true (deny fails closed). SQL's NULL logic gives the same answer for the
trees produced here: ``env = 'x'`` is not true for NULL, and neither is ``NOT
(owner = 'y')``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import ColumnElement, and_, not_, or_, true

from latchkey.policy.documents import Condition, Rule
from latchkey.policy.engine import Principal, compare, principal_matches
from latchkey.policy.globs import check as glob_problem
from latchkey.policy.globs import glob_match, glob_sql

ALWAYS, NEVER, CONDITIONAL = "always", "never", "conditional"
Tree = dict[str, Any]


def plan(
    rules: tuple[Rule, ...],
    actor: Principal,
    action: str,
    resource_type: str,
    allow_required: bool = True,
) -> tuple[str, Tree | None]:
    """(kind, condition) for tenant rules, the boundary having allowed already.

    ``allow_required=False``: only deny rules can refuse (a domain's deny-only rules
    in a project without a document of its own).
    """
    allow_terms: list[list[Tree]] = [] if allow_required else [[]]
    deny_terms: list[list[Tree]] = []
    for rule in rules:
        if not any(glob_match(p, action) for p in rule.actions):
            continue
        if not principal_matches(rule, actor):
            continue
        if rule.resource_type is not None and rule.resource_type != resource_type:
            continue
        deny = rule.effect == "deny"
        leaves = _leaves(rule.conditions, actor, fail_closed=deny)
        if leaves is None:
            continue  # a condition that can never hold for this principal
        (deny_terms if deny else allow_terms).append(leaves)
    if not allow_terms or any(not leaves for leaves in deny_terms):
        return NEVER, None
    unconditional_allow = any(not leaves for leaves in allow_terms)
    if unconditional_allow and not deny_terms:
        return ALWAYS, None
    parts: list[Tree] = []
    if not unconditional_allow:
        parts.append(_any([_all(t) for t in allow_terms]))
    if deny_terms:
        parts.append({"not": _any([_all(t) for t in deny_terms])})
    return CONDITIONAL, _all(parts)


def _leaves(
    conditions: tuple[Condition, ...], actor: Principal, fail_closed: bool
) -> list[Tree] | None:
    leaves: list[Tree] = []
    for c in conditions:
        if c.op == "glob" and glob_problem(c.value) is not None:
            # A stored pattern the glob language refuses (saved before it was enforced):
            # the engine never lets it allow and always lets it deny (engine.compare).
            if fail_closed:
                continue
            return None
        value = c.value
        if c.principal_attribute is not None:
            value = actor.attr(c.principal_attribute)
            if value is None:
                if fail_closed:
                    continue  # a deny condition on an unknown principal value holds
                return None  # an allow condition on it never does
        leaves.append(
            {
                "attribute": c.attribute,
                "op": c.op,
                "value": list(value) if isinstance(value, tuple) else value,
            }
        )
    return leaves


def _all(items: list[Tree]) -> Tree:
    return items[0] if len(items) == 1 else {"and": items}


def _any(items: list[Tree]) -> Tree:
    return items[0] if len(items) == 1 else {"or": items}


def evaluate(tree: Tree | None, attributes: Mapping[str, Any]) -> bool:
    """The tree applied to one resource's attributes, as SQL would: true only if true."""
    return tree is None or _kleene(tree, attributes) is True


def _kleene(tree: Tree, attributes: Mapping[str, Any]) -> bool | None:
    """Three-valued logic (None = unknown, i.e. a missing attribute), like SQL's NULL."""
    if "and" in tree:
        values = [_kleene(t, attributes) for t in tree["and"]]
        return False if False in values else (None if None in values else True)
    if "or" in tree:
        values = [_kleene(t, attributes) for t in tree["or"]]
        return True if True in values else (None if None in values else False)
    if "not" in tree:
        inner = _kleene(tree["not"], attributes)
        return None if inner is None else not inner
    left = attributes.get(tree["attribute"])
    if left is None:
        return None
    return compare(tree["op"], left, tree["value"])


def to_sql(tree: Tree | None, columns: Mapping[str, Any]) -> ColumnElement[bool]:
    """A SQLAlchemy ``where`` clause for a plan's condition (None: no restriction).

    ``columns`` maps attribute names to columns. ``glob`` becomes the exact predicate
    of ``globs.glob_sql`` (SQLite: GLOB; PostgreSQL: LIKE with an escape); list
    attributes are not supported.
    """
    if tree is None:
        return true()
    if "and" in tree:
        return and_(*(to_sql(t, columns) for t in tree["and"]))
    if "or" in tree:
        return or_(*(to_sql(t, columns) for t in tree["or"]))
    if "not" in tree:
        return not_(to_sql(tree["not"], columns))
    column = columns[tree["attribute"]]
    op, value = tree["op"], tree["value"]
    if op == "=":
        return column == value
    if op == "!=":
        return column != value
    if op == "<":
        return column < value
    if op == "<=":
        return column <= value
    if op == ">":
        return column > value
    if op == ">=":
        return column >= value
    # An empty list must still leave a missing (NULL) attribute unknown, as SQL does for
    # every other comparison: `col != col` is NULL for NULL and false otherwise.
    if op == "in":
        return column.in_(value) if value else column != column
    if op == "not in":
        return column.not_in(value) if value else column == column
    if op == "glob":
        return glob_sql(column, value)
    raise ValueError(f"unsupported op {op!r}")
