"""Stored policy: tenant document versions per project, and the operator boundary."""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, String, Text, UniqueConstraint, func, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from latchkey.changes import ChangeGeneration, still_fresh
from latchkey.db import Base, UTCDateTime, utcnow
from latchkey.policy.engine import DEFAULT_BOUNDARY, PolicyError, fingerprint, load_boundary

log = logging.getLogger(__name__)
CACHE_SECONDS = 2.0


class PolicyVersion(Base):
    __tablename__ = "policy_version"
    __table_args__ = (UniqueConstraint("project_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    project_id: Mapped[str] = mapped_column(
        ForeignKey("project.id", ondelete="CASCADE"), index=True
    )
    version: Mapped[int] = mapped_column(Integer)
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    author_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ProjectPolicy(Base):
    """Which version is active: a project without a row has no tenant policy."""

    __tablename__ = "project_policy"

    project_id: Mapped[str] = mapped_column(
        ForeignKey("project.id", ondelete="CASCADE"), primary_key=True
    )
    active_version: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class DomainPolicyVersion(Base):
    """A domain's rule document: its rules apply in every project of the domain."""

    __tablename__ = "domain_policy_version"
    __table_args__ = (UniqueConstraint("domain_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    domain_id: Mapped[str] = mapped_column(ForeignKey("domain.id", ondelete="CASCADE"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    author_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class DomainPolicy(Base):
    """Which domain version is active: a domain without a row has no domain rules."""

    __tablename__ = "domain_policy"

    domain_id: Mapped[str] = mapped_column(
        ForeignKey("domain.id", ondelete="CASCADE"), primary_key=True
    )
    active_version: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PolicyBoundary(Base):
    """Boundary texts as loaded; the newest row is in force in every process."""

    __tablename__ = "policy_boundary"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    text: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(String(1024))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


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
