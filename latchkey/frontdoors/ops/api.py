"""/healthz, /readyz, /metrics and /v1/audit/events."""

from __future__ import annotations

import hmac
import time
from typing import Any

from flask import Flask, Response, g, jsonify, request
from marshmallow import Schema, fields, validate
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram

from latchkey.errors import AuthenticationRequired
from latchkey.frontdoors.http.blueprint import Blueprint
from latchkey.frontdoors.http.fields import DbInteger
from latchkey.frontdoors.http.requests import call_context, services
from latchkey.metrics import exposition

blp = Blueprint("operations", __name__, description="Operations")

REQUESTS = Counter(
    "latchkey_http_requests_total", "HTTP requests", ["method", "endpoint", "status"]
)
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
LATENCY = Histogram("latchkey_http_request_seconds", "HTTP request latency", ["endpoint"])


_READINESS = {
    "type": "object",
    "required": ["status", "checks"],
    "properties": {
        "status": {"type": "string", "enum": ["ok", "unavailable"]},
        "checks": {
            "type": "object",
            "description": "Each dependency's status (database, secret_store, ldap, ...).",
            "additionalProperties": {"type": "object"},
        },
    },
}


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


@blp.route("/healthz", methods=["GET"])
@blp.response(200)
@blp.doc(
    responses={
        200: _json(
            "The process answers",
            {"type": "object", "properties": {"status": {"type": "string", "enum": ["ok"]}}},
        )
    }
)
def healthz() -> Any:
    return jsonify({"status": "ok"})


@blp.route("/readyz", methods=["GET"])
@blp.response(200)
@blp.doc(
    responses={
        200: _json("Ready: every dependency answers", _READINESS),
        503: _json("Not ready: the checks say which dependency is missing", _READINESS),
    }
)
def readyz() -> Any:
    ready, report = services().health.readiness()
    return jsonify(report), 200 if ready else 503


@blp.route("/metrics", methods=["GET"])
@blp.response(200)
@blp.doc(
    responses={
        200: {
            "description": "Prometheus text exposition format",
            "content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}},
        }
    }
)
def metrics() -> Response:
    expected = services().settings.metrics_token
    if expected:
        # LATCHKEY_METRICS_TOKEN: a scraper's bearer token, compared in constant time.
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), expected.encode()
        ):
            raise AuthenticationRequired(
                "/metrics needs the metrics token", code="metrics_token_required"
            )
    body, content_type = exposition()  # every worker's figures under `latchkey serve`
    return Response(body, content_type=content_type)


class AuditQuery(Schema):
    since = DbInteger()  # audit event ids
    type = fields.String(
        validate=validate.OneOf(["authentication", "authorization", "change", "decision"])
    )
    project_id = fields.String(validate=validate.Length(min=1, max=64))
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=1000))


class AuditEventOut(Schema):
    id = fields.Integer()
    time = fields.DateTime()
    type = fields.String()
    action = fields.String()
    outcome = fields.String()
    actor_id = fields.String(allow_none=True)
    target_type = fields.String(allow_none=True)
    target_id = fields.String(allow_none=True)
    project_id = fields.String(allow_none=True)
    domain_id = fields.String(allow_none=True)
    request_id = fields.String(allow_none=True)
    source_ip = fields.String(allow_none=True)
    details = fields.Dict()


class AuditEventList(Schema):
    events = fields.List(fields.Nested(AuditEventOut))
    cursor = fields.Integer(allow_none=True)


@blp.route("/v1/audit/events", methods=["GET"])
@blp.arguments(AuditQuery, location="query")
@blp.response(200, AuditEventList)
def audit_events(query: dict[str, Any]) -> dict[str, Any]:
    events = services().audit_reader.list_events(
        call_context(),
        since=query.get("since"),
        type=query.get("type"),
        project_id=query.get("project_id"),
        limit=query["limit"],
    )
    return {"events": events, "cursor": events[-1].id if events else query.get("since")}


def register_metrics_hooks(app: Flask) -> None:
    """Counts and times every answered request; the clock is the one
    ``web.requests`` starts for the access log (``g.started``)."""

    @app.after_request
    def _observe(response: Response) -> Response:
        req = request._get_current_object()  # type: ignore[attr-defined]
        observe_request(req.method, req.endpoint, response.status_code, g.get("started"))
        return response


_CHILDREN: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def observe_request(method: str, endpoint: str | None, status: int, started: float | None) -> None:
    """One answered request into ``latchkey_http_requests_total`` and its latency
    (``started``: perf_counter), whichever lane answered it."""
    endpoint = endpoint or "unmatched"
    # Any token is a method to HTTP: a client must not mint label sets at will.
    method = method if method in HTTP_METHODS else "other"
    key = (method, endpoint, status)
    metrics = _CHILDREN.get(key)
    if metrics is None:  # labels() takes a lock and builds a key: once per label set
        metrics = _CHILDREN.setdefault(
            key, (REQUESTS.labels(method, endpoint, str(status)), LATENCY.labels(endpoint))
        )
    metrics[0].inc()
    if started is not None:
        metrics[1].observe(time.perf_counter() - started)
