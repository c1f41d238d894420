"""A catalog change never breaks a project's decisions (it may silence rules)."""

from __future__ import annotations

from flask import Flask

from tests.conftest import Api

SERVICE = {
    "type": "objects",
    "actions": ["objects:container:read", "objects:container:delete"],
    "resource_types": {"objects:container": {"attributes": {"env": "string"}}},
}


def test_dropping_an_attribute_a_policy_uses(app: Flask, api: Api, admin_token: str) -> None:
    api.ok("POST", "/v1/services", admin_token, SERVICE)
    project = api.ok("GET", "/v1/projects?name=admin", admin_token)["projects"][0]
    document = {
        "rules": [
            {
                "id": "staging-only",
                "effect": "allow",
                "actions": ["objects:container:read"],
                "resource": {
                    "type": "objects:container",
                    "conditions": [{"attribute": "env", "op": "=", "value": "staging"}],
                },
            },
            {"id": "deletes", "effect": "allow", "actions": ["objects:container:delete"]},
        ]
    }
    api.ok("PUT", f"/v1/projects/{project['id']}/policy", admin_token, document, status=200)
    check = {
        "action": "objects:container:read",
        "resource": {
            "type": "objects:container",
            "project_id": project["id"],
            "attributes": {"env": "staging"},
        },
    }
    assert api.ok("POST", "/v1/authorize", admin_token, check, status=200)["allowed"] is True

    narrower = {
        **SERVICE,
        "actions": ["objects:container:read"],
        "resource_types": {"objects:container": {"attributes": {}}},
    }
    api.ok("PUT", "/v1/services/objects", admin_token, narrower, status=200)
    # Force the engine to be rebuilt from the stored version, as a new process would.
    app.extensions["latchkey"].policies._engines.clear()
    # No 500: the rule about the dropped attribute is silent (the attribute is no longer
    # declared, so it counts as missing), and nothing else allows the read.
    answer = api.ok("POST", "/v1/authorize", admin_token, check, status=200)
    assert answer == {"allowed": False, "decided_by": "policy"}
    # Re-validating the stored document against today's catalog now reports the drift.
    refused = api.call(
        "POST", f"/v1/projects/{project['id']}/policy/validate", admin_token, document
    )
    assert refused.status_code == 422
    assert {e["rule"] for e in refused.get_json()["errors"]} == {"staging-only", "deletes"}
