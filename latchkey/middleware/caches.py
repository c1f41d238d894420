"""What the middleware keeps: the JWKS and the revocation feed from Latchkey,
and the tokens it has verified.

The first two are refreshed lazily, by the requests that need them, under a
lock, and never more often than their interval (``clock`` is monotonic seconds).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from joserfc.errors import InvalidKeyTypeError, JoseError
from joserfc.jwk import Key, import_key

from latchkey.middleware._http import LatchkeyHttp, LatchkeyUnreachable
from latchkey.wire.claims import Identity
from latchkey.wire.jws import ALGORITHM, TokenInvalid
from latchkey.wire.revocation import USER_PROJECT, user_project_subjects

log = logging.getLogger("latchkey.middleware")

JWKS_PATH = "/.well-known/jwks.json"
REVOCATIONS_PATH = "/v1/revocations"
PAGE_SIZE = 1000
MAX_PAGES = 50  # one poll reads at most 50,000 events; the rest on the next poll
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class KeyCache:
    """The JWKS as ``{kid: key}``, refetched when older than ``max_age`` or on an
    unknown ``kid``, never more often than once per ``min_interval`` (a flood of
    made-up kids cannot turn into a flood of fetches)."""

    def __init__(
        self,
        http: LatchkeyHttp,
        *,
        min_interval: float,
        max_age: float,
        clock: Callable[[], float],
    ) -> None:
        self._http = http
        self._min_interval = min_interval
        self._max_age = max_age
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: dict[str, Key] | None = None
        self._jwks: dict[str, dict[str, Any]] = {}  # kid -> the JWK its key was imported from
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self.fetches = 0  # attempts, for tests and metrics

    def key_for_kid(self, kid: str) -> Key:
        """The key to verify a token of ``kid``; TokenInvalid when none can be had.

        The same object for as long as the JWKS publishes the same key under that
        ``kid`` (refetches included): verified-token cache entries compare it."""
        keys = self._keys
        now = self._clock()
        stale = self._fetched_at is None or now - self._fetched_at > self._max_age
        if keys is None or stale or kid not in keys:
            keys = self._refresh(now)
        key = keys.get(kid) if keys is not None else None
        if key is None:
            raise TokenInvalid()
        return key

    def _refresh(self, now: float) -> dict[str, Key] | None:
        with self._lock:
            if self._attempted_at is not None and now - self._attempted_at < self._min_interval:
                return self._keys
            self._attempted_at = now
            self.fetches += 1
            try:
                body = self._http.get(JWKS_PATH)
                jwks = _verifying_jwks(body)
                # An unchanged JWK keeps its key object: cached tokens stay valid.
                held = self._keys or {}
                keys = {
                    kid: held[kid] if kid in held and self._jwks.get(kid) == jwk else key
                    for kid, (jwk, key) in jwks.items()
                }
            except (LatchkeyUnreachable, JoseError, ValueError, TypeError, KeyError) as exc:
                # Keep the keys we had: a Latchkey outage longer than the revocation
                # staleness limit fails closed anyway (see RevocationCache).
                log.warning("latchkey middleware: cannot fetch the JWKS: %s", exc)
                return self._keys
            self._keys, self._fetched_at = keys, now
            self._jwks = {kid: jwk for kid, (jwk, _) in jwks.items()}
            return keys


def _verifying_jwks(body: Any) -> dict[str, tuple[dict[str, Any], Key]]:
    """``kid -> (JWK, key)`` for the keys that may verify ES256 tokens: the first
    of each ``kid`` not marked for another ``use`` or ``alg`` (the keys joserfc's
    ``KeySet.get_by_kid`` would pick for them). A key that does not import fails
    the whole set (the keys already held stay in use)."""
    found: dict[str, tuple[dict[str, Any], Key]] = {}
    for jwk in body["keys"]:
        kid = jwk.get("kid")
        if not isinstance(kid, str) or kid in found:
            continue
        if jwk.get("use") not in (None, "", "sig") or jwk.get("alg") not in (None, "", ALGORITHM):
            continue
        try:
            found[kid] = (dict(jwk), import_key(jwk))
        except InvalidKeyTypeError:  # a key type joserfc does not know: ignored (RFC 7517)
            continue
    return found


class VerifiedToken(NamedTuple):
    identity: Identity
    kid: str
    key: Key  # the key that verified it, as KeyCache handed it out
    expires: int | float  # the token's exp


class VerifiedTokens:
    """``token -> VerifiedToken`` for tokens that passed every check depending on
    the token alone (signature, claims, lifetime), keyed by the whole token
    string: only a token that was verified can be found. At most ``size``
    entries, the least recently used evicted first; ``size`` 0 keeps none.
    Whether an entry may still be used (expiry, key) is the caller's call.

    A token is admitted at its second verification: one seen once (a stream of
    distinct tokens) costs a string in a bounded set, not an entry of claims
    and identity objects, whose numbers make Python's garbage collector run
    more often (cold verification: ~70 % of raw ES256 with entries made at
    first sight, ~80 % without; bench/README.md)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, VerifiedToken] = OrderedDict()
        # Oldest first. An OrderedDict: dropping a dict's oldest key scans past every
        # slot deleted before it (~4 us a token for a stream of distinct tokens).
        self._seen_once: OrderedDict[str, None] = OrderedDict()

    def admit(self, token: str) -> bool:
        """True when ``token`` was verified before (then cache it), else remember it."""
        if self._size <= 0:
            return False
        with self._lock:
            if self._seen_once.pop(token, 0) is None:
                return True
            self._seen_once[token] = None
            if len(self._seen_once) > self._size:
                self._seen_once.popitem(last=False)
            return False

    def get(self, token: str) -> VerifiedToken | None:
        with self._lock:
            entry = self._entries.get(token)
            if entry is not None:
                self._entries.move_to_end(token)
            return entry

    def put(self, token: str, entry: VerifiedToken) -> None:
        if self._size <= 0:
            return
        with self._lock:
            self._entries[token] = entry
            self._entries.move_to_end(token)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)

    def discard(self, token: str) -> None:
        with self._lock:
            self._entries.pop(token, None)
            self._seen_once.pop(token, None)

    def __len__(self) -> int:
        return len(self._entries)


