"""PostgreSQL connections are checked out with an empty query (latchkey.db
_ping_postgresql), one round trip instead of pool_pre_ping's three: a connection
the server dropped (a restart, pg_terminate_backend) is replaced, and the request
that checked it out never notices."""

from __future__ import annotations

import pytest
from flask import Flask
from sqlalchemy import create_engine, event, text
from sqlalchemy.pool import NullPool

from tests.conftest import Api, database_of

POSTGRES = pytest.mark.parametrize("app", ["postgres"], indirect=True)


KILL_POOLED = text(
    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
    " AND application_name <> 'latchkey-revocation-listener'"
)


@POSTGRES
def test_connections_the_server_dropped_are_replaced_unnoticed(
    app: Flask, api: Api, admin_token: str
) -> None:
    for _ in range(3):
        api.ok("GET", "/v1/projects", admin_token)
    with app.app_context():
        engine = database_of(app).engine
    # Every pooled connection is killed, from a connection outside the app's pool.
    with create_engine(engine.url, poolclass=NullPool).connect() as killer:
        assert killer.scalar(KILL_POOLED)
        killer.commit()
    invalidated: list[object] = []

    def note(*args: object) -> None:
        invalidated.append(args)

    event.listen(engine.pool, "invalidate", note)
    try:
        for _ in range(3):
            api.ok("GET", "/v1/projects", admin_token)  # CheckedClient: no 5xx
    finally:
        event.remove(engine.pool, "invalidate", note)
    assert invalidated  # the dead connection was found and thrown away


@POSTGRES
def test_a_checkout_costs_one_round_trip_and_no_transaction(app: Flask) -> None:
    with app.app_context():
        engine = database_of(app).engine
    statements: list[str] = []

    def note(conn: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", note)
    try:
        with engine.connect() as connection:
            status = connection.connection.dbapi_connection.info.transaction_status.name
            assert status == "IDLE"  # the ping began no transaction
    finally:
        event.remove(engine, "before_cursor_execute", note)
    assert statements == []  # no SELECT 1
