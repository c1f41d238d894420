"""`make tempest`: Tempest's identity v3 tests against Latchkey and against Keystone 30.

Run by scripts/tempest.sh with Latchkey's interpreter (``python -m
tests.openstack.tempest_run run|table``); tests/e2e/test_tempest.py calls
``run_selection`` for the bounded part in ``make test``.

For each target it starts a server of its own (Latchkey from this checkout on SQLite or
PostgreSQL, or Keystone 30 from the benchmark's virtualenv, bench/keystone_side.py),
writes a ``tempest.conf`` for dynamic credentials, runs ``tempest run --regex ...`` from
``.venv-tempest`` and reads the subunit stream back: every test of the selection (as
``tempest run --list-tests`` names it) ends up passed, failed or skipped, including the
tests of a class whose ``setUpClass`` failed (failed) or skipped (skipped), so that two
columns always count the same tests. Results go to docs/tempest/<target>.{json,md}; the
side-by-side table is printed and written into docs/keystone.md between its markers.

Environment: TEMPEST_DATABASE (sqlite | postgres), TEMPEST_PEER (keystone | none),
TEMPEST_TARGETS (comma-separated, overrides both), TEMPEST_REGEX, TEMPEST_CONCURRENCY,
TEMPEST_WORKERS (Latchkey's gunicorn workers), TEMPEST_VENV, LATCHKEY_TEST_POSTGRES_URL.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_VENV = ROOT / ".venv-tempest"
RESULTS = ROOT / "docs" / "tempest"
KEYSTONE_DOC = ROOT / "docs" / "keystone.md"
WORK = ROOT / "var" / "tempest"
SUMMARY_SCRIPT = Path(__file__).resolve().parent / "subunit_summary.py"
PREFIX = "tempest.api.identity."
FULL_REGEX = r"^tempest\.api\.identity\.(v3|admin\.v3)\."
ADMIN_PASSWORD = "tempest-admin-password-1234"
PG_ADMIN_URL = os.environ.get(
    "LATCHKEY_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
TABLE_START = "<!-- tempest-table:start (written by `make tempest`) -->"
TABLE_END = "<!-- tempest-table:end -->"
# Column order of the side-by-side table.
TARGETS = {
    "keystone": "Keystone 30 (SQLite)",
    "latchkey-sqlite": "Latchkey (SQLite)",
    "latchkey-postgres": "Latchkey (PostgreSQL)",
}
CLASS_FIXTURE = re.compile(r"^(setUpClass|tearDownClass) \((.+)\)$")

Log = Callable[[str], None]


def _log(message: str) -> None:
    print(f"tempest: {message}", file=sys.stderr, flush=True)


def selection_regex(modules: list[str]) -> str:
    """A regex for whole modules named relative to tempest.api.identity
    (``v3.test_tokens``, ``admin.v3.test_projects``): not test_projects_negative."""
    names = "|".join(re.escape(module) for module in modules)
    return rf"^tempest\.api\.identity\.({names})\."


# -- results ---------------------------------------------------------------------------


def module_of(test_id: str) -> str:
    """``tempest.api.identity.admin.v3.test_roles.RolesV3TestJSON.test_x[id-…]`` →
    ``admin.v3.test_roles``."""
    bare = test_id.split("[", 1)[0]
    return bare.removeprefix(PREFIX).rsplit(".", 2)[0]


def class_of(test_id: str) -> str:
    return test_id.split("[", 1)[0].rsplit(".", 1)[0]


@dataclass
class Summary:
    target: str
    regex: str
    seconds: float = 0.0
    when: str = ""
    tests: dict[str, dict[str, str]] = field(default_factory=dict)  # id → status, reason
    fixture_errors: list[dict[str, str]] = field(default_factory=list)

    def ids(self, status: str) -> list[str]:
        return sorted(i for i, t in self.tests.items() if t["status"] == status)

    @property
    def failed(self) -> list[str]:
        return self.ids("failed")

    def per_module(self) -> dict[str, dict[str, int]]:
        counts: dict[str, dict[str, int]] = {}
        for test_id, test in self.tests.items():
            row = counts.setdefault(module_of(test_id), {"passed": 0, "failed": 0, "skipped": 0})
            row[test["status"]] += 1
        return counts

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "regex": self.regex,
            "seconds": round(self.seconds, 1),
            "when": self.when,
            "tests": dict(sorted(self.tests.items())),
            "fixture_errors": self.fixture_errors,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Summary:
        return cls(
            target=data["target"],
            regex=data["regex"],
            seconds=data.get("seconds", 0.0),
            when=data.get("when", ""),
            tests=data["tests"],
            fixture_errors=data.get("fixture_errors", []),
        )

    def failure_message(self, limit: int = 40) -> str:
        lines = [f"{len(self.failed)} of {len(self.tests)} failed on {self.target}:"]
        for test_id in self.failed[:limit]:
            reason = self.tests[test_id]["reason"].splitlines()
            lines.append(f"  {test_id.split('[', 1)[0]}: {reason[-1] if reason else ''}")
        lines.extend(f"  {e['id']}: {e['reason'][-300:]}" for e in self.fixture_errors)
        return "\n".join(lines)


def classify(listed: list[str], records: list[dict[str, str]]) -> tuple[dict, list]:
    """Every listed test → passed | failed | skipped (with a reason); the class fixture
    errors that are not already counted on a test (a failed tearDownClass)."""
    tests: dict[str, dict[str, str]] = {}
    class_status: dict[str, dict[str, str]] = {}
    fixture_errors: list[dict[str, str]] = []
    for record in records:
        status, reason = record["status"], record.get("reason", "")
        fixture = CLASS_FIXTURE.match(record["id"])
        if fixture:
            if status in ("fail", "uxsuccess"):
                if fixture.group(1) == "setUpClass":
                    class_status[fixture.group(2)] = {"status": "failed", "reason": reason}
                else:
                    fixture_errors.append({"id": record["id"], "reason": reason})
            elif status == "skip" and fixture.group(1) == "setUpClass":
                class_status[fixture.group(2)] = {"status": "skipped", "reason": reason}
            continue
        if status in ("success", "xfail"):
            tests[record["id"]] = {"status": "passed", "reason": ""}
        elif status == "skip":
            tests[record["id"]] = {"status": "skipped", "reason": reason}
        elif status == "exists":
            continue  # listed, not run: the class fixture decides below
        else:  # fail, uxsuccess, inprogress (a worker died mid-test)
            tests[record["id"]] = {"status": "failed", "reason": reason or status}
    for test_id in listed:
        if test_id in tests:
            continue
        by_class = class_status.get(class_of(test_id))
        if by_class is not None:
            prefix = "setUpClass failed: " if by_class["status"] == "failed" else ""
            tests[test_id] = {
                "status": by_class["status"],
                "reason": prefix + by_class["reason"],
            }
        else:
            tests[test_id] = {"status": "failed", "reason": "not run (no result in the stream)"}
    # Results for tests outside the listing (should not happen) are kept too.
    return tests, fixture_errors


# -- rendering ---------------------------------------------------------------------------


def _order(module: str) -> tuple[int, str]:
    return (0 if module.startswith("v3.") else 1, module)


def render_table(summaries: list[Summary]) -> str:
    """Markdown: one row per module, one ``passed / failed / skipped`` column per target."""
    summaries = sorted(
        summaries,
        key=lambda s: list(TARGETS).index(s.target) if s.target in TARGETS else len(TARGETS),
    )
    counts = [s.per_module() for s in summaries]
    modules = sorted({m for c in counts for m in c}, key=_order)
    header = "| Module | " + " | ".join(TARGETS.get(s.target, s.target) for s in summaries) + " |"
    lines = [header, "| --- |" + " ---: |" * len(summaries)]
    zero = {"passed": 0, "failed": 0, "skipped": 0}

    def cell(row: dict[str, int]) -> str:
        return f"{row['passed']} / {row['failed']} / {row['skipped']}"

    for module in modules:
        lines.append(
            f"| `{module}` | " + " | ".join(cell(c.get(module, zero)) for c in counts) + " |"
        )
    totals = []
    for summary in summaries:
        total = {k: len(summary.ids(k)) for k in zero}
        totals.append(f"**{cell(total)}**")
    lines.append("| **Total** | " + " | ".join(totals) + " |")
    lines.append("| Time (s) | " + " | ".join(f"{s.seconds:.0f}" for s in summaries) + " |")
    return "\n".join(lines)


def render_target(summary: Summary) -> str:
    label = TARGETS.get(summary.target, summary.target)
    lines = [
        f"# Tempest identity v3 against {label}",
        "",
        f"Measured {summary.when} by `make tempest` (tests/openstack/tempest_run.py): Tempest "
        f"47.0.0, `--regex '{summary.regex}' --concurrency 1`, dynamic credentials, "
        f"{summary.seconds:.0f} s. Cells: passed / failed / skipped.",
        "",
        render_table([summary]),
        "",
    ]
    for status in ("failed", "skipped"):
        ids = summary.ids(status)
        if not ids:
            continue
        lines += [f"## {status.capitalize()} ({len(ids)})", ""]
        for test_id in ids:
            reason = summary.tests[test_id]["reason"].strip().splitlines()
            last = reason[-1].strip() if reason else ""
            lines.append(f"- `{test_id.split('[', 1)[0].removeprefix(PREFIX)}`: {last[:300]}")
        lines.append("")
    if summary.fixture_errors:
        lines += ["## Class fixture errors", ""]
        for error in summary.fixture_errors:
            last = error["reason"].strip().splitlines()
            lines.append(f"- `{error['id']}`: {last[-1][:300] if last else ''}")
        lines.append("")
    return "\n".join(lines)


def stored_summaries() -> list[Summary]:
    return [
        Summary.from_json(json.loads(path.read_text())) for path in sorted(RESULTS.glob("*.json"))
    ]


def store(summary: Summary) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{summary.target}.json").write_text(json.dumps(summary.to_json(), indent=1) + "\n")
    (RESULTS / f"{summary.target}.md").write_text(render_target(summary))


def update_doc(table: str) -> bool:
    """The table between the markers of docs/keystone.md; False when they are missing."""
    text = KEYSTONE_DOC.read_text()
    start, end = text.find(TABLE_START), text.find(TABLE_END)
    if start < 0 or end < start:
        return False
    KEYSTONE_DOC.write_text(text[: start + len(TABLE_START)] + "\n" + table + "\n" + text[end:])
    return True


# -- servers -----------------------------------------------------------------------------


def _latchkey(env: dict[str, str], *args: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", "from latchkey.frontdoors.cli.main import main; main()", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"latchkey {' '.join(args)} failed:\n{result.stderr[-3000:]}")


@contextlib.contextmanager
def _postgres_database(admin_url: str) -> Iterator[str]:
    from sqlalchemy import create_engine, make_url, text

    name = "latchkey_tempest_" + secrets.token_hex(4)
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextlib.contextmanager
def latchkey_server(
    work: Path,
    database: str = "sqlite",
    *,
    workers: int = 2,
    fast_hashing: bool = False,
    pg_admin_url: str = PG_ADMIN_URL,
    log: Log = _log,
) -> Iterator[tuple[str, str]]:
    """`latchkey db upgrade`, `bootstrap` and `serve` from this checkout, in a new home
    (and a new PostgreSQL database, dropped after); yields (url, admin password)."""
    from bench.servers import Process, free_port, wait_http

    home = work / "home"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    with contextlib.ExitStack() as stack:
        if database == "postgres":
            database_url = stack.enter_context(_postgres_database(pg_admin_url))
        elif database == "sqlite":
            database_url = f"sqlite:///{home / 'latchkey.db'}"
        else:
            raise ValueError(f"TEMPEST_DATABASE must be sqlite or postgres, not {database!r}")
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("LATCHKEY_")}
        env.update(
            {
                "PYTHONPATH": os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(
                    os.pathsep
                ),
                "LATCHKEY_HOME": str(home),
                "LATCHKEY_DATABASE_URL": database_url,
                "LATCHKEY_ADMIN_PASSWORD": ADMIN_PASSWORD,
                "LATCHKEY_BIND": f"127.0.0.1:{port}",
                "LATCHKEY_WORKERS": str(workers),
                "LATCHKEY_LOG_LEVEL": "WARNING",
                # Every Tempest client comes from 127.0.0.1, and its negative tests fail
                # logins on purpose: the per-source limit would throttle the whole run.
                # The per-account limit and the lockout stay as shipped.
                "LATCHKEY_RATELIMIT_AUTH_PER_SOURCE": "100000 per minute",
            }
        )
        if not scope_enforced():
            # Tempest's admin tests act with the admin role on a project of their own, and
            # Keystone (no admin project configured) lets such an admin act on the whole
            # cloud; Latchkey does only when told to (docs/keystone.md).
            env["LATCHKEY_KEYSTONE_EVERY_ADMIN_IS_CLOUD_ADMIN"] = "true"
        if fast_hashing:  # make test: cheap argon2 (every dynamic user gets a password)
            env["LATCHKEY_PASSWORD_HASH_TIME_COST"] = "1"
            env["LATCHKEY_PASSWORD_HASH_MEMORY_KIB"] = "1024"
        log(f"latchkey: {database}, db upgrade + bootstrap in {home}")
        _latchkey(env, "db", "upgrade")
        _latchkey(env, "bootstrap")
        command = [
            sys.executable,
            "-c",
            "from latchkey.frontdoors.cli.main import main; main()",
            "serve",
        ]
        server = stack.enter_context(Process("latchkey", command, work / "latchkey.log", env))
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/v3", 60, server.popen)
        log(f"latchkey: serving at {url} ({workers} workers); log {work / 'latchkey.log'}")
        yield url, ADMIN_PASSWORD


@contextlib.contextmanager
def keystone_server(work: Path, log: Log = _log) -> Iterator[tuple[str, str]]:
    """Keystone 30 as the benchmark runs it (bench/keystone_side.py), with ONE gunicorn
    worker on SQLite (two fail set-ups with "database is locked"), in a new home."""
    from bench import keystone_side
    from bench.servers import free_port

    keystone_side.ensure_venv(log)
    home = work / "home"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log(f"keystone: db_sync, keys, bootstrap in {home}")
    conf = keystone_side.initialize(home, url + "/v3")
    with keystone_side.serve(home, conf, port, 1, work / "keystone.log"):
        log(f"keystone: serving at {url} (1 worker); log {work / 'keystone.log'}")
        yield url, keystone_side.ADMIN_PASSWORD


# -- tempest -----------------------------------------------------------------------------


def scope_enforced() -> bool:
    """TEMPEST_ADMIN=scoped: Latchkey's own default, where only admins of the system or
    the admin project act on the cloud, and Tempest is told scope is enforced. The
    default, TEMPEST_ADMIN=keystone, runs Latchkey as Keystone runs by default."""
    return os.environ.get("TEMPEST_ADMIN", "keystone") == "scoped"


def tempest_conf(url: str, admin_password: str, workspace: Path, target: str = "") -> str:
    # Latchkey enforces scope as Keystone does with [oslo_policy] enforce_scope and
    # enforce_new_defaults: the cloud's admin is a system-scoped admin (or one on the admin
    # project), never an admin of any project. Tempest is told so, as its docs ask for
    # such a Keystone; the Keystone peer runs with its own defaults.
    scoped = target.startswith("latchkey") and scope_enforced()
    return f"""\
