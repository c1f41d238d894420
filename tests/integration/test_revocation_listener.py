"""Two workers on one PostgreSQL database, the second told of revocations by
LISTEN/NOTIFY (latchkey/changes/postgres.py).

Worker A is the suite's PostgreSQL app; worker B is a second app on the same
database and home (its own services, so its own revocation mirror and
listener), as a second gunicorn worker or node would be. B asks the database
nothing about revocations while nothing changes, and still refuses a token at
the first check after A revoked it, including while its listener is down.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import event, text

from latchkey.changes import postgres as revocation_listener
from latchkey.changes.postgres import RevocationListener
from latchkey.tokens.revocations import USER, RevocationList
from tests.conftest import Api, build_app, database_of, make_settings

POSTGRES = pytest.mark.parametrize("app", ["postgres"], indirect=True)

PASSWORD = "alice-password-for-tests"


@pytest.fixture
def worker_b(app: Flask, postgres_database: str) -> Iterator[Flask]:
    settings = app.extensions["latchkey"].settings
    b = build_app(make_settings(Path(settings.home), postgres_database))
    yield b
    listener(b).close()
    with b.app_context():
        database_of(b).session.remove()
        database_of(b).engine.dispose()


@pytest.fixture
def revocation_selects(worker_b: Flask) -> list[str]:
    """Statements worker B sends that read the revocation events."""
    seen: list[str] = []
    with worker_b.app_context():
        engine = database_of(worker_b).engine

    def spy(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "revocation_event" in statement and statement.lstrip().upper().startswith("SELECT"):
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", spy)
    yield seen
    event.remove(engine, "before_cursor_execute", spy)


def listener(worker: Flask) -> RevocationListener:
    found = worker.extensions["latchkey"].revocation_index.listener
    assert isinstance(found, RevocationListener)
    return found


def status_in(worker: Flask, caller: str, subject: str) -> int:
    response = worker.test_client().get(
        "/v1/auth/tokens",
        headers={"Authorization": f"Bearer {caller}", "X-Subject-Token": subject},
    )
    return response.status_code


def warm(worker: Flask, caller: str, subject: str) -> None:
    """B validates until its mirror is loaded and its listener is LISTENing."""
    for _ in range(3):
        assert status_in(worker, caller, subject) == 200
    assert listener(worker).listening
    # LISTEN is trusted once its probe came back (issue 15, point 5); then one more
    # check reads what may have been committed meanwhile.
    deadline = time.monotonic() + 5
    while listener(worker).status()["mode"] != "notify":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert status_in(worker, caller, subject) == 200


def revoke(api: Api, caller: str, token: str) -> None:
    response = api.call("DELETE", "/v1/auth/tokens", caller, headers={"X-Subject-Token": token})
    assert response.status_code == 204, response.get_json()


def alice(api: Api, admin_token: str) -> tuple[dict[str, Any], str]:
    user = api.ok("POST", "/v1/users", admin_token, {"name": "alice", "password": PASSWORD})
    return user, api.login("alice", PASSWORD)


@POSTGRES
def test_a_token_revoked_in_a_is_refused_by_an_idle_b(
    app: Flask, api: Api, admin_token: str, worker_b: Flask, revocation_selects: list[str]
) -> None:
    _, token = alice(api, admin_token)
    warm(worker_b, admin_token, token)
    revocation_selects.clear()
    for _ in range(20):
        assert status_in(worker_b, admin_token, token) == 200
    assert revocation_selects == []  # nothing changed: B asked nothing

    revoke(api, admin_token, token)
    assert status_in(worker_b, admin_token, token) == 404
    assert len(revocation_selects) == 1  # told, B asked once
    assert status_in(worker_b, admin_token, admin_token) == 200


@POSTGRES
def test_disabling_a_user_in_a_is_seen_by_b(
    app: Flask, api: Api, admin_token: str, worker_b: Flask
) -> None:
    user, token = alice(api, admin_token)
    warm(worker_b, admin_token, token)
    api.ok("PATCH", f"/v1/users/{user['id']}", admin_token, {"enabled": False})
    assert status_in(worker_b, admin_token, token) == 404


@POSTGRES
def test_a_killed_listener_falls_back_to_a_query_and_comes_back(
    app: Flask,
    api: Api,
    admin_token: str,
    worker_b: Flask,
    revocation_selects: list[str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(revocation_listener, "RETRY_SECONDS", 0.5)
    _, token = alice(api, admin_token)
    warm(worker_b, admin_token, token)
    killed = listener(worker_b).backend_pid
    with app.app_context():
        assert database_of(app).session.scalar(
            text("SELECT pg_terminate_backend(:pid)"), {"pid": killed}
        )
        database_of(app).session.commit()
    time.sleep(0.2)  # the server has closed it

    revoke(api, admin_token, token)
    with caplog.at_level(logging.WARNING, logger=revocation_listener.__name__):
        # The revoked token as the bearer: the request's first revocation check.
        assert status_in(worker_b, token, admin_token) == 401
    assert not listener(worker_b).listening
    assert "change listener lost" in caplog.text
    assert "postgresql://" not in caplog.text

    # Down: every check asks. Back after RETRY_SECONDS, and quiet again.
    revocation_selects.clear()
    assert status_in(worker_b, admin_token, admin_token) == 200
    assert revocation_selects
    time.sleep(0.6)
    warm(worker_b, admin_token, admin_token)
    assert listener(worker_b).backend_pid not in (None, killed)
    revocation_selects.clear()
    for _ in range(5):
        assert status_in(worker_b, admin_token, admin_token) == 200
    assert revocation_selects == []


@POSTGRES
def test_a_rolled_back_revocation_breaks_nothing(
    app: Flask, api: Api, admin_token: str, worker_b: Flask
) -> None:
    user, token = alice(api, admin_token)
    warm(worker_b, admin_token, token)
    with app.app_context():
        RevocationList(database_of(app).session, timedelta(hours=1)).add(USER, user["id"])
        database_of(app).session.flush()  # the id is taken, the trigger has run
        database_of(app).session.rollback()
    assert status_in(worker_b, admin_token, token) == 200
    assert listener(worker_b).listening
    api.ok("PATCH", f"/v1/users/{user['id']}", admin_token, {"enabled": False})
    assert status_in(worker_b, admin_token, token) == 404


def test_sqlite_has_no_listener() -> None:
    assert RevocationListener.for_database("sqlite:///latchkey.db") is None
    assert RevocationListener.for_database("postgresql+psycopg://u:p@h/d") is not None


@POSTGRES
def test_one_connection_listens_for_every_cache(
    app: Flask, api: Api, admin_token: str, worker_b: Flask
) -> None:
    """Revocations, users and policies share one LISTENing connection per worker, and
    a notification on one channel does not answer for another."""
    _, token = alice(api, admin_token)
    warm(worker_b, admin_token, token)
    services = worker_b.extensions["latchkey"]
    with worker_b.app_context():
        database_of(worker_b).session.scalar(text("SELECT 1"))
        listeners = database_of(worker_b).session.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE application_name = 'latchkey-revocation-listener' AND pid = :pid"
            ),
            {"pid": listener(worker_b).backend_pid},
        )
        database_of(worker_b).session.commit()
    assert listeners == 1
    principal_signal = services.decisions._principals._signal
    assert isinstance(principal_signal, RevocationListener)
    assert principal_signal.backend_pid == listener(worker_b).backend_pid
    principal_signal.changed()  # whatever came before
    revoke(api, admin_token, token)  # the revocation channel only
    deadline = time.monotonic() + 5
    while status_in(worker_b, admin_token, token) != 404:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert not principal_signal.changed()
