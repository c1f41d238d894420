"""Sizing and poolers (issue 15, point 5): the pool settings reach the engine, and a
real PgBouncer in transaction mode — where LISTEN hears nothing — is detected by the
listener's probe: one WARNING, readiness says ``polling``, and a revocation made
elsewhere still counts at the next check (not a minute later).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import make_url

from latchkey.changes import postgres as revocation_listener
from latchkey.changes.postgres import CHANNEL, ChangeListener, RevocationListener
from latchkey.health import Health
from latchkey.settings import Settings, SettingsError
from latchkey.tokens.revocations import RevocationIndex, RevocationList
from latchkey.wiring import engine_options
from tests.conftest import Api, build_app, database_of, make_settings

POSTGRES = pytest.mark.parametrize("app", ["postgres"], indirect=True)
PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
# `make test` installs it (scripts/ensure-services.sh); under CI a missing one fails.
needs_pgbouncer = pytest.mark.skipif(
    not os.path.exists(PGBOUNCER) and os.environ.get("CI") != "true",
    reason="pgbouncer is not installed (make services, or apt-get install pgbouncer)",
)
PASSWORD = "pooler-password-1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def pgbouncer(postgres_database: str, tmp_path: Path) -> Iterator[Callable[[str], str]]:
    """``start(mode)``: a real PgBouncer in front of the suite's PostgreSQL; its URL."""
    started: list[subprocess.Popen[bytes]] = []
    upstream = make_url(postgres_database)

    def start(mode: str) -> str:
        port = free_port()
        config = tmp_path / f"pgbouncer-{port}.ini"  # read before it drops root
        config.write_text(
            "[databases]\n"
            f"* = host={upstream.host} port={upstream.port or 5432} user={upstream.username}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
            f"auth_type = any\npool_mode = {mode}\ndefault_pool_size = 2\n"
            "ignore_startup_parameters = extra_float_digits,options\n"
        )
        command = [PGBOUNCER, str(config)]
        if os.geteuid() == 0:
            command[1:1] = ["-u", "nobody"]  # pgbouncer refuses to run as root
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started.append(process)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert process.poll() is None, "pgbouncer exited"
                assert time.monotonic() < deadline, "pgbouncer did not start"
                time.sleep(0.05)
        return upstream.set(host="127.0.0.1", port=port).render_as_string(hide_password=False)

    yield start
    for process in started:
        process.terminate()
        process.wait(timeout=10)


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return claims


def settle(listener: ChangeListener, revocations: RevocationList, claims: dict[str, Any]) -> str:
    """Checks until the listener's probe has its answer (a few seconds at most)."""
    deadline = time.monotonic() + 10
    while (mode := listener.status()["mode"]) == "starting":
        assert time.monotonic() < deadline
        revocations.is_revoked(claims)
        time.sleep(0.05)
    return mode


@needs_pgbouncer
@POSTGRES
def test_behind_transaction_pooling_the_listener_polls_and_says_so(
    app: Flask,
    api: Api,
    admin_token: str,
    pgbouncer: Callable[[str], str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    via_pooler = pgbouncer("transaction")
    listener = ChangeListener(via_pooler)
    index = RevocationIndex(RevocationListener(via_pooler, CHANNEL, listener))
    api.ok("POST", "/v1/users", admin_token, {"name": "alice", "password": PASSWORD})
    token = api.login("alice", PASSWORD)
    claims = claims_of(token)
    services = app.extensions["latchkey"]
    try:
        with app.app_context(), caplog.at_level(logging.INFO, revocation_listener.__name__):
            revocations = RevocationList(database_of(app).session, timedelta(hours=1), index)
            assert not revocations.is_revoked(claims)
            assert settle(listener, revocations, claims) == "polling"
            database_of(app).session.rollback()

            # Another worker revokes the token: this one refuses it at its next check.
            response = api.call(
                "DELETE", "/v1/auth/tokens", admin_token, headers={"X-Subject-Token": token}
            )
            assert response.status_code == 204
            assert revocations.is_revoked(claims)
            for _ in range(5):
                assert revocations.is_revoked(claims)
            database_of(app).session.rollback()

            health = Health(
                database_of(app).session, services.ldap, services.secret_store, listener
            )
            ready, report = health.readiness()
            assert ready  # slower, not wrong: the node stays in the load balancer
            signal = report["checks"]["change_signal"]
            assert signal["status"] == "degraded" and signal["mode"] == "polling"
            assert "PgBouncer" in signal["detail"]
        warnings = [
            r for r in caplog.records if r.levelno == logging.WARNING and "PgBouncer" in r.message
        ]
        assert len(warnings) == 1
        assert "postgresql://" not in caplog.text
    finally:
        listener.close()


@needs_pgbouncer
@POSTGRES
def test_session_pooling_and_a_direct_connection_are_trusted(
    app: Flask,
    api: Api,
    admin_token: str,
    pgbouncer: Callable[[str], str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    via_pooler = pgbouncer("session")
    listener = ChangeListener(via_pooler)
    index = RevocationIndex(RevocationListener(via_pooler, CHANNEL, listener))
    try:
        with app.app_context(), caplog.at_level(logging.WARNING, revocation_listener.__name__):
            revocations = RevocationList(database_of(app).session, timedelta(hours=1), index)
            claims = claims_of(admin_token)
            assert settle(listener, revocations, claims) == "notify"
            database_of(app).session.rollback()
        assert "PgBouncer" not in caplog.text
    finally:
        listener.close()
    # The node's own listener (direct): /readyz names how it hears of changes.
    client = app.test_client()
    deadline = time.monotonic() + 10
    while (signal := client.get("/readyz").get_json()["checks"]["change_signal"])["mode"] != (
        "notify"
    ):
        assert signal["mode"] == "starting" and time.monotonic() < deadline, signal
        time.sleep(0.05)


def test_pool_settings_are_checked_and_reach_postgresql_only() -> None:
    pg = Settings.from_mapping(
        {"database_url": "postgresql+psycopg://u@h/d", "db_pool_size": 3, "db_max_overflow": 0}
    )
    options = engine_options(pg)
    assert (options["pool_size"], options["max_overflow"], options["pool_timeout"]) == (3, 0, 30)
    sqlite = engine_options(Settings.from_mapping({"database_url": "sqlite:///x.db"}))
    assert "pool_size" not in sqlite and "max_overflow" not in sqlite
    for name, value in (
        ("db_pool_size", 0),
        ("db_max_overflow", -1),
        ("db_pool_timeout_seconds", 0),
    ):
        with pytest.raises(SettingsError, match=name):
            engine_options(Settings.from_mapping({name: value}))


def test_a_node_opens_at_most_its_pool(postgres_database: str, tmp_path: Path) -> None:
    node = build_app(make_settings(tmp_path, postgres_database, db_pool_size=2, db_max_overflow=1))
    with node.app_context():
        pool: Any = database_of(node).engine.pool
        assert (pool.size(), pool._max_overflow) == (2, 1)
        database_of(node).session.remove()
        database_of(node).engine.dispose()
