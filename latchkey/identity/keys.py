"""The token signing key ring: staged -> primary -> secondary -> retired.

* staged: published in the JWKS before it signs anything, so relying services
  already have it when it becomes primary;
* primary: signs every new token (exactly one);
* secondary: a former primary, still published and still verifying, until
  every token it signed has expired (``token_ttl`` after its demotion);
* retired: never verifies again; its private half is destroyed.

Private keys are sealed by a ``KeyProtector`` (the master key for now), never
stored in clear text. Each process caches the ring and reloads it every
``refresh_seconds`` or when it meets an unknown ``kid`` (rate-limited).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from joserfc.jwk import ECKey, KeyParameters, KeySet
from sqlalchemy import JSON, LargeBinary, String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from latchkey.db import Base, UTCDateTime, new_id, utcnow
from latchkey.errors import Conflict, NotFound, ServiceUnavailable
from latchkey.secrets.master_key import KeyProtector

ALGORITHM = "ES256"
STAGED, PRIMARY, SECONDARY, RETIRED = "staged", "primary", "secondary", "retired"
PUBLISHED_STATES = (STAGED, PRIMARY, SECONDARY)
UNKNOWN_KID_RELOAD_INTERVAL = 1.0  # seconds; bounds reloads forced by forged kids


class SigningKey(Base):
    __tablename__ = "signing_key"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True, default=new_id)
    state: Mapped[str] = mapped_column(String(16), index=True)
    algorithm: Mapped[str] = mapped_column(String(16), default=ALGORITHM)
    public_jwk: Mapped[dict[str, Any]] = mapped_column(JSON)
    sealed_private_key: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    promoted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    demoted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


@dataclass(frozen=True)
class _Snapshot:
    verify_keys: KeySet
    jwks: dict[str, Any]
    signing_key: ECKey | None
    loaded_at: float


class KeyRing:
    def __init__(
        self,
        session_factory: Callable[[], Session],
        protector: KeyProtector,
        token_ttl: timedelta,
        refresh_seconds: int,
    ) -> None:
        # Its own short sessions: a reload must never end a request's transaction.
        self._session_factory = session_factory
        self._protector = protector
        self._token_ttl = token_ttl
        self._refresh_seconds = refresh_seconds
        self._snapshot: _Snapshot | None = None
        self._lock = threading.Lock()
        self._last_forced_reload = 0.0

    # -- administration (CLI) -------------------------------------------------

    def ensure_keys(self) -> bool:
        """Create a primary and a staged key if there is no primary. True if created."""
        with self._session_factory() as session:
            if session.scalar(select(SigningKey).where(SigningKey.state == PRIMARY)):
                return False
            session.add(self._new_key(PRIMARY, promoted_at=utcnow()))
            if not session.scalar(select(SigningKey).where(SigningKey.state == STAGED)):
                session.add(self._new_key(STAGED))
            session.commit()
        self.reload()
        return True

    def rotate(self) -> dict[str, list[str]]:
        """Promote staged to primary, demote primary, retire expired secondaries."""
        with self._session_factory() as session:
            changes = self._rotate(session)
            session.commit()
        self.reload()
        return changes

    def _rotate(self, session: Session) -> dict[str, list[str]]:
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
        """Retire one key now: tokens it signed stop validating at once."""
        with self._session_factory() as session:
            key = session.get(SigningKey, kid)
            if key is None or key.state == RETIRED:
                raise NotFound(f"no live signing key {kid!r}", code="signing_key_not_found")
            if key.state == PRIMARY:
                raise Conflict("rotate before retiring the primary key", code="key_in_use")
            self._retire(key, utcnow())
            session.commit()
        self.reload()

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
        key = self._current().signing_key
        if key is None:
            raise ServiceUnavailable(
                "no signing key; run `latchkey bootstrap`", code="no_signing_key"
            )
        return key

    def verify_keys(self, kid: str | None = None) -> KeySet:
        snapshot = self._current()
        if kid is not None and not _has_kid(snapshot.verify_keys, kid):
            now = time.monotonic()
            if now - self._last_forced_reload >= UNKNOWN_KID_RELOAD_INTERVAL:
                self._last_forced_reload = now
                snapshot = self.reload()
        return snapshot.verify_keys

    def jwks(self) -> dict[str, Any]:
        return self._current().jwks

    def reload(self) -> _Snapshot:
        with self._session_factory() as session:
            keys = list(
                session.scalars(select(SigningKey).where(SigningKey.state.in_(PUBLISHED_STATES)))
            )
        public = [ECKey.import_key(k.public_jwk) for k in keys]
        signing: ECKey | None = None
        for k in keys:
            if k.state == PRIMARY:
                pem = self._protector.unseal(k.sealed_private_key, _context(k.kid))
                signing = ECKey.import_key(pem, parameters=_key_parameters(k.kid))
        snapshot = _Snapshot(
            verify_keys=KeySet(public),  # type: ignore[arg-type]
            jwks={"keys": [dict(k.public_jwk) for k in keys]},
            signing_key=signing,
            loaded_at=time.monotonic(),
        )
        self._snapshot = snapshot
        return snapshot

    def _current(self) -> _Snapshot:
        snapshot = self._snapshot
        if snapshot is None or time.monotonic() - snapshot.loaded_at > self._refresh_seconds:
            with self._lock:
                snapshot = self.reload()
        return snapshot

    # -- helpers ----------------------------------------------------------------

    def _new_key(self, state: str, promoted_at: datetime | None = None) -> SigningKey:
        kid = new_id()
        key = ECKey.generate_key("P-256", parameters=_key_parameters(kid), private=True)
        return SigningKey(
            kid=kid,
            state=state,
            algorithm=ALGORITHM,
            public_jwk=key.as_dict(private=False),
            sealed_private_key=self._protector.seal(key.as_pem(private=True), _context(kid)),
            promoted_at=promoted_at,
        )

    @staticmethod
    def _retire(key: SigningKey, now: datetime) -> None:
        key.state, key.retired_at = RETIRED, now
        key.sealed_private_key = b""  # the private half is no longer needed by anyone


def _key_parameters(kid: str) -> KeyParameters:
    return {"kid": kid, "alg": ALGORITHM, "use": "sig"}


def _context(kid: str) -> str:
    return f"latchkey:signing-key:{kid}"


def _has_kid(key_set: KeySet, kid: str) -> bool:
    return any(key.kid == kid for key in key_set.keys)
