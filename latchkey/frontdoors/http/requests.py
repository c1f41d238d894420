"""Per-request plumbing: request ids, structured access logs, the call context."""

from __future__ import annotations

import logging
import re
import secrets
import time
from typing import Any

from flask import Flask, Response, current_app, g, request

from latchkey.errors import AuthenticationRequired, Forbidden, InvalidRequest, MalformedRequest
from latchkey.frontdoors.http.attack_audit import note_invalid_token
from latchkey.frontdoors.http.context import client_address, services
from latchkey.frontdoors.http.flask_app import JsonNumberOutOfRange
from latchkey.policy.context import AuthContext, CallContext
from latchkey.tokens.service import TokenInvalid
from latchkey.wire import access_rules

access_log = logging.getLogger("latchkey.access")
IDENTITY_SERVICE = "identity"  # Latchkey's own service type in access rules
REQUEST_ID_HEADER = "X-Request-Id"
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def bearer_token() -> str | None:
    return bearer_of(request.environ)


def bearer_of(environ: dict[str, Any]) -> str | None:
    """The caller's token: ``Authorization: Bearer``, else Keystone's ``X-Auth-Token``."""
    scheme, _, value = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return environ.get("HTTP_X_AUTH_TOKEN") or None


def current_auth(required: bool = False) -> AuthContext | None:
    """The caller's validated token, once per request; a bad token is always a 401."""
    if "auth" not in g:
        token = bearer_token()
        try:
            g.auth = services().tokens.authenticate_bearer(token) if token else None
        except TokenInvalid:
            if token:
                note_invalid_token(token)
            raise
        _check_access_rules(g.auth)
    if required and g.auth is None:
        raise AuthenticationRequired("this operation needs a token", code="token_missing")
    auth: AuthContext | None = g.auth
    return auth


def _check_access_rules(auth: AuthContext | None) -> None:
    """A token with access rules calls Latchkey's own API only where one allows it
    (service type ``identity``), as every relying service's middleware does."""
    if auth is None or not auth.access_rules:
        return
    if not access_rules.allows(auth.access_rules, IDENTITY_SERVICE, request.method, request.path):
        raise Forbidden(
            f"the credential's access rules do not allow {request.method} {request.path}",
            code="access_rule_denied",
        )


# The endpoints that answer without a token, by design; every other one refuses an
# anonymous caller (401 ``token_missing``) before it reads its path, body or the
# database, so no answer to an anonymous caller depends on what exists
# (docs/decisions.md, "No existence oracle"). An endpoint added later is
# authenticated unless listed here. (endpoint, method); HEAD counts as GET.
PUBLIC_ENDPOINTS = frozenset(
    {
        ("tokens.TokensView", "POST"),  # logging in
        ("tokens.jwks", "GET"),
        ("keystone.issue_token", "POST"),
        ("keystone.versions", "GET"),
        ("keystone.version", "GET"),
        # A request signed with an EC2 key is its own authentication (swift's s3token).
        ("keystone.ec2_tokens", "POST"),
        ("keystone.s3_tokens", "POST"),
        # OAuth 2.0: the client authenticates with its credential, not a bearer token.
        ("oauth2.token", "POST"),
        ("oauth2.introspect", "POST"),
        ("oauth2.revoke", "POST"),
        ("oauth2.authorization_server_metadata", "GET"),
        ("operations.healthz", "GET"),
        ("operations.readyz", "GET"),
        ("operations.metrics", "GET"),
        ("api-docs.openapi_json", "GET"),
        ("static", "GET"),
    }
)


def is_public(endpoint: str | None, method: str) -> bool:
    method = "GET" if method == "HEAD" else method
    return (endpoint, method) in PUBLIC_ENDPOINTS


