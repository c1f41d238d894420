"""OS-TRUST trusts through /v3: create, list, show, roles, delete; trust-scoped tokens,
their uses and revocation; Keystone's security rules (application credentials,
redelegation, someone else's trust)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from flask.testing import FlaskClient

from tests.conftest import Api
from tests.keystone.test_auth import (
    PASSWORD,
    SUBJECT,
    admin_v3,
    auth_body,
    grant,
    issue,
    make_project,
    make_user,
    password_identity,
    post_token,
)

TRUSTS = "/v3/OS-TRUST/trusts"


class World:
    def __init__(self, client: FlaskClient, api: Api) -> None:
        self.client = client
        self.admin = api.admin_token()
        self.project = make_project(api, self.admin, "shared")
        self.trustor = make_user(api, self.admin, "trustor")
        self.trustee = make_user(api, self.admin, "trustee")
        self.stranger = make_user(api, self.admin, "stranger")
        self.delegated = api.ok("POST", "/v1/roles", self.admin, {"name": "delegated"})
        self.kept = api.ok("POST", "/v1/roles", self.admin, {"name": "kept"})
        for role in ("delegated", "kept"):
            grant(api, self.admin, self.project["id"], self.trustor["id"], role)
        scope = {"project": {"id": self.project["id"]}}
        self.trustor_token, _ = issue(
            client, auth_body(password_identity("trustor", PASSWORD), scope)
        )
        self.trustee_token, _ = issue(client, auth_body(password_identity("trustee", PASSWORD)))
        self.stranger_token, _ = issue(client, auth_body(password_identity("stranger", PASSWORD)))

    def create(self, token: str | None = None, **fields: Any) -> Any:
        body = {
            "trustor_user_id": self.trustor["id"],
            "trustee_user_id": self.trustee["id"],
            "project_id": self.project["id"],
            "roles": [{"name": "delegated"}],
            "impersonation": True,
            **fields,
        }
        return self.client.post(
            TRUSTS, json={"trust": body}, headers={"X-Auth-Token": token or self.trustor_token}
        )

    def trust_token(self, trust_id: str, user: str = "trustee") -> Any:
        return post_token(
            self.client,
            auth_body(password_identity(user, PASSWORD), {"OS-TRUST:trust": {"id": trust_id}}),
        )

    def get(self, path: str, token: str) -> Any:
        return self.client.get(path, headers={"X-Auth-Token": token})


def test_trust_lifecycle(client: FlaskClient, api: Api) -> None:
    w = World(client, api)
    expires = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
    expires_str = expires.strftime("%Y-%m-%dT%H:%M:%SZ")
    created = w.create(expires_at=expires_str)
    assert created.status_code == 201, created.get_json()
    trust = created.get_json()["trust"]
    assert trust["impersonation"] is True
    assert trust["trustor_user_id"] == w.trustor["id"]
    assert trust["trustee_user_id"] == w.trustee["id"]
    assert trust["project_id"] == w.project["id"]
    assert trust["expires_at"].replace(".000000", "") == expires_str
    assert [r["name"] for r in trust["roles"]] == ["delegated"]
    assert "v3/OS-TRUST/trusts" in trust["links"]["self"]
    path = f"{TRUSTS}/{trust['id']}"
    for token in (w.trustor_token, w.trustee_token, w.admin):
        shown = w.get(path, token)
        assert shown.status_code == 200 and shown.get_json()["trust"]["id"] == trust["id"]
    # Someone else's trust is as missing as an unknown one: no existence oracle.
    assert w.get(path, w.stranger_token).status_code == 404
    assert w.get(f"{TRUSTS}/no-such-trust", w.stranger_token).status_code == 404
    stranger = {"X-Auth-Token": w.stranger_token}
    assert client.delete(path, headers=stranger).status_code == 404
    assert w.get(f"{path}/roles", w.stranger_token).status_code == 404
    roles = w.get(f"{path}/roles", w.trustor_token).get_json()["roles"]
    assert [r["id"] for r in roles] == [w.delegated["id"]]
    assert f"v3/roles/{w.delegated['id']}" in roles[0]["links"]["self"]
    role_path = f"{path}/roles/{w.delegated['id']}"
    assert w.get(role_path, w.trustor_token).get_json()["role"]["name"] == "delegated"
    head = client.head(role_path, headers={"X-Auth-Token": w.trustor_token})
    assert head.status_code == 200
    assert w.get(f"{path}/roles/{w.kept['id']}", w.trustor_token).status_code == 404
    other = client.head(f"{path}/roles/{w.kept['id']}", headers={"X-Auth-Token": w.trustor_token})
    assert other.status_code == 404
    # Listing: one's own, by filter; everyone's for the cloud admin.
    mine = w.get(f"{TRUSTS}?trustor_user_id={w.trustor['id']}", w.trustor_token).get_json()
    assert [t["id"] for t in mine["trusts"]] == [trust["id"]]
    assert "roles" not in mine["trusts"][0]
    theirs = w.get(f"{TRUSTS}?trustee_user_id={w.trustee['id']}", w.trustee_token).get_json()
    assert [t["id"] for t in theirs["trusts"]] == [trust["id"]]
    assert [t["id"] for t in w.get(TRUSTS, w.admin).get_json()["trusts"]] == [trust["id"]]
    assert w.get(TRUSTS, w.stranger_token).get_json()["trusts"] == []
    spying = w.get(f"{TRUSTS}?trustor_user_id={w.trustor['id']}", w.stranger_token)
    assert spying.status_code == 403
    # Only the trustor (or a cloud admin) deletes.
    headers = {"X-Auth-Token": w.trustee_token}
    assert client.delete(path, headers=headers).status_code == 403
    headers = {"X-Auth-Token": w.trustor_token}
    assert client.delete(path, headers=headers).status_code == 204
    assert w.get(path, w.trustor_token).status_code == 404


def test_trust_scoped_tokens(client: FlaskClient, api: Api) -> None:
    w = World(client, api)
    impersonating = w.create(remaining_uses=2).get_json()["trust"]
    response = w.trust_token(impersonating["id"])
    assert response.status_code == 201, response.get_json()
    token = response.get_json()["token"]
    assert token["user"]["id"] == w.trustor["id"]  # impersonation: the trustor
    assert token["project"]["id"] == w.project["id"]
    assert [r["name"] for r in token["roles"]] == ["delegated"]
    assert token["OS-TRUST:trust"] == {
        "id": impersonating["id"],
        "impersonation": True,
        "trustor_user": {"id": w.trustor["id"]},
        "trustee_user": {"id": w.trustee["id"]},
    }
    first = response.headers[SUBJECT]
    # Uses count down; the last use spent, the trust is gone.
    assert w.trust_token(impersonating["id"]).status_code == 201
    assert w.trust_token(impersonating["id"]).status_code == 401
    assert w.get(f"{TRUSTS}/{impersonating['id']}", w.trustor_token).status_code == 404
    # Validates, until the trust is deleted: then every token it gave is revoked.
    headers = {"X-Auth-Token": w.admin, SUBJECT: first}
    assert client.get("/v3/auth/tokens", headers=headers).status_code == 200
    delete = client.delete(
        f"{TRUSTS}/{impersonating['id']}", headers={"X-Auth-Token": w.trustor_token}
    )
    assert delete.status_code == 204
    assert client.get("/v3/auth/tokens", headers=headers).status_code == 404

    plain = w.create(impersonation=False).get_json()["trust"]
    token = w.trust_token(plain["id"]).get_json()["token"]
    assert token["user"]["id"] == w.trustee["id"]
    assert token["OS-TRUST:trust"]["impersonation"] is False
    # Only the trustee may use it.
    assert w.trust_token(plain["id"], user="stranger").status_code == 401
    assert w.trust_token(plain["id"], user="trustor").status_code == 401
    assert w.trust_token("no-such-trust").status_code == 401


def test_trust_token_rules(client: FlaskClient, api: Api) -> None:
    w = World(client, api)
    trust = w.create().get_json()["trust"]
    response = w.trust_token(trust["id"])
    trust_token = response.headers[SUBJECT]
    # A trust-scoped token cannot be rescoped, nor create another trust.
    rescope = post_token(
        client,
        auth_body(
            {"methods": ["token"], "token": {"id": trust_token}},
            {"project": {"id": w.project["id"]}},
        ),
    )
    assert rescope.status_code == 403
    again = w.create(token=trust_token)
    assert again.status_code == 403
    # Via the token method, the trustee's unscoped token reaches the trust too.
    via_token = post_token(
        client,
        auth_body(
            {"methods": ["token"], "token": {"id": w.trustee_token}},
            {"OS-TRUST:trust": {"id": trust["id"]}},
        ),
    )
    assert via_token.status_code == 201
    assert set(via_token.get_json()["token"]["methods"]) == {"password", "token"}


def test_trust_creation_refusals(client: FlaskClient, api: Api) -> None:
    w = World(client, api)
    # Someone else as trustor: even the cloud admin cannot.
    assert w.create(token=w.stranger_token).status_code == 403
    assert w.create(token=w.admin).status_code == 403
    # A role the trustor does not hold on the project.
    assert w.create(roles=[{"name": "admin"}]).status_code == 403
    assert w.create(roles=[{"id": "no-such-role"}]).status_code == 404
    assert w.create(trustee_user_id="nobody").status_code == 404
    # Redelegation is refused.
    assert w.create(allow_redelegation=True).status_code == 403
    for bad in (
        {"expires_at": "bad.123Z"},
        {"expires_at": "2001-01-01T00:00:00Z"},
        {"impersonation": "yes"},
        {"remaining_uses": 0},
        {"remaining_uses": "two"},
        {"roles": "delegated"},
        {"roles": [{}]},
        {"trustee_user_id": None},
    ):
        response = w.create(**bad)
        assert response.status_code == 400, (bad, response.get_json())
        assert response.get_json()["error"]["code"] == 400
    assert (
        client.post(
            TRUSTS, json={"trust": "x"}, headers={"X-Auth-Token": w.trustor_token}
        ).status_code
        == 400
    )
    assert client.post(TRUSTS, json={"trust": {}}).status_code == 401


def test_application_credential_tokens_neither_create_nor_use_trusts(
    client: FlaskClient, api: Api
) -> None:
    w = World(client, api)
    created = client.post(
        f"/v3/users/{w.trustor['id']}/application_credentials",
        json={"application_credential": {"name": "ci", "unrestricted": True}},
        headers={"X-Auth-Token": w.trustor_token},
    )
    assert created.status_code == 201, created.get_json()
    credential = created.get_json()["application_credential"]
    identity = {
        "methods": ["application_credential"],
        "application_credential": {"id": credential["id"], "secret": credential["secret"]},
    }
    credential_token, _ = issue(client, auth_body(identity))
    assert w.create(token=credential_token).status_code == 403
    trust = w.create().get_json()["trust"]
    used = post_token(client, auth_body(identity, {"OS-TRUST:trust": {"id": trust["id"]}}))
    assert used.status_code in (401, 403)


def test_deleting_the_trustor_removes_the_trust_and_its_tokens(
    client: FlaskClient, api: Api
) -> None:
    w = World(client, api)
    trust = w.create(impersonation=False).get_json()["trust"]
    token = w.trust_token(trust["id"]).headers[SUBJECT]
    headers = {"X-Auth-Token": w.admin, SUBJECT: token}
    assert client.get("/v3/auth/tokens", headers=headers).status_code == 200
    api.ok("DELETE", f"/v1/users/{w.trustor['id']}", w.admin)
    assert client.get("/v3/auth/tokens", headers=headers).status_code == 404
    admin, _ = admin_v3(client)
    assert w.get(f"{TRUSTS}/{trust['id']}", admin).status_code == 404


def test_a_trust_token_changes_nothing_in_latchkey(client: FlaskClient, api: Api) -> None:
    """Delegated authority reads but never changes identities or privileges: no
    application credential (it would outlive the trust), no project, no grant."""
    w = World(client, api)
    grant(api, w.admin, w.project["id"], w.trustor["id"], "admin")
    trust = w.create(roles=[{"name": "admin"}]).get_json()["trust"]
    token = w.trust_token(trust["id"]).headers[SUBJECT]
    headers = {"X-Auth-Token": token}
    credential = client.post(
        f"/v3/users/{w.trustor['id']}/application_credentials",
        json={"application_credential": {"name": "escape"}},
        headers=headers,
    )
    assert credential.status_code == 403
    assert (
        api.call("POST", "/v1/users", token, {"name": "x", "password": PASSWORD}).status_code == 403
    )
    path = f"/v1/projects/{w.project['id']}/users/{w.trustee['id']}/roles/admin"
    assert api.call("PUT", path, token).status_code == 403
    assert api.call("GET", f"/v1/projects/{w.project['id']}", token).status_code == 200
