"""The checks of a batch share boundary verdicts only when the boundary cannot tell
two resources of one type and project apart (latchkey/policy/engine.py).

A boundary reading ``resource.attr("env")`` must be asked for every check: a
batch mixing prod and staging containers gets both verdicts, exactly what
``/v1/authorize`` answers one check at a time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask

from latchkey.policy.engine import DEFAULT_BOUNDARY, PolicyEngine
from tests.authz.test_policy_personas import SERVICE
from tests.conftest import Api

PASSWORD = "persona-password-1234"
PROD_ADMINS_ONLY = """
boundary(actor: Principal, action: ActionRef, resource: ResourceRef) if
    actor.project_id != nil and
    resource.project_id = actor.project_id and
    not (action.verb = "write" and resource.attr("env") = "prod");
"""


def checks(project: str) -> list[dict[str, Any]]:
    return [
        {
            "action": "objects:container:write",
            "resource": {
                "type": "objects:container",
                "id": f"c{n}",
                "project_id": project,
                "attributes": {"env": env},
            },
        }
        for n, env in enumerate(["staging", "prod"] * 5)
    ]


def test_memo_only_for_boundaries_blind_to_resource_details() -> None:
    assert PolicyEngine(DEFAULT_BOUNDARY.read_text(), None).boundary_memoizable
    assert not PolicyEngine(PROD_ADMINS_ONLY, None).boundary_memoizable


def test_a_batch_agrees_with_single_checks(
    app: Flask, api: Api, admin_token: str, tmp_path: Path
) -> None:
    boundary = tmp_path / "boundary.polar"
    boundary.write_text(PROD_ADMINS_ONLY)
    with app.app_context():
        app.extensions["latchkey"].boundaries.load_file(str(boundary))
    try:
        api.ok("POST", "/v1/services", admin_token, SERVICE)
        project = api.ok("POST", "/v1/projects", admin_token, {"name": "web"})["id"]
        user = api.ok("POST", "/v1/users", admin_token, {"name": "m", "password": PASSWORD})
        api.ok("PUT", f"/v1/projects/{project}/users/{user['id']}/roles/member", admin_token)
        token = api.login("m", PASSWORD, project="web")
        batch = api.ok("POST", "/v1/authorize/batch", token, {"checks": checks(project)}, 200)
        answers = [d["allowed"] for d in batch["results"]]
        assert answers == [True, False] * 5
        singles = [
            api.ok("POST", "/v1/authorize", token, check, 200)["allowed"]
            for check in checks(project)
        ]
        assert singles == answers
    finally:
        with app.app_context():
            app.extensions["latchkey"].boundaries.load_file(str(DEFAULT_BOUNDARY))
