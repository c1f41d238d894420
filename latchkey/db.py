"""The database handle: Flask-SQLAlchemy over SQLAlchemy 2 typed models.

Models subclass ``Base`` (plain SQLAlchemy), so modules that only need the
schema do not depend on Flask; ``db`` binds them to the application.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import DateTime, Engine, MetaData, Pool, TypeDecorator, event
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import DeclarativeBase, Session, scoped_session

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


# expire_on_commit=False: views serialise objects after the service committed,
# without a lazy reload touching the session from the HTTP layer.
db = SQLAlchemy(model_class=Base, session_options={"expire_on_commit": False})

# The request-scoped session services are given (Flask-SQLAlchemy's scoped_session).
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


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return uuid.uuid4().hex


@event.listens_for(Engine, "connect")
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


@event.listens_for(Pool, "checkout")
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


_ON_COMMIT = "latchkey_on_commit"


def on_commit(session: Any, key: str, callback: Callable[[], None]) -> None:
    """Run ``callback`` once the session's current transaction has committed (never if
    it rolls back): how a worker tells its own caches of a change at once, before
    any notification from the database could reach them."""
    session.info.setdefault(_ON_COMMIT, {})[key] = callback


@event.listens_for(Session, "after_commit")
def _run_on_commit(session: Session) -> None:
    for callback in session.info.pop(_ON_COMMIT, {}).values():
        callback()


@event.listens_for(Session, "after_rollback")
def _forget_on_commit(session: Session) -> None:
    session.info.pop(_ON_COMMIT, None)
