"""Sampled decisions of the decision API are buffered in the worker and written after
a response has been sent (latchkey/policy/recorder.py DecisionRecorder).

- nothing is written before the answer, and simulate still sees the samples at once;
- closing a response (what the WSGI server does once it has sent it) writes them,
  in one statement, without the sensitive attributes; a batch is sampled as one
  request (one of its checks);
- a write that fails loses only those samples: no error reaches anyone.
"""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from latchkey.policy import recorder as policy_recorder
from latchkey.policy.models import DecisionRecord
from tests.authz.test_policy_personas import SERVICE
from tests.conftest import Api, database_of

PASSWORD = "persona-password-1234"
SENSITIVE_SERVICE = {
    **SERVICE,
    "resource_types": {
        "objects:container": {
            "attributes": {
                "env": "string",
                "size": "integer",
                "team": {"type": "string", "sensitive": True},
            }
        }
    },
}


def setup_member(api: Api, admin_token: str) -> tuple[str, str]:
    api.ok("POST", "/v1/services", admin_token, SENSITIVE_SERVICE)
    project = api.ok("POST", "/v1/projects", admin_token, {"name": "web"})["id"]
    user = api.ok("POST", "/v1/users", admin_token, {"name": "m", "password": PASSWORD})
    api.ok("PUT", f"/v1/projects/{project}/users/{user['id']}/roles/member", admin_token)
    return project, api.login("m", PASSWORD, project="web")


def check(project: str, env: str) -> dict[str, Any]:
    return {
        "action": "objects:container:read",
        "resource": {
            "type": "objects:container",
            "id": f"c-{env}",
            "project_id": project,
            "attributes": {"env": env, "team": "blue"},
        },
    }


def stored(app: Flask) -> int:
    with app.app_context():
        return int(
            database_of(app).session.scalar(select(func.count()).select_from(DecisionRecord)) or 0
        )


def test_samples_are_written_after_the_response(
    app: Flask, api: Api, admin_token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    project, token = setup_member(api, admin_token)
    before = stored(app)
    monkeypatch.setattr(policy_recorder, "FLUSH_SECONDS", 3600.0)
    first = api.call("POST", "/v1/authorize", token, check(project, "staging"))
    assert first.status_code == 200
    first.close()
    assert stored(app) == before  # not due yet: kept in the worker

    monkeypatch.setattr(policy_recorder, "FLUSH_SECONDS", 0.0)
    batch = {"checks": [check(project, "prod"), check(project, "dev")]}
    second = api.call("POST", "/v1/authorize/batch", token, batch)
    assert second.status_code == 200
    assert stored(app) == before  # due, but the response has not been sent yet
    second.close()  # what the server does once the answer is out
    assert stored(app) == before + 2  # a batch is one sampled request: one of its checks

    with app.app_context():
        rows = (
            database_of(app)
            .session.scalars(select(DecisionRecord).order_by(DecisionRecord.id.desc()).limit(2))
            .all()
        )
    ids = [r.resource["id"] for r in rows]
    assert ids[1] == "c-staging" and ids[0] in ("c-prod", "c-dev")
    for row in rows:
        assert row.resource["attributes"] == {"env": row.resource["id"][2:]}  # no team


def test_simulate_sees_samples_still_in_the_buffer(
    app: Flask, api: Api, admin_token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    project, token = setup_member(api, admin_token)
    monkeypatch.setattr(policy_recorder, "FLUSH_SECONDS", 3600.0)
    api.ok("POST", "/v1/authorize", token, check(project, "staging"), 200)
    denying = {
        "rules": [
            {"id": "no-reads", "effect": "deny", "actions": ["objects:container:read"]},
            {"id": "rest", "effect": "allow", "actions": ["*"]},
        ]
    }
    result = api.ok("POST", f"/v1/projects/{project}/policy/simulate", admin_token, denying, 200)
    assert result["recent"]["checked"] >= 1
    assert [f["action"] for f in result["recent"]["flips"]] == ["objects:container:read"]


class FailingEngine:
    def begin(self) -> Any:
        raise OperationalError("INSERT", {}, Exception("database is locked"))


def test_a_failed_write_loses_only_the_samples(
    app: Flask, api: Api, admin_token: str, caplog: pytest.LogCaptureFixture
) -> None:
    project, token = setup_member(api, admin_token)
    recorder = app.extensions["latchkey"].decision_recorder
    api.ok("POST", "/v1/authorize", token, check(project, "staging"), 200)
    recorder.flush(FailingEngine())
    assert "decision samples not recorded: OperationalError" in caplog.text
    assert "staging" not in caplog.text and "blue" not in caplog.text
    assert not recorder.flush_due()  # dropped, not retried forever
    api.ok("POST", "/v1/authorize", token, check(project, "prod"), 200)  # still answering