class RevocationCache:
    """The revocation events still able to match a live token.

    An event is kept until ``issued_before + max_token_lifetime``: every token
    it matches was issued before it, and the middleware refuses tokens living
    longer than that, so none it matches can still be alive afterwards.
    """

    def __init__(
        self,
        http: LatchkeyHttp,
        token_provider: Callable[[], str],
        *,
        poll_interval: float,
        max_staleness: float,
        max_token_lifetime: float,
        clock: Callable[[], float],
        wall_clock: Callable[[], float],
        on_new_events: Callable[[], None] = lambda: None,
    ) -> None:
        self._http = http
        self._token_provider = token_provider
        self._poll_interval = poll_interval
        self._max_staleness = max_staleness
        self._max_lifetime_us = int(max_token_lifetime * 1_000_000)
        self._clock = clock
        self._wall_clock = wall_clock
        self._on_new_events = on_new_events
        self._lock = threading.Lock()
        self._cursor = 0
        # (kind, subject) -> the latest issued_before, in microseconds since the epoch
        self._events: dict[tuple[str, str], int] = {}
        self._user_projects = 0  # how many of them are user_project events
        self._polled_at: float | None = None  # last successful poll
        self._attempted_at: float | None = None
        self.polls = 0  # attempts, for tests and metrics

    @property
    def cursor(self) -> int:
        return self._cursor

    def ensure_fresh(self) -> bool:
        """Poll when due; False when the feed is too stale to trust (fail closed)."""
        now = self._clock()
        if self._attempted_at is None or now - self._attempted_at >= self._poll_interval:
            self.poll()
            now = self._clock()
        polled = self._polled_at
        return polled is not None and now - polled <= self._max_staleness

    def poll(self, force: bool = False) -> None:
        with self._lock:
            now = self._clock()
            if (
                not force
                and self._attempted_at is not None
                and now - self._attempted_at < self._poll_interval
            ):
                return  # another request polled while this one waited for the lock
            self._attempted_at = now
            self.polls += 1
            try:
                added = self._read_feed()
            except LatchkeyUnreachable as exc:
                log.warning("latchkey middleware: cannot read the revocation feed: %s", exc)
                return
            self._polled_at = now
            self._prune()
        if added:
            self._on_new_events()

    def _read_feed(self) -> int:
        token = self._token_provider()
        added = 0
        for _ in range(MAX_PAGES):
            body = self._http.get(REVOCATIONS_PATH, token, since=self._cursor, limit=PAGE_SIZE)
            try:
                events = body["revocations"]
                cursor = int(body["cursor"])
                for event in events:
                    key = (str(event["kind"]), str(event["subject"]))
                    before = _microseconds(str(event["issued_before"]))
                    if key[0] == USER_PROJECT and key not in self._events:
                        self._user_projects += 1
                    self._events[key] = max(before, self._events.get(key, before))
                    added += 1
            except (KeyError, TypeError, ValueError) as exc:
                raise LatchkeyUnreachable(f"unexpected revocation feed: {exc}") from exc
            self._cursor = max(self._cursor, cursor)
            if len(events) < PAGE_SIZE:
                break
        return added

    def _prune(self) -> None:
        now_us = int(self._wall_clock() * 1_000_000)
        for key in [
            k for k, before in self._events.items() if before + self._max_lifetime_us < now_us
        ]:
            del self._events[key]
            if key[0] == USER_PROJECT:
                self._user_projects -= 1

    def is_revoked(self, claims: Mapping[str, Any]) -> bool:
        """The server's rule (``RevocationList.is_revoked``), on the events seen so far."""
        issued_ms = claims.get("iat_ms")
        issued_us = (
            issued_ms * 1000 if isinstance(issued_ms, int) else int(claims["iat"]) * 1_000_000
        )
        events = self._events
        if ("token", claims.get("jti")) in events:
            return True
        subjects = [("user", claims.get("sub"))]
        project_id = (claims.get("project") or {}).get("id")
        if project_id:
            subjects.append(("project", project_id))
        subjects.append(("all", "*"))  # a restore-fence: everything issued before it
        trust = claims.get("trust") or {}
        if trust:  # an OS-TRUST token: gone with its trust, its trustor or its trustee
            if ("trust", trust.get("id")) in events:
                return True
            subjects += [
                ("user", trust.get("trustor_user_id")),
                ("user", trust.get("trustee_user_id")),
            ]
        if self._user_projects:  # a user's tokens on one project (a grant removed)
            subjects += [(USER_PROJECT, s) for s in user_project_subjects(claims)]
        for key in subjects:
            before = events.get(key)  # type: ignore[arg-type]
            if before is not None and before >= issued_us:
                return True
        # As on the server: a deleted credential or secret revokes all of its tokens
        # (none can be issued after the event).
        credential = claims.get("application_credential") or {}
        for kind, field in (
            ("application_credential", "id"),
            ("application_credential_secret", "secret_id"),
        ):
            if credential.get(field) and (kind, credential[field]) in events:
                return True
        return False

    def __len__(self) -> int:
        return len(self._events)


def _microseconds(iso: str) -> int:
    moment = datetime.fromisoformat(iso)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - EPOCH) // timedelta(microseconds=1)
