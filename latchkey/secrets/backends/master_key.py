"""The master-key file: the local secret store's key-encryption key.

``KeyProtector``: ``seal`` encrypts bytes bound to a context string, ``unseal``
reverses it. ``MasterKeyFile`` is its implementation: AES-256-GCM under a
versioned master key kept in a 0600 file in ``LATCHKEY_HOME``, never in the
database. The local store (``latchkey/secrets/backends/local.py``) seals each data key
with it.

Latchkey's own secrets no longer depend on it directly: they live in the
configured secret store (``latchkey/secrets/system.py``). The Foundation sealed
signing keys and LDAP bind passwords with it and derived the credential pepper
from it; ``latchkey secrets migrate-internal`` reads that material once, through
``MasterKeyFile.existing`` (which never creates a file), and moves it.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

log = logging.getLogger(__name__)

SEALED_PREFIX = b"lk1"  # format marker; followed by the key version, nonce and ciphertext


class KeyProtectorError(Exception):
    """Sealed data could not be opened: wrong key, wrong context or tampering."""


class KeyProtector(Protocol):
    def seal(self, plaintext: bytes, context: str) -> bytes: ...

    def unseal(self, sealed: bytes, context: str) -> bytes: ...

    def derive_key(self, purpose: str, version: str | None = None) -> tuple[str, bytes]:
        """A 256-bit key for ``purpose`` (e.g. the credential pepper) and its version.

        Derived, never stored: it lives exactly where the master key lives.
        ``version=None`` means the current master key version.
        """
        ...


class MasterKeyFile:
    """A versioned AES-256-GCM key ring stored as JSON in a file with mode 0600."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._ring: tuple[dict[str, bytes], str] | None = None
        self._stamp: tuple[int, int, int] | None = None

    @classmethod
    def existing(cls, path: Path) -> MasterKeyFile | None:
        """The file if it is there (to read legacy material); never creates one."""
        return cls(path) if path.is_file() else None

    def _keyring(self) -> tuple[dict[str, bytes], str]:
        # Read (or create) on first use: commands that never seal must not create the file.
        if self._ring is None:
            self._ring = self._load_or_create()
            self._stamp = self._file_stamp()
            return self._ring
        # `latchkey secrets rotate-master` in another process replaces the file: a running
        # server must seal with the new version and open what `rewrap` re-sealed with it.
        # A file that vanished or does not read keeps the ring in memory (never a new key).
        stamp = self._file_stamp()
        if stamp is not None and stamp != self._stamp:
            self._stamp = stamp  # warn once per change, not on every call
            try:
                self._ring = self._read()
            except (OSError, ValueError, KeyError) as exc:
                log.warning(
                    "the master key file changed but cannot be read; keeping the keys in memory",
                    extra={"master_key_file": str(self.path), "error": type(exc).__name__},
                )
        return self._ring

    def _file_stamp(self) -> tuple[int, int, int] | None:
        try:
            status = self.path.stat()
        except OSError:
            return None
        return status.st_ino, status.st_mtime_ns, status.st_size

    def _load_or_create(self) -> tuple[dict[str, bytes], str]:
        if not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            key = {"1": base64.b64encode(AESGCM.generate_key(bit_length=256)).decode()}
            document = json.dumps({"current": "1", "keys": key})
            # O_EXCL: two processes starting at once must not overwrite each other's key.
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                return self._read()
            with os.fdopen(fd, "w") as handle:
                handle.write(document)
            log.warning(
                "generated a new master key file; back it up, without it the local secret "
                "store (and the signing keys and pepper it holds) cannot be read",
                extra={"master_key_file": str(self.path)},
            )
        return self._read()

    def _read(self) -> tuple[dict[str, bytes], str]:
        document = json.loads(self.path.read_text())
        keys = {version: base64.b64decode(value) for version, value in document["keys"].items()}
        return keys, str(document["current"])

    @property
    def current_version(self) -> str:
        return self._keyring()[1]

    def rotate(self) -> str:
        """Add a new master key version and make it current; old versions stay to unseal.

        Written to a temporary file and renamed, so a crash never leaves a half file.
        """
        keys, _current = self._keyring()
        version = str(max(int(v) for v in keys) + 1)
        document = {
            "current": version,
            "keys": {v: base64.b64encode(k).decode() for v, k in keys.items()}
            | {version: base64.b64encode(AESGCM.generate_key(bit_length=256)).decode()},
        }
        temporary = self.path.with_suffix(".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps(document))
        os.replace(temporary, self.path)
        self._ring = None
        return version

    def sealed_version(self, sealed: bytes) -> str:
        rest = sealed[len(SEALED_PREFIX) :]
        return rest[1 : 1 + rest[0]].decode()

    def seal(self, plaintext: bytes, context: str) -> bytes:
        keys, current = self._keyring()
        nonce = secrets.token_bytes(12)
        ciphertext = AESGCM(keys[current]).encrypt(nonce, plaintext, context.encode())
        version = current.encode()
        return SEALED_PREFIX + bytes([len(version)]) + version + nonce + ciphertext

    def derive_key(self, purpose: str, version: str | None = None) -> tuple[str, bytes]:
        keys, current = self._keyring()
        version = version or current
        master = keys.get(version)
        if master is None:
            raise KeyProtectorError(f"master key version {version} is not in {self.path}")
        derived = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=f"latchkey:{purpose}".encode()
        ).derive(master)
        return version, derived

    def unseal(self, sealed: bytes, context: str) -> bytes:
        if not sealed.startswith(SEALED_PREFIX):
            raise KeyProtectorError("unknown sealed format")
        rest = sealed[len(SEALED_PREFIX) :]
        version = rest[1 : 1 + rest[0]].decode()
        body = rest[1 + rest[0] :]
        key = self._keyring()[0].get(version)
        if key is None:
            raise KeyProtectorError(f"master key version {version} is not in {self.path}")
        try:
            return AESGCM(key).decrypt(body[:12], body[12:], context.encode())
        except InvalidTag as exc:
            raise KeyProtectorError("sealed data failed authentication") from exc
