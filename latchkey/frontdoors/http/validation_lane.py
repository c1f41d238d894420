"""The validation lane: a successful online validation answered without Flask (issue 17).

``GET /v1/auth/tokens`` and Keystone's ``GET /v3/auth/tokens`` are what every relying
service without the middleware calls on every request it serves. Through Flask, one
costs ~190 us of Python, two thirds of it Flask's request context, routing, hooks and
response object around ~60 us of work (bench/README.md, "Where validation goes").
This WSGI wrapper answers such a request itself, but only when the answer is a plain
success; every other request goes to the Flask app untouched:

* it takes only ``GET`` of exactly those two paths, with no query string and no body;
* every step before the answer is free of side effects (``Tokens.valid_claims``,
  ``Tokens.may_check_subject``: nothing counted, audited or written), so when one
  step says no (no token, an invalid, expired or revoked one, a refusal, an access
  rule, a Keystone caller that does not announce access rules) or raises anything at
  all, the request is handed to Flask as it came, and Flask answers it as it always
  did: the errors, problem documents, audit trail of attacks and 503s come only from
  there;
* the answer is Flask's own, byte for byte: the same body builders and JSON provider,
  the same headers in the same order, the same access-log line and metrics, the same
  after-response writers. ``tests/integration/test_validation_lane.py`` sends the same
  requests through both and compares them.

It runs inside the application context, as a view does (the session's scope, the
revocation index's refresh, ``current_app``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from werkzeug.wsgi import get_current_url

from latchkey.frontdoors.http.context import PROXIES_EXTENSION
from latchkey.frontdoors.http.requests import (
    IDENTITY_SERVICE,
    REQUEST_ID_HEADER,
    bearer_of,
    log_access,
    request_id_of,
)
from latchkey.frontdoors.keystone.common import NO_STORE
from latchkey.frontdoors.keystone.tokens import token_body
from latchkey.frontdoors.ops.api import observe_request
from latchkey.metrics import count_validation
from latchkey.policy.context import AuthContext
from latchkey.wire import access_rules

if TYPE_CHECKING:
    from flask import Flask
    from sqlalchemy import Engine

    from latchkey.wiring import Services

log = logging.getLogger(__name__)
StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

VALIDATION_LANE = "latchkey_validation_lane"  # app.extensions: the lane, for tests
NATIVE_PATH = "/v1/auth/tokens"
KEYSTONE_PATH = "/v3/auth/tokens"
# The endpoints Flask would have matched: the metrics' label.
NATIVE_ENDPOINT = "tokens.TokensView"
KEYSTONE_ENDPOINT = "keystone.validate_token"


class AfterResponseWriter(Protocol):
    def flush_due(self) -> bool: ...
    def flush(self, engine: Engine) -> None: ...


class _Decided(NamedTuple):
    """A validation the caller may see: the caller and both tokens' claims."""

    auth: AuthContext
    caller_claims: dict[str, Any]
    claims: dict[str, Any]


class _Answer(NamedTuple):
    endpoint: str
    body: Any
    headers: list[tuple[str, str]]
    decided: _Decided


class _Rendered(NamedTuple):
    request_id: str
    headers: list[tuple[str, str]]
    body: Iterable[bytes]


