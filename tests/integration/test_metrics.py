"""Issue 15, point 6: the metric families an operator graphs, each seen to move when
what it counts happens (in one process: the default registry), and ``latchkey serve``'s
workers summed on ``/metrics`` (two real gunicorn workers, multiprocess mode)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from prometheus_client import REGISTRY
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from latchkey import metrics
from latchkey.changes.postgres import ChangeListener
from latchkey.secrets.backends import SecretPayloadMissing, SecretStoreUnavailable
from tests.conftest import ADMIN_PASSWORD, Api, build_app, make_settings, password_auth

TOKENS = "/v1/auth/tokens"
SERVICE: dict[str, Any] = {
    "type": "objects",
    "name": "Object store",
    "endpoints": [{"interface": "public", "url": "http://objects.example/v1", "region": "r1"}],
    "actions": ["objects:container:read", "objects:container:write"],
    "resource_types": {"objects:container": {"attributes": {"env": "string"}}},
}


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def sapi(sqlite_app: Flask) -> Api:
    return Api(sqlite_app.test_client())


# -- one family at a time, in one process ------------------------------------------------


def test_token_issuance_counted_by_method_and_outcome(sapi: Api) -> None:
    issued = sample("latchkey_tokens_issued_total", method="password", outcome="issued")
    failed = sample("latchkey_tokens_issued_total", method="password", outcome="failed")
    sapi.admin_token()
    sapi.admin_token()
    wrong = sapi.client.post("/v1/auth/tokens", json=password_auth("admin", "not-it"))
    assert wrong.status_code == 401
    assert sample("latchkey_tokens_issued_total", method="password", outcome="issued") == issued + 2
    assert sample("latchkey_tokens_issued_total", method="password", outcome="failed") == failed + 1


def test_token_validation_counted_by_outcome(sapi: Api) -> None:
    token = sapi.admin_token()

    def count(method: str, outcome: str) -> float:
        return sample("latchkey_token_validations_total", method=method, outcome=outcome)

    valid, invalid, revoked = (
        count("password", "valid"),
        count("unknown", "invalid"),
        count("password", "revoked"),
    )
    assert sapi.call("GET", "/v1/projects", token).status_code == 200
    assert count("password", "valid") == valid + 1
    forged = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
    assert sapi.call("GET", "/v1/projects", forged).status_code == 401
    assert count("unknown", "invalid") == invalid + 1
    doomed = sapi.admin_token()
    revoke = sapi.call("DELETE", "/v1/auth/tokens", token, headers={"X-Subject-Token": doomed})
    assert revoke.status_code == 204, revoke.get_json()
    assert sapi.call("GET", "/v1/projects", doomed).status_code == 401
    assert count("password", "revoked") == revoked + 1


def test_decisions_counted_by_outcome_and_timed_by_kind(sapi: Api) -> None:
    token = sapi.admin_token()
    sapi.ok("POST", "/v1/services", token, SERVICE)
    project = sapi.ok("GET", "/v1/projects?name=admin", token)["projects"][0]["id"]
    check = {
        "action": "objects:container:read",
        "resource": {"type": "objects:container", "project_id": project},
    }

    def outcomes() -> dict[str, float]:
        return {
            o: sample("latchkey_decisions_total", outcome=o)
            for o in ("allowed", "denied", "budget", "error")
        }

    before = outcomes()
    checks = sample("latchkey_decision_seconds_count", kind="check")
    batches = sample("latchkey_decision_seconds_count", kind="batch")
    answer = sapi.ok("POST", "/v1/authorize", token, check, status=200)
    after = outcomes()
    expected = "allowed" if answer["allowed"] else "denied"
    assert after[expected] == before[expected] + 1
    assert sum(after.values()) == sum(before.values()) + 1
    assert sample("latchkey_decision_seconds_count", kind="check") == checks + 1
    sapi.ok("POST", "/v1/authorize/batch", token, {"checks": [check] * 3}, status=200)
    assert sum(outcomes().values()) == sum(after.values()) + 3
    assert sample("latchkey_decision_seconds_count", kind="batch") == batches + 1


def test_decision_outcomes_name_budget_and_error_denials() -> None:
    assert metrics.decision_outcome(True, "policy") == "allowed"
    assert metrics.decision_outcome(False, "boundary") == "denied"
    assert metrics.decision_outcome(False, "budget") == "budget"
    assert metrics.decision_outcome(False, "error") == "error"
    before = sample("latchkey_decisions_total", outcome="budget")
    metrics.count_decisions("batch", time.perf_counter(), [(False, "budget")] * 4)
    assert sample("latchkey_decisions_total", outcome="budget") == before + 4


def test_secret_store_calls_timed_and_errors_counted(sapi: Api) -> None:
    token = sapi.admin_token()
    project = sapi.ok("GET", "/v1/projects?name=admin", token)["projects"][0]["id"]
    puts = sample("latchkey_secret_store_seconds_count", store="local", operation="put")
    gets = sample("latchkey_secret_store_seconds_count", store="local", operation="get")
    errors = sample("latchkey_secret_store_errors_total", store="local", operation="get")
    path = f"/v1/projects/{project}/secrets"
    secret = sapi.ok("POST", path, token, {"name": "metrics", "payload": "p"})
    got = sapi.call("GET", f"{path}/{secret['id']}/payload", token)
    assert got.status_code == 200, got.get_json()
    assert sample("latchkey_secret_store_seconds_count", store="local", operation="put") > puts
    assert sample("latchkey_secret_store_seconds_count", store="local", operation="get") > gets
    assert sample("latchkey_secret_store_errors_total", store="local", operation="get") == errors


class FailingStore:
    """Fault injection: a store that does not answer (or has no such payload)."""

    name = "faulty"

    def put(self, *_args: Any) -> str:
        raise SecretStoreUnavailable("down")

    def get(self, *_args: Any) -> bytes:
        raise SecretPayloadMissing("gone")


def test_a_store_outage_counts_as_an_error_a_missing_payload_does_not() -> None:
    def figures() -> tuple[float, float, float]:
        return (
            sample("latchkey_secret_store_errors_total", store="faulty", operation="put"),
            sample("latchkey_secret_store_errors_total", store="faulty", operation="get"),
            sample("latchkey_secret_store_seconds_count", store="faulty", operation="get"),
        )

    before = figures()
    store = metrics.instrument_store(FailingStore())
    with pytest.raises(SecretStoreUnavailable):
        store.put("p", "s", 1, b"x")
    with pytest.raises(SecretPayloadMissing):
        store.get("p", "s", 1, "ref")
    put_errors, get_errors, gets = figures()
    assert put_errors == before[0] + 1
    assert get_errors == before[1]  # a missing payload is an answer
    assert gets == before[2] + 1
    assert isinstance(store, FailingStore)


def test_rate_limited_answers_counted_by_door(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        f"sqlite:///{tmp_path / 'throttled.db'}",
        ratelimit_auth_per_source="2 per minute",
    )
    app = build_app(settings)
    with app.app_context():
        app.extensions["latchkey"].bootstrap.run(ADMIN_PASSWORD)
    client = app.test_client()
    before = sample("latchkey_rate_limited_total", door="tokens.TokensView")
    statuses = [
        client.post("/v1/auth/tokens", json=password_auth("admin", "wrong")).status_code
        for _ in range(4)
    ]
    assert statuses == [401, 401, 429, 429]
    assert sample("latchkey_rate_limited_total", door="tokens.TokensView") == before + 2


def test_change_signal_lag_observed_when_a_revocation_is_read(sapi: Api) -> None:
    token = sapi.admin_token()
    doomed = sapi.admin_token()
    before = sample("latchkey_change_signal_lag_seconds_count", signal="sqlite")
    revoke = sapi.call("DELETE", "/v1/auth/tokens", token, headers={"X-Subject-Token": doomed})
    assert revoke.status_code == 204
    assert sapi.call("GET", "/v1/projects", token).status_code == 200
    assert sample("latchkey_change_signal_lag_seconds_count", signal="sqlite") >= before + 1


def test_listener_failures_counted() -> None:
    before = sample("latchkey_change_listener_failures_total", event="connect_failed")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here once closed
    listener = ChangeListener(f"postgresql+psycopg://latchkey@127.0.0.1:{port}/none")
    listener.add("latchkey_revocation")
    assert listener.changed("latchkey_revocation") is True  # no LISTEN: always "yes"
    assert sample("latchkey_change_listener_failures_total", event="connect_failed") == before + 1


# -- two real gunicorn workers --------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _latchkey(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "latchkey"), *args],
        env={**os.environ, **_env(home), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _env(home: Path) -> dict[str, str]:
    return {
        "LATCHKEY_HOME": str(home),
        "LATCHKEY_PASSWORD_HASH_TIME_COST": "1",
        "LATCHKEY_PASSWORD_HASH_MEMORY_KIB": "1024",
        "LATCHKEY_RATELIMIT_AUTH_PER_SOURCE": "100000 per minute",
        "LATCHKEY_RATELIMIT_AUTH_PER_ACCOUNT": "100000 per minute",
    }


def _post(port: int, path: str, body: dict[str, Any]) -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - http above
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path, Path]]:
    """`latchkey serve` with two sync workers; its stderr kept; its metrics directory
    given (PROMETHEUS_MULTIPROC_DIR), so the test can see which workers wrote."""
    home = tmp_path_factory.mktemp("served")
    assert _latchkey(home, "db", "upgrade").returncode == 0
    boot = _latchkey(home, "bootstrap", LATCHKEY_ADMIN_PASSWORD=ADMIN_PASSWORD)
    assert boot.returncode == 0, boot.stderr
    port = _free_port()
    metrics_dir = home / "prometheus"
    stderr = home / "serve.stderr"
    with stderr.open("w") as err:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "latchkey"), "serve"],
            env={
                **os.environ,
                **_env(home),
                "LATCHKEY_BIND": f"127.0.0.1:{port}",
                "LATCHKEY_WORKERS": "2",
                "LATCHKEY_THREADS": "1",
                "LATCHKEY_LOG_LEVEL": "INFO",
                "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
            },
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.2)
        yield port, metrics_dir, stderr
    finally:
        process.terminate()
        process.wait(timeout=20)


def _pids_with_counters(metrics_dir: Path) -> set[str]:
    """The processes whose own file counts issued tokens (the master's counts none)."""
    pids = set()
    for path in metrics_dir.glob("counter_*.db"):
        for family in MultiProcessCollector.merge([str(path)], accumulate=True):
            for s in family.samples:
                if (
                    s.name == "latchkey_tokens_issued_total"
                    and s.labels.get("outcome") == "issued"
                    and s.value > 0
                ):
                    pids.add(path.stem.rsplit("_", 1)[1])
    return pids


def test_metrics_sum_every_worker(served: tuple[int, Path, Path]) -> None:
    port, metrics_dir, _ = served
    key = (
        "latchkey_tokens_issued_total",
        (("method", "password"), ("outcome", "issued")),
    )
    before = _scrape(port).get(key, 0.0)
    body = password_auth("admin", ADMIN_PASSWORD, project="admin")
    issued = 0
    # Concurrent logins (each a password hash) keep one sync worker busy while the
    # other accepts: both answer some, which the per-process files show.
    for _round in range(10):
        results: list[int] = []
        threads = [
            threading.Thread(target=lambda got=results: got.append(_post(port, TOKENS, body)))
            for _ in range(6)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert results == [201] * 6
        issued += 6
        if len(_pids_with_counters(metrics_dir)) >= 2:
            break
    assert len(_pids_with_counters(metrics_dir)) >= 2, "one worker answered everything"
    # Whichever worker answers the scrape, the count is every worker's.
    for _ in range(6):
        assert _scrape(port)[key] == before + issued


def test_the_embedded_store_warning_is_printed_once(served: tuple[int, Path, Path]) -> None:
    """Once per `latchkey serve` (not per worker); not by one-shot commands."""
    _, _, stderr = served
    warnings = [
        line for line in stderr.read_text().splitlines() if "LATCHKEY_SECRET_STORE=vault" in line
    ]
    assert len(warnings) == 1, warnings
    one_shot = _latchkey(stderr.parent, "keys", "list", LATCHKEY_LOG_LEVEL="INFO")
    assert one_shot.returncode == 0, one_shot.stderr
    assert "LATCHKEY_SECRET_STORE=vault" not in one_shot.stderr
