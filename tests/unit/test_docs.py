"""The documentation keeps up with the code it describes."""

from __future__ import annotations

from pathlib import Path

from latchkey.policy.enforcer import RULES

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_every_action_is_in_the_api_guide() -> None:
    guide = (DOCS / "api.md").read_text()
    for action, rule in RULES.items():
        assert f"| `{action}` | {rule.role} | {rule.scope} |" in guide, action


def test_the_api_guide_lists_no_stale_action() -> None:
    guide = (DOCS / "api.md").read_text()
    listed = {
        line.split("`")[1]
        for line in guide.splitlines()
        if line.startswith("| `") and ":" in line.split("`")[1]
    }
    assert listed == set(RULES)
