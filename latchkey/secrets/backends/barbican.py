"""The Barbican secret store: OpenStack Key Manager's REST API through ``requests``.

Layout. Latchkey keeps its tenants' payloads in one Barbican project: the one
its credentials are scoped to. Each Latchkey *version* is one Barbican secret,
because Barbican payloads are write-once; the reference kept in Latchkey's
database for that version is ``barbican:<secret uuid>``. So an operator can
trace a Barbican secret back to Latchkey, every one of them is named
``latchkey:<project_id>:<secret_id>`` and carries the metadata
``latchkey_project_id``, ``latchkey_secret_id`` and ``latchkey_version``.

Consumers. Latchkey registers itself as a consumer of each secret it writes
(service ``latchkey``, resource type ``secret-version``, resource id
``<project_id>/<secret_id>/<version>``; API microversion ``key-manager 1.1``),
so Barbican refuses to delete a secret Latchkey still serves (clients asking
with microversion 1.2 or later get 400 "has consumers" unless they force it).
Latchkey removes its own consumer before it deletes.

Authentication, as configured: a Keystone token (from an application
credential, through keystoneauth1, imported only then) sent as
``X-Auth-Token``; or, for a Barbican without Keystone behind a trusted proxy,
the headers its ``context`` filter reads (``X-Identity-Status: Confirmed``,
``X-Project-Id``, ``X-User-Id``, ``X-Roles``).

Failures. Connection errors, timeouts, any 5xx and refused credentials become
``SecretStoreUnavailable`` (503 ``secret_store_unavailable``) naming the store;
a secret missing in Barbican is ``SecretPayloadMissing`` (404). Payloads never
appear in logs or error messages.
"""

from __future__ import annotations

import base64
import logging
import re
import threading
from typing import Any

import requests

from latchkey.errors import InvalidRequest
from latchkey.secrets.backends import SecretPayloadMissing, SecretStoreUnavailable

log = logging.getLogger(__name__)

