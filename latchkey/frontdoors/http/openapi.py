"""The OpenAPI document at ``/v1/openapi.json``, true to what the service does (issue 15, point 3).

flask-smorest writes the operations from the views' decorators; this module adds
what the decorators do not say, once for every operation:

* **errors** as RFC 9457 ``application/problem+json`` with the shape
  ``latchkey.frontdoors.http.problems`` sends (the ``Problem`` schema), one response per
  status the operation can answer, in place of flask-smorest's
  ``application/json`` ``{code, status, message}`` that nothing sends;
* **security**: bearer tokens (``Authorization: Bearer`` or ``X-Auth-Token``) on
  every operation except the public ones, which are derived from
  ``latchkey.frontdoors.http.requests.PUBLIC_ENDPOINTS`` (``security: []``); OAuth client
  authentication (HTTP basic, or ``client_id``/``client_secret`` in the form) on
  the OAuth endpoints; the optional ``LATCHKEY_METRICS_TOKEN`` on ``/metrics``;
* **headers**: ``X-Request-Id`` on every answer, ``Retry-After`` on 429 (the
  throttled doors, ``latchkey.frontdoors.http.throttling.DOORS``) and 503.

What only one operation has (the OAuth forms, ``X-Subject-Token``) is written
beside its view with ``@blp.doc``.
"""

from __future__ import annotations

import copy
import http
import re
from typing import Any

from apispec import BasePlugin
from flask_smorest import Api
from werkzeug.routing import Rule

from latchkey.frontdoors.http.problems import PROBLEM_TYPE
from latchkey.frontdoors.http.requests import REQUEST_ID_HEADER, is_public
from latchkey.frontdoors.http.throttling import DOORS

PROBLEM = "Problem"
OAUTH_ERROR = "OAuthError"
BEARER = "bearerAuth"
AUTH_TOKEN = "authToken"
CLIENT_BASIC = "oauthClientBasic"
METRICS_TOKEN = "metricsToken"
OAUTH_CLIENT_ENDPOINTS = frozenset({"oauth2.token", "oauth2.introspect", "oauth2.revoke"})
METRICS_ENDPOINT = "operations.metrics"
# GET's twin documented too: Keystone-style clients check a token with HEAD.
HEAD_DOCUMENTED = frozenset({"tokens.TokensView"})
BODY_METHODS = frozenset({"post", "put", "patch"})
WRITE_METHODS = frozenset({"post", "put", "patch", "delete"})

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details, with Latchkey's stable `code`.",
    "required": ["type", "title", "status", "detail", "code"],
    "properties": {
        "type": {"type": "string", "description": "A URI naming the problem's code."},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "code": {"type": "string", "description": "Stable, for programs to branch on."},
        "request_id": {"type": "string", "description": "As in the X-Request-Id header."},
        "errors": {
            "description": "What was wrong, field by field: the request parser's messages "
            "by location and field (an object), or a policy document's problems (a list)."
        },
        "pointer": {
            "type": "string",
            "description": "A JSON pointer to the offending part of the request body.",
        },
    },
    # Some codes carry more (``action``, ``resource_type``, ``limit``, ``max``, ``cost``).
    "additionalProperties": True,
}

OAUTH_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 6749 section 5.2 error response (written by the OAuth endpoints).",
    "required": ["error"],
    "properties": {
        "error": {"type": "string"},
        "error_description": {"type": "string"},
    },
}

HEADERS: dict[str, dict[str, Any]] = {
    REQUEST_ID_HEADER: {
        "description": "The request's id, as logged (the caller's if it was safe to log).",
        "required": True,
        "schema": {"type": "string"},
    },
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "schema": {"type": "integer", "minimum": 0},
    },
    "WWW-Authenticate": {"schema": {"type": "string"}},
}

SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    BEARER: {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "A token from POST /v1/auth/tokens or POST /oauth2/token.",
    },
    AUTH_TOKEN: {
        "type": "apiKey",
        "in": "header",
        "name": "X-Auth-Token",
        "description": "The same token, as Keystone clients send it.",
    },
    CLIENT_BASIC: {
        "type": "http",
        "scheme": "basic",
        "description": "OAuth client_secret_basic: the application credential's id and "
        "secret. client_secret_post (client_id and client_secret in the form) works too.",
    },
    METRICS_TOKEN: {
        "type": "http",
        "scheme": "bearer",
        "description": "LATCHKEY_METRICS_TOKEN, when it is set.",
    },
}


def _problem_response(status: http.HTTPStatus) -> dict[str, Any]:
    headers: dict[str, Any] = {REQUEST_ID_HEADER: REQUEST_ID_HEADER}
    if status in (http.HTTPStatus.TOO_MANY_REQUESTS, http.HTTPStatus.SERVICE_UNAVAILABLE):
        headers["Retry-After"] = (
            {**HEADERS["Retry-After"], "required": True}
            if status == http.HTTPStatus.TOO_MANY_REQUESTS
            else "Retry-After"
        )
    if status == http.HTTPStatus.UNAUTHORIZED:
        headers["WWW-Authenticate"] = "WWW-Authenticate"
    return {
        "description": status.phrase,
        "headers": headers,
        "content": {PROBLEM_TYPE: {"schema": {"$ref": f"#/components/schemas/{PROBLEM}"}}},
    }


