"""Whether anything was committed to a SQLite database: ``PRAGMA data_version``.

SQLite's counterpart of ``RevocationListener`` (PostgreSQL's LISTEN/NOTIFY):
``data_version``, asked on one connection, changes when any *other* connection
(another worker, a CLI, this worker's own pooled connections) has committed
since the last time it was asked. It is answered from the database file's
shared header without reading a table (~2 µs through the sqlite3 module, against
~50 µs for the revocation query through SQLAlchemy). It is coarser than a
notification on the revocation table — any commit says yes (an audit event, a
login, a decision sample) — so it saves the query exactly when nothing writes:
a validation-heavy worker, the case that matters.

The connection is this object's own, opened lazily in the process that asks
(gunicorn forks workers after ``create_app``), never one of the engine's
pooled connections. The first answer is always yes, and any error says yes
(the query runs, as without a signal) and drops the connection, to be opened
again at the next question. A "no" stands for QUIET_SECONDS (1 ms) without
asking again, so another process's commit is noticed up to 1 ms late, as a
PostgreSQL notification arrives after the commit; this process's own commits
count at once (``latchkey.db.on_commit``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
import urllib.parse

from sqlalchemy import make_url

log = logging.getLogger(__name__)
# How long a "no" stands without asking again: under load a worker asks several
# times per millisecond, each a read of the WAL index (~9 % of a validation).
QUIET_SECONDS = 0.001


class SqliteChanges:
    """Says whether anything may have been committed since it last answered."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._connection: sqlite3.Connection | None = None
        self._pid = os.getpid()
        self._seen: int | None = None
        self._asked_at = 0.0  # monotonic time of the last "no"
        # gthread workers (LATCHKEY_THREADS > 1) ask from several threads: one at a time.
        self._lock = threading.Lock()

    @classmethod
    def for_database(cls, database_url: str) -> SqliteChanges | None:
        """A signal for a SQLite database file; None for anything else (in-memory
        databases are one connection's own: there is no one else to notice)."""
        url = make_url(database_url)
        if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
            return None
        return cls(url.database)

    def changed(self) -> bool:
        now = time.monotonic()
        if now - self._asked_at < QUIET_SECONDS:
            # Asked a moment ago (a validation checks two tokens): a commit is seen at
            # most QUIET_SECONDS late, as PostgreSQL's notifications arrive.
            return False
        with self._lock:
            answer = self._changed()
            # After a yes the caller reads the database; only a no starts the quiet time.
            self._asked_at = 0.0 if answer else now
            return answer

    def _changed(self) -> bool:
        if self._pid != os.getpid():  # a forked worker: the parent's connection is not ours
            self._connection, self._seen, self._pid = None, None, os.getpid()
        try:
            if self._connection is None:
                # Read-only and never in a transaction: it cannot hold a lock anyone waits on.
                self._connection = sqlite3.connect(
                    f"file:{urllib.parse.quote(self._path)}?mode=ro",
                    uri=True,
                    isolation_level=None,
                    check_same_thread=False,  # any request thread may ask; the lock serialises
                )
            version = self._connection.execute("PRAGMA data_version").fetchone()[0]
        except sqlite3.Error as exc:
            log.warning(
                "SQLite change signal unavailable, querying on every check",
                extra={"error": type(exc).__name__},
            )
            self._close()
            return True
        changed = version != self._seen
        self._seen = version
        return changed

    def close(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self._connection is not None and self._pid == os.getpid():
            with contextlib.suppress(sqlite3.Error):
                self._connection.close()
        self._connection, self._seen = None, None
