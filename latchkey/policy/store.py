"""Stored policy: the versions of projects' and domains' rule documents (one store for
both), and the operator boundary."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from latchkey.changes.generation import ChangeGeneration, still_fresh
from latchkey.db import DbSession, utcnow
from latchkey.errors import NotFound
from latchkey.policy.engine import DEFAULT_BOUNDARY, PolicyError, fingerprint, load_boundary
from latchkey.policy.models import Policy, PolicyBoundary, PolicyVersion

log = logging.getLogger(__name__)
CACHE_SECONDS = 2.0
# How long an active version is kept without a change signal (with one: until it moves).
ACTIVE_CACHE_SECONDS = 2.0

Scope = Literal["project", "domain"]


@dataclass(frozen=True)
class StoredVersion:
    """One saved version of a project's or a domain's rule document."""

    version: int
    document: dict[str, Any]
    author_id: str | None
    created_at: datetime


class PolicyVersions:
    """The versions of one kind of scope's rule documents (projects' or domains').

    Saving a version makes it the active one; activating an older one rolls back.
    Writes join the caller's transaction (the services commit, with their audit
    record, then call ``forget``). ``cached_active`` is what decisions read: kept
    until the change signal moves (PostgreSQL NOTIFY on ``tenant_policy``, SQLite's
    data_version), or ``ACTIVE_CACHE_SECONDS`` without a signal.
    """

    def __init__(
        self, session: DbSession, scope: Scope, changes: ChangeGeneration | None = None
    ) -> None:
        self._session = session
        self._column = Policy.project_id if scope == "project" else Policy.domain_id
        self._changes = changes or ChangeGeneration(None)
        # scope id -> (read at, generation read in, active version)
        self._active: dict[str, tuple[float, int | None, int | None]] = {}
        self._lock = threading.Lock()

    def add(self, scope_id: str, document: dict[str, Any], author_id: str | None) -> int:
        """A new version (the highest so far plus one), made active."""
        policy = self._policy(scope_id)
        latest = None
        if policy is not None:
            latest = self._session.scalar(
                select(func.max(PolicyVersion.version)).where(PolicyVersion.policy_id == policy.id)
            )
        version = (latest or 0) + 1
        if policy is None:
            policy = Policy(active_version=version, **{self._column.key: scope_id})
            self._session.add(policy)
        else:
            policy.active_version, policy.updated_at = version, utcnow()
        self._session.add(
            PolicyVersion(policy=policy, version=version, document=document, author_id=author_id)
        )
        return version

    def list(self, scope_id: str) -> list[StoredVersion]:
        rows = self._session.scalars(self._versions(scope_id).order_by(PolicyVersion.version))
        return [_stored(row) for row in rows]

    def get(self, scope_id: str, version: int) -> StoredVersion:
        row = self._session.scalar(self._versions(scope_id).where(PolicyVersion.version == version))
        if row is None:
            raise NotFound(f"no policy version {version}", code="policy_version_not_found")
        return _stored(row)

    def activate(self, scope_id: str, version: int) -> None:
        """Make an existing version (``get`` found it) the active one."""
        policy = self._policy(scope_id)
        if policy is None:  # every saved version has its policy row
            raise NotFound(f"no policy version {version}", code="policy_version_not_found")
        policy.active_version, policy.updated_at = version, utcnow()

    def active_version(self, scope_id: str) -> int | None:
        """Read now, not cached."""
        policy = self._policy(scope_id)
        return policy.active_version if policy else None

    def cached_active(self, scope_id: str) -> int | None:
        """The active version, re-read once the change signal says policies changed
        (without a signal: every ACTIVE_CACHE_SECONDS)."""
        generation = self._changes.current()
        cached = self._active.get(scope_id)
        if cached is not None and still_fresh(
            cached[0], cached[1], generation, ACTIVE_CACHE_SECONDS
        ):
            return cached[2]
        read_at = time.monotonic()  # before the read: a change after it moves the generation
        version = self.active_version(scope_id)
        with self._lock:
            self._active[scope_id] = (read_at, generation, version)
        return version

    def forget(self, scope_id: str) -> None:
        """After a commit that changed the active version: no decision caches the old."""
        with self._lock:
            self._active.pop(scope_id, None)

    def _policy(self, scope_id: str) -> Policy | None:
        return self._session.scalar(select(Policy).where(self._column == scope_id))

    def _versions(self, scope_id: str) -> Select[PolicyVersion]:
        return select(PolicyVersion).join(Policy).where(self._column == scope_id)


def _stored(row: PolicyVersion) -> StoredVersion:
    return StoredVersion(row.version, row.document, row.author_id, row.created_at)


class Boundaries:
    """The operator boundary: validated before it is stored, cached per process.

    A broken file is refused and the boundary in force stays.
    """

    def __init__(
        self,
        session_factory: Any,
        configured_file: str,
        changes: ChangeGeneration | None = None,
    ) -> None:
        self._session_factory = session_factory
        self._file = Path(configured_file) if configured_file else DEFAULT_BOUNDARY
        # (read at, generation, text, fingerprint)
        self._cache: tuple[float, int | None, str, str] | None = None
        self._changes = changes or ChangeGeneration(None)  # policy_boundary rows added
        self._lock = threading.Lock()

    def current(self) -> tuple[str, str]:
        """(text, fingerprint) of the boundary in force."""
        generation = self._changes.current()
        cached = self._cache
        if cached is not None and still_fresh(cached[0], cached[1], generation, CACHE_SECONDS):
            return cached[2], cached[3]
        read_at = time.monotonic()
        with self._session_factory() as session:
            row = _newest(session)
        if row is None:
            text = load_boundary(self._file.read_text())
            self.store(text, str(self._file))
            return self.current()
        with self._lock:
            self._cache = (read_at, generation, row.text, row.fingerprint)
        return row.text, row.fingerprint

    def load_file(self, path: str | None = None) -> tuple[bool, str]:
        """Validate a file and put it in force; (changed, message). PolicyError if broken."""
        file = Path(path) if path else self._file
        try:
            text = file.read_text()
        except OSError as exc:
            raise PolicyError(f"cannot read {file}: {exc.strerror}") from exc
        load_boundary(text)
        with self._session_factory() as session:
            row = _newest(session)
        if row is not None and row.fingerprint == fingerprint(text):
            return False, f"{file} is already in force ({row.fingerprint})"
        self.store(text, str(file))
        return True, f"{file} is now in force ({fingerprint(text)})"

    def sync_at_start(self) -> None:
        """Serve-time check of the configured file; a broken one keeps the previous."""
        try:
            changed, message = self.load_file()
            log.info("boundary: %s", message, extra={"changed": changed})
        except PolicyError as exc:
            log.error("boundary file refused, the previous boundary stays in force: %s", exc)

    def forget(self) -> None:
        self._cache = None

    def store(self, text: str, source: str) -> None:
        with self._session_factory() as session:
            session.add(PolicyBoundary(text=text, fingerprint=fingerprint(text), source=source))
            session.commit()
        self._cache = None


def _newest(session: Session) -> PolicyBoundary | None:
    newest = select(func.max(PolicyBoundary.id)).scalar_subquery()
    return session.scalar(select(PolicyBoundary).where(PolicyBoundary.id == newest))