def _oauth_error_response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "headers": {REQUEST_ID_HEADER: REQUEST_ID_HEADER},
        "content": {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{OAUTH_ERROR}"}}
        },
    }


def error_statuses(endpoint: str, method: str, has_body: bool) -> list[int]:
    """The error statuses one operation can answer."""
    statuses = {422, 503}  # NUL or lone surrogates anywhere; a dependency down
    if has_body:
        statuses |= {400, 413}
    if not is_public(endpoint, method.upper()):
        statuses |= {401, 403, 404}
        if method in WRITE_METHODS:
            statuses.add(409)
    elif endpoint in DOORS and endpoint not in OAUTH_CLIENT_ENDPOINTS:
        statuses |= {401, 403}  # a login refused (OAuth's: 400/401 OAuthError, by the view)
    if endpoint == METRICS_ENDPOINT:
        statuses.add(401)
    if endpoint in DOORS:
        statuses.add(429)
    return sorted(statuses)


def security_of(endpoint: str, method: str) -> list[dict[str, list[str]]]:
    if endpoint in OAUTH_CLIENT_ENDPOINTS:
        return [{CLIENT_BASIC: []}, {}]  # {}: the client's credentials in the form
    if endpoint == METRICS_ENDPOINT:
        return [{}, {METRICS_TOKEN: []}]
    if is_public(endpoint, method.upper()):
        return []
    return [{BEARER: []}, {AUTH_TOKEN: []}]


def operation_id(endpoint: str, method: str) -> str:
    """``get_projects``, ``post_token``: unique, and the function's name in a generated
    client (``tokens.TokensView`` + post: ``post_tokens``)."""
    name = endpoint.rsplit(".", 1)[-1]
    name = re.sub(r"View$", "", name)
    name = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()
    return f"{method}_{name}"


def _head_of(get: dict[str, Any]) -> dict[str, Any]:
    head = copy.deepcopy(get)
    head["operationId"] = get["operationId"].replace("get_", "head_", 1)
    for response in head.get("responses", {}).values():
        if isinstance(response, dict):
            response.pop("content", None)  # HEAD: the headers only
    return head


class LatchkeyDocPlugin(BasePlugin):
    """Completes each operation as flask-smorest hands it to apispec."""

    def operation_helper(
        self, path: str | None = None, operations: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        rule: Rule | None = kwargs.get("rule")
        if rule is None or not operations:
            return
        endpoint = rule.endpoint
        for method, operation in operations.items():
            if method not in {"get", "put", "post", "patch", "delete"}:
                continue
            operation.setdefault("operationId", operation_id(endpoint, method))
            operation["security"] = security_of(endpoint, method)
            responses: dict[Any, Any] = operation.setdefault("responses", {})
            for response in responses.values():
                if isinstance(response, dict):
                    response.setdefault("headers", {}).setdefault(
                        REQUEST_ID_HEADER, REQUEST_ID_HEADER
                    )
            has_body = method in BODY_METHODS
            documented = {str(code) for code in responses}
            for status in error_statuses(endpoint, method, has_body):
                if str(status) not in documented:
                    responses[status] = http.HTTPStatus(status).name
        if endpoint in HEAD_DOCUMENTED and "get" in operations:
            operations["head"] = _head_of(operations["get"])


class LatchkeyApi(Api):
    """flask-smorest's Api with Latchkey's error responses and components."""

    # No "default" response: every status an operation answers is listed.
    DEFAULT_ERROR_RESPONSE_NAME = None

    def _register_responses(self) -> None:
        """flask-smorest's per-status responses (the 422 its ``arguments`` adds among
        them), as the problem documents the service really sends."""
        spec = self.spec
        assert spec is not None
        spec.components.schema(PROBLEM, PROBLEM_SCHEMA)
        spec.components.schema(OAUTH_ERROR, OAUTH_ERROR_SCHEMA)
        for name, header in HEADERS.items():
            spec.components.header(name, header)
        for name, scheme in SECURITY_SCHEMES.items():
            spec.components.security_scheme(name, scheme)
        for status in http.HTTPStatus:
            if status >= 400:
                spec.components.response(status.name, _problem_response(status), lazy=True)
        spec.components.response(
            "OAUTH_ERROR", _oauth_error_response("OAuth 2.0 error (RFC 6749)"), lazy=True
        )


def oauth_error_responses() -> dict[int, str]:
    """400 and 401 from the OAuth endpoints: RFC 6749 JSON, not problem+json (authlib
    writes them; 401 for a client that authenticated with HTTP basic)."""
    return {400: "OAUTH_ERROR", 401: "OAUTH_ERROR"}


def make_api(app: Any) -> LatchkeyApi:
    return LatchkeyApi(app, spec_kwargs={"extra_plugins": [LatchkeyDocPlugin()]})
