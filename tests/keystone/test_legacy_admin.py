"""LATCHKEY_KEYSTONE_EVERY_ADMIN_IS_CLOUD_ADMIN: Keystone's legacy admin, off by default.

Off (the default): the admin of an ordinary project administers that project only.
On: as Keystone without an admin project configured, it acts on the whole cloud;
`make tempest` measures Latchkey that way next to Keystone (docs/keystone.md)."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask

from tests.conftest import ADMIN_PASSWORD, Api, build_app, make_settings
from tests.keystone.test_auth import (
    PASSWORD,
    admin_v3,
    auth_body,
    grant,
    issue,
    make_project,
    make_user,
    password_identity,
)


@pytest.fixture(params=[False, True], ids=["scoped", "legacy"])
def legacy_app(request: pytest.FixtureRequest, tmp_path: Path) -> Flask:
    settings = make_settings(
        tmp_path,
        f"sqlite:///{tmp_path / 'latchkey.db'}",
        keystone_every_admin_is_cloud_admin=request.param,
    )
    app = build_app(settings)
    with app.app_context():
        app.extensions["latchkey"].bootstrap.run(ADMIN_PASSWORD)
    return app


def test_an_ordinary_project_admin_acts_on_the_cloud_only_when_told(legacy_app: Flask) -> None:
    client = legacy_app.test_client()
    api = Api(client)
    admin, _ = admin_v3(client)
    project = make_project(api, admin, "ordinary")
    user = make_user(api, admin, "project-admin")
    grant(api, admin, project["id"], user["id"], "admin")
    token, body = issue(
        client,
        auth_body(
            password_identity("project-admin", PASSWORD),
            {"project": {"id": project["id"]}},
        ),
    )
    legacy = legacy_app.extensions["latchkey"].settings.keystone_every_admin_is_cloud_admin
    assert body["is_admin_project"] is legacy
    created = client.post(
        "/v3/domains", json={"domain": {"name": "elsewhere"}}, headers={"X-Auth-Token": token}
    )
    assert created.status_code == (201 if legacy else 403), created.get_json()
    # A member of the same project never is, legacy or not.
    member = make_user(api, admin, "project-member")
    grant(api, admin, project["id"], member["id"], "member")
    member_token, member_body = issue(
        client,
        auth_body(
            password_identity("project-member", PASSWORD), {"project": {"id": project["id"]}}
        ),
    )
    assert member_body["is_admin_project"] is False
    refused = client.post(
        "/v3/domains", json={"domain": {"name": "nope"}}, headers={"X-Auth-Token": member_token}
    )
    assert refused.status_code == 403
