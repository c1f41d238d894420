"""Whether revocation events may have been added: PostgreSQL's LISTEN/NOTIFY.

A trigger on ``revocation_event`` (migration 0009) notifies the
``latchkey_revocation`` channel after every insert statement. PostgreSQL sends
notifications when the inserting transaction commits, so an id handed out early
and committed late notifies too. ``RevocationIndex`` asks ``changed()`` before
each check and queries the table only when it says yes.

The listener is a dedicated connection of its own, opened lazily in the process
that uses it (gunicorn forks workers after ``create_app``), not one of the
engine's pooled connections: it stays LISTENing for the life of the worker and a
pool would hand it to requests, reset or recycle it. While it is down the answer
is always yes (today's query per check); it is opened again at most every
``RETRY_SECONDS``, and the first answer after LISTEN is active is yes, so the
mirror reads everything committed before it. TCP keepalives notice a connection
that died silently within about ten seconds.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import time
from typing import TYPE_CHECKING

from sqlalchemy import make_url

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)

CHANNEL = "latchkey_revocation"
# Changes to users and group memberships (migration 0010): the principal cache's.
PRINCIPAL_CHANNEL = "latchkey_principal"
# Project and domain policy activations and boundary changes (migration 0011):
# the policy caches' (latchkey/changes.py).
POLICY_CHANNEL = "latchkey_policy"
RETRY_SECONDS = 5.0
# libpq settings for the listener unless the database URL says otherwise: a quick
# give-up when the server is away, and keepalives so a silent drop is noticed.
CONNECT_OPTIONS = {
    "connect_timeout": "3",
    "keepalives": "1",
    "keepalives_idle": "5",
    "keepalives_interval": "2",
    "keepalives_count": "2",
    "tcp_user_timeout": "9000",
    "application_name": "latchkey-revocation-listener",
}


class RevocationListener:
    """Says whether revocation events may have been committed since it last answered."""

    def __init__(self, database_url: str, channel: str = CHANNEL) -> None:
        self._channel = channel
        url = make_url(database_url).set(drivername="postgresql")
        self._conninfo = url.render_as_string(hide_password=False)
        self._options = {k: v for k, v in CONNECT_OPTIONS.items() if k not in url.query}
        self._connection: psycopg.Connection[tuple[object, ...]] | None = None
        self._poll: select.poll | None = None
        self._pid = os.getpid()
        self._retry_at = 0.0

    @classmethod
    def for_database(cls, database_url: str, channel: str = CHANNEL) -> RevocationListener | None:
        """A listener on PostgreSQL; None elsewhere (SQLite queries on every check)."""
        if make_url(database_url).get_backend_name() == "postgresql":
            return cls(database_url, channel)
        return None

    @property
    def listening(self) -> bool:
        return self._connection is not None and self._pid == os.getpid()

    @property
    def backend_pid(self) -> int | None:
        """The server process of the listening connection (for operators and tests)."""
        return self._connection.info.backend_pid if self.listening and self._connection else None

    def changed(self) -> bool:
        """False only when LISTEN is active and no notification has come since the last call."""
        if self._pid != os.getpid():
            # A forked worker: the parent's connection is the parent's. psycopg does not
            # close a connection when it is collected in another process.
            self._connection, self._poll, self._pid, self._retry_at = None, None, os.getpid(), 0.0
        if self._connection is None:
            self._listen()
            return True  # the caller's query comes after LISTEN (or there is no listener)
        try:
            return self._drain()
        except Exception as exc:  # psycopg.OperationalError, mostly; never fail a check
            self._lost("revocation listener lost", exc)
            return True

    def close(self) -> None:
        if self.listening and self._connection is not None:
            self._connection.close()
        self._connection, self._poll = None, None

    def _listen(self) -> None:
        now = time.monotonic()
        if now < self._retry_at:
            return
        self._retry_at = now + RETRY_SECONDS
        try:
            import psycopg  # the `postgres` extra; only PostgreSQL deployments get here

            conninfo = psycopg.conninfo.make_conninfo(self._conninfo, **self._options)
            connection = psycopg.connect(conninfo, autocommit=True)
            connection.execute(f"LISTEN {self._channel}")  # one of our constants
        except Exception as exc:
            self._lost("revocation listener not started", exc)
            return
        self._connection = connection
        self._poll = select.poll()
        self._poll.register(connection.fileno(), select.POLLIN)
        log.info(
            "change listener started",
            extra={"channel": self._channel, "backend_pid": self.backend_pid},
        )

    def _drain(self) -> bool:
        """Read what the server sent without waiting; raises once the connection is gone.

        Not ``Connection.notifies(timeout=0)``: after ``pg_terminate_backend`` its first
        call reads the FATAL message and returns nothing, and only the next call sees
        the closed socket, so one check would trust a dead listener.
        """
        from psycopg import pq

        assert self._connection is not None and self._poll is not None
        pgconn = self._connection.pgconn
        came = False
        while self._poll.poll(0):
            pgconn.consume_input()  # OperationalError at end of file or on a socket error
            while pgconn.notifies() is not None:
                came = True
        if self._connection.broken or pgconn.status != pq.ConnStatus.OK:
            raise ConnectionError("revocation listener connection is not open")
        return came

    def _lost(self, message: str, exc: Exception) -> None:
        # The class and libpq's first line: no conninfo, so no password, in the log.
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        log.warning(
            "%s; revocations are checked with a query on every request until it is back",
            message,
            extra={"error": type(exc).__name__, "detail": detail},
        )
        if self._connection is not None:
            with contextlib.suppress(Exception):  # already closed or broken
                self._connection.close()
        self._connection, self._poll = None, None
        if self._retry_at <= time.monotonic():
            self._retry_at = time.monotonic() + RETRY_SECONDS