AUTH_MODES = ("keystone", "trusted-headers")
API_VERSION = {"OpenStack-API-Version": "key-manager 1.1"}  # consumers need 1.1
CONSUMER_SERVICE = "latchkey"
CONSUMER_RESOURCE_TYPE = "secret-version"
PAGE = 100
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class BarbicanSecretStore:
    name = "barbican"

    def __init__(
        self,
        url: str,
        *,
        auth: str = "keystone",
        project_id: str = "",
        user_id: str = "latchkey",
        roles: str = "member,reader",
        keystone_url: str = "",
        application_credential_id: str = "",
        application_credential_secret: str = "",
        timeout: float = 5.0,
    ) -> None:
        if not url:
            raise ValueError("secret_store=barbican needs barbican_url")
        if auth not in AUTH_MODES:
            raise ValueError(f"barbican_auth must be one of {', '.join(AUTH_MODES)}, not {auth!r}")
        self.url = _api_root(url)
        self._timeout = timeout
        self._http = requests.Session()
        self._lock = threading.Lock()
        self._keystone: Any = None
        self._trusted: dict[str, str] = {}
        if auth == "trusted-headers":
            if not project_id:
                raise ValueError("barbican_auth=trusted-headers needs barbican_project_id")
            self._trusted = {
                "X-Identity-Status": "Confirmed",
                "X-Project-Id": project_id,
                "X-User-Id": user_id,
                "X-Roles": roles,
            }
        else:
            if not (keystone_url and application_credential_id and application_credential_secret):
                raise ValueError(
                    "barbican_auth=keystone needs barbican_keystone_url, "
                    "barbican_application_credential_id and barbican_application_credential_secret"
                )
            self._keystone = _keystone_session(
                keystone_url, application_credential_id, application_credential_secret, timeout
            )

    # -- the SecretStore protocol --------------------------------------------------

    def put(self, project_id: str, secret_id: str, version: int, payload: bytes) -> str:
        body = {
            "name": _name(project_id, secret_id),
            "secret_type": "opaque",
            "payload": base64.b64encode(payload).decode("ascii"),
            "payload_content_type": "application/octet-stream",
            "payload_content_encoding": "base64",
        }
        created = self._request("POST", "/secrets", json=body)
        if created.status_code == 413:
            raise InvalidRequest(
                "the secret store (barbican) refuses a payload this large; raise its "
                "max_allowed_secret_in_bytes and max_allowed_request_size_in_bytes",
                code="payload_too_large",
            )
        self._expect(created, "refused the write", 201)
        uuid = str(created.json()["secret_ref"]).rstrip("/").rsplit("/", 1)[-1]
        try:
            metadata = {
                "latchkey_project_id": project_id,
                "latchkey_secret_id": secret_id,
                "latchkey_version": str(version),
            }
            answer = self._request("PUT", f"/secrets/{uuid}/metadata", json={"metadata": metadata})
            self._expect(answer, "refused the metadata", 200, 201)
            consumer = _consumer(project_id, secret_id, version)
            answer = self._request("POST", f"/secrets/{uuid}/consumers", json=consumer)
            self._expect(answer, "refused Latchkey as a consumer", 200, 201)
        except Exception:
            self._discard(uuid, project_id, secret_id, version)  # no secret without its labels
            raise
        return f"barbican:{uuid}"

    def get(self, project_id: str, secret_id: str, version: int, reference: str) -> bytes:
        uuid = _uuid(reference, version)
        answer = self._request("GET", f"/secrets/{uuid}", headers={"Accept": "application/json"})
        if answer.status_code == 404:
            raise _missing(version)
        self._expect(answer, "refused the read", 200)
        if answer.json().get("name") != _name(project_id, secret_id):
            raise _missing(version)  # a reference to another secret is refused, not followed
        payload = self._request(
            "GET", f"/secrets/{uuid}/payload", headers={"Accept": "application/octet-stream"}
        )
        if payload.status_code == 404:
            raise _missing(version)
        self._expect(payload, "refused the read", 200)
        return payload.content

    def delete(self, project_id: str, secret_id: str) -> None:
        """Every version: the secrets named after it (deleting a missing one succeeds)."""
        for found in self._versions(project_id, secret_id):
            uuid = str(found["secret_ref"]).rstrip("/").rsplit("/", 1)[-1]
            self._remove(uuid, self._consumers_of(found, project_id, secret_id))

    def delete_version(self, project_id: str, secret_id: str, version: int, reference: str) -> None:
        self._remove(_uuid(reference, version), [_consumer(project_id, secret_id, version)])

    def health(self) -> dict[str, Any]:
        try:
            answer = self._request("GET", "/secrets", params={"limit": 1})
        except SecretStoreUnavailable:
            return {"status": "unavailable", "store": self.name}
        if answer.status_code != 200:
            return {"status": "unavailable", "store": self.name, "http_status": answer.status_code}
        return {"status": "ok", "store": self.name}

    # -- helpers --------------------------------------------------------------------

    def _versions(self, project_id: str, secret_id: str) -> list[dict[str, Any]]:
        name, found, offset = _name(project_id, secret_id), [], 0
        while True:
            params = {"name": name, "limit": PAGE, "offset": offset}
            answer = self._request("GET", "/secrets", params=params)
            self._expect(answer, "refused the listing", 200)
            page = answer.json().get("secrets", [])
            # Barbican filters names with SQL LIKE: keep exact matches only.
            found += [s for s in page if s.get("name") == name]
            if len(page) < PAGE:
                return found
            offset += PAGE

    def _consumers_of(
        self, found: dict[str, Any], project_id: str, secret_id: str
    ) -> list[dict[str, str]]:
        return [
            {key: c[key] for key in ("service", "resource_type", "resource_id")}
            for c in found.get("consumers", [])
            if c.get("service") == CONSUMER_SERVICE
            and str(c.get("resource_id", "")).startswith(f"{project_id}/{secret_id}/")
        ]

    def _remove(self, uuid: str, consumers: list[dict[str, str]]) -> None:
        for consumer in consumers:
            answer = self._request("DELETE", f"/secrets/{uuid}/consumers", json=consumer)
            if answer.status_code != 404:
                self._expect(answer, "refused to remove Latchkey's consumer", 200, 204)
        answer = self._request("DELETE", f"/secrets/{uuid}")
        if answer.status_code != 404:
            self._expect(answer, "refused the deletion", 204)

    def _discard(self, uuid: str, project_id: str, secret_id: str, version: int) -> None:
        try:
            self._remove(uuid, [_consumer(project_id, secret_id, version)])
        except Exception:  # the original failure is the one to report
            log.warning("could not remove a half-written barbican secret", extra={"uuid": uuid})

    def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> requests.Response:
        retried = False
        while True:
            try:
                answer = self._http.request(
                    method,
                    self.url + path,
                    json=json,
                    params=params,
                    headers={**API_VERSION, **self._auth_headers(), **(headers or {})},
                    timeout=self._timeout,
                )
            except requests.exceptions.RequestException as exc:
                raise self._unavailable("did not answer", exc) from None
            if answer.status_code == 401 and self._keystone is not None and not retried:
                log.info("barbican answered 401; fetching a new keystone token")
                self._keystone.invalidate()
                retried = True
                continue
            if answer.status_code in (401, 403):
                raise self._unavailable(f"refused Latchkey's credentials ({answer.status_code})")
            if answer.status_code >= 500:
                raise self._unavailable(f"answered {answer.status_code}")
            return answer

    def _auth_headers(self) -> dict[str, str]:
        if self._keystone is None:
            return self._trusted
        with self._lock:
            try:
                return {"X-Auth-Token": self._keystone.get_token()}
            except Exception as exc:  # keystoneauth1's errors: connection, 401, discovery
                raise self._unavailable("could not get a keystone token", exc) from None

    def _expect(self, answer: requests.Response, what: str, *statuses: int) -> None:
        if answer.status_code not in statuses:
            raise self._unavailable(f"{what} ({answer.status_code})")

    def _unavailable(self, what: str, exc: Exception | None = None) -> SecretStoreUnavailable:
        # Never the response body or the exception text: they may echo the request.
        log.warning(
            "secret store %s %s",
            self.name,
            what,
            extra={"error": type(exc).__name__ if exc else None},
        )
        return SecretStoreUnavailable(
            f"the secret store ({self.name} at {self.url}) {what}", extra={"store": self.name}
        )


