"""Class 4 of issue 13: a credential never creates more than it holds.

An unrestricted application credential's token may mint: child credentials (``/v1``
and Keystone's ``/v3``), new secrets, OAuth tokens. Whatever it mints stays within
the credential behind it: never outliving it (nor the secret the token came from),
never reaching beyond its networks (``allowed_cidrs``), its access rules, its project
or its roles. What a request leaves open is inherited (capped); what it asks beyond is
refused with 403 and a code naming what was too wide. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import base64
import itertools
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from werkzeug.test import TestResponse

from latchkey.wire.access_rules import path_covers, path_matches
from tests.conftest import Api

PASSWORD = "minting-password-1234"
INSIDE = {"REMOTE_ADDR": "10.20.1.2"}  # within the parent's networks
OUTSIDE = {"REMOTE_ADDR": "192.168.7.7"}
PARENT_CIDRS = ["10.20.0.0/16", "2001:db8::/32"]
PARENT_RULES = [
    {"service": "identity", "method": "POST", "path": "/v1/users/*/application-credentials"},
    {
        "service": "identity",
        "method": "POST",
        "path": "/v1/users/{user_id}/application-credentials/*/secrets",
    },
    {"service": "identity", "method": "POST", "path": "/v3/users/*/application_credentials"},
    {"service": "compute", "method": "GET", "path": "/v2.1/servers/*"},
    {"service": "compute", "method": "GET", "path": "/v2.1/flavors/**"},
]


def _when(value: str | None) -> datetime | None:
    """A time from either API: /v1 ends in Z; Keystone's application credentials carry
    no zone, UTC meant (as Keystone writes them)."""
    if value is None:
        return None
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * 4))
    return claims


@dataclass
class World:
    app: Flask
    api: Api
    admin: str
    project: str
    other_project: str
    alice: str
    alice_token: str  # password, scoped to the project
    parent: dict[str, Any]  # unrestricted, expiring, networks and access rules
    parent_token: str

    @property
    def parent_expiry(self) -> datetime:
        found = _when(self.parent["expires_at"])
        assert found is not None
        return found

    def mint(self, token: str, **body: Any) -> TestResponse:
        body.setdefault("name", f"child-{datetime.now(UTC).timestamp()}")
        body.setdefault("project_id", self.project)
        return self.api.call("POST", f"/v1/users/{self.alice}/application-credentials", token, body)

    def minted(self, token: str, **body: Any) -> dict[str, Any]:
        response = self.mint(token, **body)
        assert response.status_code == 201, response.get_json()
        created: dict[str, Any] = response.get_json()
        return created

    def add_secret(self, token: str, credential_id: str, **body: Any) -> TestResponse:
        path = f"/v1/users/{self.alice}/application-credentials/{credential_id}/secrets"
        return self.api.call("POST", path, token, body)

    def login(
        self, credential_id: str, secret: str, environ: dict[str, str] | None = None
    ) -> TestResponse:
        body = {"auth": {"application_credential": {"id": credential_id, "secret": secret}}}
        return self.api.client.post("/v1/auth/tokens", json=body, environ_base=environ or INSIDE)

    def token(self, credential_id: str, secret: str) -> str:
        response = self.login(credential_id, secret)
        assert response.status_code == 201, response.get_json()
        return str(response.get_json()["token"])


def too_wide(response: TestResponse, code: str, label: Any = None) -> None:
    body = response.get_json()
    assert response.status_code == 403, (label, code, response.status_code, body)
    assert response.mimetype == "application/problem+json", label
    assert body["code"] == code, (label, body)


@pytest.fixture
def world(app: Flask, api: Api, admin_token: str) -> World:
    project = str(api.ok("POST", "/v1/projects", admin_token, {"name": "web"})["id"])
    other = str(api.ok("POST", "/v1/projects", admin_token, {"name": "db"})["id"])
    alice = str(
        api.ok("POST", "/v1/users", admin_token, {"name": "alice", "password": PASSWORD})["id"]
    )
    for where in (project, other):
        api.ok("PUT", f"/v1/projects/{where}/users/{alice}/roles/member", admin_token)
    alice_token = api.login("alice", PASSWORD, project="web")
    expires = (datetime.now(UTC) + timedelta(days=10)).replace(microsecond=0)
    parent = api.ok(
        "POST",
        f"/v1/users/{alice}/application-credentials",
        alice_token,
        {
            "name": "parent",
            "project_id": project,
            "unrestricted": True,
            "expires_at": expires.isoformat(),
            "allowed_cidrs": PARENT_CIDRS,
            "access_rules": PARENT_RULES,
        },
    )
    w = World(app, api, admin_token, project, other, alice, alice_token, parent, "")
    w.parent_token = w.token(parent["id"], parent["secret"])
    return w


# -- expiry ---------------------------------------------------------------------------------


def test_a_child_never_outlives_its_parent(world: World) -> None:
    later = world.parent_expiry + timedelta(days=1)
    too_wide(
        world.mint(world.parent_token, expires_at=later.isoformat()), "expires_at_beyond_parent"
    )
    # Unset or null: capped to the parent's expiry, not "never".
    for body in ({}, {"expires_at": None}):
        child = world.minted(world.parent_token, **body)
        assert _when(child["expires_at"]) == world.parent_expiry, body
        assert [_when(s["expires_at"]) for s in child["secrets"]] == [world.parent_expiry]
        token = world.token(child["id"], child["secret"])
        assert _claims(token)["exp"] <= world.parent_expiry.timestamp()
    # Earlier is fine, and kept.
    sooner = (world.parent_expiry - timedelta(days=2)).replace(microsecond=0)
    child = world.minted(world.parent_token, expires_at=sooner.isoformat())
    assert _when(child["expires_at"]) == sooner
    # A password token mints as its human pleases (Keystone's rule): no cap there.
    free = world.minted(world.alice_token)
    assert free["expires_at"] is None


def test_a_child_never_outlives_the_secret_the_token_came_from(world: World) -> None:
    """Rotation: a secret that expires before its credential (the old one, maybe the
    leaked one) cannot mint its way past its own end."""
    soon = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
    second = world.add_secret(world.alice_token, world.parent["id"], expires_at=soon.isoformat())
    assert second.status_code == 201, second.get_json()
    token = world.token(world.parent["id"], second.get_json()["secret"])
    assert _claims(token)["exp"] <= soon.timestamp()
    child = world.minted(token)
    assert _when(child["expires_at"]) == soon
    between = soon + timedelta(days=2)  # before the credential's own expiry, after the secret's
    too_wide(world.mint(token, expires_at=between.isoformat()), "expires_at_beyond_parent")
    # A new secret of its own credential: no longer than the token's secret either.
    renewed = world.add_secret(token, world.parent["id"])
    assert renewed.status_code == 201, renewed.get_json()
    assert _when(renewed.get_json()["expires_at"]) == soon
    too_wide(
        world.add_secret(token, world.parent["id"], expires_at=between.isoformat()),
        "expires_at_beyond_parent",
    )


# -- networks -------------------------------------------------------------------------------


def test_a_child_stays_inside_its_parents_networks(world: World) -> None:
    for cidrs in (["0.0.0.0/0"], ["10.0.0.0/8"], ["10.20.0.0/15"], ["10.21.0.1"], ["::/0"]):
        too_wide(
            world.mint(world.parent_token, allowed_cidrs=cidrs),
            "allowed_cidrs_beyond_parent",
            cidrs,
        )
    # One network outside is enough to refuse.
    too_wide(
        world.mint(world.parent_token, allowed_cidrs=["10.20.3.0/24", "172.16.0.0/12"]),
        "allowed_cidrs_beyond_parent",
    )
    inside = world.minted(world.parent_token, allowed_cidrs=["10.20.3.0/24", "2001:db8:1::/48"])
    assert inside["allowed_cidrs"] == ["10.20.3.0/24", "2001:db8:1::/48"]
    # None asked ([] or nothing): the parent's networks, not "anywhere".
    for body in ({}, {"allowed_cidrs": []}):
        child = world.minted(world.parent_token, **body)
        assert child["allowed_cidrs"] == PARENT_CIDRS, body
        failed = world.login(child["id"], child["secret"], OUTSIDE)
        assert failed.status_code == 401, failed.get_json()
        assert world.login(child["id"], child["secret"], INSIDE).status_code == 201


# -- access rules ---------------------------------------------------------------------------


def test_a_child_stays_within_its_parents_access_rules(world: World) -> None:
    servers = {"service": "compute", "method": "GET", "path": "/v2.1/servers/*"}
    for label, rule in (
        ("deeper glob", {**servers, "path": "/v2.1/servers/**"}),
        ("other path", {**servers, "path": "/v2.1/volumes/*"}),
        ("shorter path", {**servers, "path": "/v2.1/servers"}),
        ("other method", {**servers, "method": "DELETE"}),
        ("other service", {**servers, "service": "image"}),
        ("parent of the parent's path", {**servers, "path": "/v2.1/*"}),
        ("deeper than one segment", {**servers, "path": "/v2.1/servers/*/action"}),
    ):
        too_wide(
            world.mint(world.parent_token, access_rules=[rule]), "access_rules_beyond_parent", label
        )
    narrower = [
        {**servers, "path": "/v2.1/servers/{server_id}"},
        {**servers, "path": "/v2.1/servers/abc"},
        {**servers, "path": "/v2.1/flavors/*/os-extra_specs"},  # inside /v2.1/flavors/**
        {**servers, "path": "/v2.1/flavors"},  # ** also matches no segment
    ]
    child = world.minted(world.parent_token, access_rules=narrower)
    assert child["access_rules"] == narrower
    # None asked: the parent's rules, not "everything".
    for body in ({}, {"access_rules": []}):
        child = world.minted(world.parent_token, **body)
        assert child["access_rules"] == PARENT_RULES, body
        token = world.token(child["id"], child["secret"])
        assert _claims(token)["application_credential"]["access_rules"] == PARENT_RULES
        # So the child's token is held to them on Latchkey's own API too.
        listed = world.api.call("GET", f"/v1/users/{world.alice}/application-credentials", token)
        assert listed.status_code == 403 and listed.get_json()["code"] == "access_rule_denied"


def test_roles_and_project_stay_within_the_token(world: World) -> None:
    too_wide(world.mint(world.parent_token, roles=["admin"]), "role_not_held")
    too_wide(world.mint(world.parent_token, project_id=world.other_project), "role_not_held")
    child = world.minted(world.parent_token, roles=["reader"])
    assert child["roles"] == ["reader"]


def test_a_grandchild_stays_within_the_child(world: World) -> None:
    child = world.minted(
        world.parent_token,
        unrestricted=True,
        allowed_cidrs=["10.20.1.0/24"],
        access_rules=PARENT_RULES[:1],
        expires_at=(world.parent_expiry - timedelta(days=1)).isoformat(),
    )
    token = world.token(child["id"], child["secret"])
    too_wide(world.mint(token, allowed_cidrs=["10.20.0.0/16"]), "allowed_cidrs_beyond_parent")
    too_wide(
        world.mint(token, expires_at=world.parent_expiry.isoformat()), "expires_at_beyond_parent"
    )
    grandchild = world.minted(token)
    assert grandchild["allowed_cidrs"] == ["10.20.1.0/24"]
    assert grandchild["access_rules"] == PARENT_RULES[:1]
    assert _when(grandchild["expires_at"]) == _when(child["expires_at"])


# -- new secrets ----------------------------------------------------------------------------


def test_a_token_cannot_add_secrets_to_a_wider_credential(world: World) -> None:
    """A secret added to another credential is that credential's power in the caller's
    hands: allowed only for a credential within the token's own."""
    wide = world.minted(world.alice_token, name="wide")  # by password: no limits at all
    too_wide(world.add_secret(world.parent_token, wide["id"]), "access_rules_beyond_parent")
    ruled = world.minted(world.alice_token, name="ruled", access_rules=PARENT_RULES[3:])
    too_wide(world.add_secret(world.parent_token, ruled["id"]), "allowed_cidrs_beyond_parent")
    elsewhere = world.api.ok(
        "POST",
        f"/v1/users/{world.alice}/application-credentials",
        world.api.login("alice", PASSWORD, project="db"),
        {"name": "elsewhere", "project_id": world.other_project},
    )
    too_wide(world.add_secret(world.parent_token, elsewhere["id"]), "role_not_held")
    # Within the parent: allowed, and the new secret ends with the parent.
    within = world.minted(
        world.alice_token,
        name="within",
        access_rules=PARENT_RULES[3:],
        allowed_cidrs=["10.20.9.0/24"],
    )
    added = world.add_secret(world.parent_token, within["id"])
    assert added.status_code == 201, added.get_json()
    assert _when(added.get_json()["expires_at"]) == world.parent_expiry


