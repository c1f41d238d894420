"""The database: plain SQLAlchemy 2 typed models, Latchkey's engine and sessions.

Models subclass ``Base``. ``Database`` is Latchkey's own engine and session factory;
every listener below is attached to that engine, its pool and its sessions only, so a
process that imports Latchkey keeps its own engines and sessions as they were.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    URL,
    DateTime,
    Engine,
    MetaData,
    Text,
    TypeDecorator,
    create_engine,
    event,
)
from sqlalchemy.engine import Dialect, ExceptionContext
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import DeclarativeBase, Session, scoped_session, sessionmaker
from sqlalchemy.sql.functions import FunctionElement

log = logging.getLogger(__name__)

# Stable constraint names so Alembic migrations are the same on SQLite and PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


# The scoped session services are given (Database.session): one session per scope,
# an application context when the HTTP front door runs them.
DbSession = scoped_session[Any]


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class json_strings(FunctionElement[str]):  # lower case: used as an SQL function
    """The strings of a column, aggregated as a JSON array in text (``[]`` or NULL for
    none): ``json_group_array`` on SQLite, ``json_agg`` on PostgreSQL. Lets one row
    carry a set (a login's held roles) without another round trip."""

    type = Text()
    inherit_cache = True
    name = "json_strings"


@compiles(json_strings)
def _json_strings_sqlite(element: json_strings, compiler: Any, **kw: Any) -> str:
    return f"json_group_array({compiler.process(element.clauses, **kw)})"


@compiles(json_strings, "postgresql")
def _json_strings_postgresql(element: json_strings, compiler: Any, **kw: Any) -> str:
    return f"CAST(json_agg({compiler.process(element.clauses, **kw)}) AS TEXT)"


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return uuid.uuid4().hex


def _sqlite_foreign_keys(dbapi_connection: Any, connection_record: Any) -> None:
    """Per-connection SQLite settings.

    Foreign keys (and so ON DELETE CASCADE) are off unless asked. WAL lets readers
    run while a worker writes, and synchronous=NORMAL in WAL mode syncs at checkpoints
    rather than on every commit: a crash may lose the last transactions, never
    corrupt the database. Every authentication commits an audit event, so this is
    the difference between a few hundred and a few dozen logins a second.
    """
    if isinstance(dbapi_connection, sqlite3.Connection):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=5000")
        cursor.close()


def _ping_postgresql(dbapi_connection: Any, connection_record: Any, proxy: Any) -> None:
    """PostgreSQL's check that a pooled connection still works, in one round trip.

    ``pool_pre_ping`` sends ``SELECT 1``, which psycopg wraps in a transaction:
    BEGIN, SELECT 1 and, at the end, one more statement of the request's own
    transaction — three of the eight round trips of an application-credential
    login. An empty query goes through libpq alone (no transaction begins) and
    fails the same way on a connection the server dropped (a restart,
    ``pg_terminate_backend``); the pool then replaces it and tries again.
    """
    pgconn = getattr(dbapi_connection, "pgconn", None)
    if pgconn is None:  # not psycopg: SQLite keeps pool_pre_ping (in-process, cheap)
        return
    from psycopg import Error, pq  # the `postgres` extra

    try:
        result = pgconn.exec_(b"")
        alive = result.status == pq.ExecStatus.EMPTY_QUERY and pgconn.status == pq.ConnStatus.OK
    except Error:
        alive = False
    if not alive:
        raise DisconnectionError("the pooled PostgreSQL connection is gone")


# -- the database lost at runtime (issue 15, point 1) ------------------------------------

# While the database is unreachable, one connection attempt per process goes out every
# this many seconds (or as long as the last failed attempt took, if longer); the others fail
# at once instead of each waiting for a connect timeout (a host that is down drops the
# SYN: libpq waits `connect_timeout`).
CONNECT_RETRY_SECONDS = 1.0
# libpq's wait for a new connection unless the database URL says otherwise (its
# default is forever): a request needing the database gets its 503 within this.
CONNECT_TIMEOUT_SECONDS = 3


def is_database_outage(exc: BaseException) -> bool:
    """Whether ``exc`` means the database cannot be reached (not a bug of ours): a
    connection refused, dropped or timed out, the server shutting down or starting up,
    or no pooled connection free in time."""
    if isinstance(exc, DisconnectionError | PoolTimeoutError):
        return True
    if isinstance(exc, DBAPIError):
        return bool(exc.connection_invalidated) or _is_connection_error(exc.orig)
    return False


def _is_connection_error(orig: BaseException | None) -> bool:
    if orig is None or type(orig).__module__.split(".")[0] != "psycopg":
        return False
    import psycopg  # the `postgres` extra: only PostgreSQL deployments get here

    if not isinstance(orig, psycopg.OperationalError):
        return False
    # No SQLSTATE: libpq's own connection errors. 08: connection exception; 57P:
    # operator intervention (admin shutdown, crash shutdown, cannot connect now).
    # Not 57014 (a statement timeout) nor 55P03 (a lock timeout): those are answers.
    sqlstate = getattr(orig, "sqlstate", None)
    return sqlstate is None or sqlstate.startswith(("08", "57P"))


class DatabaseState:
    """This process's view of the database: up, or down since when.

    One log line when an outage starts (its first failure) and one when it ends (the
    first connection that works again), whatever the number of requests in between.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._next_attempt = 0.0

    @property
    def down(self) -> bool:
        return self._down_since is not None

    def failed(self, exc: BaseException, attempt_seconds: float = 0.0) -> None:
        """Note a failure; ``attempt_seconds``: how long a failed connection attempt
        took. The next attempt waits max(CONNECT_RETRY_SECONDS, that long): a host that
        swallows SYNs holds a worker for connect_timeout each time, so a worker spends
        at most half its time asking."""
        with self._lock:
            now = time.monotonic()
            if attempt_seconds:
                self._next_attempt = now + max(CONNECT_RETRY_SECONDS, attempt_seconds)
            if self._down_since is not None:
                return
            self._down_since = now
            self._next_attempt = max(self._next_attempt, now + CONNECT_RETRY_SECONDS)
        # The class and the driver's first line (host and port, never a password).
        detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        log.error(
            "the database is unreachable; requests that need it are answered 503"
            " database_unavailable until it is back",
            extra={"error": type(exc).__name__, "detail": detail[0] if detail else ""},
        )

    def reached(self) -> None:
        if self._down_since is None:  # the usual case: no lock on every checkout
            return
        with self._lock:
            if self._down_since is None:
                return
            seconds = time.monotonic() - self._down_since
            self._down_since = None
        log.warning("the database is reachable again", extra={"outage_seconds": round(seconds, 3)})

    def may_connect(self) -> bool:
        """Up: always. Down: one caller per CONNECT_RETRY_SECONDS (it probes)."""
        if self._down_since is None:
            return True
        with self._lock:
            now = time.monotonic()
            if now < self._next_attempt:
                return False
            self._next_attempt = now + CONNECT_RETRY_SECONDS
            return True

    def reset(self) -> None:
        with self._lock:
            self._down_since, self._next_attempt = None, 0.0


DATABASE = DatabaseState()


def _connect_or_fail_fast(dialect: Dialect, _record: Any, cargs: Any, cparams: Any) -> Any:
    if dialect.name != "postgresql":
        return None  # SQLite: the dialect connects as usual
    if not DATABASE.may_connect():
        raise dialect.loaded_dbapi.OperationalError(
            "the database is unreachable (a connection attempt failed less than"
            f" {CONNECT_RETRY_SECONDS:g} s ago)"
        )
    started = time.monotonic()
    try:
        return dialect.connect(*cargs, **cparams)
    except Exception as exc:
        DATABASE.failed(exc, attempt_seconds=time.monotonic() - started)
        raise


def _note_outage(context: ExceptionContext) -> None:
    """Any statement or connection failing for want of the database marks the outage."""
    if context.is_disconnect or _is_connection_error(context.original_exception):
        DATABASE.failed(context.original_exception)


def _note_reached(dbapi_connection: Any, connection_record: Any, proxy: Any) -> None:
    """A connection checked out (after _ping_postgresql found it alive): the database is up."""
    DATABASE.reached()


_ON_COMMIT = "latchkey_on_commit"


def on_commit(session: Any, key: str, callback: Callable[[], None]) -> None:
    """Run ``callback`` once the session's current transaction has committed (never if
    it rolls back): how a worker tells its own caches of a change at once, before
    any notification from the database could reach them."""
    session.info.setdefault(_ON_COMMIT, {})[key] = callback


def _run_on_commit(session: Session) -> None:
    for callback in session.info.pop(_ON_COMMIT, {}).values():
        callback()


def _forget_on_commit(session: Session) -> None:
    session.info.pop(_ON_COMMIT, None)


class Database:
    """Latchkey's engine and its scoped session.

    ``scopefunc`` names the scope a session lives in (Flask's side passes the current
    application context, as Flask-SQLAlchemy did); without one, a session per thread.
    ``metadata`` and ``engine`` are what Flask-Migrate's Alembic environment reads.
    """

    metadata = Base.metadata

    def __init__(
        self,
        url: str | URL,
        *,
        scopefunc: Callable[[], Any] | None = None,
        **engine_options: Any,
    ) -> None:
        self.engine: Engine = create_engine(url, **engine_options)
        _listen_to_engine(self.engine)
        # expire_on_commit=False: views serialise objects after the service committed,
        # without a lazy reload touching the session from the HTTP layer.
        self.session_factory = sessionmaker(bind=self.engine, expire_on_commit=False)
        self.session: DbSession = scoped_session(self.session_factory, scopefunc)
        # sessionmaker made a Session subclass of its own: these reach no other session.
        event.listen(self.session_factory, "after_commit", _run_on_commit)
        event.listen(self.session_factory, "after_rollback", _forget_on_commit)

    def remove(self) -> None:
        """Close the current scope's session (the end of a request or command)."""
        self.session.remove()

    def dispose(self) -> None:
        """Close the pool's connections (before a fork, at the end of a test)."""
        self.engine.dispose()


def _listen_to_engine(engine: Engine) -> None:
    # An Engine target puts pool events on its pool (kept by dispose()'s new pool)
    # and dialect events on its own dialect.
    event.listen(engine, "connect", _sqlite_foreign_keys)
    event.listen(engine, "checkout", _ping_postgresql)
    event.listen(engine, "checkout", _note_reached)  # after the ping found it alive
    event.listen(engine, "do_connect", _connect_or_fail_fast)
    event.listen(engine, "handle_error", _note_outage)
