"""The Markdown table (and the targets) from a run's results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

SCENARIOS = [
    ("appcred_issue", "Application-credential token issuance", "appcred_issue"),
    ("password_issue", "Password token issuance (sql user)", "password_issue"),
    ("validate_v1", "Online validation `GET /v1/auth/tokens`", "validate_v3"),
    ("validate_v3", "Online validation `GET /v3/auth/tokens`", "validate_v3"),
    ("introspect", "OAuth 2.0 introspection", None),
    ("authorize_role", "`/v1/authorize`, role rule", None),
    ("authorize_attribute", "`/v1/authorize`, attribute rules", None),
    ("authorize_500rps", "`/v1/authorize`, attribute rules, paced at 500 req/s", None),
    ("batch100", "`/v1/authorize/batch` of 100 (connections = workers)", None),
    ("actions", "`/v1/authorize/actions`", None),
    ("plan", "`/v1/authorize/plan`", None),
    (
        "worst_batch",
        "Worst allowed policy: batch of 4 × ~50,000 units (connections = workers)",
        None,
    ),
    (
        "worst_batch1000",
        "Worst allowed policy: batch of 1,000 × ~200 units (connections = workers)",
        None,
    ),
    (
        "healthz_under_worst",
        "`/healthz` while workers − 1 connections send `worst_batch`",
        None,
    ),
    ("ldap_login", "LDAP password login (slapd)", None),
    ("secret_read_local", "Secret payload read, local store", None),
    ("secret_read_openbao", "Secret payload read, OpenBao", None),
]


def _server_of(row: dict[str, Any]) -> str:
    """The server a row was measured under (rows of runs before issue 17: gunicorn)."""
    return str(row.get("server", "gunicorn"))


def servers_of(results: dict[str, Any]) -> list[str]:
    """The servers of a run, in its order (Keystone runs under gunicorn: not one of them)."""
    listed = results.get("meta", {}).get("servers")
    if listed:
        return list(listed)
    found: list[str] = []
    for row in results["online"]:
        if row["system"] != "keystone" and _server_of(row) not in found:
            found.append(_server_of(row))
    return found or ["gunicorn"]


def _find(
    results: dict[str, Any],
    system: str,
    backend: str,
    scenario: str,
    server: str | None = None,
) -> dict[str, Any] | None:
    """A row; ``server`` narrows Latchkey's and the ceilings' rows (never Keystone's)."""
    for row in results["online"]:
        if (row["system"], row["backend"], row["scenario"]) != (system, backend, scenario):
            continue
        if server is None or system == "keystone" or _server_of(row) == server:
            return dict(row)
    return None


def _rps(row: dict[str, Any] | None) -> str:
    if row is None:
        return "—"
    flag = f" ({row['errors']} err)" if row["errors"] else ""
    return f"{row['rps']:,.1f}{flag}"


def _lat(row: dict[str, Any] | None) -> str:
    if row is None:
        return "—"
    return f"{row['p50_ms']:.1f} / {row['p95_ms']:.1f} / {row['p99_ms']:.1f}"


def _ratio(a: float | None, b: float | None) -> str:
    if not a or not b:
        return "—"
    return f"{a / b:,.0f}×" if a / b >= 10 else f"{a / b:,.1f}×"


def _latchkey_min(
    results: dict[str, Any], scenario: str, server: str | None = None
) -> float | None:
    values = [
        r["rps"]
        for r in results["online"]
        if r["system"] == "latchkey"
        and r["scenario"] == scenario
        and not r["errors"]
        and (server is None or _server_of(r) == server)
    ]
    return min(values) if values else None


def online_table(results: dict[str, Any]) -> list[str]:
    """One row per scenario and server, the servers of a scenario next to each other."""
    servers = servers_of(results)
    lines = [
        "| Scenario | Server | Latchkey SQLite req/s | p50 / p95 / p99 ms "
        "| Latchkey PostgreSQL req/s | p50 / p95 / p99 ms | Keystone req/s (no cache) "
        "| Keystone req/s (memcached) | Latchkey/Keystone (no cache / memcached) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for scenario, title in (
        ("constant", "Ceiling: constant WSGI endpoint, same server"),
        ("constant_flask", "Ceiling: constant bare Flask endpoint, same server"),
        ("constant_sized", "Ceiling: constant WSGI endpoint, a validation's bytes, same server"),
    ):
        for server in servers:
            row = _find(results, "ceiling", "-", scenario, server)
            if row:
                lines.append(f"| {title} | {server} | {_rps(row)} | {_lat(row)} | | | | | |")
    for scenario, title, peer in SCENARIOS:
        nocache = _find(results, "keystone", "nocache", peer) if peer else None
        cached = _find(results, "keystone", "memcached", peer) if peer else None
        first = True
        for server in servers:
            sqlite = _find(results, "latchkey", "sqlite", scenario, server)
            postgres = _find(results, "latchkey", "postgres", scenario, server)
            if sqlite is None and postgres is None:
                continue
            ours = _latchkey_min(results, scenario, server)
            ratio = (
                f"{_ratio(ours, nocache['rps'] if nocache else None)} / "
                f"{_ratio(ours, cached['rps'] if cached else None)}"
                if peer and (nocache or cached)
                else ""
            )
            peers = (
                f"{_rps(nocache)} | {_rps(cached)}" if peer and first else " | "
            )  # Keystone's figures once per scenario, its ratio on every server's row
            lines.append(
                f"| {title} | {server} | {_rps(sqlite)} | {_lat(sqlite)} | {_rps(postgres)} "
                f"| {_lat(postgres)} | {peers} | {ratio} |"
            )
            first = False
    return lines


def offline_table(results: dict[str, Any]) -> list[str]:
    offline = results.get("offline") or {}
    if not offline:
        return []
    raw = offline["raw_es256"]["ops_per_s"]
    lines = ["| In one process | verifications/s | vs raw ES256 |", "|---|---:|---:|"]
    for key, title in (
        ("middleware_cold", "`LatchkeyMiddleware.verify`, cold (distinct tokens)"),
        ("middleware_warm", "`LatchkeyMiddleware.verify`, warm (the same token)"),
        ("joserfc_decode", "`joserfc.jwt.decode` (what Latchkey calls)"),
        ("raw_es256", "Ceiling: raw ES256 with `cryptography` + JSON decode"),
    ):
        value = offline[key]["ops_per_s"]
        lines.append(f"| {title} | {value:,.0f} | {100 * value / raw:.0f} % |")
    return lines


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    servers = servers_of(results)

    def add(target: str, measured: str, met: bool | None) -> None:
        out.append({"target": target, "measured": measured, "met": met})

    def tag(server: str) -> str:
        return f" [{server}]" if len(servers) > 1 else ""

    for server in servers:
        _server_targets(results, server, tag(server), add)
    offline = results.get("offline") or {}
    if offline:
        cold = offline["middleware_cold"]["ops_per_s"]
        raw = offline["raw_es256"]["ops_per_s"]
        warm = offline["middleware_warm"]["ops_per_s"]
        add(
            "Offline cold ≥ 80 % of raw ES256",
            f"{100 * cold / raw:.0f} % ({cold:,.0f}/s)",
            cold >= 0.8 * raw,
        )
        add("Offline warm ≥ 100,000/s", f"{warm:,.0f}/s", warm >= 100_000)
    for row in results["online"]:
        if row["scenario"] == "authorize_500rps":
            achieved = row["rps"]
            add(
                f"`/v1/authorize` p99 ≤ 5 ms at 500 req/s ({row['backend']}){tag(_server_of(row))}",
                f"p99 {row['p99_ms']:.1f} ms at {achieved:,.0f} req/s achieved",
                row["p99_ms"] <= 5 and achieved >= 0.95 * 500 and not row["errors"],
            )
    for row in results["online"]:
        if row["scenario"] in ("worst_batch", "worst_batch1000"):
            add(
                f"{row['scenario']} p99 within the 3 s batch budget ({row['backend']})"
                f"{tag(_server_of(row))}",
                f"p50 {row['p50_ms']:.1f} ms, p99 {row['p99_ms']:.1f} ms",
                row["p99_ms"] <= 3000 and not row["errors"],
            )
    for row in results["online"]:
        if row["scenario"] == "batch100":
            add(
                f"Batch of 100 p99 ≤ 20 ms ({row['backend']}){tag(_server_of(row))}",
                f"p99 {row['p99_ms']:.1f} ms",
                row["p99_ms"] <= 20 and not row["errors"],
            )
    for key, rss in (results.get("rss") or {}).items():
        if key.endswith(("_all_projects", "_all_projects_with_policy")):
            backend, _, which = key.partition("_")  # backend: sqlite, sqlite-granian, ...
            loaded = (
                f"{rss['projects']} projects each with a 20-rule policy"
                if which.endswith("with_policy")
                else f"{rss['projects']} projects' engines (100 with a policy)"
            )
            add(
                f"≤ 150 MB RSS per worker, {loaded} ({backend})",
                f"max {rss['max_mb']:.0f} MB (workers {rss['workers_mb']})",
                rss["max_mb"] <= 150,
            )
    return out


def _server_targets(results: dict[str, Any], server: str, tag: str, add: Any) -> None:
    """The issuance and validation targets of Latchkey under one server, against
    Keystone and that same server's constant ceiling."""
    issue = _latchkey_min(results, "appcred_issue", server)
    peer_rows = [
        _find(results, "keystone", label, "appcred_issue") for label in ("nocache", "memcached")
    ]
    peer = max((r["rps"] for r in peer_rows if r), default=None)
    if issue:
        add(
            f"App-credential issuance ≥ 300/s{tag}",
            f"{issue:,.0f}/s (lower of SQLite, PostgreSQL)",
            issue >= 300,
        )
        if peer:
            best_issue = max(
                r["rps"]
                for r in results["online"]
                if r["system"] == "latchkey"
                and r["scenario"] == "appcred_issue"
                and _server_of(r) == server
            )
            add(
                f"App-credential issuance ≥ 100× Keystone{tag}",
                f"{_ratio(issue, peer)} (worst backend vs Keystone's best, {peer:.1f}/s); "
                f"best backend {_ratio(best_issue, peer)}",
                issue >= 100 * peer,
            )
    validation = min(
        [
            v
            for v in (
                _latchkey_min(results, "validate_v1", server),
                _latchkey_min(results, "validate_v3", server),
            )
            if v
        ],
        default=None,
    )
    cached = _find(results, "keystone", "memcached", "validate_v3")
    constant = _find(results, "ceiling", "-", "constant", server)
    best = max(
        (
            (r["rps"], r["backend"], r["scenario"])
            for r in results["online"]
            if r["system"] == "latchkey"
            and r["scenario"].startswith("validate")
            and _server_of(r) == server
        ),
        default=None,
    )
    best_text = f"; best {best[0]:,.0f}/s ({best[1]} {best[2]})" if best else ""
    if validation and cached:
        add(
            f"Online validation ≥ 20× Keystone with memcached{tag}",
            f"{_ratio(validation, cached['rps'])} (worst {validation:,.0f} vs "
            f"{cached['rps']:,.0f}/s{best_text}: {_ratio(best[0], cached['rps'])})"
            if best
            else _ratio(validation, cached["rps"]),
            validation >= 20 * cached["rps"],
        )
    if validation and constant:
        share = 100 * validation / constant["rps"]
        best_share = f"; best {100 * best[0] / constant['rps']:.0f} %" if best else ""
        flask = _find(results, "ceiling", "-", "constant_flask", server)
        sized = _find(results, "ceiling", "-", "constant_sized", server)
        flask_share = _share(
            "a bare Flask endpoint answering a constant", flask and flask["rps"], constant
        )
        sized_share = _share(
            "of the constant endpoint carrying a validation's bytes", validation, sized
        )
        add(
            f"Online validation ≥ 50 % of the constant endpoint (same server){tag}",
            f"{share:.0f} % (worst row){best_share}{flask_share}{sized_share}",
            share >= 50,
        )


def _share(text: str, part: float | None, whole: dict[str, Any] | None) -> str:
    """``; <text>: <part as a percentage of whole's req/s> %``, or nothing."""
    if not part or whole is None:
        return ""
    return f"; {text}: {100 * part / whole['rps']:.0f} %"


SERVER_TEXT = {
    "gunicorn": "gunicorn: sync workers",
    "granian": "granian: WSGI, one app thread and one I/O thread per worker",
}


def _servers_text(results: dict[str, Any]) -> str:
    return "; ".join(SERVER_TEXT.get(s, s) for s in servers_of(results))


def write_report(results: dict[str, Any], path: Path) -> Path:
    meta = results["meta"]
    results["targets"] = targets(results)
    shared = f" — {meta['note']}" if meta.get("note") else ""
    lines = [
        f"# Latchkey benchmark, {meta['date']}" + (" (quick)" if meta["quick"] else ""),
        "",
        f"Commit `{meta['commit']}`"
        + (
            f" (+{meta['dirty_paths']} uncommitted paths in the tree)"
            if meta["dirty_paths"]
            else ""
        )
        + f"; {meta['cpus']} CPUs, {meta['workers']} workers under each server "
        f"({_servers_text(results)}), wrk in a separate "
        f"process on the same machine; {meta['seconds_per_scenario']:.0f} s per scenario after a "
        f"warm-up; data set {meta['scale']}; load average {meta['loadavg_before']} before, "
        f"{meta.get('loadavg_after')} after{shared}.",
        "",
        "## Online endpoints",
        "",
        *online_table(results),
        "",
        "Throughput rows: wrk closed loop, 2 connections per worker. Ratios use the lower of "
        "Latchkey's two backends. Keystone has no `/v1`: its `/v3` validation is the peer of "
        "both validation rows.",
        "",
    ]
    offline = offline_table(results)
    if offline:
        lines += ["## Offline verification", "", *offline, ""]
    rss = results.get("rss") or {}
    if rss:
        lines += [
            "## Memory (RSS of each worker; `-granian`: under granian)",
            "",
            "| When | MB per worker |",
            "|---|---|",
        ]
        for key, value in rss.items():
            lines.append(f"| {key} | {value['workers_mb']} |")
        lines.append("")
    lines += ["## Targets", "", "| Target | Measured | Met |", "|---|---|---|"]
    for t in results["targets"]:
        met = "—" if t["met"] is None else ("yes" if t["met"] else "**no**")
        lines.append(f"| {t['target']} | {t['measured']} | {met} |")
    lines.append("")
    for scenario, summary in (results.get("profiles") or {}).items():
        if not summary.get("samples"):
            continue
        lines += [
            f"## Profile: {scenario} ({summary['samples']} samples)",
            "",
            "| Function (inclusive) | % |",
            "|---|---:|",
        ]
        lines += [f"| `{name}` | {pct} |" for name, pct in summary["inclusive"][:15]]
        lines.append("")
    path.write_text("\n".join(lines))
    return path


if __name__ == "__main__":
    import json
    import sys

    source = Path(sys.argv[1])
    loaded = json.loads(source.read_text())
    print(write_report(loaded, source.with_suffix(".md")).read_text())
    source.write_text(json.dumps(loaded, indent=2))