def _api_root(url: str) -> str:
    root = url.rstrip("/")
    return root if root.endswith("/v1") else root + "/v1"


def _name(project_id: str, secret_id: str) -> str:
    return f"latchkey:{project_id}:{secret_id}"


def _consumer(project_id: str, secret_id: str, version: int) -> dict[str, str]:
    return {
        "service": CONSUMER_SERVICE,
        "resource_type": CONSUMER_RESOURCE_TYPE,
        "resource_id": f"{project_id}/{secret_id}/{version}",
    }


def _uuid(reference: str, version: int) -> str:
    scheme, _, uuid = reference.partition(":")
    if scheme != "barbican" or not _UUID.match(uuid):
        raise _missing(version)
    return uuid


def _missing(version: int) -> SecretPayloadMissing:
    return SecretPayloadMissing(f"version {version} of this secret is missing from the store")


def _keystone_session(url: str, credential_id: str, credential_secret: str, timeout: float) -> Any:
    """A keystoneauth1 auth plugin that caches its token and renews it before expiry."""
    try:
        from keystoneauth1 import session
        from keystoneauth1.identity import v3
    except ImportError as exc:  # the `barbican` extra brings it
        raise ValueError(
            "barbican_auth=keystone needs keystoneauth1: pip install 'latchkey[barbican]'"
        ) from exc
    plugin = v3.ApplicationCredential(
        auth_url=url,
        application_credential_id=credential_id,
        application_credential_secret=credential_secret,
    )
    return _KeystoneToken(session.Session(auth=plugin, timeout=timeout), plugin)


class _KeystoneToken:
    def __init__(self, sess: Any, plugin: Any) -> None:
        self._session, self._plugin = sess, plugin

    def get_token(self) -> str:
        return str(self._session.get_token())

    def invalidate(self) -> None:
        self._plugin.invalidate()
