"""The token signing key ring: staged -> primary -> secondary -> retired.

* staged: published in the JWKS before it signs anything, so relying services
  already have it when it becomes primary;
* primary: signs every new token (exactly one);
* secondary: a former primary, still published and still verifying, until
  every token it signed has expired (``token_ttl`` after its demotion);
* retired: never verifies again; its private half is destroyed.

Private keys live in the configured secret store (``SystemSecrets``, as
``signing-key-<kid>``); the database keeps the public key and the state only.
Rotation writes the new private key to the store first, then the rows, in one
transaction: with the store down it fails and nothing is written.

Each process caches the ring and reloads it every ``refresh_seconds`` or when it
meets an unknown ``kid`` (rate-limited). Private keys are read from the store
once per kid (the primary's, and the staged one's ahead of its promotion) and
held in memory: with the store down, issuance and validation go on, and a
worker that cannot read a newly promoted key keeps signing with the one it has
(still published, so still verifying everywhere).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from joserfc.jwk import ECKey, KeyParameters, KeySet
from sqlalchemy import select
from sqlalchemy.orm import Session

from latchkey.db import DbSession, new_id, utcnow
from latchkey.errors import Conflict, LatchkeyError, NotFound, ServiceUnavailable
from latchkey.secrets.backends.master_key import KeyProtector
from latchkey.secrets.system import SystemSecretMissing, SystemSecrets
from latchkey.tokens.models import SigningKey
from latchkey.wire.jws import ALGORITHM

log = logging.getLogger(__name__)

STAGED, PRIMARY, SECONDARY, RETIRED = "staged", "primary", "secondary", "retired"
PUBLISHED_STATES = (STAGED, PRIMARY, SECONDARY)
UNKNOWN_KID_RELOAD_INTERVAL = 1.0  # seconds; bounds reloads forced by forged kids
# A primary whose private key could not be read (the store was down when the ring
# loaded) is tried again this often, not only at the next refresh (issue 15).
MISSING_KEY_RETRY_SECONDS = 1.0


class SigningKeyUnavailable(ServiceUnavailable):
    """There is a primary key, but this node cannot read its private half (yet)."""

    code = "signing_key_unavailable"
    title = "The signing key is unavailable"
    retry_after = 5


@dataclass(frozen=True)
class _Snapshot:
    verify_keys: KeySet
    jwks: dict[str, Any]
    signing_key: ECKey | None
    loaded_at: float
    kids: frozenset[str] = frozenset()  # of verify_keys: asked on every validation
    primary_kid: str | None = None  # the primary row's, whether or not its key was read
    primary_error: LatchkeyError | None = None  # why its private key could not be read

    @property
    def missing_private(self) -> bool:
        """A primary exists but this process could not read its private key."""
        return self.signing_key is None and self.primary_kid is not None


class KeyRing:
    legacy_label = "signing keys"

    def __init__(
        self,
        session_factory: Callable[[], Session],
        system: SystemSecrets,
        token_ttl: timedelta,
        refresh_seconds: int,
    ) -> None:
        # Its own short sessions for reloads: a reload must never end a request's
        # transaction. Changes go through the secret registry's session (the one the
        # local store writes to), so a key and its rows commit together.
        self._session_factory = session_factory
        self._system = system
        self._token_ttl = token_ttl
        self._refresh_seconds = refresh_seconds
        self._snapshot: _Snapshot | None = None
        self._private: dict[str, ECKey] = {}  # kid -> private key, read once from the store
        self._unread: set[str] = set()  # kids whose failed read was logged
        self._lock = threading.Lock()
        self._last_forced_reload = 0.0

    # -- administration (CLI) -------------------------------------------------

    def ensure_keys(self) -> bool:
        """Create a primary and a staged key if there is no primary. True if created."""
        session = self._system.session
        try:
            if session.scalar(select(SigningKey).where(SigningKey.state == PRIMARY)):
                return False
            session.add(self._new_key(PRIMARY, promoted_at=utcnow()))
            if not session.scalar(select(SigningKey).where(SigningKey.state == STAGED)):
                session.add(self._new_key(STAGED))
            session.commit()
        except BaseException:
            session.rollback()
            raise
        self.reload()
        return True

    def rotate(self) -> dict[str, list[str]]:
        """Promote staged to primary, demote primary, retire expired secondaries.

        The new staged key reaches the store before any row changes; if the store
        refuses, nothing is written (``SecretStoreUnavailable``).
        """
        session = self._system.session
        try:
            changes = self._rotate(session)
            session.commit()
        except BaseException:
            session.rollback()
            raise
        self._purge_retired()
        self.reload()
        return changes

    def _rotate(self, session: DbSession) -> dict[str, list[str]]:
        now = utcnow()
        keys = list(session.scalars(select(SigningKey).where(SigningKey.state != RETIRED)))
        changes: dict[str, list[str]] = {"promoted": [], "demoted": [], "retired": [], "staged": []}
        for key in keys:
            if key.state == SECONDARY and key.demoted_at and key.demoted_at + self._token_ttl < now:
                self._retire(key, now)
                changes["retired"].append(key.kid)
        for key in keys:
            if key.state == PRIMARY:
                key.state, key.demoted_at = SECONDARY, now
                changes["demoted"].append(key.kid)
        staged = next((k for k in keys if k.state == STAGED), None)
        if staged is None:
            staged = self._new_key(STAGED)
            session.add(staged)
        staged.state, staged.promoted_at = PRIMARY, now
        changes["promoted"].append(staged.kid)
        fresh = self._new_key(STAGED)
        session.add(fresh)
        changes["staged"].append(fresh.kid)
        return changes

    def retire(self, kid: str) -> None:
        """Retire one key now: tokens it signed stop validating at once.

        Works with the store down (a compromised key must go): the private half is
        removed from the store now if it can be, else by the next rotate or retire.
        """
        with self._session_factory() as session:
            key = session.get(SigningKey, kid)
            if key is None or key.state == RETIRED:
                raise NotFound(f"no live signing key {kid!r}", code="signing_key_not_found")
            if key.state == PRIMARY:
                raise Conflict("rotate before retiring the primary key", code="key_in_use")
            self._retire(key, utcnow())
            session.commit()
        self._purge_retired()
        self.reload()

    def _purge_retired(self) -> None:
        """Delete the private halves of retired (or vanished) keys from the store."""
        session = self._system.session
        live = set(session.scalars(select(SigningKey.kid).where(SigningKey.state != RETIRED)))
        for entry in self._system.entries(PRIVATE_KEY_PREFIX):
            kid = entry.name.removeprefix(PRIVATE_KEY_PREFIX)
            if kid in live:
                continue
            try:
                self._system.delete(entry.name)
                session.commit()
            except LatchkeyError as exc:
                session.rollback()
                log.warning(
                    "the private key of a retired signing key stays in the secret store "
                    "until the next rotate or retire",
                    extra={"kid": kid, "error": exc.code},
                )
                return

    def describe(self) -> list[dict[str, Any]]:
        with self._session_factory() as session:
            keys = session.scalars(select(SigningKey).order_by(SigningKey.created_at))
            return [
                {
                    "kid": k.kid,
                    "state": k.state,
                    "algorithm": k.algorithm,
                    "created_at": k.created_at.isoformat(),
                }
                for k in keys
            ]

    # -- use (every request) --------------------------------------------------

    def signing_key(self) -> ECKey:
        snapshot = self._current()
        key = snapshot.signing_key
        if key is None:
            error = snapshot.primary_error
            if isinstance(error, SystemSecretMissing):
                # Not in the store's registry: sealed by the master key file (a database
                # from before the secret stores) or written to another store.
                raise ServiceUnavailable(
                    f"{error.detail}; if the database comes from a release that sealed keys"
                    " with the master key file, run `latchkey secrets migrate-internal`",
                    code="no_signing_key",
                )
            if snapshot.primary_kid is not None:
                # Not a missing bootstrap: the store refused when the ring was read, and
                # the key is tried again every MISSING_KEY_RETRY_SECONDS (issue 15).
                raise SigningKeyUnavailable(
                    "the primary signing key cannot be read from the secret store yet;"
                    " check the secret store, Latchkey retries by itself"
                )
            raise ServiceUnavailable(
                "the database holds no signing key; run `latchkey bootstrap`",
                code="no_signing_key",
            )
        return key

    def readiness(self) -> dict[str, Any]:
        """The /readyz check: can this process sign tokens now?"""
        snapshot = self._current()
        if snapshot.signing_key is not None:
            return {"status": "ok", "kid": snapshot.signing_key.kid}
        if isinstance(snapshot.primary_error, SystemSecretMissing) or not snapshot.missing_private:
            return {"status": "unavailable", "error": "no_signing_key"}
        return {"status": "unavailable", "error": "signing_key_unavailable"}

    def verify_keys(self, kid: str | None = None) -> KeySet:
        snapshot = self._current()
        if kid is not None and kid not in snapshot.kids:
            now = time.monotonic()
            if now - self._last_forced_reload >= UNKNOWN_KID_RELOAD_INTERVAL:
                self._last_forced_reload = now
                snapshot = self.reload()
        return snapshot.verify_keys

    def jwks(self) -> dict[str, Any]:
        return self._current().jwks

    def publishes(self, kid: str) -> bool:
        """Whether ``kid`` is still a verifying key (not retired), as last loaded."""
        return kid in self._current().kids

    def reload(self) -> _Snapshot:
        with self._session_factory() as session:
            keys = list(
                session.scalars(select(SigningKey).where(SigningKey.state.in_(PUBLISHED_STATES)))
            )
        public = [ECKey.import_key(k.public_jwk) for k in keys]
        published = {k.kid for k in keys}
        self._private = {kid: key for kid, key in self._private.items() if kid in published}
        errors: dict[str, LatchkeyError] = {}
        for k in keys:
            if k.state in (PRIMARY, STAGED) and k.kid not in self._private:
                error = self._load_private(k.kid)
                if error is not None:
                    errors[k.kid] = error
        primary = next((k.kid for k in keys if k.state == PRIMARY), None)
        signing = self._private.get(primary) if primary else None
        previous = self._snapshot.signing_key if self._snapshot else None
        if signing is None and previous is not None and previous.kid in published:
            signing = previous  # another worker rotated while the store is down
        snapshot = _Snapshot(
            verify_keys=KeySet(public),  # type: ignore[arg-type]
            jwks={"keys": [dict(k.public_jwk) for k in keys]},
            signing_key=signing,
            loaded_at=time.monotonic(),
            kids=frozenset(k.kid for k in keys),
            primary_kid=primary,
            primary_error=errors.get(primary) if primary else None,
        )
        self._snapshot = snapshot
        return snapshot

    def _load_private(self, kid: str) -> LatchkeyError | None:
        try:
            pem = self._system.get(PRIVATE_KEY_PREFIX + kid)
        except LatchkeyError as exc:
            # Kept going with what is in memory; the next reload tries again. Logged
            # once per key until it is read, not at every retry (issue 15).
            if kid not in self._unread:
                self._unread.add(kid)
                log.warning(
                    "cannot read a signing key from the secret store; retrying",
                    extra={"kid": kid, "error": exc.code},
                )
            return exc
        self._private[kid] = ECKey.import_key(pem, parameters=_key_parameters(kid))
        if kid in self._unread:
            self._unread.discard(kid)
            log.info("read the signing key from the secret store", extra={"kid": kid})
        return None

    def _current(self) -> _Snapshot:
        snapshot = self._snapshot
        if snapshot is None or self._stale(snapshot):
            with self._lock:
                snapshot = self._snapshot
                if snapshot is None or self._stale(snapshot):  # not by the lock's last holder
                    snapshot = self.reload()
        return snapshot

    def _stale(self, snapshot: _Snapshot) -> bool:
        age = time.monotonic() - snapshot.loaded_at
        if snapshot.missing_private:
            return age > MISSING_KEY_RETRY_SECONDS
        return age > self._refresh_seconds

    # -- helpers ----------------------------------------------------------------

    def _new_key(self, state: str, promoted_at: datetime | None = None) -> SigningKey:
        """A new key pair; the private half goes to the store (first), the row is returned."""
        kid = new_id()
        key = ECKey.generate_key("P-256", parameters=_key_parameters(kid), private=True)
        self._system.put(PRIVATE_KEY_PREFIX + kid, key.as_pem(private=True))
        return SigningKey(
            kid=kid,
            state=state,
            algorithm=ALGORITHM,
            public_jwk=key.as_dict(private=False),
            sealed_private_key=None,
            promoted_at=promoted_at,
        )

    @staticmethod
    def _retire(key: SigningKey, now: datetime) -> None:
        key.state, key.retired_at = RETIRED, now
        key.sealed_private_key = None  # the private half is no longer needed by anyone

    # -- the Foundation's sealed keys ----------------------------------------------

    def legacy_count(self) -> int:
        session = self._system.session
        rows = session.scalars(
            select(SigningKey.kid).where(
                SigningKey.sealed_private_key.is_not(None),
                SigningKey.sealed_private_key != b"",
            )
        )
        return len(list(rows))

    def migrate_legacy(self, legacy: KeyProtector) -> int:
        """Move private keys sealed by the master-key file into the store, one commit each."""
        session = self._system.session
        moved = 0
        query = select(SigningKey).where(
            SigningKey.sealed_private_key.is_not(None), SigningKey.sealed_private_key != b""
        )
        for key in list(session.scalars(query)):
            try:
                if key.state != RETIRED and not self._system.has(PRIVATE_KEY_PREFIX + key.kid):
                    pem = legacy.unseal(key.sealed_private_key or b"", _context(key.kid))
                    self._system.put(PRIVATE_KEY_PREFIX + key.kid, pem)
                key.sealed_private_key = None
                session.commit()
            except BaseException:
                session.rollback()
                raise
            moved += 1
        self.reload()
        return moved


def _key_parameters(kid: str) -> KeyParameters:
    return {"kid": kid, "alg": ALGORITHM, "use": "sig"}


PRIVATE_KEY_PREFIX = "signing-key-"


def _context(kid: str) -> str:
    """The associated data the Foundation sealed a private key with."""
    return f"latchkey:signing-key:{kid}"
