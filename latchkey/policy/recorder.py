"""Sampled decisions, kept for policy simulation (buffered, written after responses)."""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, insert, select
from sqlalchemy.exc import SQLAlchemyError

from latchkey.db import DbSession, utcnow
from latchkey.policy.catalog import Catalog
from latchkey.policy.engine import Principal, principal_attributes
from latchkey.policy.models import DecisionRecord

if TYPE_CHECKING:
    from latchkey.policy.records import Decision

log = logging.getLogger(__name__)
MAX_RECENT = 1000

Sample = tuple[str, dict[str, Any], "Decision"]  # action, resource, decision
FLUSH_SECONDS = 1.0  # a worker writes its buffered samples at most this often …
FLUSH_ROWS = 500  # … or once this many are waiting
MAX_PENDING = 10_000  # samples past this are dropped (the database is not keeping up)


class DecisionRecorder:
    """A sampled share of decisions, kept for policy simulation.

    Samples from the decision API (/v1/authorize, /batch, /actions) are buffered
    in the process and written together, after a response has been sent
    (``flush_due`` / ``flush``, wired in app.py): a commit per sampled request was
    the slowest part of the tail at 500 requests/s, and with two SQLite workers a
    batch's commit often waited on the other's write lock. They are samples, so
    up to ``FLUSH_SECONDS`` of them may be lost if a worker dies; ``recent``
    writes this process's buffer first. A batch or /actions call is sampled as one
    request (``maybe_record_one``). Decisions on Latchkey's own operations
    stay in the operation's transaction (they count only if it commits).
    """

    def __init__(self, session: DbSession, catalog: Catalog, percent: int) -> None:
        self._session = session
        self._catalog = catalog
        self._share = max(0, min(percent, 100)) / 100
        self._random = random.Random()  # noqa: S311 - sampling, not security
        self._pending: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._last_flush = time.monotonic()

    def maybe_record(
        self,
        principal: Principal,
        action: str,
        resource: dict[str, Any],
        decision: Decision,
        *,
        buffered: bool = False,
    ) -> None:
        if self._share <= 0 or self._random.random() >= self._share:
            return
        row = self._row(principal, action, resource, decision)
        if not buffered:
            self._session.add(DecisionRecord(**row))
            return
        with self._lock:
            if len(self._pending) < MAX_PENDING:
                self._pending.append(row)

    def maybe_record_one(self, principal: Principal, decided: list[Sample]) -> None:
        """A batch (or /actions) is sampled as one request: at the same rate, one of
        its decisions at random. Ten of every hundred checks of every batch were
        thousands of rows a second, and the write-ahead log's checkpoints then held
        up answers for 100 ms."""
        if decided:
            action, resource, decision = self._random.choice(decided)
            self.maybe_record(principal, action, resource, decision, buffered=True)

    def _row(
        self, principal: Principal, action: str, resource: dict[str, Any], decision: Decision
    ) -> dict[str, Any]:
        hidden = self._catalog.view().sensitive(resource["type"])
        attributes = {
            k: v for k, v in (resource.get("attributes") or {}).items() if k not in hidden
        }
        return {
            "project_id": resource.get("project_id"),
            "time": utcnow(),
            "action": action,
            "principal": {
                "id": principal.id,
                "name": principal.name,
                "kind": principal.kind,
                "domain_id": principal.domain_id,
                "project_id": principal.project_id,
                "roles": list(principal.roles),
                "groups": list(principal.groups),
                "application_credential_id": principal.application_credential_id,
                "domain_scoped": principal.domain_scoped,
                "attributes": principal_attributes(principal),
            },
            "resource": {
                "type": resource["type"],
                "id": resource.get("id"),
                "project_id": resource.get("project_id"),
                "attributes": attributes,
            },
            "allowed": decision.allowed,
            "decided_by": decision.decided_by,
            "rule": decision.rule,
        }

    def flush_due(self) -> bool:
        return bool(self._pending) and (
            len(self._pending) >= FLUSH_ROWS or time.monotonic() - self._last_flush >= FLUSH_SECONDS
        )

    def flush(self, engine: Engine) -> None:
        """Write the buffered samples in one statement and transaction (on its own
        connection: it runs after the response, outside the request's session)."""
        with self._lock:
            rows, self._pending = self._pending, []
            self._last_flush = time.monotonic()
        if not rows:
            return
        try:
            with engine.begin() as connection:
                connection.execute(insert(DecisionRecord), rows)
        except SQLAlchemyError as exc:  # samples only: never an error for anyone
            log.warning("%d decision samples not recorded: %s", len(rows), type(exc).__name__)

    def recent(self, project_id: str, limit: int) -> list[DecisionRecord]:
        bind = self._session.get_bind()
        self.flush(bind if isinstance(bind, Engine) else bind.engine)
        query = (
            select(DecisionRecord)
            .where(DecisionRecord.project_id == project_id)
            .order_by(DecisionRecord.id.desc())
            .limit(min(limit, MAX_RECENT))
        )
        return list(self._session.scalars(query))

    def commit(self) -> None:
        if self._session.new:  # only when this request's decisions were sampled
            self._session.commit()
