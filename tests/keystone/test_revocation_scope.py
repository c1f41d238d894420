"""Removing a role grant revokes the tokens it can reach, as Keystone's revoke_by_grant.

A user's direct grant on a project, removed: that user's tokens scoped to that project
die (password, application credential, trust), and nothing else of theirs: Tempest's
``test_rescope_token`` grants the admin a role on another project, removes it, and
goes on with the admin's own token. On every validation path (bearer, /v1 and /v3
validation, introspection), in another worker's index and in a relying service's
middleware through the feed. Grants whose reach is wider stay conservative.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from latchkey.db import utcnow
from latchkey.middleware.caches import RevocationCache
from latchkey.tokens.revocations import USER, USER_PROJECT, RevocationList
from latchkey.wire.revocation import user_project_subject
from tests.conftest import ADMIN_PASSWORD, database_of
from tests.integration.test_middleware import PASSWORD as MIDDLEWARE_PASSWORD
from tests.integration.test_middleware import Env, env, served, status  # noqa: F401
from tests.keystone.test_roles import PASSWORD, V3

TTL = timedelta(hours=1)


@pytest.fixture
def v3(client: FlaskClient, app: Flask) -> V3:
    return V3(client, app)


# -- helpers ----------------------------------------------------------------------------


def validate_v3(client: FlaskClient, caller: str, token: str) -> int:
    response = client.get(
        "/v3/auth/tokens", headers={"X-Auth-Token": caller, "X-Subject-Token": token}
    )
    return response.status_code


def validate_v1(client: FlaskClient, caller: str, token: str) -> int:
    response = client.get(
        "/v1/auth/tokens",
        headers={"Authorization": f"Bearer {caller}", "X-Subject-Token": token},
    )
    return response.status_code


def bearer_v3(client: FlaskClient, token: str, user_id: str) -> int:
    """The token as the caller's own credential (a user reads itself)."""
    return client.get(f"/v3/users/{user_id}", headers={"X-Auth-Token": token}).status_code


def introspect(client: FlaskClient, relying: dict[str, Any], token: str) -> bool:
    raw = f"{relying['id']}:{relying['secret']}".encode()
    response = client.post(
        "/oauth2/introspect",
        data={"token": token},
        headers={"Authorization": "Basic " + base64.b64encode(raw).decode()},
    )
    assert response.status_code == 200, response.get_json()
    return bool(response.get_json()["active"])


def scoped(v3: V3, user: str, project: str, password: str = PASSWORD) -> str:
    response = v3.auth(user, password, project=project)
    assert response.status_code == 201, response.get_json()
    return str(response.headers["X-Subject-Token"])


def credential_token(v3: V3, user_token: str, user_id: str, name: str) -> str:
    """An application credential of the token's project, and a token from it."""
    created = v3.ok(
        "POST",
        f"/v3/users/{user_id}/application_credentials",
        {"application_credential": {"name": name}},
        token=user_token,
    )["application_credential"]
    identity = {
        "methods": ["application_credential"],
        "application_credential": {"id": created["id"], "secret": created["secret"]},
    }
    response = v3.client.post("/v3/auth/tokens", json={"auth": {"identity": identity}})
    assert response.status_code == 201, response.get_json()
    return str(response.headers["X-Subject-Token"])


def relying_client(v3: V3) -> dict[str, Any]:
    """An application credential holding ``service``: it may introspect any token."""
    project = v3.project("services")
    user = v3.user("relying")
    v3.ok("PUT", f"/v3/projects/{project}/users/{user}/roles/{role_id(v3, 'service')}")
    token = scoped(v3, "relying", "services")
    created: dict[str, Any] = v3.ok(
        "POST",
        f"/v3/users/{user}/application_credentials",
        {"application_credential": {"name": "introspect", "roles": [{"name": "service"}]}},
        token=token,
    )["application_credential"]
    return created


def role_id(v3: V3, name: str) -> str:
    roles = v3.ok("GET", f"/v3/roles?name={name}")["roles"]
    return str(roles[0]["id"])


def feed(v3: V3) -> list[dict[str, Any]]:
    response = v3.client.get(
        "/v1/revocations?since=0", headers={"Authorization": f"Bearer {v3.admin}"}
    )
    assert response.status_code == 200, response.get_json()
    return list(response.get_json()["revocations"])


# -- the Tempest scenario, through the API (SQLite and PostgreSQL) ----------------------


