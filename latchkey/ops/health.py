"""Readiness checks, one per dependency (database now; secret store and LDAP later)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from latchkey.db import DbSession


class Health:
    def __init__(self, session: DbSession) -> None:
        self._session = session

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        checks = {"database": self._database()}
        ready = all(check["status"] == "ok" for check in checks.values())
        return ready, {"status": "ok" if ready else "unavailable", "checks": checks}

    def _database(self) -> dict[str, Any]:
        try:
            self._session.execute(text("SELECT 1"))
            self._session.rollback()
        except SQLAlchemyError as exc:
            self._session.rollback()
            # The class name only: driver messages may contain the connection URL.
            return {"status": "unavailable", "error": type(exc).__name__}
        return {"status": "ok"}
