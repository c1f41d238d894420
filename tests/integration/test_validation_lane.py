"""The validation lane (latchkey/frontdoors/http/validation_lane.py) answers exactly as
Flask does: the same requests, sent with the lane on and with it off, get the same
status, headers, body, access-log line and metrics; and every request the lane may not
answer (errors, refusals, anything unusual) reaches Flask whole."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from prometheus_client import REGISTRY

from latchkey.frontdoors.http.validation_lane import VALIDATION_LANE, ValidationLane
from tests.conftest import ADMIN_PASSWORD, Api

V1 = "/v1/auth/tokens"
V3 = "/v3/auth/tokens"
RULES_HEADER = "OpenStack-Identity-Access-Rules"
# What differs between two answers to one request by design: a generated request id,
# the time it took.
VARYING_HEADERS = {"X-Request-Id"}
VARYING_LOG_FIELDS = {"duration_ms", "request_id"}


class Seen:
    """Which requests reached Flask behind the lane."""

    def __init__(self, lane: ValidationLane) -> None:
        self.count = 0
        inner = lane._inner

        def counting(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
            self.count += 1
            return inner(environ, start_response)

        lane._inner = counting


@pytest.fixture
def lane(app: Flask) -> Iterator[ValidationLane]:
    lane: ValidationLane = app.extensions[VALIDATION_LANE]
    inner = lane._inner
    yield lane
    lane._inner = inner
    lane.enabled = True


def _metrics() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    wanted = ("latchkey_http_requests_total", "latchkey_token_validations_total")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in REGISTRY.collect()
        for sample in family.samples
        if sample.name in wanted
    }


def _delta(before: dict[Any, float], after: dict[Any, float]) -> dict[Any, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)}


def _send(
    app: Flask, caplog: pytest.LogCaptureFixture, method: str, path: str, headers: dict[str, str]
) -> dict[str, Any]:
    caplog.clear()
    before = _metrics()
    response = app.test_client().open(path, method=method, headers=headers)
    access = [
        {k: v for k, v in vars(r).items() if k in _LOG_FIELDS}
        for r in caplog.records
        if r.name == "latchkey.access"
    ]
    return {
        "status": response.status,
        "headers": [(k, v) for k, v in response.headers.items() if k not in VARYING_HEADERS],
        "request_id": response.headers.get("X-Request-Id"),
        # A problem document names its request id.
        "body": response.get_data().replace(response.headers["X-Request-Id"].encode(), b"<id>"),
        "log": [{k: v for k, v in line.items() if k not in VARYING_LOG_FIELDS} for line in access],
        "metrics": _delta(before, _metrics()),
    }


_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_LOG_FIELDS = {"request_id", "method", "path", "status", "user_id", "remote_addr", "duration_ms"}


def both(
    app: Flask,
    lane: ValidationLane,
    caplog: pytest.LogCaptureFixture,
    path: str,
    headers: dict[str, str],
    method: str = "GET",
) -> tuple[dict[str, Any], int]:
    """The answer through the lane and through Flask alone; they must be the same.
    Returns it, with how many of the two requests reached Flask (1: the lane answered)."""
    caplog.set_level(logging.INFO, logger="latchkey.access")
    seen = Seen(lane)
    fast = _send(app, caplog, method, path, headers)
    lane.enabled = False
    try:
        slow = _send(app, caplog, method, path, headers)
    finally:
        lane.enabled = True
    assert fast == {**slow, "request_id": fast["request_id"]}
    given = headers.get("X-Request-Id", "")
    expected = given if _SAFE_ID.match(given) else "req-"
    assert fast["request_id"].startswith(expected) and slow["request_id"].startswith(expected)
    return fast, seen.count


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_successes_are_answered_by_the_lane_as_flask_answers(
    app: Flask, api: Api, admin_token: str, lane: ValidationLane, caplog: pytest.LogCaptureFixture
) -> None:
    subject = {"X-Subject-Token": admin_token}
    cases = [
        (V1, {**_bearer(admin_token), **subject}),
        (V1, {"X-Auth-Token": admin_token, **subject}),
        (V1, {**_bearer(admin_token), **subject, "X-Request-Id": "trace-1.2_3"}),
        (V1, {**_bearer(admin_token), **subject, "X-Request-Id": "not safe to log"}),
        (V3, {"X-Auth-Token": admin_token, **subject}),  # with the catalog, no issuer set
        (V3, {**_bearer(admin_token), **subject}),
    ]
    for path, headers in cases:
        answer, reached_flask = both(app, lane, caplog, path, headers)
        assert answer["status"] == "200 OK", (path, answer["body"])
        assert reached_flask == 1, (path, headers)  # the lane's request did not
        assert len(answer["log"]) == 1 and answer["log"][0]["status"] == 200
        assert sum(answer["metrics"].values()) == 3  # one request, two validations
    names = dict(answer["headers"])
    assert names["X-Subject-Token"] == admin_token and names["Cache-Control"] == "no-store"
    assert names["X-Content-Type-Options"] == "nosniff"  # the security headers wrap both


def test_an_application_credential_token_with_access_rules(
    app: Flask, api: Api, admin_token: str, lane: ValidationLane, caplog: pytest.LogCaptureFixture
) -> None:
    me = api.client.get(V1, headers={**_bearer(admin_token), "X-Subject-Token": admin_token})
    claims = me.get_json()
    rule = {"service": "compute", "method": "GET", "path": "/v2.1/servers"}
    created = api.ok(
        "POST",
        f"/v1/users/{claims['sub']}/application-credentials",
        admin_token,
        {"name": "lane", "project_id": claims["project"]["id"], "access_rules": [rule]},
    )
    issued = api.ok(
        "POST",
        V1,
        json={
            "auth": {"application_credential": {"id": created["id"], "secret": created["secret"]}}
        },
    )
    restricted = issued["token"]
    subject = {"X-Auth-Token": admin_token, "X-Subject-Token": restricted}
    # Keystone's caller that does not announce access rules: 404, from Flask.
    answer, reached_flask = both(app, lane, caplog, V3, subject)
    assert answer["status"].startswith("404") and reached_flask == 2
    answer, reached_flask = both(app, lane, caplog, V3, {**subject, RULES_HEADER: "1"})
    assert answer["status"] == "200 OK" and reached_flask == 1
    answer, reached_flask = both(
        app, lane, caplog, V1, {**_bearer(admin_token), "X-Subject-Token": restricted}
    )
    assert answer["status"] == "200 OK" and reached_flask == 1
    # The restricted token as the caller: its rules name no identity call, so Flask refuses.
    answer, reached_flask = both(
        app, lane, caplog, V1, {**_bearer(restricted), "X-Subject-Token": admin_token}
    )
    assert answer["status"].startswith("403") and reached_flask == 2


def test_everything_else_reaches_flask(
    app: Flask, api: Api, admin_token: str, lane: ValidationLane, caplog: pytest.LogCaptureFixture
) -> None:
    api.ok("POST", "/v1/users", admin_token, {"name": "lane-member", "password": ADMIN_PASSWORD})
    member = api.login("lane-member", ADMIN_PASSWORD)
    revoked = api.admin_token()
    gone = api.client.delete(V1, headers={**_bearer(admin_token), "X-Subject-Token": revoked})
    assert gone.status_code == 204
    caller = {**_bearer(admin_token)}
    cases: list[tuple[str, str, dict[str, str], str]] = [
        ("GET", V1, caller, "422"),  # no subject token
        ("GET", V1, {"X-Subject-Token": admin_token}, "401"),  # no caller token
        ("GET", V1, {**_bearer("not-a-token"), "X-Subject-Token": admin_token}, "401"),
        ("GET", V1, {**caller, "X-Subject-Token": "not-a-token"}, "404"),
        ("GET", V1, {**caller, "X-Subject-Token": revoked}, "404"),
        ("GET", V1, {**_bearer(revoked), "X-Subject-Token": admin_token}, "401"),
        # An unscoped member may not read the admin's token.
        ("GET", V1, {**_bearer(member), "X-Subject-Token": admin_token}, "403"),
        ("GET", V3, {"X-Auth-Token": admin_token, "X-Subject-Token": revoked}, "404"),
        ("GET", V1 + "?x=1", {**caller, "X-Subject-Token": admin_token}, "200"),
        ("GET", V3 + "?nocatalog", {**caller, "X-Subject-Token": admin_token}, "200"),
        ("HEAD", V1, {**caller, "X-Subject-Token": admin_token}, "200"),
        ("GET", V1 + "/", {**caller, "X-Subject-Token": admin_token}, "404"),
    ]
    for method, path, headers, status in cases:
        answer, reached_flask = both(app, lane, caplog, path, headers, method=method)
        assert answer["status"].startswith(status), (method, path, answer["body"])
        assert reached_flask == 2, (method, path, headers)
        assert len(answer["log"]) == 1


def test_anything_raised_while_deciding_hands_the_request_to_flask_once(
    app: Flask,
    admin_token: str,
    lane: ValidationLane,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A fault in the lane (an injected one, standing for, say, the database lost under
    the revocation index) is not an answer: Flask answers the request whole, counted
    and logged once."""
    tokens = app.extensions["latchkey"].tokens
    real = tokens.valid_claims
    faults: list[str] = []

    def failing(token: str) -> Any:
        if not faults:
            faults.append(token)
            raise RuntimeError("injected fault")
        return real(token)

    monkeypatch.setattr(tokens, "valid_claims", failing)
    caplog.set_level(logging.INFO, logger="latchkey.access")
    seen = Seen(lane)
    headers = {**_bearer(admin_token), "X-Subject-Token": admin_token}
    answer = _send(app, caplog, "GET", V1, headers)
    assert faults and seen.count == 1
    assert answer["status"] == "200 OK" and len(answer["log"]) == 1
    assert sum(answer["metrics"].values()) == 3  # one request, two validations: not twice
