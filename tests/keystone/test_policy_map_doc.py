"""docs/keystone.md's map "Keystone policy names → Latchkey actions" is rendered from the
``POLICY_NAMES`` dicts of the modules in latchkey/frontdoors/keystone/, so it cannot
drift: the test fails when the block between the markers differs from the rendering.

Rewrite the block after changing a dict:
``PYTHONPATH=. .venv/bin/python -m tests.keystone.test_policy_map_doc --write``.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

import latchkey.frontdoors.keystone as keystone_door
from latchkey.policy.enforcer import RULES

DOC = Path(__file__).resolve().parents[2] / "docs" / "keystone.md"
START = "<!-- policy-map:start (tests/keystone/test_policy_map_doc.py --write) -->"
END = "<!-- policy-map:end -->"


def policy_names() -> dict[str, tuple[str, str]]:
    """Keystone policy name → (Latchkey action, module), over every module of the door."""
    found: dict[str, tuple[str, str]] = {}
    for info in sorted(pkgutil.iter_modules(keystone_door.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{keystone_door.__name__}.{info.name}")
        names = getattr(module, "POLICY_NAMES", None)
        if names is None:
            continue
        for keystone_name, action in names.items():
            earlier = found.get(keystone_name)
            assert earlier is None or earlier[0] == action, (
                f"{keystone_name}: {earlier} and {action} in {info.name}"
            )
            found.setdefault(keystone_name, (action, info.name))
    return found


def render() -> str:
    lines = ["| Keystone policy name | Latchkey action | Module |", "| --- | --- | --- |"]
    names = policy_names()
    for keystone_name, (action, module) in sorted(names.items()):
        lines.append(f"| `{keystone_name}` | `{action}` | `{module}` |")
    if not names:
        lines.append("| _none yet_ | | |")
    return "\n".join(lines)


def documented() -> str:
    text = DOC.read_text()
    start, end = text.find(START), text.find(END)
    assert 0 <= start < end, f"the markers of the policy map are missing from {DOC}"
    return text[start + len(START) : end].strip()


def write() -> None:
    text = DOC.read_text()
    start, end = text.find(START), text.find(END)
    DOC.write_text(text[: start + len(START)] + "\n" + render() + "\n" + text[end:])


def test_the_policy_map_in_the_doc_is_the_rendered_one() -> None:
    assert documented() == render(), (
        "docs/keystone.md's policy map is stale: run "
        "`python -m tests.keystone.test_policy_map_doc --write`"
    )


def test_every_mapped_action_is_enforced() -> None:
    for keystone_name, (action, module) in policy_names().items():
        assert keystone_name.startswith("identity:"), (module, keystone_name)
        # One action, or several joined by ", "; a note in parentheses (e.g. "(the
        # caller's own token)") stands for a check that is not an enforcer action.
        for part in action.split(", "):
            assert part in RULES or part.startswith("("), (
                f"{module}: {keystone_name} maps to {part!r}, which the enforcer does not know"
            )


if __name__ == "__main__":
    if "--write" in sys.argv[1:]:
        write()
    else:
        print(render())
