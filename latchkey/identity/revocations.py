"""Revocation events: by token, user or project (credentials later).

An event revokes every token of its subject issued at or before
``issued_before``. Events carry an increasing id, the cursor relying
services pass back as ``GET /v1/revocations?since=``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Integer, String, and_, or_, select
from sqlalchemy.orm import Mapped, mapped_column

from latchkey.db import Base, DbSession, UTCDateTime, utcnow

TOKEN, USER, PROJECT = "token", "user", "project"
APPLICATION_CREDENTIAL = "application_credential"
CREDENTIAL_SECRET = "application_credential_secret"
REVOCATION_KINDS = (TOKEN, USER, PROJECT, APPLICATION_CREDENTIAL, CREDENTIAL_SECRET)


class RevocationEvent(Base):
    __tablename__ = "revocation_event"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str] = mapped_column(String(64), index=True)
    issued_before: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # After this no token it can affect is still alive; the event may be pruned.
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class RevocationList:
    def __init__(self, session: DbSession, token_ttl: timedelta) -> None:
        self._session = session
        self._token_ttl = token_ttl

    def add(self, kind: str, subject: str) -> RevocationEvent:
        """Add an event to the current transaction (it commits with the change)."""
        now = utcnow()
        event = RevocationEvent(
            kind=kind,
            subject=subject,
            issued_before=now,
            created_at=now,
            expires_at=now + self._token_ttl,
        )
        self._session.add(event)
        return event

    def is_revoked(self, claims: dict[str, Any]) -> bool:
        # iat_ms is Latchkey's own claim; iat (whole seconds) for anything else.
        issued_ms = claims.get("iat_ms")
        seconds = issued_ms / 1000 if isinstance(issued_ms, int) else float(claims["iat"])
        issued_at = datetime.fromtimestamp(seconds, UTC)
        conditions = [
            and_(RevocationEvent.kind == TOKEN, RevocationEvent.subject == claims["jti"]),
            and_(
                RevocationEvent.kind == USER,
                RevocationEvent.subject == claims["sub"],
                RevocationEvent.issued_before >= issued_at,
            ),
        ]
        project_id = (claims.get("project") or {}).get("id")
        if project_id:
            conditions.append(
                and_(
                    RevocationEvent.kind == PROJECT,
                    RevocationEvent.subject == project_id,
                    RevocationEvent.issued_before >= issued_at,
                )
            )
        credential = claims.get("application_credential") or {}
        for kind, key in ((APPLICATION_CREDENTIAL, "id"), (CREDENTIAL_SECRET, "secret_id")):
            if credential.get(key):
                conditions.append(
                    and_(RevocationEvent.kind == kind, RevocationEvent.subject == credential[key])
                )
        query = select(RevocationEvent.id).where(or_(*conditions)).limit(1)
        return self._session.scalar(query) is not None

    def since(self, cursor: int, limit: int) -> list[RevocationEvent]:
        query = (
            select(RevocationEvent)
            .where(RevocationEvent.id > cursor, RevocationEvent.expires_at > utcnow())
            .order_by(RevocationEvent.id)
            .limit(limit)
        )
        return list(self._session.scalars(query))

    def commit(self) -> None:
        self._session.commit()
