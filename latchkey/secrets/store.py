"""The SecretStore protocol: where tenant secret payloads live (never beside metadata).

Backends are named after what they talk to and chosen by ``LATCHKEY_SECRET_STORE``:
``LocalSecretStore`` (embedded, envelope-encrypted); Vault/OpenBao and Barbican
implement the same protocol.
"""

from __future__ import annotations

from typing import Any, Protocol

from latchkey.errors import ServiceUnavailable


class SecretStoreUnavailable(ServiceUnavailable):
    code = "secret_store_unavailable"
    title = "The secret store is unavailable"


class SecretStore(Protocol):
    name: str

    def put(self, project_id: str, secret_id: str, version: int, payload: bytes) -> str:
        """Store one version; returns the store's reference for it."""
        ...

    def get(self, project_id: str, secret_id: str, version: int, reference: str) -> bytes: ...

    def delete(self, project_id: str, secret_id: str) -> None:
        """Remove every version of a secret."""
        ...

    def health(self) -> dict[str, Any]: ...
