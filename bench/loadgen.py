"""The load generator: wrk (Debian's package) in its own process, driven by one Lua script."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LUA = Path(__file__).parent / "lua" / "scenario.lua"


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    body: str | None = None


@dataclass
class Load:
    """How hard to push: closed loop with ``connections`` (sync gunicorn workers take
    one request each; the rest wait in the listen queue), or paced at ``rate``."""

    seconds: float
    connections: int = 4
    threads: int = 1
    rate: int = 0


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise SystemExit("wrk is not installed: `apt-get install -y wrk` (make bench does it)")
    return found


def _lua_string(text: str) -> str:
    level = "=" * 3
    while f"]{level}]" in text:
        level += "="
    return f"[{level}[{text}]{level}]"


def write_data(path: Path, requests: list[Request]) -> None:
    lines = ["return {"]
    for r in requests:
        headers = ", ".join(
            f"[ {_lua_string(k)} ] = {_lua_string(v)}" for k, v in r.headers.items()
        )
        body = _lua_string(r.body) if r.body is not None else "nil"
        lines.append(
            f"  {{{_lua_string(r.method)}, {_lua_string(r.path)}, {{{headers}}}, {body}}},"
        )
    lines.append("}")
    path.write_text("\n".join(lines) + "\n")


def run_wrk(
    url: str, requests: list[Request], load: Load, workdir: Path, name: str
) -> dict[str, Any]:
    """Run wrk against ``url``; the summary (requests/s, latency percentiles in ms)."""
    workdir.mkdir(parents=True, exist_ok=True)
    data, out = workdir / f"{name}.data.lua", workdir / f"{name}.out.json"
    write_data(data, requests)
    out.unlink(missing_ok=True)
    env = dict(
        os.environ,
        BENCH_DATA=str(data),
        BENCH_OUT=str(out),
        BENCH_RATE=str(load.rate),
        BENCH_THREADS=str(load.threads),
    )
    command = [
        wrk_binary(),
        f"-t{load.threads}",
        f"-c{max(load.connections, load.threads)}",
        f"-d{max(1, round(load.seconds))}s",
        "--timeout",
        "30s",
        "-s",
        str(LUA),
        url,
    ]
    completed = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    (workdir / f"{name}.wrk.txt").write_text(completed.stdout + completed.stderr)
    if completed.returncode != 0 or not out.exists():
        raise RuntimeError(f"wrk failed for {name}: {completed.stderr or completed.stdout}")
    raw = json.loads(out.read_text())
    seconds = raw["duration_us"] / 1e6
    errors = sum(raw["errors"].values())
    lat = raw["latency_us"]
    return {
        "requests": raw["requests"],
        "seconds": round(seconds, 2),
        "rps": round(raw["requests"] / seconds, 1) if seconds else 0.0,
        "errors": errors,
        "error_detail": raw["errors"],
        "p50_ms": lat["p50"] / 1000,
        "p95_ms": lat["p95"] / 1000,
        "p99_ms": lat["p99"] / 1000,
        "max_ms": lat["max"] / 1000,
        "connections": load.connections,
        "target_rate": load.rate or None,
    }
