"""Two workers on one SQLite database file, the second told of commits by
``PRAGMA data_version`` (latchkey/changes/sqlite.py).

Worker B (a second app on the same file and home: its own revocation mirror and
change signal, as a second gunicorn worker would be) asks nothing about
revocations while nobody writes, and refuses a token at the first check after
worker A revoked it — whether A revoked one token or disabled its user.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from latchkey.changes.sqlite import SqliteChanges
from tests.conftest import Api, build_app, database_of, make_settings
from tests.integration.test_revocation_listener import (
    alice,
    revocation_selects,  # noqa: F401 fixture
    revoke,
    status_in,
)

SQLITE = pytest.mark.parametrize("app", ["sqlite"], indirect=True)


@pytest.fixture
def worker_b(app: Flask) -> Iterator[Flask]:
    settings = app.extensions["latchkey"].settings
    b = build_app(make_settings(Path(settings.home), settings.effective_database_url))
    yield b
    signal = b.extensions["latchkey"].revocation_index.listener
    assert isinstance(signal, SqliteChanges)
    signal.close()
    with b.app_context():
        database_of(b).session.remove()
        database_of(b).engine.dispose()


@SQLITE
def test_a_token_revoked_in_a_is_refused_by_an_idle_b(
    app: Flask,
    api: Api,
    admin_token: str,
    worker_b: Flask,
    revocation_selects: list[str],  # noqa: F811 - the imported fixture
) -> None:
    _, token = alice(api, admin_token)
    for _ in range(3):  # loads B's mirror; the signal's first answer is always yes
        assert status_in(worker_b, admin_token, token) == 200
    revocation_selects.clear()
    for _ in range(20):
        assert status_in(worker_b, admin_token, token) == 200
    assert revocation_selects == []  # nobody wrote: B asked nothing

    revoke(api, admin_token, token)
    assert status_in(worker_b, admin_token, token) == 404
    assert len(revocation_selects) >= 1


@SQLITE
def test_disabling_a_user_in_a_is_seen_by_b(
    app: Flask, api: Api, admin_token: str, worker_b: Flask
) -> None:
    user, token = alice(api, admin_token)
    for _ in range(3):
        assert status_in(worker_b, admin_token, token) == 200
    api.ok("PATCH", f"/v1/users/{user['id']}", admin_token, {"enabled": False})
    assert status_in(worker_b, admin_token, token) == 404
