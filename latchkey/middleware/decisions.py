"""Decisions from ``POST /v1/authorize``, cached for a few seconds per token."""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from latchkey.middleware._http import LatchkeyHttp, LatchkeyUnreachable

log = logging.getLogger("latchkey.middleware")

AUTHORIZE_PATH = "/v1/authorize"
BATCH_PATH = "/v1/authorize/batch"
BATCH_LIMIT = 1000  # the server's maximum checks per batch

Check = tuple[str, Mapping[str, Any]]  # (action, resource)


class DecisionCache:
    """``(jti, action, resource JSON) -> allowed`` for ``ttl`` seconds, at most ``size``."""

    def __init__(self, ttl: float, size: int, clock: Callable[[], float]) -> None:
        self._ttl = ttl
        self._size = size
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[str, str, str], tuple[float, bool]] = OrderedDict()

    @staticmethod
    def key(jti: str, action: str, resource: Mapping[str, Any]) -> tuple[str, str, str]:
        return (jti, action, json.dumps(resource, sort_keys=True, separators=(",", ":")))

    def get(self, key: tuple[str, str, str]) -> bool | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if self._clock() >= entry[0]:
                del self._entries[key]
                return None
            return entry[1]

    def put(self, key: tuple[str, str, str], allowed: bool) -> None:
        if self._ttl <= 0:
            return
        with self._lock:
            self._entries[key] = (self._clock() + self._ttl, allowed)
            self._entries.move_to_end(key)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


class DecisionClient:
    def __init__(
        self,
        http: LatchkeyHttp,
        token_provider: Callable[[], str],
        cache: DecisionCache,
    ) -> None:
        self._http = http
        self._token_provider = token_provider
        self.cache = cache

    def decide(self, token: str, jti: str, action: str, resource: Mapping[str, Any]) -> bool:
        key = DecisionCache.key(jti, action, resource)
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        body = {"action": action, "resource": dict(resource), "subject_token": token}
        try:
            answer = self._http.post(AUTHORIZE_PATH, body, self._token_provider())
            allowed = answer["allowed"] is True
        except (LatchkeyUnreachable, KeyError, TypeError) as exc:
            log.warning("latchkey middleware: no decision for %s (denied): %s", action, exc)
            return False
        self.cache.put(key, allowed)
        return allowed

    def decide_many(self, token: str, jti: str, checks: Sequence[Check]) -> list[bool]:
        keys = [DecisionCache.key(jti, action, resource) for action, resource in checks]
        results: list[bool | None] = [self.cache.get(key) for key in keys]
        missing = [i for i, result in enumerate(results) if result is None]
        for start in range(0, len(missing), BATCH_LIMIT):
            chunk = missing[start : start + BATCH_LIMIT]
            body = {
                "checks": [{"action": checks[i][0], "resource": dict(checks[i][1])} for i in chunk],
                "subject_token": token,
            }
            try:
                answer = self._http.post(BATCH_PATH, body, self._token_provider())
                decided = [r["allowed"] is True for r in answer["results"]]
                if len(decided) != len(chunk):
                    raise ValueError(f"{len(decided)} results for {len(chunk)} checks")
            except (LatchkeyUnreachable, KeyError, TypeError, ValueError) as exc:
                log.warning("latchkey middleware: no batch decision (denied): %s", exc)
                continue  # these stay None: denied, not cached
            for i, allowed in zip(chunk, decided, strict=True):
                results[i] = allowed
                self.cache.put(keys[i], allowed)
        return [result is True for result in results]
