"""One exception hierarchy, each class carrying an HTTP status and a stable code.

The HTTP layer renders every ``LatchkeyError`` as an RFC 9457
``application/problem+json`` document (see ``latchkey.frontdoors.http.problems``).
Services raise these; they never build responses themselves.
"""

from __future__ import annotations

from typing import Any

PROBLEM_BASE = "https://latchkey.dev/problems/"


class LatchkeyError(Exception):
    status: int = 400
    code: str = "bad_request"
    title: str = "Bad request"
    # Seconds a client should wait before trying again (a Retry-After header), if any.
    retry_after: int | None = None

    def __init__(
        self,
        detail: str | None = None,
        *,
        code: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        if code is not None:
            self.code = code
        self.extra = extra or {}

    def to_problem(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": PROBLEM_BASE + self.code,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
        }
        body.update(self.extra)
        return body


class InvalidRequest(LatchkeyError):
    status = 422
    code = "invalid_request"
    title = "The request is not valid"


class MalformedRequest(LatchkeyError):
    status = 400
    code = "malformed_request"
    title = "The request body could not be read"


class AuthenticationFailed(LatchkeyError):
    """Always the same generic message: never say which half was wrong."""

    status = 401
    code = "authentication_failed"
    title = "Authentication failed"

    def __init__(self, detail: str | None = None, *, code: str | None = None) -> None:
        super().__init__(detail or "The credentials could not be verified.", code=code)


class AuthenticationRequired(LatchkeyError):
    status = 401
    code = "authentication_required"
    title = "Authentication required"


class Forbidden(LatchkeyError):
    status = 403
    code = "forbidden"
    title = "Forbidden"


class NotFound(LatchkeyError):
    status = 404
    code = "not_found"
    title = "Not found"


class Conflict(LatchkeyError):
    status = 409
    code = "conflict"
    title = "Conflict"


class ServiceUnavailable(LatchkeyError):
    status = 503
    code = "service_unavailable"
    title = "Service unavailable"


class DatabaseUnavailable(ServiceUnavailable):
    """The database cannot be reached (issue 15): a client should retry, not report a bug."""

    code = "database_unavailable"
    title = "The database is unavailable"
    retry_after = 5
