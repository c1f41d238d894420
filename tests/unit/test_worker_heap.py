"""`latchkey serve` hooks: a worker's start-up objects are frozen, full collections
run between requests only (latchkey/frontdoors/cli/main.py)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from latchkey.frontdoors.cli import main as cli


@pytest.fixture
def restored_collector() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_a_worker_freezes_its_start_up_heap(restored_collector: None) -> None:
    cli._settle_worker_heap(None)
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold()[2] >= 1 << 30  # no full collection in the middle of a request


def test_full_collections_run_between_requests_when_due(
    restored_collector: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli._settle_worker_heap(None)
    runs: list[int] = []
    monkeypatch.setattr(gc, "collect", lambda *a: runs.append(1) or 0)
    cli._collect_between_requests(None, None, None, None)
    assert runs == []  # not due yet
    cli._next_full_collection[0] = 0.0
    cli._collect_between_requests(None, None, None, None)
    cli._collect_between_requests(None, None, None, None)
    assert runs == [1]  # once, then not before FULL_COLLECTION_SECONDS
