"""The Vault/OpenBao secret store: hvac over the KV version 2 secrets engine.

Each tenant secret is one KV path, ``<mount>/<prefix>/<project_id>/<secret_id>``,
and each Latchkey version is one KV version of it, written with check-and-set
(``cas = version - 1``), so no write ever replaces another; the reference kept
in Latchkey's database is ``vault:<mount>/<path>#<kv version>``. Latchkey's
database decides which version exists: a KV version whose metadata could not be
committed is destroyed again (``delete_version``), and since KV version numbers
only grow, the next write then checks-and-sets against the KV's current version
(the KV number runs one ahead of Latchkey's; the reference records it).
Deleting a secret deletes its metadata and every version.

Authentication is owned by Latchkey (hvac renews nothing by itself): a token, or
an AppRole login; a renewable token is renewed at most once per
``RENEW_INTERVAL``, and a 403 triggers one AppRole re-login and retry.

Every way the store can fail to answer — connection errors, timeouts, a sealed
server (``VaultDown``), any 5xx — becomes ``SecretStoreUnavailable`` (503
``secret_store_unavailable``) naming the store. Payloads never appear in logs or
error messages.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import hvac
import requests
from hvac import exceptions as hvac_errors

from latchkey.errors import Conflict
from latchkey.secrets.backends import SecretPayloadMissing, SecretStoreUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")
RENEW_INTERVAL = 300.0  # seconds between token renewals (renewable tokens only)
UNAVAILABLE = (
    requests.exceptions.RequestException,  # connection errors and timeouts
    hvac_errors.VaultDown,  # 503: sealed or standby without a leader
    hvac_errors.InternalServerError,
    hvac_errors.BadGateway,
    hvac_errors.VaultNotInitialized,
    hvac_errors.RateLimitExceeded,
)


class VaultSecretStore:
    name = "vault"

    def __init__(
        self,
        addr: str,
        *,
        token: str = "",
        role_id: str = "",
        secret_id: str = "",
        approle_mount: str = "approle",
        mount: str = "secret",
        prefix: str = "latchkey",
        timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not addr:
            raise ValueError("secret_store=vault needs vault_addr (or VAULT_ADDR)")
        if not token and not (role_id and secret_id):
            raise ValueError(
                "secret_store=vault needs vault_token (or VAULT_TOKEN) "
                "or vault_role_id and vault_secret_id"
            )
        self.addr = addr
        self._mount = mount.strip("/")
        self._prefix = prefix.strip("/")
        self._role_id, self._secret_id, self._approle_mount = role_id, secret_id, approle_mount
        self._client = hvac.Client(url=addr, token=token or None, timeout=timeout)
        self._clock = clock
        self._lock = threading.Lock()
        self._last_renewal = clock()
        self._needs_login = not token

    # -- the SecretStore protocol --------------------------------------------------

    def put(self, project_id: str, secret_id: str, version: int, payload: bytes) -> str:
        path = self._path(project_id, secret_id)
        secret = {"payload": base64.b64encode(payload).decode("ascii")}
        try:
            kv_version = self._write(path, secret, version - 1)
        except _CheckAndSetFailed:
            # The KV is ahead of Latchkey's metadata: versions destroyed after a failed
            # commit (see the module docstring), or a concurrent writer whose commit the
            # database will arbitrate. Append after the KV's current version, once.
            try:
                kv_version = self._write(path, secret, self._current_kv_version(path))
            except _CheckAndSetFailed:
                raise Conflict(
                    f"version {version} of this secret is being written concurrently",
                    code="secret_version_conflict",
                ) from None
        return f"vault:{self._mount}/{path}#{kv_version}"

    def get(self, project_id: str, secret_id: str, version: int, reference: str) -> bytes:
        path = self._path(project_id, secret_id)
        kv_version = _kv_version(reference, f"vault:{self._mount}/{path}")
        try:
            response = self._call(
                lambda: self._client.secrets.kv.v2.read_secret_version(
                    path=path,
                    version=kv_version,
                    mount_point=self._mount,
                    raise_on_deleted_version=True,
                )
            )
        except hvac_errors.InvalidPath:
            raise SecretPayloadMissing(
                f"version {version} of this secret is missing from the store"
            ) from None
        return base64.b64decode(response["data"]["data"]["payload"])

    def delete(self, project_id: str, secret_id: str) -> None:
        path = self._path(project_id, secret_id)  # deleting a missing path succeeds too
        self._call(
            lambda: self._client.secrets.kv.v2.delete_metadata_and_all_versions(
                path=path, mount_point=self._mount
            )
        )

    def delete_version(self, project_id: str, secret_id: str, version: int, reference: str) -> None:
        """Destroy one KV version for good (its metadata was never committed)."""
        path = self._path(project_id, secret_id)
        kv_version = _kv_version(reference, f"vault:{self._mount}/{path}")
        self._call(
            lambda: self._client.secrets.kv.v2.destroy_secret_versions(
                path=path, versions=[kv_version], mount_point=self._mount
            )
        )

    def health(self) -> dict[str, Any]:
        try:
            answer = self._client.sys.read_health_status(method="GET", standby_ok=True)
        except requests.exceptions.RequestException as exc:
            return {"status": "unavailable", "store": self.name, "error": type(exc).__name__}
        if isinstance(answer, dict):
            return {"status": "ok", "store": self.name, "sealed": bool(answer.get("sealed"))}
        status = getattr(answer, "status_code", None)
        sealed = status == 503
        return {
            "status": "unavailable",
            "store": self.name,
            "http_status": status,
            "sealed": sealed,
        }

    def _write(self, path: str, secret: dict[str, str], cas: int) -> int:
        try:
            response = self._call(
                lambda: self._client.secrets.kv.v2.create_or_update_secret(
                    path=path, secret=secret, cas=cas, mount_point=self._mount
                )
            )
        except hvac_errors.InvalidRequest as exc:
            if "check-and-set" in str(exc):
                raise _CheckAndSetFailed from None
            raise self._unavailable("refused the write", exc) from None
        return int(response["data"]["version"])

    def _current_kv_version(self, path: str) -> int:
        try:
            meta = self._call(
                lambda: self._client.secrets.kv.v2.read_secret_metadata(
                    path=path, mount_point=self._mount
                )
            )
        except hvac_errors.InvalidPath:
            return 0
        return int(meta["data"]["current_version"])

    # -- authentication and error mapping -------------------------------------------

    def _call(self, operation: Callable[[], T]) -> T:
        try:
            self._authenticate()
            try:
                return operation()
            except hvac_errors.Forbidden:
                if not self._can_login:
                    raise
                log.info("vault answered 403; logging in again with AppRole")
                with self._lock:
                    self._login()
                return operation()
        except UNAVAILABLE as exc:
            raise self._unavailable("did not answer", exc) from None
        except (hvac_errors.Forbidden, hvac_errors.Unauthorized) as exc:
            # Latchkey's own credentials are refused: an outage for the caller.
            raise self._unavailable("refused Latchkey's credentials", exc) from None
        except hvac_errors.UnexpectedError as exc:
            raise self._unavailable("answered unexpectedly", exc) from None

    @property
    def _can_login(self) -> bool:
        return bool(self._role_id and self._secret_id)

    def _authenticate(self) -> None:
        with self._lock:
            if self._needs_login:
                self._login()
                return
            if self._clock() - self._last_renewal < RENEW_INTERVAL:
                return
            self._last_renewal = self._clock()
            try:
                data = self._client.auth.token.lookup_self()["data"]
                if data.get("renewable"):
                    self._client.auth.token.renew_self()
            except (hvac_errors.Forbidden, hvac_errors.Unauthorized):
                if not self._can_login:
                    raise
                self._login()

    def _login(self) -> None:
        try:
            self._client.auth.approle.login(
                role_id=self._role_id, secret_id=self._secret_id, mount_point=self._approle_mount
            )  # hvac keeps the new token on the client
        except hvac_errors.InvalidRequest as exc:  # a wrong role_id or secret_id
            raise self._unavailable("refused Latchkey's AppRole login", exc) from None
        self._needs_login = False
        self._last_renewal = self._clock()

    def _unavailable(self, what: str, exc: Exception) -> SecretStoreUnavailable:
        # The class name only: hvac messages carry URLs and server text, never needed here.
        log.warning("secret store %s %s", self.name, what, extra={"error": type(exc).__name__})
        return SecretStoreUnavailable(
            f"the secret store ({self.name} at {self.addr}) {what}",
            extra={"store": self.name},
        )

    def _path(self, project_id: str, secret_id: str) -> str:
        return "/".join(p for p in (self._prefix, project_id, secret_id) if p)


class _CheckAndSetFailed(Exception):
    pass


def _kv_version(reference: str, expected_prefix: str) -> int:
    """The KV version in ``vault:<mount>/<path>#<n>``; a reference to another path is refused."""
    location, _, number = reference.partition("#")
    if location != expected_prefix or not number.isdigit():
        raise SecretPayloadMissing("the stored reference does not match this secret")
    return int(number)
