"""Whether revocation events (users, policies) may have changed: PostgreSQL's LISTEN/NOTIFY.

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

The other channels (principals, policies) work the same way. A process keeps
one ``ChangeListener`` connection that LISTENs on all of them; each
``RevocationListener`` is one channel's view of it, with answers of its own.

A connection that LISTENs is not proof that notifications arrive: behind a
transaction-mode pooler (PgBouncer) LISTEN runs on whichever server connection
the statement got, and nothing ever reaches the listener. So each new listener
sends a probe (``pg_notify`` from a second, short-lived connection) and trusts
LISTEN only once the probe has come back; until then every answer is yes. A
probe not back within ``PROBE_SECONDS`` means notifications do not arrive: a
WARNING once per process, the listener closed, every answer yes (a query per
check, as while the listener is down), readiness says so, and the probe is
tried again every ``DEAF_RETRY_SECONDS`` (issue 15, point 5).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import select
import threading
import time
from typing import TYPE_CHECKING

from sqlalchemy import make_url

from latchkey import metrics

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)

CHANNEL = "latchkey_revocation"
# Changes to users and group memberships (migration 0010): the principal cache's.
PRINCIPAL_CHANNEL = "latchkey_principal"
# Project and domain policy activations and boundary changes (migration 0011):
# the policy caches' (latchkey/changes/generation.py).
POLICY_CHANNEL = "latchkey_policy"
RETRY_SECONDS = 5.0
# The probe that proves notifications arrive (see the module's docstring).
PROBE_CHANNEL = "latchkey_listener_probe"
PROBE_SECONDS = 2.0
DEAF_RETRY_SECONDS = 300.0
DEAF_MESSAGE = (
    "change notifications do not reach the listener connection (a transaction-mode pooler,"
    " such as PgBouncer, between Latchkey and PostgreSQL?); revocations, users and policies"
    " are read with a query on every request. Connect Latchkey to PostgreSQL directly or"
    " through a session-mode pool (docs/operations.md)"
)
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


class ChangeListener:
    """One LISTENing connection for several channels; each channel's "changed since
    you last asked" is kept apart (``RevocationListener`` is a channel's view)."""

    def __init__(self, database_url: str) -> None:
        url = make_url(database_url).set(drivername="postgresql")
        self._conninfo = url.render_as_string(hide_password=False)
        self._options = {k: v for k, v in CONNECT_OPTIONS.items() if k not in url.query}
        self._channels: list[str] = []
        self._pending: dict[str, bool] = {}
        self._connection: psycopg.Connection[tuple[object, ...]] | None = None
        self._poll: select.poll | None = None
        self._pid = os.getpid()
        self._retry_at = 0.0
        self._probe: str | None = None  # the payload awaited; LISTEN is trusted once it came
        self._probe_deadline = 0.0
        self._deaf = False  # the last probe never came back
        self._deaf_warned = False
        self._lock = threading.Lock()
        self._told = False  # the loss of the listener was logged; quiet until it is back

    @classmethod
    def for_database(cls, database_url: str) -> ChangeListener | None:
        """A listener on PostgreSQL; None elsewhere."""
        if make_url(database_url).get_backend_name() == "postgresql":
            return cls(database_url)
        return None

    def add(self, channel: str) -> None:
        """Listen on ``channel`` too (from the next connection on: channels are added
        while the app is built, before any worker connects)."""
        if channel not in self._channels:
            self._channels.append(channel)
            self._pending[channel] = True

    @property
    def listening(self) -> bool:
        return self._connection is not None and self._pid == os.getpid()

    @property
    def deaf(self) -> bool:
        """The last probe never came back: notifications do not arrive."""
        return self._deaf and self._pid == os.getpid()

    def status(self) -> dict[str, str]:
        """For /readyz: ``notify`` (notifications proven to arrive), ``starting`` (the
        probe is on its way) or ``polling`` (a query per check, with why). Never
        makes the node unready: polling is slower, not wrong."""
        with self._lock:
            self._advance()
            if self._connection is not None:
                return {"status": "ok", "mode": "starting" if self._probe else "notify"}
            if self._deaf:
                return {"status": "degraded", "mode": "polling", "detail": DEAF_MESSAGE}
            return {
                "status": "degraded",
                "mode": "polling",
                "detail": "the listener connection is down; reconnecting",
            }

    @property
    def backend_pid(self) -> int | None:
        """The server process of the listening connection (for operators and tests)."""
        return self._connection.info.backend_pid if self.listening and self._connection else None

    def changed(self, channel: str) -> bool:
        """False only when LISTEN is active and no notification has come on ``channel``
        since the last call for it."""
        with self._lock:
            if not self._advance():
                return True  # the caller queries (no listener, or not proven yet)
            came = self._pending.get(channel, True)
            self._pending[channel] = False
            return came

    def _advance(self) -> bool:
        """Start, read and check the listener; True when its answers can be trusted."""
        if self._pid != os.getpid():
            # A forked worker: the parent's connection is the parent's. psycopg does
            # not close a connection when it is collected in another process.
            self._connection, self._poll, self._pid, self._retry_at = (
                None,
                None,
                os.getpid(),
                0.0,
            )
            self._probe, self._deaf, self._deaf_warned = None, False, False
        if self._connection is None:
            self._listen()
            return False  # the caller's query comes after LISTEN (or there is no listener)
        try:
            self._drain()
        except Exception as exc:  # psycopg.OperationalError, mostly; never fail a check
            self._lost("change listener lost", exc)
            return False
        if self._probe is not None:
            if time.monotonic() >= self._probe_deadline:
                self._deafened()
            return False
        return True

    def close(self) -> None:
        with self._lock:
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
            for channel in [*self._channels, PROBE_CHANNEL]:
                connection.execute(f"LISTEN {channel}")  # our own constants
            probe = secrets.token_hex(8)
            # From another connection: a pooler would hand a NOTIFY on this one the
            # very server connection that LISTENed, and the probe would come back.
            with psycopg.connect(conninfo, autocommit=True) as sender:
                sender.execute("SELECT pg_notify(%s, %s)", (PROBE_CHANNEL, probe))
        except Exception as exc:
            self._lost("change listener not started", exc)
            return
        self._probe, self._probe_deadline = probe, time.monotonic() + PROBE_SECONDS
        self._connection = connection
        self._poll = select.poll()
        self._poll.register(connection.fileno(), select.POLLIN)
        # Whatever was committed before LISTEN: every channel's next answer is yes.
        self._pending = dict.fromkeys(self._channels, True)
        self._told = False
        log.info(
            "change listener started",
            extra={"channels": self._channels, "backend_pid": self.backend_pid},
        )

    def _drain(self) -> None:
        """Read what the server sent without waiting; raises once the connection is gone.

        Not ``Connection.notifies(timeout=0)``: after ``pg_terminate_backend`` its first
        call reads the FATAL message and returns nothing, and only the next call sees
        the closed socket, so one check would trust a dead listener.
        """
        from psycopg import pq

        assert self._connection is not None and self._poll is not None
        pgconn = self._connection.pgconn
        while self._poll.poll(0):
            pgconn.consume_input()  # OperationalError at end of file or on a socket error
            while (notification := pgconn.notifies()) is not None:
                channel = notification.relname.decode()
                if channel != PROBE_CHANNEL:
                    self._pending[channel] = True
                elif self._probe is not None and notification.extra.decode() == self._probe:
                    self._probe = None  # notifications arrive: LISTEN is trusted from now on
                    if self._deaf:
                        log.info("change notifications reach the listener again")
                    self._deaf = False
        if self._connection.broken or pgconn.status != pq.ConnStatus.OK:
            raise ConnectionError("change listener connection is not open")

    def _deafened(self) -> None:
        """The probe never came back: close the listener, poll, try again much later."""
        if not self._deaf_warned:
            log.warning(DEAF_MESSAGE, extra={"probe_seconds": PROBE_SECONDS})
            self._deaf_warned = True
        self._deaf, self._probe = True, None
        if self._connection is not None:
            with contextlib.suppress(Exception):
                self._connection.close()
        self._connection, self._poll = None, None
        self._retry_at = time.monotonic() + DEAF_RETRY_SECONDS

    def _lost(self, message: str, exc: Exception) -> None:
        # The class and libpq's first line: no conninfo, so no password, in the log.
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        event = "lost" if message.endswith("lost") else "connect_failed"
        metrics.child(metrics.LISTENER_FAILURES, event).inc()
        # Once per loss, not at every retry while the database is away (issue 15).
        level = logging.DEBUG if self._told else logging.WARNING
        self._told = True
        log.log(
            level,
            "%s; revocations, users and policies are read with a query on every request"
            " until it is back",
            message,
            extra={"error": type(exc).__name__, "detail": detail},
        )
        if self._connection is not None:
            with contextlib.suppress(Exception):  # already closed or broken
                self._connection.close()
        self._connection, self._poll = None, None
        if self._retry_at <= time.monotonic():
            self._retry_at = time.monotonic() + RETRY_SECONDS


class RevocationListener:
    """One channel of a ``ChangeListener`` (its own, unless one is shared): says
    whether something was committed on the channel since it last answered."""

    def __init__(
        self, database_url: str, channel: str = CHANNEL, shared: ChangeListener | None = None
    ) -> None:
        self._channel = channel
        self._listener = shared or ChangeListener(database_url)
        self._listener.add(channel)

    @classmethod
    def for_database(
        cls, database_url: str, channel: str = CHANNEL, shared: ChangeListener | None = None
    ) -> RevocationListener | None:
        """A listener on PostgreSQL; None elsewhere (SQLite has ``SqliteChanges``)."""
        if make_url(database_url).get_backend_name() == "postgresql":
            return cls(database_url, channel, shared)
        return None

    @property
    def listening(self) -> bool:
        return self._listener.listening

    @property
    def backend_pid(self) -> int | None:
        return self._listener.backend_pid

    def changed(self) -> bool:
        return self._listener.changed(self._channel)

    def status(self) -> dict[str, str]:
        return self._listener.status()

    def close(self) -> None:
        self._listener.close()
