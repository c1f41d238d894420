"""The per-process mirror of revocation events (latchkey/tokens/revocations.py).

Every check asks the database for events newer than its cursor, so an event
committed by another worker counts at the next check; an id below the cursor
that commits late (PostgreSQL hands out sequence values before commit) is still
picked up; an emptied table (ids reused by SQLite) is noticed.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import Flask, current_app

from latchkey.db import utcnow
from latchkey.tokens.models import RevocationEvent
from latchkey.tokens.revocations import (
    ALL,
    FENCE_ID_GAP,
    PROJECT,
    TOKEN,
    USER,
    RevocationIndex,
    RevocationList,
)
from tests.conftest import database_of

TTL = timedelta(hours=1)


def claims(jti: str = "t1", sub: str = "u1", project: str = "p1", age: int = 10) -> dict[str, Any]:
    issued = int((utcnow() - timedelta(seconds=age)).timestamp() * 1000)
    return {"jti": jti, "sub": sub, "project": {"id": project}, "iat_ms": issued}


def event(kind: str, subject: str, event_id: int | None = None) -> RevocationEvent:
    now = utcnow()
    row = RevocationEvent(
        kind=kind, subject=subject, issued_before=now, created_at=now, expires_at=now + TTL
    )
    if event_id is not None:
        row.id = event_id
    session = database_of(current_app).session
    session.add(row)
    session.commit()
    return row


def test_another_workers_event_counts_at_the_next_check(app: Flask) -> None:
    with app.app_context():
        mine, theirs = (
            RevocationList(database_of(app).session, TTL),
            RevocationList(database_of(app).session, TTL),
        )
        assert not mine.is_revoked(claims()) and not theirs.is_revoked(claims())
        theirs.add(USER, "u1")
        theirs.commit()
        assert mine.is_revoked(claims(sub="u1"))
        assert not mine.is_revoked(claims(sub="u2"))
        # "Issued before": a token issued after the event is untouched.
        assert not mine.is_revoked(claims(sub="u1", age=-5))


def test_each_kind(app: Flask) -> None:
    with app.app_context():
        revocations = RevocationList(database_of(app).session, TTL)
        for kind, subject in ((TOKEN, "t9"), (PROJECT, "p9")):
            event(kind, subject)
        assert revocations.is_revoked(claims(jti="t9"))
        assert revocations.is_revoked(claims(project="p9"))
        credential = {**claims(), "application_credential": {"id": "c9", "secret_id": "s9"}}
        assert not revocations.is_revoked(credential)
        event("application_credential_secret", "s9")
        assert revocations.is_revoked(credential)


def test_an_id_below_the_cursor_that_commits_late_is_seen(app: Flask) -> None:
    with app.app_context():
        index = RevocationIndex()
        revocations = RevocationList(database_of(app).session, TTL, index)
        first = event(TOKEN, "early").id
        assert revocations.is_revoked(claims(jti="early"))
        # Id first+1 was handed out but committed after id first+2.
        event(TOKEN, "later", first + 2)
        assert revocations.is_revoked(claims(jti="later"))
        assert not revocations.is_revoked(claims(jti="late"))
        event(TOKEN, "late", first + 1)
        assert revocations.is_revoked(claims(jti="late"))


def test_an_emptied_table_is_noticed(app: Flask) -> None:
    with app.app_context():
        index = RevocationIndex()
        revocations = RevocationList(database_of(app).session, TTL, index)
        for n in range(3):
            event(TOKEN, f"old-{n}")
        assert revocations.is_revoked(claims(jti="old-2"))
        database_of(app).session.query(RevocationEvent).delete()
        database_of(app).session.commit()
        index.reset()  # what tests/conftest.py does; a running process checks max(id) each minute
        event(TOKEN, "new")
        assert revocations.is_revoked(claims(jti="new"))
        assert not revocations.is_revoked(claims(jti="old-2"))


def test_the_feed_holds_back_at_a_young_hole(app: Flask) -> None:
    """A relying service whose cursor passed an id still committing would never see it."""
    with app.app_context():
        revocations = RevocationList(database_of(app).session, TTL)
        first = event(TOKEN, "a").id
        event(TOKEN, "c", first + 2)  # first + 1 was handed out, not yet committed
        assert [e.id for e in revocations.since(first - 1, 100)] == [first]
        assert [e.id for e in revocations.since(first, 100)] == []
        event(TOKEN, "b", first + 1)
        assert [e.id for e in revocations.since(first, 100)] == [first + 1, first + 2]


def test_an_old_hole_is_skipped(app: Flask) -> None:
    with app.app_context():
        revocations = RevocationList(database_of(app).session, TTL)
        first = event(TOKEN, "a").id
        late = event(TOKEN, "c", first + 2)
        late.created_at = utcnow() - timedelta(seconds=30)  # the hole is a rolled-back id
        database_of(app).session.commit()
        assert [e.id for e in revocations.since(first, 100)] == [first + 2]


def test_a_fence_revokes_everything_issued_before_it_and_jumps_the_ids(app: Flask) -> None:
    """`latchkey restore-fence` (issue 15, point 4): whoever the token names."""
    with app.app_context():
        index = RevocationIndex()
        revocations = RevocationList(database_of(app).session, TTL, index)
        newest = event(TOKEN, "a").id
        assert not revocations.is_revoked(claims(jti="x", sub="anyone", project="any"))
        fence = revocations.fence(utcnow())
        database_of(app).session.commit()
        assert (fence.kind, fence.subject) == (ALL, "*")
        # Past every id handed out (PostgreSQL: the sequence's next value), by the gap.
        assert newest + FENCE_ID_GAP <= fence.id <= newest + 1 + FENCE_ID_GAP
        assert revocations.is_revoked(claims(jti="x", sub="anyone", project="any"))
        assert revocations.is_revoked({"jti": "y", "sub": "s", "iat_ms": claims()["iat_ms"]})
        assert not revocations.is_revoked(claims(jti="x", sub="anyone", age=-5))
        # The events after it follow it (PostgreSQL's sequence moved too).
        assert event(TOKEN, "b").id == fence.id + 1
        # A relying service's cursor below the gap: the fence is held back while young,
        # then served; a cursor at the fence gets what follows at once.
        assert [e.id for e in revocations.since(newest, 100)] == []
        fence.created_at = utcnow() - timedelta(seconds=30)
        database_of(app).session.commit()
        assert [e.kind for e in revocations.since(newest, 100)] == [ALL, TOKEN]
        assert [e.kind for e in revocations.since(fence.id, 100)] == [TOKEN]