[DEFAULT]
log_dir = {workspace}
log_file = tempest.log

[auth]
admin_username = admin
admin_password = {admin_password}
admin_project_name = admin
admin_domain_name = Default
use_dynamic_credentials = True
default_credentials_domain_name = Default
tempest_roles = member
{"admin_system = all" if scoped else ""}

[enforce_scope]
keystone = {scoped}

[identity]
uri_v3 = {url}/v3
auth_version = v3
region = RegionOne
admin_role = admin
default_domain_id = default

[identity-feature-enabled]
api_v2 = False
application_credentials = True
access_rules = True
trust = True
project_tags = True

[service_available]
cinder = False
neutron = False
glance = False
swift = False
nova = False
horizon = False

[validation]
run_validation = False
"""


def _tempest_env(venv: Path, workspace: Path) -> dict[str, str]:
    """No OS_* variables, no clouds.yaml or ~/.tempest of the machine running it."""
    return {
        "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(workspace),
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def run_tempest(
    venv: Path,
    workspace: Path,
    url: str,
    admin_password: str,
    regex: str,
    target: str,
    concurrency: int = 1,
    timeout: float = 3600,
    log: Log = _log,
) -> Summary:
    workspace.mkdir(parents=True, exist_ok=True)
    conf = workspace / "etc" / "tempest.conf"
    conf.parent.mkdir(exist_ok=True)
    conf.write_text(tempest_conf(url, admin_password, workspace, target))
    env = _tempest_env(venv, workspace)
    bin_ = venv / "bin"

    def run(*args: str, out: Any = subprocess.PIPE, limit: float = 120) -> str:
        result = subprocess.run(
            list(args),
            cwd=workspace,
            env=env,
            stdout=out,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            timeout=limit,
            check=False,
        )
        if result.returncode != 0 and out is subprocess.PIPE:
            raise RuntimeError(f"{args[0]} {args[1:3]} failed:\n{result.stderr[-3000:]}")
        return result.stdout or ""

    if not (workspace / ".stestr").exists():
        run(str(bin_ / "stestr"), "init")
    listing = run(
        str(bin_ / "tempest"), "run", "--config-file", str(conf), "--list-tests", "--regex", regex
    )
    listed = [line.strip() for line in listing.splitlines() if line.startswith("tempest.")]
    if not listed:
        raise RuntimeError(f"the regex {regex!r} selects no test")
    log(f"{target}: running {len(listed)} tests (concurrency {concurrency})")
    started = time.monotonic()
    with (workspace / "tempest-run.log").open("w") as out:
        # Its exit status is 1 whenever a test fails; the stream says what happened.
        run(
            str(bin_ / "tempest"),
            "run",
            "--config-file",
            str(conf),
            "--regex",
            regex,
            "--concurrency",
            str(concurrency),
            out=out,
            limit=timeout,
        )
    seconds = time.monotonic() - started
    stream = subprocess.run(
        [str(bin_ / "stestr"), "last", "--subunit"],
        cwd=workspace,
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    ).stdout
    parsed = subprocess.run(
        [str(bin_ / "python"), str(SUMMARY_SCRIPT)],
        input=stream,
        env=env,
        capture_output=True,
        timeout=120,
        check=True,
    ).stdout.decode()
    records = [json.loads(line) for line in parsed.splitlines() if line.strip()]
    tests, fixture_errors = classify(listed, records)
    summary = Summary(
        target=target,
        regex=regex,
        seconds=seconds,
        when=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        tests=tests,
        fixture_errors=fixture_errors,
    )
    log(
        f"{target}: {len(summary.ids('passed'))} passed, {len(summary.failed)} failed, "
        f"{len(summary.ids('skipped'))} skipped in {seconds:.0f} s"
    )
    return summary


def run_selection(
    target: str,
    regex: str,
    work: Path,
    venv: Path = DEFAULT_VENV,
    *,
    workers: int = 2,
    fast_hashing: bool = False,
    concurrency: int = 1,
    timeout: float = 3600,
    pg_admin_url: str = PG_ADMIN_URL,
    log: Log = _log,
) -> Summary:
    """One target (``keystone``, ``latchkey-sqlite``, ``latchkey-postgres``): its own
    server, one Tempest run, the summary (not stored)."""
    work.mkdir(parents=True, exist_ok=True)
    server: contextlib.AbstractContextManager[tuple[str, str]]
    if target == "keystone":
        server = keystone_server(work, log)
    elif target.startswith("latchkey-"):
        server = latchkey_server(
            work,
            target.removeprefix("latchkey-"),
            workers=workers,
            fast_hashing=fast_hashing,
            pg_admin_url=pg_admin_url,
            log=log,
        )
    else:
        raise ValueError(f"unknown target {target!r}")
    workspace = work / "workspace"
    shutil.rmtree(workspace, ignore_errors=True)
    with server as (url, password):
        return run_tempest(venv, workspace, url, password, regex, target, concurrency, timeout, log)


def _targets_from_env() -> list[str]:
    if os.environ.get("TEMPEST_TARGETS"):
        return [t.strip() for t in os.environ["TEMPEST_TARGETS"].split(",") if t.strip()]
    targets = [f"latchkey-{os.environ.get('TEMPEST_DATABASE', 'sqlite')}"]
    peer = os.environ.get("TEMPEST_PEER", "keystone")
    if peer == "keystone":
        targets.insert(0, "keystone")
    elif peer not in ("", "none"):
        raise SystemExit(f"TEMPEST_PEER must be keystone or none, not {peer!r}")
    return targets


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "run"
    if command not in ("run", "table"):
        print("usage: python -m tests.openstack.tempest_run [run|table]", file=sys.stderr)
        return 2
    regex = os.environ.get("TEMPEST_REGEX") or FULL_REGEX
    ran: list[Summary] = []
    if command == "run":
        venv = Path(os.environ.get("TEMPEST_VENV") or DEFAULT_VENV)
        concurrency = int(os.environ.get("TEMPEST_CONCURRENCY", "1"))
        workers = int(os.environ.get("TEMPEST_WORKERS", "2"))
        for target in _targets_from_env():
            summary = run_selection(
                target, regex, WORK / target, venv, workers=workers, concurrency=concurrency
            )
            ran.append(summary)
            if regex == FULL_REGEX:  # only the whole selection is kept as the measure
                store(summary)
                _log(f"{target}: written to {RESULTS.relative_to(ROOT)}/{target}.md")
            else:
                (WORK / target / "summary.md").write_text(render_target(summary))
                _log(f"{target}: written to {WORK.relative_to(ROOT)}/{target}/summary.md")
    summaries = (
        [s for s in stored_summaries() if s.regex == FULL_REGEX] if regex == FULL_REGEX else ran
    )
    if not summaries:
        print("no stored results in docs/tempest/ (run `make tempest`)", file=sys.stderr)
        return 1
    table = render_table(summaries)
    print("\nCells: passed / failed / skipped\n")
    print(table)
    if command == "run" and regex == FULL_REGEX and update_doc(table):
        _log(f"table written into {KEYSTONE_DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
