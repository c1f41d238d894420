"""SqliteChanges: yes after any other connection commits, no otherwise; yes on errors."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from latchkey.changes import sqlite as sqlite_changes
from latchkey.changes.sqlite import SqliteChanges


@pytest.fixture(autouse=True)
def ask_every_time(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each question reaches the database (the quiet time has its own test)."""
    if "quiet" not in request.node.name:
        monkeypatch.setattr(sqlite_changes, "QUIET_SECONDS", 0.0)


def test_commits_by_other_connections_are_noticed(tmp_path: Path) -> None:
    path = tmp_path / "a dir?with #odd% chars" / "db.sqlite"  # a URI must quote these
    path.parent.mkdir()
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("CREATE TABLE t (x INTEGER)")
    signal = SqliteChanges(str(path))
    assert signal.changed()  # the first answer is always yes
    assert not signal.changed()
    writer.execute("INSERT INTO t VALUES (1)")
    assert signal.changed()
    assert not signal.changed()
    writer.execute("BEGIN")
    writer.execute("INSERT INTO t VALUES (2)")
    assert not signal.changed()  # not committed yet
    writer.execute("COMMIT")
    assert signal.changed()


def test_only_database_files_get_a_signal(tmp_path: Path) -> None:
    assert SqliteChanges.for_database(f"sqlite:///{tmp_path}/db.sqlite") is not None
    assert SqliteChanges.for_database("sqlite://") is None
    assert SqliteChanges.for_database("sqlite:///:memory:") is None
    assert SqliteChanges.for_database("postgresql+psycopg://u@h/db") is None


def test_an_unreadable_database_always_says_yes(tmp_path: Path) -> None:
    signal = SqliteChanges(str(tmp_path / "missing" / "db.sqlite"))
    assert signal.changed() and signal.changed()


def test_threads_of_one_worker_share_the_signal(tmp_path: Path, caplog: Any) -> None:
    """gthread workers (LATCHKEY_THREADS > 1): a question from another thread is
    answered from the same connection, not refused as a cross-thread use."""
    path = tmp_path / "db.sqlite"
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("CREATE TABLE t (x INTEGER)")
    signal = SqliteChanges(str(path))
    assert signal.changed()
    answers: list[bool] = []
    other = threading.Thread(target=lambda: answers.append(signal.changed()))
    other.start()
    other.join()
    assert answers == [False]
    writer.execute("INSERT INTO t VALUES (1)")
    other = threading.Thread(target=lambda: answers.append(signal.changed()))
    other.start()
    other.join()
    assert answers == [False, True]
    assert not signal.changed()
    assert "unavailable" not in caplog.text


def test_a_no_stands_for_the_quiet_time_only(tmp_path: Path) -> None:
    """Asked again within QUIET_SECONDS of a no, the answer is no without asking; a
    commit is seen at the first question after it."""
    path = tmp_path / "db.sqlite"
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("CREATE TABLE t (x INTEGER)")
    signal = SqliteChanges(str(path))
    assert signal.changed()
    assert signal.changed() is False  # starts the quiet time
    writer.execute("INSERT INTO t VALUES (1)")
    deadline = time.monotonic() + sqlite_changes.QUIET_SECONDS
    seen = signal.changed()
    assert seen or time.monotonic() < deadline + 0.001
    while not seen:
        seen = signal.changed()
    assert time.monotonic() < deadline + 0.5
    assert not signal.changed()
