"""Every error leaves as RFC 9457 application/problem+json with a stable ``code``."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, g, json
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException

from latchkey.db import DATABASE, is_database_outage
from latchkey.errors import PROBLEM_BASE, DatabaseUnavailable, Forbidden, LatchkeyError
from latchkey.frontdoors.http.attack_audit import note_denial

log = logging.getLogger("latchkey.errors")

PROBLEM_TYPE = "application/problem+json"

# Stable codes for errors raised by Flask, werkzeug or webargs rather than by us.
HTTP_CODES = {
    400: "malformed_request",
    401: "authentication_required",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "request_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "too_many_requests",
}


def problem_response(
    body: dict[str, Any], status: int, headers: dict[str, str] | None = None
) -> Response:
    request_id = getattr(g, "request_id", None)
    if request_id:
        body.setdefault("request_id", request_id)
    response = Response(json.dumps(body), status=status, mimetype=PROBLEM_TYPE)
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="latchkey"'
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def handle_latchkey_error(error: LatchkeyError) -> Response:
    if isinstance(error, Forbidden):
        note_denial(error)  # the audit trail sees denials (issue 13, class 7)
    return problem_response(error.to_problem(), error.status, retry_after_header(error))


def retry_after_header(error: LatchkeyError) -> dict[str, str]:
    return {} if error.retry_after is None else {"Retry-After": str(error.retry_after)}


def database_outage(error: SQLAlchemyError) -> DatabaseUnavailable | None:
    """The 503 a database error stands for, if it means the database is unreachable
    (noted once per outage, not logged per request); None for anything else (a bug)."""
    if not is_database_outage(error):
        return None
    DATABASE.failed(error)
    return DatabaseUnavailable("The database cannot be reached; try again shortly.")


def handle_database_error(error: SQLAlchemyError) -> Response:
    outage = database_outage(error)
    if outage is None:
        return handle_unexpected(error)
    return handle_latchkey_error(outage)


def handle_http_exception(error: HTTPException) -> Response:
    status = error.code or 500
    if status >= 500:
        return handle_unexpected(error)
    code = HTTP_CODES.get(status, "http_error")
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + code,
        "title": error.name,
        "status": status,
        "detail": error.description or error.name,
        "code": code,
    }
    messages = _webargs_messages(error)
    if messages is not None:
        if status == 422:
            body["code"] = _validation_code(messages)
            body["type"] = PROBLEM_BASE + body["code"]
            body["detail"] = "The request does not match the expected schema."
        else:
            body["detail"] = "The request body is not valid JSON."
        body["errors"] = messages
    headers = dict(error.get_headers()) if status == 405 else {}
    headers.pop("Content-Type", None)
    return problem_response(body, status, headers)


def handle_unexpected(error: Exception) -> Response:
    """Log with the request id; answer a generic document that reveals nothing."""
    log.exception("unexpected error", extra={"request_id": getattr(g, "request_id", None)})
    body = {
        "type": PROBLEM_BASE + "internal_error",
        "title": "Internal server error",
        "status": 500,
        "detail": "An unexpected error occurred; quote the request id to the operator.",
        "code": "internal_error",
    }
    return problem_response(body, 500)


def register_problem_handlers(app: Flask) -> None:
    app.register_error_handler(LatchkeyError, handle_latchkey_error)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(SQLAlchemyError, handle_database_error)
    app.register_error_handler(Exception, handle_unexpected)


def _webargs_messages(error: HTTPException) -> Any:
    data = getattr(error, "data", None)
    if isinstance(data, dict) and "messages" in data:
        return data["messages"]
    return None


def _validation_code(messages: Any) -> str:
    """``unknown_field`` when the only problem is fields we do not know."""
    leaves: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
        else:
            leaves.append(str(node))

    walk(messages)
    if leaves and all(leaf == "Unknown field." for leaf in leaves):
        return "unknown_field"
    return "invalid_request"
