"""The audit trail: every authentication and every change, never a secret.

Change events are added to the caller's transaction so they commit (or roll
back) with the change itself; authentication failures commit on their own,
because the request that caused them fails.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import JSON, Integer, String, Table, insert, select
from sqlalchemy.orm import Mapped, mapped_column

from latchkey.db import Base, DbSession, UTCDateTime, utcnow
from latchkey.policy.context import CallContext
from latchkey.policy.enforcer import Enforcer, Target

AUTHENTICATION, CHANGE, DECISION = "authentication", "change", "decision"
# Keys that must never reach the audit trail even if a caller passes them by mistake.
FORBIDDEN_DETAIL_KEYS = frozenset({"password", "secret", "token", "original_password"})


class AuditEvent(Base):
    __tablename__ = "audit_event"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    type: Mapped[str] = mapped_column(String(32), index=True)
    action: Mapped[str] = mapped_column(String(128))
    outcome: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    target_type: Mapped[str | None] = mapped_column(String(64), nullable=True)
    target_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    project_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    domain_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    request_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    source_ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


# On the table, not the mapped class: a Core statement, no ORM unit of work.
_INSERT = insert(cast(Table, AuditEvent.__table__))


@dataclass(frozen=True)
class AuditTarget:
    type: str
    id: str | None = None
    project_id: str | None = None
    domain_id: str | None = None


class AuditLog:
    def __init__(self, session: DbSession) -> None:
        self._session = session

    def add(
        self,
        *,
        type: str,
        action: str,
        outcome: str,
        actor_id: str | None,
        target: AuditTarget | None,
        request_id: str | None,
        source_ip: str | None,
        details: dict[str, Any] | None = None,
    ) -> None:
        """Write the event in the session's transaction: it commits, or rolls back,
        with the rest of it. A plain INSERT rather than an ORM object (~100 us less
        per event, one per login: bench/README.md); no one reads events back within
        the transaction that writes them."""
        clean = {k: v for k, v in (details or {}).items() if k not in FORBIDDEN_DETAIL_KEYS}
        row = {
            "time": utcnow(),
            "type": type,
            "action": action,
            "outcome": outcome,
            "actor_id": actor_id,
            "target_type": target.type if target else None,
            "target_id": target.id if target else None,
            "project_id": target.project_id if target else None,
            "domain_id": target.domain_id if target else None,
            "request_id": request_id,
            "source_ip": source_ip,
            "details": clean,
        }
        # The caller's pending changes still flush at its commit (where it handles
        # their errors), not here.
        with self._session.no_autoflush:
            self._session.execute(_INSERT, row)

    def list(
        self,
        *,
        since: int | None,
        type: str | None,
        project_id: str | None,
        limit: int,
    ) -> list[AuditEvent]:
        query = select(AuditEvent).order_by(AuditEvent.id).limit(limit)
        if since is not None:
            query = query.where(AuditEvent.id > since)
        if type:
            query = query.where(AuditEvent.type == type)
        if project_id:
            query = query.where(AuditEvent.project_id == project_id)
        return list(self._session.scalars(query))


class AuditReader:
    """The authorized view of the trail (``GET /v1/audit/events``)."""

    def __init__(
        self, log: AuditLog, enforcer: Enforcer, project_domain: Callable[[str], str | None]
    ) -> None:
        self._log = log
        self._enforcer = enforcer
        self._project_domain = project_domain  # so domain admins can read their projects

    def list_events(
        self,
        ctx: CallContext,
        *,
        since: int | None,
        type: str | None,
        project_id: str | None,
        limit: int,
    ) -> list[AuditEvent]:
        domain_id = self._project_domain(project_id) if project_id else None
        target = Target(domain_id=domain_id, project_id=project_id)
        self._enforcer.enforce(ctx.auth, "audit:event:list", target)
        return self._log.list(since=since, type=type, project_id=project_id, limit=limit)
