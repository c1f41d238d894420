"""The audit trail: every authentication and every change, never a secret.

Change events are added to the caller's transaction so they commit (or roll
back) with the change itself; authentication failures commit on their own,
because the request that caused them fails.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import JSON, Engine, Integer, String, Table, insert, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Mapped, mapped_column

from latchkey.db import Base, DbSession, UTCDateTime, utcnow
from latchkey.policy.context import CallContext
from latchkey.policy.enforcer import Enforcer, Target
from latchkey.records import copy_row

log = logging.getLogger(__name__)
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


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One audit event, as ``GET /v1/audit/events`` shows it (never the row itself)."""

    id: int
    time: datetime
    type: str
    action: str
    outcome: str
    actor_id: str | None
    target_type: str | None
    target_id: str | None
    project_id: str | None
    domain_id: str | None
    request_id: str | None
    source_ip: str | None
    details: dict[str, Any]

    @classmethod
    def of(cls, row: AuditEvent) -> AuditRecord:
        return copy_row(cls, row, details=dict(row.details or {}))


# On the table, not the mapped class: a Core statement, no ORM unit of work.
_INSERT = insert(cast(Table, AuditEvent.__table__))


@dataclass(frozen=True)
class AuditTarget:
    type: str
    id: str | None = None
    project_id: str | None = None
    domain_id: str | None = None


def _row(
    type: str,
    action: str,
    outcome: str,
    actor_id: str | None,
    target: AuditTarget | None,
    request_id: str | None,
    source_ip: str | None,
    details: dict[str, Any],
) -> dict[str, Any]:
    """One audit_event row (details already cleaned of secret keys)."""
    return {
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
        "details": details,
    }


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
        row = _row(type, action, outcome, actor_id, target, request_id, source_ip, clean)
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
    ) -> list[AuditRecord]:
        domain_id = self._project_domain(project_id) if project_id else None
        target = Target(domain_id=domain_id, project_id=project_id)
        self._enforcer.enforce(ctx.auth, "audit:event:list", target)
        events = self._log.list(since=since, type=type, project_id=project_id, limit=limit)
        return [AuditRecord.of(event) for event in events]


# -- issue 13, class 7: the trail sees attacks ----------------------------------------

AUTHORIZATION = "authorization"  # denials of Latchkey's own API


def token_fingerprint(token: str) -> str:
    """What the trail keeps of a presented token: a short hash, never the token."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()[:16]


@dataclass
class _Seen:
    started: float
    left_out: int = 0


class AttackTrail:
    """Denials and invalid tokens, written so that a flood cannot fill the database.

    At most one event per (kind, source, subject) per window; the next one written
    for that key says how many were left out (``details.repeated``). Beyond
    ``max_events`` events per window whatever the key, events are dropped and
    counted (``details.dropped``, on the next one written). Counts are per worker
    process. Each event commits in a transaction of its own: the request that
    caused it fails, and its own transaction rolls back.
    """

    def __init__(
        self,
        engine: Callable[[], Engine],
        *,
        window_seconds: float,
        max_events: int,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._engine = engine
        self._window = window_seconds
        self._max_events = max_events
        self._max_keys = max_keys
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: OrderedDict[tuple[str, ...], _Seen] = OrderedDict()
        self._window_started = clock()
        self._written = 0
        self._dropped = 0

    def record(
        self,
        key: tuple[str, ...],
        *,
        type: str,
        action: str,
        outcome: str,
        actor_id: str | None,
        target: AuditTarget | None,
        request_id: str | None,
        source_ip: str | None,
        details: dict[str, Any],
    ) -> bool:
        """Write the event unless its key was written within the window; True if written."""
        now = self._clock()
        with self._lock:
            if now - self._window_started >= self._window:
                self._window_started, self._written = now, 0
            seen = self._seen.get(key)
            if seen is not None and now - seen.started < self._window:
                seen.left_out += 1
                return False
            if self._written >= self._max_events:
                self._dropped += 1
                return False
            repeated = seen.left_out if seen is not None else 0
            self._seen[key] = _Seen(now)
            self._seen.move_to_end(key)
            while len(self._seen) > self._max_keys:
                self._seen.popitem(last=False)
            self._written += 1
            dropped, self._dropped = self._dropped, 0
        clean = {k: v for k, v in details.items() if k not in FORBIDDEN_DETAIL_KEYS}
        if repeated:
            clean["repeated"] = repeated  # same key, left out since the last event written
        if dropped:
            clean["dropped"] = dropped  # any key, left out past max_events
        # Attack events carry what the request said: cut to the columns' sizes.
        row = _row(
            type,
            action[:128],
            outcome,
            actor_id,
            target,
            request_id,
            (source_ip or "")[:64] or None,
            clean,
        )
        try:
            with self._engine().begin() as conn:
                conn.execute(_INSERT, row)
        except SQLAlchemyError:
            log.warning("cannot write an attack audit event", extra={"action": action})
            return False
        return True

    def reset(self) -> None:
        with self._lock:
            self._seen.clear()
            self._written = self._dropped = 0
            self._window_started = self._clock()
