"""The SecretStore protocol: where tenant secret payloads live (never beside metadata).

Backends are named after what they talk to and chosen by ``LATCHKEY_SECRET_STORE``:
``LocalSecretStore`` (embedded, envelope-encrypted); Vault/OpenBao and Barbican
implement the same protocol.

Semantics every backend keeps (tests/integration/test_secret_store_contract.py):
- ``put`` stores one version and returns the reference Latchkey keeps for it;
  versions are independent of each other.
- ``get`` of a version that is not in the store (never written, deleted, or a
  reference belonging to another secret or project) raises
  ``SecretPayloadMissing`` (404 ``secret_payload_missing``).
- ``delete`` removes every version; deleting what is not there succeeds.
- A store that cannot answer raises ``SecretStoreUnavailable`` (503
  ``secret_store_unavailable``, naming the store); ``health`` never raises.
- Optional: ``delete_version(project_id, secret_id, version, reference)``
  removes one version. Stores that keep payloads outside Latchkey's database
  provide it, so a version whose metadata could not be committed is removed
  again (see ``latchkey.secrets.service``).
"""

from __future__ import annotations

from typing import Any, Protocol

from latchkey.errors import NotFound, ServiceUnavailable


class SecretStoreUnavailable(ServiceUnavailable):
    code = "secret_store_unavailable"
    title = "The secret store is unavailable"


class SecretPayloadMissing(NotFound):
    code = "secret_payload_missing"
    title = "The secret's payload is missing from the store"


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