def _authenticate_first() -> None:
    """Check the caller before anything is looked up (an unmatched URL or method is
    left to routing's 404/405; OPTIONS reveals only the methods of a route)."""
    req = request._get_current_object()  # type: ignore[attr-defined]
    if req.url_rule is None or req.method == "OPTIONS" or is_public(req.endpoint, req.method):
        return
    if current_auth() is None:
        detail = (
            "The request you have made requires authentication."  # Keystone's words
            if req.blueprint == "keystone"
            else "this operation needs a token"
        )
        raise AuthenticationRequired(detail, code="token_missing")


def call_context(authenticate: bool = True) -> CallContext:
    return CallContext(
        auth=current_auth() if authenticate else None,
        request_id=g.get("request_id"),
        source_ip=client_address(),
    )


def _begin() -> None:
    g.request_id = request_id_of(request.environ)
    g.started = time.perf_counter()


def request_id_of(environ: dict[str, Any]) -> str:
    """The caller's ``X-Request-Id`` when it is harmless to log (kept for tracing),
    else a new one. Read from the WSGI environ: a header lookup costs more."""
    incoming = environ.get("HTTP_X_REQUEST_ID", "")
    return incoming if _SAFE_REQUEST_ID.match(incoming) else "req-" + secrets.token_hex(8)


def _unstorable(value: Any) -> bool:
    """Does any string here (key or value) hold a NUL or a lone surrogate?

    PostgreSQL refuses NUL in text and no database driver can encode a lone
    surrogate; both are refused at the door, the same on every backend.
    """
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            if "\x00" in node or (not node.isascii() and _has_surrogate(node)):
                return True
        elif isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list | tuple):
            stack.extend(node)
    return False


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _screen_input() -> None:
    """Refuse what no view could store: NUL, lone surrogates, absurdly nested JSON."""
    req = request._get_current_object()  # type: ignore[attr-defined]
    inputs: list[Any] = [req.path]
    if req.query_string:
        inputs.append(list(req.args.items(multi=True)))
    if req.is_json:
        try:
            # Cached for the view; invalid JSON is left for the view's parser to report.
            body = req.get_json(silent=True)
        except RecursionError as exc:
            raise MalformedRequest("the JSON body nests too deeply") from exc
        if body is None:
            _refuse_unbounded_numbers(req)
        inputs.append(body)
    if _unstorable(inputs):
        raise InvalidRequest(
            "NUL characters and unpaired surrogates are not accepted", code="invalid_character"
        )


def _refuse_unbounded_numbers(req: Any) -> None:
    """A JSON body Flask could not read because of a number (an integer beyond 64 bits,
    NaN, an overflowing float) is a 400 that says so, whichever view it was for;
    other invalid JSON is left for the view's parser to report."""
    try:
        current_app.json.loads(req.get_data(cache=True))
    except JsonNumberOutOfRange as exc:
        raise MalformedRequest(str(exc)) from exc
    except (ValueError, RecursionError):
        return


def _finish(response: Response) -> Response:
    response.headers[REQUEST_ID_HEADER] = g.get("request_id", "")
    if access_log.isEnabledFor(logging.INFO):
        auth = g.get("auth")
        log_access(
            g.get("request_id"),
            request.method,
            request.path,
            response.status_code,
            g.get("started", time.perf_counter()),
            auth.user_id if auth else None,
            client_address(),
        )
    return response


def log_access(
    request_id: str | None,
    method: str,
    path: str,
    status: int,
    started: float,
    user_id: str | None,
    remote_addr: str | None,
) -> None:
    """The access log's line for one answered request (``started``: perf_counter)."""
    if not access_log.isEnabledFor(logging.INFO):
        return
    access_log.info(
        "request",
        extra={
            "request_id": request_id,
            "method": method,
            "path": path,  # never the query string: it may carry a token
            "status": status,
            "duration_ms": round((time.perf_counter() - started) * 1000, 2),
            "user_id": user_id,
            "remote_addr": remote_addr,
        },
    )


def register_request_hooks(app: Flask) -> None:
    app.before_request(_begin)
    app.before_request(_authenticate_first)
    app.before_request(_screen_input)
    app.after_request(_finish)
