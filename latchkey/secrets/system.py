"""Latchkey's own secrets in the configured secret store.

Token signing private keys, the application-credential pepper and LDAP bind
passwords are payloads of the ``SecretStore`` chosen by ``LATCHKEY_SECRET_STORE``
(local, vault or barbican), written through the protocol as it is, under the
reserved project namespace ``_latchkey``. Tenant project ids are ``uuid4().hex``
(32 lower-case hex digits, never chosen by a caller), so a namespace starting
with ``_`` can never be a tenant's.

The database keeps only a registry row per secret — its name, the latest
version and the store's reference for it — never the payload. With the local
store the master-key file stays the root of trust (it is that store's KEK);
with vault or barbican nothing depends on it any more.

Writes join the caller's transaction (the local store writes its sealed blob in
the same session), and always reach the store before the database row that
refers to them: a failed store write leaves nothing behind, a failed commit
leaves at most an unreferenced payload in the store.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from typing import Protocol

from sqlalchemy import select

from latchkey.db import DbSession, utcnow
from latchkey.errors import Conflict, NotFound, ServiceUnavailable
from latchkey.secrets.backends import SecretStore
from latchkey.secrets.backends.master_key import KeyProtector
from latchkey.secrets.models import SystemSecret, TenantSecret, TenantSecretVersion

log = logging.getLogger(__name__)

SYSTEM_NAMESPACE = "_latchkey"  # never a tenant project id (those are uuid4 hex)
NAME = re.compile(r"^[a-z][a-z0-9-]{0,63}$")  # safe in a Vault path and a Barbican name
CONFLICT_RETRIES = 3


class SystemSecretMissing(ServiceUnavailable):
    code = "system_secret_missing"
    title = "One of Latchkey's own secrets is missing"


class SystemSecrets:
    """put / get / delete of Latchkey's own secrets, by name, in the configured store."""

    def __init__(self, session: DbSession, store: Callable[[], SecretStore]) -> None:
        # The store is chosen by build_services after the services that need this one.
        self.session = session
        self._store = store

    @property
    def store(self) -> SecretStore:
        return self._store()

    def put(self, name: str, payload: bytes) -> SystemSecret:
        """Write a new version to the store, then record it (flushed, not committed)."""
        _check_name(name)
        store = self.store
        row = self.session.get(SystemSecret, name)
        known = row is not None and row.store == store.name
        version = row.version + 1 if row is not None and known else 1
        reference = self._write(store, name, version, payload, known)
        if row is None:
            row = SystemSecret(name=name, created_at=utcnow())
            self.session.add(row)
        row.version, row.store, row.reference, row.updated_at = (
            version,
            store.name,
            reference,
            utcnow(),
        )
        self.session.flush()
        return row

    def _write(
        self, store: SecretStore, name: str, version: int, payload: bytes, known: bool
    ) -> str:
        for _attempt in range(CONFLICT_RETRIES):
            try:
                return store.put(SYSTEM_NAMESPACE, name, version, payload)
            except Conflict:
                # The store holds versions no committed row refers to (a write whose
                # commit failed, or a database restored from a backup). Without a row
                # nothing refers to any of them: start over; with one, skip past them.
                if known:
                    version += 1
                else:
                    store.delete(SYSTEM_NAMESPACE, name)
        raise Conflict(
            f"the store keeps refusing a new version of {name}", code="system_secret_conflict"
        )

    def get(self, name: str) -> bytes:
        row = self.session.get(SystemSecret, name)
        store = self.store
        if row is None:
            raise SystemSecretMissing(f"{name} is not in the secret store registry")
        if row.store != store.name:
            raise SystemSecretMissing(
                f"{name} was written to the {row.store} store, the configured one is {store.name}"
            )
        return store.get(SYSTEM_NAMESPACE, name, row.version, row.reference)

    def has(self, name: str) -> bool:
        return self.session.get(SystemSecret, name) is not None

    def delete(self, name: str) -> None:
        """Remove every version from the store, then the row (flushed, not committed)."""
        row = self.session.get(SystemSecret, name)
        self.store.delete(SYSTEM_NAMESPACE, name)
        if row is not None:
            self.session.delete(row)
            self.session.flush()

    def entries(self, prefix: str) -> list[SystemSecret]:
        """Registry rows whose name starts with ``prefix``, oldest first."""
        query = select(SystemSecret).where(SystemSecret.name.startswith(prefix, autoescape=True))
        return list(self.session.scalars(query.order_by(SystemSecret.created_at)))

    def tenant_secret(self, project_id: str, secret_id: str) -> bytes:
        """The current payload of a tenant secret, read for Latchkey's own use.

        No policy decision here: the caller decides which secrets may be referenced.
        """
        secret = self.session.get(TenantSecret, secret_id)
        if secret is None or secret.project_id != project_id:
            raise NotFound(f"no secret {secret_id!r} in that project", code="secret_not_found")
        row = self.session.scalar(
            select(TenantSecretVersion).where(
                TenantSecretVersion.secret_id == secret.id,
                TenantSecretVersion.version == secret.current_version,
            )
        )
        if row is None:
            raise NotFound("the secret has no current version", code="secret_version_not_found")
        return self.store.get(project_id, secret.id, secret.current_version, row.reference)


# -- moving material sealed by the master-key file (the Foundation's format) ---------------


class HoldsLegacySecrets(Protocol):
    """A service whose secrets the Foundation sealed with the master-key file."""

    legacy_label: str

    def legacy_count(self) -> int: ...

    def migrate_legacy(self, legacy: KeyProtector) -> int:
        """Move every sealed item into the store and commit; returns how many moved."""
        ...


class LegacyKeyFileMissing(ServiceUnavailable):
    code = "master_key_file_missing"
    title = "The master key file is needed to migrate"


def pending_legacy(holders: Sequence[HoldsLegacySecrets]) -> dict[str, int]:
    return {h.legacy_label: n for h in holders if (n := h.legacy_count())}


def migrate_internal(
    holders: Sequence[HoldsLegacySecrets], legacy: KeyProtector | None, key_file: str
) -> dict[str, int]:
    """Move what is still sealed into the store; idempotent (a second run moves nothing)."""
    pending = pending_legacy(holders)
    if pending and legacy is None:
        raise LegacyKeyFileMissing(
            f"{', '.join(sorted(pending))} are sealed by the master key file {key_file}, "
            "which is missing; restore it to migrate"
        )
    moved = {}
    for holder in holders:
        if pending.get(holder.legacy_label) and legacy is not None:
            moved[holder.legacy_label] = holder.migrate_legacy(legacy)
            log.info(
                "moved legacy secrets into the secret store",
                extra={"kind": holder.legacy_label, "count": moved[holder.legacy_label]},
            )
    return moved


def _check_name(name: str) -> None:
    if not NAME.match(name):
        raise ValueError(f"not a system secret name: {name!r}")
