"""Decisions keep users (name, kind, attributes, groups) until the database says
users or memberships changed (latchkey/policy/decisions.py PrincipalCache).

- a worker's own change counts at its very next decision, on both backends (it
  does not wait for PostgreSQL's notification, which comes just after the commit);
- another worker's change counts once the database tells (SQLite: within 1 ms;
  PostgreSQL: when the notification arrives, well under a second);
- while nothing changes, a decision reads no user row.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import event

from tests.authz.test_policy_personas import SERVICE
from tests.conftest import Api, build_app, database_of, make_settings

PASSWORD = "persona-password-1234"
TEAM_SERVICE = {
    **SERVICE,
    "resource_types": {"objects:container": {"attributes": {"team": "string"}}},
}
TEAM_POLICY = {
    "rules": [
        {
            "id": "own-team",
            "effect": "allow",
            "actions": ["objects:container:read"],
            "resource": {
                "type": "objects:container",
                "conditions": [{"attribute": "team", "op": "=", "principal_attribute": "team"}],
            },
        }
    ]
}


def setup(api: Api, admin_token: str) -> tuple[str, str, str]:
    api.ok("POST", "/v1/services", admin_token, TEAM_SERVICE)
    project = api.ok("POST", "/v1/projects", admin_token, {"name": "web"})["id"]
    user = api.ok(
        "POST",
        "/v1/users",
        admin_token,
        {"name": "m", "password": PASSWORD, "attributes": {"team": "blue"}},
    )
    api.ok("PUT", f"/v1/projects/{project}/users/{user['id']}/roles/member", admin_token)
    api.ok("PUT", f"/v1/projects/{project}/policy", admin_token, TEAM_POLICY, 200)
    return project, user["id"], api.login("m", PASSWORD, project="web")


def may_read(client: Any, token: str, project: str, team: str) -> bool:
    resource = {"type": "objects:container", "project_id": project, "attributes": {"team": team}}
    check = {"action": "objects:container:read", "resource": resource}
    headers = {"Authorization": f"Bearer {token}"}
    response = client.post("/v1/authorize", json=check, headers=headers)
    assert response.status_code == 200, response.get_json()
    return bool(response.get_json()["allowed"])


def eventually(check: Any) -> None:
    """Until ``check()`` holds; worker B must see A's change within 5 s."""
    deadline = time.monotonic() + 5
    while not check():
        assert time.monotonic() < deadline, "worker B never saw the change"
        time.sleep(0.01)


def set_team(api: Api, admin_token: str, user_id: str, team: str) -> None:
    api.ok("PATCH", f"/v1/users/{user_id}", admin_token, {"attributes": {"team": team}})


def test_own_changes_count_at_the_next_decision(api: Api, admin_token: str) -> None:
    project, user_id, token = setup(api, admin_token)
    for team in ["red", "blue", "green", "blue"] * 5:
        set_team(api, admin_token, user_id, team)
        assert may_read(api.client, token, project, team)
        assert not may_read(api.client, token, project, "nobody")


@pytest.fixture
def worker_b(app: Flask) -> Iterator[Flask]:
    settings = app.extensions["latchkey"].settings
    b = build_app(make_settings(Path(settings.home), settings.effective_database_url))
    yield b
    with b.app_context():
        database_of(b).session.remove()
        database_of(b).engine.dispose()


def test_another_workers_change_counts_once_told(
    app: Flask, api: Api, admin_token: str, worker_b: Flask
) -> None:
    project, user_id, token = setup(api, admin_token)
    b = worker_b.test_client()
    assert may_read(b, token, project, "blue")
    user_reads: list[str] = []
    with worker_b.app_context():
        engine = database_of(worker_b).engine

    def spy(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "FROM user_account" in statement:
            user_reads.append(statement)

    event.listen(engine, "before_cursor_execute", spy)
    try:
        for _ in range(3):
            assert may_read(b, token, project, "blue")
        user_reads.clear()
        for _ in range(10):
            assert may_read(b, token, project, "blue")
        assert user_reads == []  # nothing changed: no user row read

        set_team(api, admin_token, user_id, "red")  # through worker A
        eventually(lambda: not may_read(b, token, project, "blue"))
        assert may_read(b, token, project, "red")
    finally:
        event.remove(engine, "before_cursor_execute", spy)
