"""Processes the bench starts and stops: gunicorn and granian (Latchkey, the constant
endpoints; Keystone under gunicorn), memcached, slapd, OpenBao. Each is stopped by its
own pid."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(
    url: str, timeout: float = 60.0, process: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode} before {url}")
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - our own local server
                return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"nothing answered at {url} within {timeout} s")


def wait_tcp(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


class Process:
    """A child process in its own session, logging to a file."""

    def __init__(
        self,
        name: str,
        command: list[str],
        log: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        log.parent.mkdir(parents=True, exist_ok=True)
        self._log = log.open("ab")
        self.popen = subprocess.Popen(
            command,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self, timeout: float = 15.0) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)  # its own session only
                self.popen.wait(5)
        self._log.close()

    def __enter__(self) -> Process:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found.extend(int(c) for c in (task / "children").read_text().split())
    return found


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def gunicorn(
    name: str,
    python_bin: Path,
    app: str,
    port: int,
    workers: int,
    log: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> Process:
    """gunicorn with the settings `latchkey serve` uses: sync workers, no access log,
    60 s timeout."""
    return Process(
        name,
        [
            str(python_bin / "gunicorn"),
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(workers),
            "--timeout",
            "60",
            app,
        ],
        log,
        env,
        cwd,
    )


def granian(
    name: str,
    python_bin: Path,
    app: str,
    port: int,
    workers: int,
    log: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> Process:
    """granian's WSGI interface with the settings `latchkey serve` gives it under
    LATCHKEY_SERVER=granian (latchkey/serving.py): one thread runs the app per worker
    (LATCHKEY_THREADS=1), one Rust thread does the I/O, no access log."""
    return Process(
        name,
        [
            str(python_bin / "granian"),
            "--interface",
            "wsgi",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--blocking-threads",
            "1",
            "--runtime-threads",
            "1",
            "--no-ws",
            "--log-level",
            "warning",
            app,
        ],
        log,
        env,
        cwd,
    )


# The servers a run can measure Latchkey and the ceilings under (`--servers`).
SERVERS = {"gunicorn": gunicorn, "granian": granian}


def wsgi_server(
    server: str,
    name: str,
    python_bin: Path,
    app: str,
    port: int,
    workers: int,
    log: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> Process:
    """A WSGI app (``module:attribute``) under ``server``, one of SERVERS."""
    return SERVERS[server](name, python_bin, app, port, workers, log, env, cwd)
