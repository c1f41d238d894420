"""The slowest tenant document the default limits allow, and the checks that hurt it most.

Shared by tests/attacks/test_policy_budget.py and the bench (bench/latchkey_side.py,
scenario `worst_batch`). Measured on the engine with every kind of condition the
limits allow (docs/decisions.md "A budget for tenant evaluation"), a glob that
fails only after backtracking over a value of the longest allowed length is the
slowest per unit of cost: so the document is as many such rules as
LATCHKEY_POLICY_MAX_COST allows, then one unconditional allow rule, and each check
sends the longest values.
"""

from __future__ import annotations

from typing import Any

from latchkey.policy.documents import (
    GLOB_UNITS,
    GLOB_UNITS_PER_CHARACTER,
    MAX_COST,
    MAX_GLOB_LENGTH,
    MAX_GLOB_WILDCARDS,
    MAX_STRING,
)


def slow_pattern(length: int = MAX_GLOB_LENGTH) -> str:
    """One `*`, the most single-character wildcards, then literals: against "a" * 1024
    the regex tries every split of the value and fails on the last character each time."""
    wildcards = min(MAX_GLOB_WILDCARDS, length - 2)
    return "*" + "?" * wildcards + "a" * (length - wildcards - 2) + "b"


def pattern_units(pattern: str) -> int:
    return GLOB_UNITS + GLOB_UNITS_PER_CHARACTER * len(pattern)


SLOW_PATTERN = slow_pattern()
SLOW_VALUE = "a" * MAX_STRING  # LATCHKEY_DECISION_MAX_ATTRIBUTE_LENGTH's default
RULE_UNITS = 1 + pattern_units(SLOW_PATTERN)
LAST_RULE = "allow-after-all"


def worst_document(
    action: str,
    resource_type: str,
    attribute: str,
    max_cost: int = MAX_COST,
    pattern: str = SLOW_PATTERN,
) -> dict[str, Any]:
    """Rules that all name ``action`` (so every check evaluates every one), each with
    one slow glob on ``attribute``, as many as ``max_cost`` allows; the last allows
    unconditionally."""
    count = (max_cost - 1) // (1 + pattern_units(pattern))
    rules: list[dict[str, Any]] = [
        {
            "id": f"slow-{i}",
            "effect": "allow",
            "actions": [action],
            "resource": {
                "type": resource_type,
                "conditions": [{"attribute": attribute, "op": "glob", "value": pattern}],
            },
        }
        for i in range(count)
    ]
    rules.append({"id": LAST_RULE, "effect": "allow", "actions": [action]})
    return {"rules": rules}


def document_cost(document: dict[str, Any]) -> int:
    return sum(
        1 + sum(pattern_units(c["value"]) for c in r["resource"]["conditions"])
        if r.get("resource")
        else 1
        for r in document["rules"]
    )


def worst_check(
    action: str,
    resource_type: str,
    project_id: str,
    attributes: list[str],
    index: int = 0,
    length: int = MAX_STRING,
) -> dict[str, Any]:
    """A check whose string attributes are all as long as allowed (or ``length``: a
    batch of 1,000 must stay within the 1 MiB a request body may be)."""
    return {
        "action": action,
        "resource": {
            "type": resource_type,
            "id": f"c{index}",
            "project_id": project_id,
            "attributes": dict.fromkeys(attributes, "a" * length),
        },
    }
