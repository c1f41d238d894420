"""The embedded secret store: envelope encryption with ``cryptography``.

Each secret version gets a fresh AES-256-GCM data key; the data key is sealed by
the versioned master key (``$LATCHKEY_HOME/master.key``); the associated data
binds project, secret id and version, so a blob moved to another secret or
version does not decrypt. ``latchkey secrets rotate-master`` adds a master key
version; ``latchkey secrets rewrap`` re-seals every data key with it, after
which old master versions can be retired.

Blobs live in Latchkey's database, in their own table, written in the same
transaction as the secret's metadata: nothing is ever half-written.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterator
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import delete, func, select

from latchkey.db import DbSession
from latchkey.secrets.backends import SecretPayloadMissing, SecretStoreUnavailable
from latchkey.secrets.backends.master_key import KeyProtectorError, MasterKeyFile
from latchkey.secrets.models import LocalSecretBlob
from latchkey.secrets.system import SYSTEM_NAMESPACE

log = logging.getLogger(__name__)


# The production warning has been given in this process (or in the `latchkey serve`
# master its workers were forked from), or is not wanted here: issue 15, point 7.
_warned: list[bool] = []


def without_production_warning() -> None:
    """This process runs a one-shot command (`db upgrade`, `bootstrap`...): the warning
    is for `latchkey serve`, which gives it once per start."""
    _warned.append(True)


class LocalSecretStore:
    name = "local"

    def __init__(self, session: DbSession, master: MasterKeyFile) -> None:
        self._session = session
        self._master = master
        if not _warned:  # once per process: `serve` builds the app in each worker too
            _warned.append(True)
            log.warning(
                "secrets are kept by the embedded store, sealed by the master key file; "
                "for production set LATCHKEY_SECRET_STORE=vault (see docs/operators.md)",
                extra={"master_key_file": str(master.path)},
            )

    def put(self, project_id: str, secret_id: str, version: int, payload: bytes) -> str:
        aad = _aad(project_id, secret_id, version)
        data_key = AESGCM.generate_key(bit_length=256)
        nonce = secrets.token_bytes(12)
        blob = LocalSecretBlob(
            project_id=project_id,
            secret_id=secret_id,
            tenant_secret_id=None if project_id == SYSTEM_NAMESPACE else secret_id,
            version=version,
            sealed_data_key=self._master.seal(data_key, aad.decode()),
            nonce=nonce,
            ciphertext=AESGCM(data_key).encrypt(nonce, payload, aad),
        )
        self._session.add(blob)  # committed with the metadata by the caller
        self._session.flush()
        return f"local:{blob.id}"

    def get(self, project_id: str, secret_id: str, version: int, reference: str) -> bytes:
        blob = self._session.scalar(
            select(LocalSecretBlob).where(
                LocalSecretBlob.secret_id == secret_id,
                LocalSecretBlob.version == version,
                LocalSecretBlob.project_id == project_id,
            )
        )
        if blob is None:
            raise SecretPayloadMissing(
                f"version {version} of this secret is missing from the store"
            )
        aad = _aad(project_id, secret_id, version)
        try:
            data_key = self._master.unseal(blob.sealed_data_key, aad.decode())
            return AESGCM(data_key).decrypt(blob.nonce, blob.ciphertext, aad)
        except (KeyProtectorError, InvalidTag) as exc:
            raise SecretStoreUnavailable(
                "the payload cannot be decrypted (master key?)", code="secret_store_unavailable"
            ) from exc

    def delete(self, project_id: str, secret_id: str) -> None:
        self._session.execute(
            delete(LocalSecretBlob).where(
                LocalSecretBlob.project_id == project_id, LocalSecretBlob.secret_id == secret_id
            )
        )

    def health(self) -> dict[str, Any]:
        try:
            self._master.current_version  # noqa: B018 - reads the key file
        except (OSError, ValueError, KeyError) as exc:
            return {"status": "unavailable", "error": type(exc).__name__}
        return {"status": "ok", "store": "local"}

    # -- master key rotation ------------------------------------------------------

    def rotate_master(self) -> str:
        return self._master.rotate()

    def stale_count(self) -> int:
        current = self._master.current_version
        return sum(
            1
            for blob in self._blobs()
            if self._master.sealed_version(blob.sealed_data_key) != current
        )

    def rewrap(self, progress: Callable[[int], None] | None = None) -> int:
        """Re-seal every data key under the current master key; returns how many."""
        current = self._master.current_version
        done = 0
        for blob in self._blobs():
            if self._master.sealed_version(blob.sealed_data_key) != current:
                aad = _aad(blob.project_id, blob.secret_id, blob.version).decode()
                blob.sealed_data_key = self._master.seal(
                    self._master.unseal(blob.sealed_data_key, aad), aad
                )
                done += 1
            if progress:
                progress(1)
        self._session.commit()
        return done

    def count(self) -> int:
        return int(self._session.scalar(select(func.count(LocalSecretBlob.id))) or 0)

    def _blobs(self) -> Iterator[LocalSecretBlob]:
        yield from self._session.scalars(select(LocalSecretBlob).order_by(LocalSecretBlob.id))


def _aad(project_id: str, secret_id: str, version: int) -> bytes:
    return f"latchkey:secret:{project_id}:{secret_id}:{version}".encode()
