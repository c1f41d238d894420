"""Keystone v3 endpoints translated onto Latchkey's own services.

Plain Flask views (the OpenAPI document describes the native ``/v1`` API only);
every answer, errors included, is shaped as Keystone shapes it.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, jsonify, request
from sqlalchemy.exc import SQLAlchemyError
from werkzeug import exceptions as werkzeug_exceptions
from werkzeug.exceptions import HTTPException

from latchkey.errors import (
    AuthenticationRequired,
    Forbidden,
    InvalidRequest,
    LatchkeyError,
    MalformedRequest,
)
from latchkey.frontdoors.http.attack_audit import note_denial
from latchkey.frontdoors.http.problems import (
    database_outage,
    handle_http_exception,
    handle_unexpected,
    retry_after_header,
)
from latchkey.frontdoors.http.requests import call_context, services
from latchkey.policy.context import CallContext


class KeystoneBlueprint(Blueprint):
    """Keystone answers a path with or without a trailing slash (Tempest's trust client
    lists ``/v3/OS-TRUST/trusts/``); so does every /v3 route here."""

    def add_url_rule(self, rule: str, *args: Any, **options: Any) -> None:
        options.setdefault("strict_slashes", False)
        super().add_url_rule(rule, *args, **options)


blp = KeystoneBlueprint("keystone", __name__)

VERSION_ID = "v3.14"
VERSION_UPDATED = "2020-04-07T00:00:00Z"
MEDIA_TYPES = [{"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}]
SUBJECT_TOKEN_HEADER = "X-Subject-Token"
ACCESS_RULES_HEADER = "OpenStack-Identity-Access-Rules"
SUPPORTED_METHODS = ("password", "application_credential")
TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
    422: "Bad Request",
    429: "Too Many Requests",
    503: "Service Unavailable",
}
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


# -- errors ---------------------------------------------------------------------------


def keystone_error(status: int, message: str) -> Response:
    # Keystone answers validation failures with 400; Latchkey's 422 maps onto it.
    status = 400 if status == 422 else status
    body = {"error": {"code": status, "title": TITLES.get(status, "Error"), "message": message}}
    response = jsonify(body)
    response.status_code = status
    if status == 401:
        response.headers["WWW-Authenticate"] = f'Keystone uri="{base_url()}"'
    return response


@blp.errorhandler(LatchkeyError)
def _latchkey_error(error: LatchkeyError) -> Response:
    if isinstance(error, Forbidden):
        note_denial(error)  # the audit trail sees denials (issue 13, class 7)
    response = keystone_error(error.status, error.detail)
    response.headers.update(retry_after_header(error))
    return response


@blp.errorhandler(SQLAlchemyError)
def _database_error(error: SQLAlchemyError) -> Response:
    """The database unreachable: Keystone's 503 shape, with Retry-After (issue 15)."""
    outage = database_outage(error)
    if outage is None:
        return handle_unexpected(error)
    return _latchkey_error(outage)


@blp.errorhandler(HTTPException)
def _http_error(error: HTTPException) -> Response:
    status = error.code or 500
    if status >= 500:
        raise error
    return keystone_error(status, error.description or error.name)


def _is_keystone_path(path: str) -> bool:
    return path == "/" or path == "/v3" or path.startswith("/v3/")


@blp.app_errorhandler(werkzeug_exceptions.NotFound)
@blp.app_errorhandler(werkzeug_exceptions.MethodNotAllowed)
def _routing_error(error: HTTPException) -> Response:
    """No route, or not this method: raised before any view (so before the blueprint's
    own handlers), yet a Keystone client under /v3 still expects Keystone's shape."""
    if not _is_keystone_path(request.path):
        return handle_http_exception(error)
    response = keystone_error(error.code or 404, _ROUTING_MESSAGES.get(error.code or 404, ""))
    if isinstance(error, werkzeug_exceptions.MethodNotAllowed) and error.valid_methods:
        response.headers["Allow"] = ", ".join(sorted(error.valid_methods))
    return response


_ROUTING_MESSAGES = {
    404: "The resource could not be found.",
    405: "The method is not allowed for the requested URL.",
}


# -- helpers --------------------------------------------------------------------------


def base_url() -> str:
    """The public base URL: the configured issuer, else how the client reached us."""
    configured = services().settings.issuer
    return (configured or request.url_root).rstrip("/")


def keystone_time(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def created(key: str, body: dict[str, Any]) -> Response:
    """A resource just made: 201 with ``{key: body}``."""
    response = jsonify({key: body})
    response.status_code = 201
    return response


def no_content() -> Response:
    """A change or deletion done: 204, no body."""
    return Response(status=204)


def stable_id(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def json_body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise MalformedRequest("the body must be a JSON object")
    return body


def obj(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidRequest(f"{where} must be an object")
    return value


def authenticated() -> CallContext:
    ctx = call_context()
    if ctx.auth is None:
        raise AuthenticationRequired("The request you have made requires authentication.")
    return ctx


def _version() -> dict[str, Any]:
    return {
        "id": VERSION_ID,
        "status": "stable",
        "updated": VERSION_UPDATED,
        "links": [{"rel": "self", "href": base_url() + "/v3/"}],
        "media-types": MEDIA_TYPES,
    }


# -- version discovery ----------------------------------------------------------------


@blp.route("/", methods=["GET"])
def versions() -> Response:
    response = jsonify({"versions": {"values": [_version()]}})
    response.status_code = 300
    return response


@blp.route("/v3", methods=["GET"])
@blp.route("/v3/", methods=["GET"])
def version() -> Response:
    return jsonify({"version": _version()})


def role_refs(names: list[str]) -> list[dict[str, Any]]:
    ids = services().roles.ids_by_name(names)
    return [{"id": ids.get(name, name), "name": name} for name in names]