def test_the_admins_own_token_survives_a_grant_removed_elsewhere(v3: V3) -> None:
    """tempest...TokensV3TestJSON.test_rescope_token: a grant to the admin on another
    project, removed in a cleanup; the class goes on with the admin's token."""
    other = v3.project("tempest-other")
    admin_user = v3.client.get(
        "/v3/auth/tokens", headers={"X-Auth-Token": v3.admin, "X-Subject-Token": v3.admin}
    ).get_json()["token"]["user"]["id"]
    member = role_id(v3, "member")
    grant = f"/v3/projects/{other}/users/{admin_user}/roles/{member}"
    v3.ok("PUT", grant)
    on_other = scoped(v3, "admin", "tempest-other", ADMIN_PASSWORD)
    v3.ok("DELETE", grant)
    # The admin's own token (scoped to the admin project) answers the next request.
    assert v3.call("GET", "/v3/projects").status_code == 200
    assert validate_v3(v3.client, v3.admin, v3.admin) == 200
    # Its token on the other project is gone.
    assert validate_v3(v3.client, v3.admin, on_other) == 404
    assert v3.call("GET", "/v3/projects", token=on_other).status_code == 401


def test_a_grant_removed_on_b_revokes_the_b_tokens_only(v3: V3) -> None:
    project_a, project_b = v3.project("project-a"), v3.project("project-b")
    alice = v3.user("alice")
    member = role_id(v3, "member")
    for project in (project_a, project_b):
        v3.ok("PUT", f"/v3/projects/{project}/users/{alice}/roles/{member}")
    on_a, on_b = scoped(v3, "alice", "project-a"), scoped(v3, "alice", "project-b")
    unscoped = v3.client.post(
        "/v3/auth/tokens",
        json={
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {"name": "alice", "domain": {"id": "default"}, "password": PASSWORD}
                    },
                }
            }
        },
    ).headers["X-Subject-Token"]
    credential_a = credential_token(v3, on_a, alice, "ci-a")
    credential_b = credential_token(v3, on_b, alice, "ci-b")
    relying = relying_client(v3)
    live = (on_a, unscoped, credential_a)
    gone = (on_b, credential_b)
    for token in live + gone:
        assert validate_v3(v3.client, v3.admin, token) == 200

    v3.ok("DELETE", f"/v3/projects/{project_b}/users/{alice}/roles/{member}")

    for token in live:  # every validation path still takes them
        assert validate_v3(v3.client, v3.admin, token) == 200
        assert validate_v1(v3.client, v3.admin, token) == 200
        assert bearer_v3(v3.client, token, alice) == 200
        assert introspect(v3.client, relying, token)
    for token in gone:
        assert validate_v3(v3.client, v3.admin, token) == 404
        assert validate_v1(v3.client, v3.admin, token) == 404
        assert bearer_v3(v3.client, token, alice) == 401
        assert not introspect(v3.client, relying, token)
    # No new token on B either: the role is gone; on A as before.
    assert v3.auth("alice", PASSWORD, project="project-b").status_code == 401
    assert validate_v3(v3.client, v3.admin, scoped(v3, "alice", "project-a")) == 200
    # Granted again, B takes new tokens; the old one stays revoked.
    v3.ok("PUT", f"/v3/projects/{project_b}/users/{alice}/roles/{member}")
    assert validate_v3(v3.client, v3.admin, scoped(v3, "alice", "project-b")) == 200
    assert validate_v3(v3.client, v3.admin, on_b) == 404
    # The feed says so with one user_project event, no user event for alice.
    events = [(e["kind"], e["subject"]) for e in feed(v3)]
    assert (USER_PROJECT, user_project_subject(alice, project_b)) in events
    assert (USER, alice) not in events


def test_another_user_on_the_same_project_keeps_their_tokens(v3: V3) -> None:
    project = v3.project("shared")
    alice, bob = v3.user("alice"), v3.user("bob")
    member = role_id(v3, "member")
    for user in (alice, bob):
        v3.ok("PUT", f"/v3/projects/{project}/users/{user}/roles/{member}")
    alices, bobs = scoped(v3, "alice", "shared"), scoped(v3, "bob", "shared")
    v3.ok("DELETE", f"/v3/projects/{project}/users/{alice}/roles/{member}")
    assert validate_v3(v3.client, v3.admin, alices) == 404
    assert validate_v3(v3.client, v3.admin, bobs) == 200


def test_wider_removals_still_revoke_every_token_of_the_user(v3: V3) -> None:
    """Groups, domains and inheritance reach further than one project: user events."""
    project_a, project_b = v3.project("project-a"), v3.project("project-b")
    alice = v3.user("alice")
    member = role_id(v3, "member")
    v3.ok("PUT", f"/v3/projects/{project_a}/users/{alice}/roles/{member}")
    removals = []
    group = v3.group("team")
    v3.add_member(group, alice)
    removals.append(f"/v3/projects/{project_b}/groups/{group}/roles/{member}")
    removals.append(f"/v3/domains/default/users/{alice}/roles/{member}")
    removals.append(
        f"/v3/OS-INHERIT/projects/{project_b}/users/{alice}/roles/{member}/inherited_to_projects"
    )
    for path in removals:
        v3.ok("PUT", path)
        on_a = scoped(v3, "alice", "project-a")
        v3.ok("DELETE", path)
        assert validate_v3(v3.client, v3.admin, on_a) == 404, path


