"""latchkey.wiring.open_database: where SQLite files go, and how sessions are scoped (#16)."""

from __future__ import annotations

import threading
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.pool import StaticPool

from latchkey.settings import Settings
from latchkey.wiring import open_database


def settings(home: Path, url: str) -> Settings:
    return Settings.from_mapping({"home": str(home), "database_url": url})


def test_a_relative_sqlite_file_is_in_the_home_directory(tmp_path: Path) -> None:
    database = open_database(settings(tmp_path / "home", "sqlite:///relative.db"))
    with database.engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
    assert database.engine.url.database == str(tmp_path / "home" / "relative.db")
    assert (tmp_path / "home" / "relative.db").exists()
    database.dispose()


def test_an_in_memory_database_is_one_connection_for_every_thread(tmp_path: Path) -> None:
    database = open_database(settings(tmp_path, "sqlite://"))
    assert isinstance(database.engine.pool, StaticPool)
    with database.engine.begin() as connection:
        connection.execute(text("CREATE TABLE t (x INTEGER)"))
        connection.execute(text("INSERT INTO t VALUES (1)"))
    seen: list[int] = []

    def read() -> None:
        with database.engine.connect() as connection:
            seen.append(connection.execute(text("SELECT x FROM t")).scalar_one())

    reader = threading.Thread(target=read)
    reader.start()
    reader.join()
    assert seen == [1]


def test_sessions_are_one_per_scope_and_removed_with_it(tmp_path: Path) -> None:
    scope = ["a"]
    database = open_database(settings(tmp_path, "sqlite://"), scopefunc=lambda: scope[0])
    first = database.session()
    assert database.session() is first
    scope[0] = "b"
    assert database.session() is not first
    database.remove()  # scope b's session only
    scope[0] = "a"
    assert database.session() is first
    assert first.expire_on_commit is False
