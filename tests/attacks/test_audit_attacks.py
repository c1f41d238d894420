"""Issue 13, class 7: the audit trail sees attacks.

Denials of Latchkey's own API and invalid (forged, revoked, malformed) tokens
leave audit events, aggregated so that a flood cannot fill the database, never
holding the token itself, and written in a transaction of their own (the
request that caused them fails and rolls back).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from tests.conftest import ADMIN_PASSWORD, Api, build_app, make_settings, reset_database

PASSWORD = "mallory-password-123"
WINDOW = 1  # seconds
MAX_EVENTS = 5


@pytest.fixture(scope="module")
def trail_apps() -> dict[str, Flask]:
    return {}


@pytest.fixture(params=["sqlite", "postgres"])
def tapi(
    request: pytest.FixtureRequest,
    trail_apps: dict[str, Flask],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Api]:
    backend = request.param
    if backend not in trail_apps:
        home: Path = tmp_path_factory.mktemp(f"trail-{backend}")
        if backend == "sqlite":
            url = f"sqlite:///{home / 'latchkey.db'}"
        else:
            url = request.getfixturevalue("postgres_database")
        trail_apps[backend] = build_app(
            make_settings(
                home,
                url,
                audit_attack_window_seconds=WINDOW,
                audit_attack_max_events=MAX_EVENTS,
                trusted_proxies="127.0.0.1/32",
            )
        )
    app = trail_apps[backend]
    reset_database(app)
    yield Api(app.test_client())


def admin(api: Api) -> str:
    return api.login("admin", ADMIN_PASSWORD, project="admin")


def member(api: Api, admin_token: str) -> tuple[dict[str, Any], str]:
    project = api.ok("POST", "/v1/projects", admin_token, {"name": "web"})
    user = api.ok("POST", "/v1/users", admin_token, {"name": "mallory", "password": PASSWORD})
    api.ok("PUT", f"/v1/projects/{project['id']}/users/{user['id']}/roles/member", admin_token)
    return user, api.login("mallory", PASSWORD, project="web")


def events(api: Api, admin_token: str, kind: str) -> list[dict[str, Any]]:
    body = api.ok("GET", f"/v1/audit/events?type={kind}&limit=1000", admin_token)
    return list(body["events"])


def denied(api: Api, token: str, address: str = "198.51.100.1") -> None:
    response = api.call("GET", "/v1/audit/events", token, headers={"X-Forwarded-For": address})
    assert response.status_code == 403, response.get_json()


def test_a_denial_leaves_an_event(tapi: Api) -> None:
    admin_token = admin(tapi)
    user, token = member(tapi, admin_token)
    denied(tapi, token)
    [event] = events(tapi, admin_token, "authorization")
    assert event["outcome"] == "denied"
    assert event["actor_id"] == user["id"]
    assert event["action"] == "audit:event:list"
    assert event["source_ip"] == "198.51.100.1"
    assert event["details"]["code"] == "action_forbidden"
    assert event["details"]["endpoint"] == "GET /v1/audit/events"
    assert event["request_id"]


def test_a_flood_of_denials_is_aggregated(tapi: Api) -> None:
    admin_token = admin(tapi)
    _, token = member(tapi, admin_token)
    for _ in range(30):
        denied(tapi, token)
    assert len(events(tapi, admin_token, "authorization")) == 1
    time.sleep(WINDOW + 0.1)
    denied(tapi, token)
    first, second = events(tapi, admin_token, "authorization")
    assert "repeated" not in first["details"]
    assert second["details"]["repeated"] == 29  # left out since the first one


def test_many_sources_cannot_fill_the_database(tapi: Api) -> None:
    admin_token = admin(tapi)
    _, token = member(tapi, admin_token)
    for i in range(MAX_EVENTS * 4):
        denied(tapi, token, f"203.0.113.{i}")
    written = events(tapi, admin_token, "authorization")
    assert len(written) == MAX_EVENTS
    time.sleep(WINDOW + 0.1)
    denied(tapi, token, "192.0.2.200")
    last = events(tapi, admin_token, "authorization")[-1]
    assert last["details"]["dropped"] == MAX_EVENTS * 3


def test_invalid_tokens_leave_events_without_the_token(tapi: Api) -> None:
    admin_token = admin(tapi)
    _, token = member(tapi, admin_token)
    header, payload, signature = token.split(".")
    forged = f"{header}.{payload}.{signature[::-1][:-1]}A"
    revoked = tapi.login("mallory", PASSWORD)
    response = tapi.call(
        "DELETE", "/v1/auth/tokens", admin_token, headers={"X-Subject-Token": revoked}
    )
    assert response.status_code == 204
    presented = {"forged": forged, "revoked": revoked, "garbage": "not-a-token-at-all"}
    for i, bad in enumerate(presented.values()):
        response = tapi.call(
            "GET", "/v1/projects", bad, headers={"X-Forwarded-For": f"192.0.2.{i + 1}"}
        )
        assert response.status_code == 401
        assert response.get_json()["code"] == "invalid_token"
    # Keystone's door too.
    response = tapi.client.get(
        "/v3/auth/projects", headers={"X-Auth-Token": forged, "X-Forwarded-For": "192.0.2.9"}
    )
    assert response.status_code == 401

    found = [
        e
        for e in events(tapi, admin_token, "authentication")
        if e["action"] == "identity:auth:token"
    ]
    assert {e["source_ip"] for e in found} == {"192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.9"}
    for event in found:
        assert event["outcome"] == "failure"
        assert event["details"]["reason"] == "invalid_token"
        assert len(event["details"]["token_fingerprint"]) == 16
    dumped = json.dumps(found)
    for bad in presented.values():
        assert bad not in dumped
        assert bad.split(".")[-1] not in dumped  # not even the signature


def test_a_flood_of_invalid_tokens_is_aggregated(tapi: Api) -> None:
    admin_token = admin(tapi)
    for i in range(40):
        response = tapi.call(
            "GET", "/v1/projects", f"forged-{i}", headers={"X-Forwarded-For": "192.0.2.77"}
        )
        assert response.status_code == 401
    found = [
        e
        for e in events(tapi, admin_token, "authentication")
        if e["action"] == "identity:auth:token"
    ]
    assert len(found) == 1
