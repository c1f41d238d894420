"""Stored policy: tenant document versions per project, and the operator boundary."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from latchkey.changes.generation import ChangeGeneration, still_fresh
from latchkey.policy.engine import DEFAULT_BOUNDARY, PolicyError, fingerprint, load_boundary
from latchkey.policy.models import (
    PolicyBoundary,
)

log = logging.getLogger(__name__)
CACHE_SECONDS = 2.0


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
