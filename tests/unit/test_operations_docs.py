"""Issue 15, points 6 and 7: the operator guide lists every metric family (with its
labels), the dashboard graphs only metrics that exist, and the guide agrees with the
code about the secret stores (Barbican included)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import Counter, Histogram

from latchkey import metrics
from latchkey.frontdoors.ops import api as ops_api
from latchkey.settings import Settings

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _families() -> dict[str, tuple[str, ...]]:
    found: dict[str, tuple[str, ...]] = {}
    for module in (metrics, ops_api):
        for value in vars(module).values():
            if isinstance(value, Counter):
                found[f"{value._name}_total"] = value._labelnames
            elif isinstance(value, Histogram):
                found[value._name] = value._labelnames
    return found


def test_every_metric_family_and_its_labels_are_in_the_operator_guide() -> None:
    guide = (DOCS / "operators.md").read_text()
    rows = {
        line.split("`")[1]: line for line in guide.splitlines() if line.startswith("| `latchkey_")
    }
    families = _families()
    assert len(families) >= 12
    for name, labels in families.items():
        assert name in rows, name
        for label in labels:
            assert f"`{label}`" in rows[name], (name, label)
    assert set(rows) == set(families)


def test_the_dashboard_graphs_existing_metrics() -> None:
    dashboard = json.loads((DOCS / "grafana-latchkey.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = {m for e in exprs for m in re.findall(r"latchkey_[a-z_]+", e)}
    known = set()
    for name in _families():
        known |= {name, f"{name}_bucket", f"{name}_count", f"{name}_sum"}
    assert used and used <= known, used - known
    assert {name for name in _families()} <= {re.sub(r"_bucket$", "", m) for m in used}


def test_the_guides_agree_with_the_code_about_barbican() -> None:
    operators = (DOCS / "operators.md").read_text()
    secrets = (DOCS / "secrets.md").read_text()
    row = next(line for line in operators.splitlines() if "`LATCHKEY_SECRET_STORE`" in line)
    for store in ("local", "vault", "barbican"):  # latchkey/app.py builds each
        assert f"`{store}`" in row, store
    assert "refused" not in row
    for name, *_ in Settings.describe():
        if name.startswith("LATCHKEY_BARBICAN_"):
            short = "_" + name.removeprefix("LATCHKEY_BARBICAN_")
            assert name in secrets, name
            assert name in operators or short in operators, name