# -- Keystone's /v3 -------------------------------------------------------------------------


def test_keystone_application_credentials_obey_the_same_rule(world: World) -> None:
    path = f"/v3/users/{world.alice}/application_credentials"
    headers = {"X-Auth-Token": world.parent_token}
    later = (world.parent_expiry + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%S")
    response = world.api.client.post(
        path, headers=headers, json={"application_credential": {"name": "k1", "expires_at": later}}
    )
    assert response.status_code == 403, response.get_json()
    assert "expires" in response.get_json()["error"]["message"]
    wide_rule = {"service": "compute", "method": "GET", "path": "/v2.1/**"}
    response = world.api.client.post(
        path,
        headers=headers,
        json={"application_credential": {"name": "k2", "access_rules": [wide_rule]}},
    )
    assert response.status_code == 403, response.get_json()
    # What Keystone clients leave out (or send empty) is inherited.
    response = world.api.client.post(
        path, headers=headers, json={"application_credential": {"name": "k3", "access_rules": []}}
    )
    assert response.status_code == 201, response.get_json()
    created = response.get_json()["application_credential"]
    assert _when(created["expires_at"]) == world.parent_expiry
    assert [
        {k: rule[k] for k in ("service", "method", "path")} for rule in created["access_rules"]
    ] == PARENT_RULES


# -- tokens minted from the credential -----------------------------------------------------


def test_oauth_tokens_carry_the_credentials_limits(world: World) -> None:
    soon = (datetime.now(UTC) + timedelta(hours=2)).replace(microsecond=0)
    second = world.add_secret(world.alice_token, world.parent["id"], expires_at=soon.isoformat())
    secret = second.get_json()["secret"]
    raw = f"{world.parent['id']}:{secret}".encode()
    basic = {"Authorization": "Basic " + base64.b64encode(raw).decode()}
    for form in ({}, {"scope": "reader"}):  # as issued, and narrowed (re-signed)
        response = world.api.client.post(
            "/oauth2/token",
            data={"grant_type": "client_credentials", **form},
            headers=basic,
            environ_base=INSIDE,
        )
        assert response.status_code == 200, response.get_json()
        claims = _claims(response.get_json()["access_token"])
        assert claims["exp"] <= soon.timestamp(), form
        credential = claims["application_credential"]
        assert credential["id"] == world.parent["id"]
        assert credential["access_rules"] == PARENT_RULES
        assert credential["restricted"] is False
        assert claims["project"]["id"] == world.project
    refused = world.api.client.post(
        "/oauth2/token",
        data={"grant_type": "client_credentials"},
        headers=basic,
        environ_base=OUTSIDE,
    )
    assert refused.status_code == 401 and refused.get_json()["error"] == "invalid_client"


def test_no_token_is_minted_from_a_token(world: World) -> None:
    """A token from an application credential cannot be exchanged for another (one that
    might outlive it or drop its limits): the ``token`` method (issue 14) refuses it on
    /v1 and /v3 alike, and so does a trust scope."""
    v3 = world.api.client.post(
        "/v3/auth/tokens",
        json={
            "auth": {
                "identity": {"methods": ["token"], "token": {"id": world.parent_token}},
                "scope": {"project": {"id": world.project}},
            }
        },
    )
    assert v3.status_code == 401, v3.get_json()
    assert "X-Subject-Token" not in v3.headers
    trust = world.api.client.post(
        "/v3/auth/tokens",
        json={
            "auth": {
                "identity": {"methods": ["token"], "token": {"id": world.parent_token}},
                "scope": {"OS-TRUST:trust": {"id": "anything"}},
            }
        },
    )
    assert trust.status_code in (400, 401), trust.get_json()
    v1 = world.api.client.post(
        "/v1/auth/tokens", json={"auth": {"token": {"id": world.parent_token}}}
    )
    assert v1.status_code in (400, 401, 422), v1.get_json()
    assert "token" not in (v1.get_json() or {})


# -- the cover check itself -----------------------------------------------------------------


def test_rule_cover_is_exactly_path_inclusion() -> None:
    """``path_covers(parent, child)`` against brute force: every template of up to three
    segments over literals, ``*``, ``{name}`` and ``**``, and every path of up to five
    segments (enough to tell any two such templates apart)."""
    segments = ["a", "b", "*", "**", "{x}"]
    templates = [
        "/" + "/".join(combo) for n in range(4) for combo in itertools.product(segments, repeat=n)
    ]
    paths = [
        "/" + "/".join(combo) for n in range(6) for combo in itertools.product("abc", repeat=n)
    ]
    matched = {t: frozenset(p for p in paths if path_matches(t, p)) for t in templates}
    wrong = [
        (parent, child)
        for parent in templates
        for child in templates
        if path_covers(parent, child) != (matched[child] <= matched[parent])
    ]
    assert wrong == []
    assert path_covers("/v2.1/servers/*", "/v2.1/servers/{id}")
    assert not path_covers("/v2.1/servers/*", "/v2.1/servers/**")
    assert path_covers("/**/*", "/*/**")  # both: one segment or more
