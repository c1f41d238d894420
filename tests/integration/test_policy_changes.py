"""Workers keep project and domain policy versions until the database says they
changed (latchkey/changes/generation.py; PostgreSQL: NOTIFY on latchkey_policy, migration
0011; SQLite: PRAGMA data_version), instead of re-reading them every 2 s.

The time-to-live is set out of reach here, so only the signal can make worker B
see what worker A activated; and while nothing changes, B reads no policy row.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import event

from latchkey.policy import store as policy_store
from tests.conftest import Api, database_of
from tests.integration.test_principal_cache import (
    TEAM_POLICY,
    eventually,
    may_read,
    setup,
    worker_b,  # noqa: F401  (a fixture)
)

OTHER_TEAM = {
    "rules": [
        {
            **TEAM_POLICY["rules"][0],
            "resource": {
                "type": "objects:container",
                "conditions": [{"attribute": "team", "op": "=", "value": "red"}],
            },
        }
    ]
}
DENY_ALL = {
    "rules": [{"id": "nothing", "effect": "deny", "actions": ["objects:*"]}],
}


@pytest.fixture(autouse=True)
def no_time_to_live(monkeypatch: pytest.MonkeyPatch) -> None:
    # One store keeps the active versions of projects and domains alike.
    monkeypatch.setattr(policy_store, "ACTIVE_CACHE_SECONDS", 3600.0)


@pytest.fixture
def policy_reads(worker_b: Flask) -> Iterator[list[str]]:  # noqa: F811
    reads: list[str] = []
    with worker_b.app_context():
        engine = database_of(worker_b).engine

    def spy(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "FROM tenant_policy" in statement:  # active versions and versions alike
            reads.append(statement)

    event.listen(engine, "before_cursor_execute", spy)
    yield reads
    event.remove(engine, "before_cursor_execute", spy)


def test_another_workers_activation_counts_once_told(
    api: Api,
    admin_token: str,
    worker_b: Flask,  # noqa: F811
    policy_reads: list[str],
) -> None:
    project, _, token = setup(api, admin_token)  # policy: read your own team's (blue)
    b = worker_b.test_client()
    for _ in range(3):
        assert may_read(b, token, project, "blue")
    policy_reads.clear()
    for _ in range(10):
        assert may_read(b, token, project, "blue")
    assert policy_reads == []  # nothing changed: no policy row read

    api.ok("PUT", f"/v1/projects/{project}/policy", admin_token, OTHER_TEAM, 200)  # worker A
    eventually(lambda: may_read(b, token, project, "red"))
    assert not may_read(b, token, project, "blue")

    api.ok("POST", f"/v1/projects/{project}/policy/versions/1/activate", admin_token, None, 200)
    eventually(lambda: may_read(b, token, project, "blue"))


def test_another_workers_domain_rules_count_once_told(
    api: Api,
    admin_token: str,
    worker_b: Flask,  # noqa: F811
) -> None:
    project, _, token = setup(api, admin_token)
    b = worker_b.test_client()
    assert may_read(b, token, project, "blue")
    api.ok("PUT", "/v1/domains/default/policy", admin_token, DENY_ALL, 200)  # worker A
    eventually(lambda: not may_read(b, token, project, "blue"))