# -- the index of every worker (SQLite and PostgreSQL) ---------------------------------


def claims(
    sub: str = "u1", project: str | None = "p1", age: int = 10, **extra: Any
) -> dict[str, Any]:
    issued = int((utcnow() - timedelta(seconds=age)).timestamp() * 1000)
    found: dict[str, Any] = {"jti": f"t-{sub}-{project}-{age}", "sub": sub, "iat_ms": issued}
    if project:
        found["project"] = {"id": project}
    return found | extra


def test_another_workers_user_project_event_counts_at_the_next_check(app: Flask) -> None:
    with app.app_context():
        mine, theirs = (
            RevocationList(database_of(app).session, TTL),
            RevocationList(database_of(app).session, TTL),
        )
        assert not mine.is_revoked(claims())
        theirs.add_user_project("u1", "p1")
        theirs.commit()
        assert mine.is_revoked(claims("u1", "p1"))
        assert not mine.is_revoked(claims("u1", "p2"))  # the user's other project
        assert not mine.is_revoked(claims("u2", "p1"))  # another user on it
        assert not mine.is_revoked(claims("u1", None))  # unscoped
        assert not mine.is_revoked(claims("u1", "p1", age=-5))  # issued afterwards
        credential = claims("u1", "p1", application_credential={"id": "c1", "secret_id": "s1"})
        assert mine.is_revoked(credential)
        # A trust's token on the project: by its trustor or its trustee.
        for side in ("trustor_user_id", "trustee_user_id"):
            trust = {"id": "tr", "trustor_user_id": "x", "trustee_user_id": "y", side: "u1"}
            assert mine.is_revoked(claims("someone", "p1", trust=trust))
            assert not mine.is_revoked(claims("someone", "p2", trust=trust))
        database_of(app).session.remove()


def test_the_subject_fits_the_column_whatever_the_ids() -> None:
    long_id = "x" * 64
    subject = user_project_subject(long_id, long_id)
    assert len(subject) == 64 and subject == user_project_subject(long_id, long_id)
    # Distinct pairs, distinct subjects, even when the concatenations agree.
    assert user_project_subject("ab", "c") != user_project_subject("a", "bc")


# -- a relying service: the middleware through the feed ---------------------------------


def test_the_middleware_honours_a_user_project_event(env: Env) -> None:  # noqa: F811
    middleware = env.middleware()
    other = env.api.ok("POST", "/v1/projects", env.admin, {"name": "other"})
    path = f"/v1/projects/{other['id']}/users/{env.alice_id}/roles/member"
    env.api.ok("PUT", path, env.admin)
    on_other = env.api.login("alice", MIDDLEWARE_PASSWORD, project="other")
    assert status(middleware, env.alice) == 200
    assert status(middleware, on_other) == 200
    env.api.ok("DELETE", path, env.admin)
    assert status(middleware, on_other) == 200  # the window: until the next poll
    env.clock.advance(5)
    assert status(middleware, on_other) == 401
    assert status(middleware, env.alice) == 200  # her token on "web" lives on


class FakeFeed:
    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.events = events

    def get(self, path: str, token: str, **params: Any) -> dict[str, Any]:
        fresh = [e for e in self.events if e["id"] > params["since"]]
        return {"revocations": fresh, "cursor": max([e["id"] for e in self.events] or [0])}


def test_the_middleware_cache_matches_and_prunes_user_project_events() -> None:
    now = [datetime.now(UTC).timestamp()]
    before = datetime.fromtimestamp(now[0], UTC).isoformat()
    subject = user_project_subject("u1", "p1")
    http = FakeFeed([{"id": 1, "kind": USER_PROJECT, "subject": subject, "issued_before": before}])
    cache = RevocationCache(
        http,  # type: ignore[arg-type]
        lambda: "service-token",
        poll_interval=5,
        max_staleness=60,
        max_token_lifetime=3600,
        clock=lambda: now[0],
        wall_clock=lambda: now[0],
    )
    cache.poll(force=True)
    assert cache.is_revoked(claims("u1", "p1"))
    assert not cache.is_revoked(claims("u1", "p2"))
    assert not cache.is_revoked(claims("u2", "p1"))
    assert not cache.is_revoked(claims("u1", "p1", age=-5))
    trust = {"id": "tr", "trustor_user_id": "u1", "trustee_user_id": "u9"}
    assert cache.is_revoked(claims("u9", "p1", trust=trust))
    # Past every token it could match, the event is pruned and nothing is hashed again.
    now[0] += 3601
    cache.poll(force=True)
    assert len(cache) == 0 and cache._user_projects == 0
    assert not cache.is_revoked(claims("u1", "p1"))