class ValidationLane:
    def __init__(self, app: Flask, inner: WsgiApp, writers: list[AfterResponseWriter]) -> None:
        self._app = app
        self._inner = inner
        self._writers = writers
        self.enabled = not app.debug  # Flask indents JSON in debug mode: let it answer
        self._lanes: dict[str, Callable[[dict[str, Any]], _Answer | None]] = {
            NATIVE_PATH: self._native,
            KEYSTONE_PATH: self._keystone,
        }

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        lane = self._lanes.get(environ.get("PATH_INFO", "")) if self.enabled else None
        if lane is None or not _plain_get(environ):
            return self._inner(environ, start_response)
        started = time.perf_counter()
        answer: _Answer | None = None
        try:
            with self._app.app_context():
                answer = lane(environ)
                rendered = self._render(environ, answer) if answer is not None else None
        except Exception:  # nothing was done: the full path answers, or reports, it
            log.debug("the validation lane handed a request to Flask", exc_info=True)
            rendered = None
        if answer is None or rendered is None:
            return self._inner(environ, start_response)
        # Only now, outside the hand-over above: counted, logged and sent exactly once.
        return self._send(environ, answer, rendered, started, start_response)

    # -- deciding (no side effects) ------------------------------------------------------

    def _decide(self, environ: dict[str, Any]) -> _Decided | None:
        """The caller and the subject token's claims, when the caller may see them."""
        caller = bearer_of(environ)
        subject = environ.get("HTTP_X_SUBJECT_TOKEN")
        if not caller or not subject:
            return None
        tokens = self._services.tokens
        caller_claims = tokens.valid_claims(caller)
        if caller_claims is None:
            return None
        auth = tokens.context_of(caller, caller_claims)
        if auth.access_rules and not access_rules.allows(
            auth.access_rules, IDENTITY_SERVICE, "GET", environ["PATH_INFO"]
        ):
            return None
        claims = tokens.valid_claims(subject)
        if claims is None or not tokens.may_check_subject(auth, claims):
            return None
        return _Decided(auth, caller_claims, claims)

    def _native(self, environ: dict[str, Any]) -> _Answer | None:
        decided = self._decide(environ)
        if decided is None:
            return None
        return _Answer(NATIVE_ENDPOINT, decided.claims, [], decided)

    def _keystone(self, environ: dict[str, Any]) -> _Answer | None:
        decided = self._decide(environ)
        if decided is None:
            return None
        claims = decided.claims
        credential = claims.get("application_credential") or {}
        if credential.get("access_rules") and "HTTP_OPENSTACK_IDENTITY_ACCESS_RULES" not in environ:
            return None  # Keystone's 404 for a caller that could not honour them
        base = self._services.settings.issuer or get_current_url(environ, root_only=True)
        body = {"token": token_body(claims, with_catalog=True, base=base.rstrip("/"))}
        headers = [("X-Subject-Token", environ["HTTP_X_SUBJECT_TOKEN"]), *NO_STORE.items()]
        return _Answer(KEYSTONE_ENDPOINT, body, headers, decided)

    # -- answering ---------------------------------------------------------------------

    def _render(self, environ: dict[str, Any], answer: _Answer) -> _Rendered:
        """The answer's bytes, headers and due writers; nothing sent or counted yet."""
        # What Flask's jsonify writes outside debug mode: compact JSON and a newline.
        body = (self._app.json.dumps(answer.body, separators=(",", ":")) + "\n").encode()
        request_id = request_id_of(environ)
        headers = [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            *answer.headers,
            (REQUEST_ID_HEADER, request_id),
        ]
        due = [writer for writer in self._writers if writer.flush_due()]
        engine = self._services.database.engine
        iterable: Iterable[bytes] = _Body(body, due, engine) if due else [body]
        return _Rendered(request_id, headers, iterable)

    def _send(
        self,
        environ: dict[str, Any],
        answer: _Answer,
        rendered: _Rendered,
        started: float,
        start_response: StartResponse,
    ) -> Iterable[bytes]:
        """The request is answered: counted and logged as the full path does, sent."""
        decided = answer.decided
        count_validation(decided.caller_claims, "valid")
        count_validation(decided.claims, "valid")
        observe_request("GET", answer.endpoint, 200, started)
        proxies = self._app.extensions.get(PROXIES_EXTENSION)
        remote = proxies.client_address(environ) if proxies else environ.get("REMOTE_ADDR")
        path = environ["PATH_INFO"]
        log_access(rendered.request_id, "GET", path, 200, started, decided.auth.user_id, remote)
        start_response("200 OK", rendered.headers)
        return rendered.body

    @property
    def _services(self) -> Services:
        services: Services = self._app.extensions["latchkey"]
        return services


def _plain_get(environ: dict[str, Any]) -> bool:
    """A GET with no query string and no body: nothing for Flask's input screening."""
    return (
        environ.get("REQUEST_METHOD") == "GET"
        and not environ.get("QUERY_STRING")
        and environ.get("CONTENT_LENGTH") in (None, "", "0")
        and "HTTP_TRANSFER_ENCODING" not in environ
        and not environ.get("CONTENT_TYPE")
    )


class _Body:
    """The answer, with the writes due after it (Flask's ``call_on_close``) in close()."""

    __slots__ = ("_body", "_due", "_engine")

    def __init__(self, body: bytes, due: list[AfterResponseWriter], engine: Engine) -> None:
        self._body = body
        self._due = due
        self._engine = engine

    def __iter__(self) -> Iterator[bytes]:
        return iter((self._body,))

    def close(self) -> None:
        for writer in self._due:
            writer.flush(self._engine)
