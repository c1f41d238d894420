"""Login throughput of a legitimate user while anonymous clients flood wrong passwords
(issue 13, class 6), under `latchkey serve` with the real argon2 settings.

    .venv/bin/python -m bench.auth_flood                  # throttling on, then off
    .venv/bin/python -m bench.auth_flood --seconds 20 --flooders 8
    .venv/bin/python -m bench.auth_flood --modes on --storage redis://127.0.0.1:6379/0

For each mode it makes a fresh instance folder (SQLite), migrates, bootstraps,
starts `latchkey serve` on 127.0.0.1 with LATCHKEY_TRUSTED_PROXIES=127.0.0.1/32
(so each flooder can stand for its own address through X-Forwarded-For), then for
``--seconds``: ``--flooders`` threads post wrong passwords for the admin, each
from its own address; one legitimate client logs in as the admin from its usual
address, one at a time; one more client times GET /healthz. Only loopback
traffic; every loop stops by itself.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

VENV_BIN = Path(sys.executable).parent


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)

    def add(self, status: int, seconds: float) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1
        self.latencies.append(seconds)


def _post(url: str, body: dict[str, Any], address: str, timeout: float = 60) -> int:
    request = urllib.request.Request(  # noqa: S310 (loopback http only)
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "X-Forwarded-For": address},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as exc:
        exc.read()
        return int(exc.code)
    except (urllib.error.URLError, TimeoutError, OSError):
        return 0


def _get(url: str, timeout: float = 60) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, TimeoutError, OSError):
        return 0


def _login_body(password: str) -> dict[str, Any]:
    return {
        "auth": {
            "password": {
                "user": {"name": "admin", "domain": {"id": "default"}},
                "password": password,
            }
        }
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_mode(
    throttling: bool, seconds: float, flooders: int, workers: int, storage: str
) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix="latchkey-flood-"))
    port = _free_port()
    password = secrets.token_urlsafe(18)
    env = {
        **os.environ,
        "LATCHKEY_HOME": str(home),
        "LATCHKEY_BIND": f"127.0.0.1:{port}",
        "LATCHKEY_WORKERS": str(workers),
        "LATCHKEY_ADMIN_PASSWORD": password,
        "LATCHKEY_TRUSTED_PROXIES": "127.0.0.1/32",
        "LATCHKEY_RATELIMIT_ENABLED": "true" if throttling else "false",
        "LATCHKEY_LOG_LEVEL": "WARNING",
        "LATCHKEY_RATELIMIT_STORAGE_URL": storage,
    }
    latchkey = str(VENV_BIN / "latchkey")
    subprocess.run([latchkey, "db", "upgrade"], env=env, check=True, capture_output=True)
    subprocess.run([latchkey, "bootstrap"], env=env, check=True, capture_output=True)
    server = subprocess.Popen(
        [latchkey, "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while _get(base + "/healthz", timeout=2) != 200:
            if time.time() > deadline:
                raise RuntimeError("latchkey serve did not start")
            time.sleep(0.3)
        legit_address = "198.51.100.10"
        # The admin's usual address: one login before the attack.
        assert _post(base + "/v1/auth/tokens", _login_body(password), legit_address) == 201

        stop = time.time() + seconds
        flood, legit, health = Tally(), Tally(), Tally()
        lock = threading.Lock()

        def flooder(index: int) -> None:
            address = f"203.0.113.{index + 1}"
            n = 0
            while time.time() < stop:
                started = time.perf_counter()
                status = _post(base + "/v1/auth/tokens", _login_body(f"guess-{n}"), address)
                with lock:
                    flood.add(status, time.perf_counter() - started)
                n += 1

        def legitimate() -> None:
            while time.time() < stop:
                started = time.perf_counter()
                status = _post(base + "/v1/auth/tokens", _login_body(password), legit_address)
                legit.add(status, time.perf_counter() - started)

        def prober() -> None:
            while time.time() < stop:
                started = time.perf_counter()
                health.add(_get(base + "/healthz"), time.perf_counter() - started)
                time.sleep(0.2)

        threads = [threading.Thread(target=flooder, args=(i,)) for i in range(flooders)]
        threads += [threading.Thread(target=legitimate), threading.Thread(target=prober)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)

    def summary(tally: Tally) -> dict[str, Any]:
        lat = sorted(tally.latencies) or [0.0]
        return {
            "requests": len(tally.latencies),
            "statuses": tally.statuses,
            "median_s": round(statistics.median(lat), 3),
            "p95_s": round(lat[int(0.95 * (len(lat) - 1))], 3),
            "max_s": round(lat[-1], 3),
        }

    return {
        "throttling": throttling,
        "storage": storage if throttling else None,
        "seconds": seconds,
        "legit_logins_per_s": round(legit.statuses.get(201, 0) / seconds, 2),
        "legit": summary(legit),
        "flood": summary(flood),
        "healthz": summary(health),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--flooders", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--modes", default="on,off", help="on, off or on,off")
    parser.add_argument(
        "--storage", default="memory://", help="LATCHKEY_RATELIMIT_STORAGE_URL, e.g. redis://…"
    )
    args = parser.parse_args()
    for mode in args.modes.split(","):
        result = run_mode(mode == "on", args.seconds, args.flooders, args.workers, args.storage)
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
