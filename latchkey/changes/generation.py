"""A number that moves when the database says a kind of row changed.

Several per-process caches (project and domain policy versions, the boundary)
must notice another worker's change. Asking the database on every decision is
what they avoid; asking it every few seconds per project left a query in one
decision of five at 500 requests/s over 100 projects (bench/README.md). A
``ChangeGeneration`` wraps one change signal — ``RevocationListener`` on a
PostgreSQL channel, ``SqliteChanges`` (any commit) on SQLite — and counts its
"yes" answers, so that any number of caches can each compare the generation
they loaded at with the current one: a signal's "yes" is consumed by whoever
asks first, a generation is read by all.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class ChangeSignal(Protocol):
    def changed(self) -> bool: ...


class ChangeGeneration:
    def __init__(self, signal: ChangeSignal | None) -> None:
        self._signal = signal
        self._value = 0
        self._lock = threading.Lock()

    def current(self) -> int | None:
        """The generation now; None without a signal (callers fall back to a short
        time-to-live). Asked before each cached read, so a cache read after a change
        was signalled never serves what was loaded before it."""
        if self._signal is None:
            return None
        with self._lock:
            if self._signal.changed():
                self._value += 1
            return self._value


# With a signal, a cached entry is still re-read this often: a safety net should
# notifications stop arriving unnoticed (a transaction-mode pooler, docs/operators.md).
KEPT_SECONDS = 60.0


def still_fresh(
    loaded_at: float, loaded_generation: int | None, generation: int | None, ttl: float
) -> bool:
    """Whether an entry loaded at ``loaded_at`` (monotonic), in ``loaded_generation``,
    may be served now: nothing signalled since (and younger than KEPT_SECONDS), or,
    without a signal, younger than ``ttl``."""
    age = time.monotonic() - loaded_at
    if generation is None:
        return age < ttl
    return loaded_generation == generation and age < KEPT_SECONDS
