"""Revocation events: by token, user, project, user on a project, credential, trust.

An event revokes every token of its subject issued at or before
``issued_before``. Events carry an increasing id, the cursor relying
services pass back as ``GET /v1/revocations?since=``.

Checking a token asks a per-process mirror of the unexpired events
(``RevocationIndex``), brought up to date by one indexed query per check
(``id > cursor``), so a revocation committed by any worker or node counts at
the next request, as before, without building a five-way ``OR`` per token
(30-40 % of an online validation, bench/README.md). A change signal says when
nothing was committed since the last query, and the check then asks nothing at
all: ``RevocationListener`` on PostgreSQL (LISTEN/NOTIFY on the events table),
``SqliteChanges`` on SQLite (``PRAGMA data_version``: any commit at all).

``USER_PROJECT`` (issue 14) revokes one user's tokens scoped to one project, as
Keystone's ``revoke_by_grant`` when a direct grant on that project is removed. Its
subject is a digest of both ids (``latchkey.wire.revocation``); checking it costs
one hash per user the token names, and only while such an event is alive.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, func, or_, select, text

from latchkey import metrics
from latchkey.db import DbSession, on_commit, utcnow
from latchkey.tokens.models import RevocationEvent
from latchkey.wire.revocation import USER_PROJECT, user_project_subject, user_project_subjects

if TYPE_CHECKING:
    from latchkey.changes.postgres import RevocationListener
    from latchkey.changes.sqlite import SqliteChanges

TOKEN, USER, PROJECT = "token", "user", "project"
APPLICATION_CREDENTIAL = "application_credential"
TRUST = "trust"  # an OS-TRUST trust deleted: every token it gave (issue 14)
CREDENTIAL_SECRET = "application_credential_secret"
# Every token issued before a time, whoever it names: `latchkey restore-fence` after a
# restore from backup (issue 15, point 4; docs/operations.md). Its subject is "*".
ALL, ALL_SUBJECT = "all", "*"
REVOCATION_KINDS = (
    TOKEN,
    USER,
    PROJECT,
    APPLICATION_CREDENTIAL,
    CREDENTIAL_SECRET,
    ALL,
    TRUST,
    USER_PROJECT,
)
# A fence's id is this far past the newest restored event: relying services may hold a
# feed cursor past the restored ids (events recorded after the backup, lost with the
# database), and would never read events numbered below it.
FENCE_ID_GAP = 1_000_000
_SEQUENCE = "pg_get_serial_sequence('revocation_event', 'id')"


# Kinds that revoke one thing outright, and kinds that revoke what was issued before a time.
EXACT_KINDS = (TOKEN, APPLICATION_CREDENTIAL, CREDENTIAL_SECRET, TRUST)
BEFORE_KINDS = (USER, PROJECT, ALL, USER_PROJECT)
# An id below the cursor that has not been seen yet may still commit (PostgreSQL hands
# out sequence values before commit): it is asked for again until this many seconds pass.
GAP_SECONDS = 60.0
# The feed holds back at a hole this young (a relying service polls again shortly).
FEED_HOLE_SECONDS = 5.0
MAX_HOLE_CHECK = 2000

_COLUMNS = (
    RevocationEvent.id,
    RevocationEvent.kind,
    RevocationEvent.subject,
    RevocationEvent.issued_before,
    RevocationEvent.expires_at,
    RevocationEvent.created_at,  # for latchkey_change_signal_lag_seconds
)
_NEWER = (
    select(*_COLUMNS).where(RevocationEvent.id > bindparam("cursor")).order_by(RevocationEvent.id)
)
_NEWER_OR_GAPS = (
    select(*_COLUMNS)
    .where(
        or_(
            RevocationEvent.id > bindparam("cursor"),
            RevocationEvent.id.in_(bindparam("gaps", expanding=True)),
        )
    )
    .order_by(RevocationEvent.id)
)
_UNEXPIRED = select(*_COLUMNS).where(RevocationEvent.expires_at > bindparam("now"))


class RevocationIndex:
    """The unexpired revocation events of every worker, mirrored in this process."""

    def __init__(self, listener: RevocationListener | SqliteChanges | None = None) -> None:
        self._lock = threading.Lock()
        # Without a change signal (an in-memory database) every check asks for newer events.
        self._listener = listener
        self._loaded = False
        self._current = False  # the last query succeeded: the mirror is as the listener says
        self._cursor = 0
        self._gaps: dict[int, float] = {}  # id -> monotonic deadline
        # kind -> subject -> expires_at (exact kinds) or (issued_before, expires_at)
        self._exact: dict[str, dict[str, datetime]] = {k: {} for k in EXACT_KINDS}
        self._before: dict[str, dict[str, tuple[datetime, datetime]]] = {
            k: {} for k in BEFORE_KINDS
        }
        self._next_prune = 0.0
        # The lag histogram's label: which change signal this mirror trusts.
        self._lag = metrics.child(metrics.CHANGE_LAG, _signal_name(listener))

    @property
    def listener(self) -> RevocationListener | SqliteChanges | None:
        return self._listener

    def changed_here(self) -> None:
        """This worker committed events: the next check queries, whatever the signal
        says (its notification may still be on its way)."""
        self._current = False

    def reset(self) -> None:
        """Forget everything: the next check reloads the unexpired events."""
        with self._lock:
            self._reset()

    def _reset(self) -> None:
        self._loaded, self._cursor, self._gaps = False, 0, {}
        for exact in self._exact.values():
            exact.clear()
        for before in self._before.values():
            before.clear()

    def refresh(self, session: DbSession) -> None:
        with self._lock:
            if self._unchanged():
                return
            self._current = False  # until this query succeeds: a failed one is asked again
            self._query(session)
            self._current = True

    def _unchanged(self) -> bool:
        """Nothing committed since the last query, by the listener's word.

        The gap ids need no asking either: one that commits late notifies then.
        Once a minute the query runs anyway (pruning, an emptied table).
        """
        return (
            self._listener is not None
            and self._loaded
            and self._current
            and time.monotonic() < self._next_prune
            and not self._listener.changed()
        )

    def _query(self, session: DbSession) -> None:
        if self._loaded and time.monotonic() >= self._next_prune:
            # Events are never deleted by Latchkey; should someone empty the table,
            # SQLite would hand out ids again from 1: start over rather than miss them.
            newest = session.scalar(select(func.max(RevocationEvent.id))) or 0
            if newest < self._cursor:
                self._reset()
        if not self._loaded:
            rows = session.execute(_UNEXPIRED, {"now": utcnow()}).all()
            for row in rows:
                self._apply(row.id, row.kind, row.subject, row.issued_before, row.expires_at)
            # Ids just below the newest may belong to transactions still committing.
            loaded = {row.id for row in rows}
            deadline = time.monotonic() + GAP_SECONDS
            for missing in range(max(1, self._cursor - 100), self._cursor):
                if missing not in loaded:
                    self._gaps[missing] = deadline
            self._loaded = True
            rows = []
        elif self._gaps:
            rows = session.execute(
                _NEWER_OR_GAPS, {"cursor": self._cursor, "gaps": list(self._gaps)}
            ).all()
        else:
            rows = session.execute(_NEWER, {"cursor": self._cursor}).all()
        if rows:
            now = utcnow()
            for row in rows:
                # From the event's creation (any node's clock) to this worker reading it.
                self._lag.observe(max(0.0, (now - row.created_at).total_seconds()))
        for row in rows:
            self._apply(row.id, row.kind, row.subject, row.issued_before, row.expires_at)
        self._expire_gaps_and_events()

    def _apply(
        self, event_id: int, kind: str, subject: str, before: datetime, expires: datetime
    ) -> None:
        self._gaps.pop(event_id, None)
        if event_id > self._cursor:
            if self._loaded:
                deadline = time.monotonic() + GAP_SECONDS
                for missing in range(self._cursor + 1, min(event_id, self._cursor + 1001)):
                    self._gaps.setdefault(missing, deadline)
            self._cursor = event_id
        if kind in self._exact:
            self._exact[kind][subject] = max(expires, self._exact[kind].get(subject, expires))
        elif kind in self._before:
            known = self._before[kind].get(subject)
            if known is None or before > known[0]:
                self._before[kind][subject] = (before, max(expires, known[1] if known else expires))

    def _expire_gaps_and_events(self) -> None:
        now_mono = time.monotonic()
        if self._gaps:
            self._gaps = {i: d for i, d in self._gaps.items() if d > now_mono}
        if now_mono < self._next_prune:
            return
        self._next_prune = now_mono + 60
        now = utcnow()
        for exact in self._exact.values():
            for subject in [s for s, expires in exact.items() if expires <= now]:
                del exact[subject]
        for before in self._before.values():
            for subject in [s for s, (_, expires) in before.items() if expires <= now]:
                del before[subject]

    def revokes(self, claims: dict[str, Any], issued_at: datetime) -> bool:
        if claims["jti"] in self._exact[TOKEN]:
            return True
        credential = claims.get("application_credential") or {}
        for kind, key in ((APPLICATION_CREDENTIAL, "id"), (CREDENTIAL_SECRET, "secret_id")):
            if credential.get(key) and credential[key] in self._exact[kind]:
                return True
        subjects: tuple[tuple[str, str | None], ...] = (
            (USER, claims["sub"]),
            (PROJECT, (claims.get("project") or {}).get("id")),
            (ALL, ALL_SUBJECT),
        )
        trust = claims.get("trust")
        if trust:  # a trust's tokens: gone with the trust, its trustor or its trustee
            if trust.get("id") in self._exact[TRUST]:
                return True
            subjects += ((USER, trust.get("trustor_user_id")), (USER, trust.get("trustee_user_id")))
        for kind, subject in subjects:
            found = self._before[kind].get(subject) if subject else None
            if found is not None and found[0] >= issued_at:
                return True
        scoped = self._before[USER_PROJECT]
        if scoped:  # no hashing while no such event is alive
            for subject in user_project_subjects(claims):
                found = scoped.get(subject)
                if found is not None and found[0] >= issued_at:
                    return True
        return False


def _signal_name(listener: object) -> str:
    """notify (PostgreSQL LISTEN), sqlite (PRAGMA data_version) or none."""
    if listener is None:
        return "none"
    return "sqlite" if type(listener).__name__ == "SqliteChanges" else "notify"


class RevocationList:
    def __init__(
        self, session: DbSession, token_ttl: timedelta, index: RevocationIndex | None = None
    ) -> None:
        self._session = session
        self._token_ttl = token_ttl
        self._index = index or RevocationIndex()

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
        on_commit(self._session, "revocations", self._index.changed_here)
        return event

    def add_user_project(self, user_id: str, project_id: str) -> RevocationEvent:
        """Revoke the user's tokens scoped to the project (and those of trusts the
        user gave or holds on it), issued until now."""
        return self.add(USER_PROJECT, user_project_subject(user_id, project_id))

    def fence(self, issued_before: datetime) -> RevocationEvent:
        """Revoke every token issued at or before ``issued_before`` (a restore-fence),
        numbered FENCE_ID_GAP past the newest event so that every feed cursor a relying
        service may hold is below it. In the current transaction (it commits with the
        audit event)."""
        now = utcnow()
        newest = self._session.scalar(select(func.max(RevocationEvent.id))) or 0
        postgresql = self._session.get_bind().dialect.name == "postgresql"
        if postgresql:
            # Past every id the sequence handed out, committed or not (an emptied
            # table, rolled-back ids): nextval, not max(id).
            newest = max(newest, self._session.scalar(text(f"SELECT nextval({_SEQUENCE})")) or 0)
        event = RevocationEvent(
            id=newest + FENCE_ID_GAP,
            kind=ALL,
            subject=ALL_SUBJECT,
            issued_before=issued_before,
            created_at=now,
            expires_at=issued_before + self._token_ttl,
        )
        self._session.add(event)
        self._session.flush()
        if postgresql:
            # An explicit id leaves the sequence behind: the next event would reuse ids.
            self._session.execute(text(f"SELECT setval({_SEQUENCE}, :id)"), {"id": event.id})
        on_commit(self._session, "revocations", self._index.changed_here)
        return event

    def is_revoked(self, claims: dict[str, Any]) -> bool:
        # iat_ms is Latchkey's own claim; iat (whole seconds) for anything else.
        issued_ms = claims.get("iat_ms")
        seconds = issued_ms / 1000 if isinstance(issued_ms, int) else float(claims["iat"])
        issued_at = datetime.fromtimestamp(seconds, UTC)
        self._index.refresh(self._session)
        return self._index.revokes(claims, issued_at)

    def since(self, cursor: int, limit: int) -> list[RevocationEvent]:
        """The feed: unexpired events past ``cursor``, in id order.

        Held back at a hole younger than FEED_HOLE_SECONDS: an id with no row may
        belong to a transaction still committing (PostgreSQL hands out ids before
        commit), and a client whose cursor passed it would never see it. Ids of
        expired events are rows, not holes.
        """
        now = utcnow()
        events = list(
            self._session.scalars(
                select(RevocationEvent)
                .where(RevocationEvent.id > cursor, RevocationEvent.expires_at > now)
                .order_by(RevocationEvent.id)
                .limit(limit)
            )
        )
        # Ids missing between the cursor (once a client has one) and the events, and
        # between the events: rows for most (expired events), holes for the rest.
        if not events:
            return events
        # Only the first MAX_HOLE_CHECK are asked for; past them, rows are assumed (old,
        # expired). Bounded work: a restore fence leaves a gap of a million ids.
        missing: list[int] = []
        previous = cursor if cursor else events[0].id
        for event in events:
            room = MAX_HOLE_CHECK - len(missing)
            missing.extend(range(previous + 1, min(event.id, previous + 1 + max(room, 0))))
            previous = event.id
        if not missing:
            return events
        existing = set(
            self._session.scalars(select(RevocationEvent.id).where(RevocationEvent.id.in_(missing)))
        )
        asked_up_to = missing[-1]
        settled = now - timedelta(seconds=FEED_HOLE_SECONDS)
        kept: list[RevocationEvent] = []
        previous = cursor if cursor else events[0].id
        for event in events:
            last = min(event.id - 1, asked_up_to)
            hole = any(i not in existing for i in range(previous + 1, last + 1))
            if hole and event.created_at > settled:
                break  # ask again shortly: the hole fills, or it is old enough to skip
            kept.append(event)
            previous = event.id
        return kept

    def commit(self) -> None:
        self._session.commit()
