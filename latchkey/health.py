"""Readiness checks: what a node needs to do its job (the database, the secret store,
a signing key it can use, LDAP per domain)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from latchkey.changes.postgres import ChangeListener
from latchkey.db import DbSession
from latchkey.errors import LatchkeyError
from latchkey.identity.backends.ldap.domains import LdapDomains
from latchkey.secrets.backends import SecretStore
from latchkey.tokens.keys import KeyRing


class Health:
    def __init__(
        self,
        session: DbSession,
        ldap: LdapDomains,
        secret_store: SecretStore,
        change_listener: ChangeListener | None = None,
        keys: KeyRing | None = None,
    ) -> None:
        self._session = session
        self._ldap = ldap
        self._secret_store = secret_store
        self._change_listener = change_listener
        self._keys = keys

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        checks: dict[str, Any] = {"database": self._database()}
        checks["secret_store"] = self._secret_store.health()
        if checks["database"]["status"] == "ok":
            if self._keys is not None:
                checks["signing_key"] = self._signing_key()
            ldap = self._ldap.health()
            self._session.rollback()
            if ldap:
                checks["ldap"] = ldap
        if self._change_listener is not None and checks["database"]["status"] == "ok":
            # Issue 15, point 5: how this worker hears of changes; polling is not unready.
            checks["change_signal"] = self._change_listener.status()
        # A directory down degrades its domain only: the service stays ready for the rest.
        ready = all(
            checks[name]["status"] == "ok"
            for name in ("database", "secret_store", "signing_key")
            if name in checks
        )
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

    def _signing_key(self) -> dict[str, Any]:
        """Whether this process can sign tokens (issue 15): a node started while the
        store was down has the key ring's rows but not the primary's private key."""
        assert self._keys is not None
        try:
            return self._keys.readiness()
        except (SQLAlchemyError, LatchkeyError) as exc:
            self._session.rollback()
            return {"status": "unavailable", "error": getattr(exc, "code", type(exc).__name__)}
