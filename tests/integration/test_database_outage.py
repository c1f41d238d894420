"""The database lost at runtime (issue 15, point 1), through a TCP forwarder the test
owns (tests/forwarder.py) in front of the suite's PostgreSQL database.

What a client notices: every door (native /v1, Keystone /v3, /oauth2, /readyz)
answers 503 with ``Retry-After`` — problem+json ``database_unavailable``, Keystone's
error shape under /v3 — never 500; the operator's log gets one line when the
outage starts and one when it ends, no stack trace per request; and the service
answers again once the database is back, without a restart.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import make_url

from latchkey.db import DATABASE
from tests.conftest import Api, build_app, database_of, make_settings, password_auth, reset_database
from tests.forwarder import TcpForwarder

PASSWORD = "outage-password-1234"


@pytest.fixture
def forwarder(postgres_database: str) -> Iterator[TcpForwarder]:
    url = make_url(postgres_database)
    with TcpForwarder(url.port or 5432, url.host or "127.0.0.1") as proxy:
        yield proxy
    DATABASE.reset()  # this process's other engines reach their database directly


@pytest.fixture
def outage_app(postgres_database: str, forwarder: TcpForwarder, tmp_path: Path) -> Iterator[Flask]:
    url = make_url(postgres_database).set(host="127.0.0.1", port=forwarder.port)
    app = build_app(make_settings(tmp_path, url.render_as_string(hide_password=False)))
    reset_database(app)
    yield app
    forwarder.restore()  # a test that failed mid-outage still closes its connections
    with app.app_context():
        database_of(app).session.remove()
        database_of(app).engine.dispose()


def _basic(client_id: str, secret: str) -> dict[str, str]:
    raw = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


def _doors(api: Api, token: str, credential: dict[str, Any]) -> dict[str, Any]:
    client = api.client
    return {
        "login": client.post("/v1/auth/tokens", json=password_auth("outage", PASSWORD)),
        "list": api.call("GET", "/v1/users", token),
        "keystone": client.post(
            "/v3/auth/tokens",
            json={
                "auth": {
                    "identity": {
                        "methods": ["password"],
                        "password": {
                            "user": {
                                "name": "outage",
                                "domain": {"id": "default"},
                                "password": PASSWORD,
                            }
                        },
                    }
                }
            },
        ),
        "oauth2": client.post(
            "/oauth2/token",
            data={"grant_type": "client_credentials"},
            headers=_basic(credential["id"], credential["secret"]),
        ),
        "readyz": client.get("/readyz"),
    }


def _outage_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "database is unreachable" in r.getMessage()]


def test_database_lost_is_503_retry_after_logged_once_and_recovers(
    outage_app: Flask, forwarder: TcpForwarder, caplog: pytest.LogCaptureFixture
) -> None:
    api = Api(outage_app.test_client())
    admin = api.admin_token()
    user = api.ok("POST", "/v1/users", admin, {"name": "outage", "password": PASSWORD})
    project = api.ok("POST", "/v1/projects", admin, {"name": "outage"})
    api.ok("PUT", f"/v1/projects/{project['id']}/users/{user['id']}/roles/member", admin)
    token = api.login("outage", PASSWORD, project="outage")
    credential = api.ok(
        "POST",
        f"/v1/users/{user['id']}/application-credentials",
        token,
        {"name": "ci", "project_id": project["id"]},
    )

    forwarder.cut()
    api.client.allow_5xx = True  # type: ignore[attr-defined]
    caplog.clear()
    with caplog.at_level(logging.INFO):
        rounds = [_doors(api, token, credential) for _ in range(3)]
    for doors in rounds:
        for door, response in doors.items():
            text = response.get_data(as_text=True)
            assert response.status_code == 503, (door, text[:300])
            if door == "readyz":
                check = response.get_json()["checks"]["database"]
                assert check["status"] == "unavailable", check
            elif door == "keystone":
                assert response.headers["Retry-After"] == "5"
                assert json.loads(text)["error"]["code"] == 503, text
            else:
                assert response.headers["Retry-After"] == "5", door
                assert response.mimetype == "application/problem+json", door
                assert json.loads(text)["code"] == "database_unavailable", (door, text)
    # One line for the outage, whatever the number of requests; no stack trace.
    assert len(_outage_lines(caplog)) == 1, [r.getMessage() for r in caplog.records]
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records]

    forwarder.restore()
    caplog.clear()
    with caplog.at_level(logging.INFO):
        deadline = time.monotonic() + 15
        while True:
            ready = api.client.get("/readyz")
            if ready.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        api.client.allow_5xx = False  # type: ignore[attr-defined]
        assert ready.status_code == 200, ready.get_json()
        # No restart: the same application logs in, validates and lists again.
        fresh = api.login("outage", PASSWORD, project="outage")
        for bearer in (token, fresh):  # the token from before the outage is still valid
            assert api.call("GET", f"/v1/projects/{project['id']}", bearer).status_code == 200
        assert (
            api.client.post(
                "/oauth2/token",
                data={"grant_type": "client_credentials"},
                headers=_basic(credential["id"], credential["secret"]),
            ).status_code
            == 200
        )
    back = [r for r in caplog.records if "database is reachable again" in r.getMessage()]
    assert len(back) == 1, [r.getMessage() for r in caplog.records]
