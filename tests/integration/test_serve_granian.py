"""`latchkey serve` with LATCHKEY_SERVER=granian (issue 17): granian's WSGI interface,
two workers, on SQLite. It answers, logs in, validates, sums its workers' metrics,
believes no forwarded header by itself, and stops on SIGTERM with its metrics
directory gone. (gunicorn's own: tests/integration/test_cli.py, test_metrics.py.)"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from latchkey.serving import (
    CollectBetweenRequests,
    DropProcessVariables,
    _next_full_collection,
    granian_log_level,
    parse_bind,
)
from latchkey.settings import SettingsError
from tests.conftest import ADMIN_PASSWORD, password_auth

pytest.importorskip("granian")

LATCHKEY = str(Path(sys.executable).parent / "latchkey")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(home: Path, **more: str) -> dict[str, str]:
    return {
        **os.environ,
        "LATCHKEY_HOME": str(home),
        "LATCHKEY_PASSWORD_HASH_TIME_COST": "1",
        "LATCHKEY_PASSWORD_HASH_MEMORY_KIB": "1024",
        "LATCHKEY_ADMIN_PASSWORD": ADMIN_PASSWORD,
        **more,
    }


def _call(
    port: int, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
        method=method,
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - http
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_serve_under_granian(tmp_path: Path) -> None:
    home = tmp_path / "home"
    for command in (["db", "upgrade"], ["bootstrap"]):
        done = subprocess.run(
            [LATCHKEY, *command], env=_env(home), capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
    port = _free_port()
    metrics_dir = tmp_path / "prometheus"
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [LATCHKEY, "serve"],
            env=_env(
                home,
                LATCHKEY_SERVER="granian",
                LATCHKEY_BIND=f"127.0.0.1:{port}",
                LATCHKEY_WORKERS="2",
                LATCHKEY_LOG_LEVEL="INFO",
                PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
                # granian copies its environment into each request's environ: these must
                # not read as headers the client sent (latchkey.serving.DropProcessVariables).
                HTTP_X_REQUEST_ID="from-the-environment",
                HTTP_X_FORWARDED_PROTO="https",
            ),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                status, _, body = _call(port, "GET", "/readyz")
                break
            except OSError:
                assert process.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.2)
        assert status == 200, body
        assert json.loads(body)["checks"]["database"]["status"] == "ok"
        # Both workers up before anything else: a SIGTERM that reaches a worker still
        # building its app is only obeyed at granian's kill timeout (docs/operations.md).
        while log.read_text().count("Started worker-") < 2:
            assert time.monotonic() < deadline + 30, log.read_text()[-3000:]
            time.sleep(0.2)
        status, headers, _ = _call(port, "GET", "/healthz")
        assert status == 200
        request_id = {k.lower(): v for k, v in headers.items()}["x-request-id"]
        assert request_id.startswith("req-"), headers  # not the environment's
        # A client sending a header the environment also names keeps its own value.
        sent = _call(port, "GET", "/healthz", headers={"X-Request-Id": "the-clients-own"})
        assert {k.lower(): v for k, v in sent[1].items()}["x-request-id"] == "the-clients-own"

        status, _, body = _call(
            port, "POST", "/v1/auth/tokens", password_auth("admin", ADMIN_PASSWORD, project="admin")
        )
        assert status == 201, body
        token = json.loads(body)["token"]
        status, _, body = _call(
            port,
            "GET",
            "/v1/auth/tokens",
            headers={"Authorization": f"Bearer {token}", "X-Subject-Token": token},
        )
        assert status == 200, body

        # The multiprocess registry: the workers' files are in the given directory.
        status, _, body = _call(port, "GET", "/metrics")
        assert status == 200
        assert 'latchkey_tokens_issued_total{method="password",outcome="issued"} 1.0' in (
            body.decode()
        )
        assert list(metrics_dir.glob("counter_*.db"))

        # granian rewrites neither the peer nor the scheme: Latchkey's proxies.py decides,
        # and it trusts no proxy by default.
        status, headers, _ = _call(
            port,
            "GET",
            "/healthz",
            headers={
                "X-Forwarded-For": "203.0.113.9",
                "X-Forwarded-Proto": "https",
                "X-Request-Id": "granian-forwarded-check",
            },
        )
        assert status == 200
        assert "Strict-Transport-Security" not in headers
        lines = [
            json.loads(line)
            for line in log.read_text().splitlines()
            if "granian-forwarded-check" in line and line.startswith("{")
        ]
        assert lines and lines[0]["remote_addr"] == "127.0.0.1", lines
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            raise
    assert code == 0, log.read_text()[-3000:]
    text = log.read_text()
    assert "Traceback" not in text, text[-3000:]
    assert "Granian shutdown completed" in text


def test_process_variables_named_like_headers_are_dropped() -> None:
    seen: list[dict[str, Any]] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.append(dict(environ))
        return []

    process = {"HTTP_PROXY": "http://proxy:3128", "CONTENT_TYPE": "text/plain", "HOME": "/root"}
    wrapped = DropProcessVariables(app, process)
    # What granian hands over: the process environment, the request laid over it.
    wrapped({**process, "REQUEST_METHOD": "GET"}, lambda *a: None)
    wrapped({**process, "HTTP_PROXY": "http://evil", "CONTENT_TYPE": "application/json"}, None)
    assert "HTTP_PROXY" not in seen[0] and "CONTENT_TYPE" not in seen[0]
    assert seen[0]["HOME"] == "/root"
    assert seen[1]["HTTP_PROXY"] == "http://evil"
    assert seen[1]["CONTENT_TYPE"] == "application/json"


def test_bind_addresses_read_as_gunicorn_reads_them() -> None:
    assert parse_bind("127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert parse_bind("[::1]:8443") == ("::1", 8443)
    assert parse_bind("unix:/run/latchkey.sock") == Path("/run/latchkey.sock")
    for wrong in ("8080", "localhost", ":80", "host:http"):
        with pytest.raises(SettingsError):
            parse_bind(wrong)
    assert granian_log_level("WARNING") == "warning"
    assert granian_log_level("nonsense") == "info"


def test_a_due_collection_runs_when_the_response_is_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import gc

    runs: list[str] = []

    def collect(*_args: Any) -> int:
        runs.append("collect")
        return 0

    monkeypatch.setattr(gc, "collect", collect)

    class Body(list[bytes]):
        def close(self) -> None:
            runs.append("close")

    def app(environ: dict[str, Any], start_response: Any) -> Body:
        start_response("200 OK", [])
        return Body([b"ok"])

    wrapped = CollectBetweenRequests(app)
    saved = _next_full_collection[0]
    try:
        _next_full_collection[0] = time.monotonic() + 60
        body = wrapped({}, lambda *a: None)
        assert isinstance(body, Body)  # not due: the app's own body, untouched
        _next_full_collection[0] = 0.0
        body = wrapped({}, lambda *a: None)
        assert list(body) == [b"ok"] and runs == []
        body.close()
        assert runs == ["close", "collect"]
    finally:
        _next_full_collection[0] = saved
