"""Identity CRUD through the HTTP API, as the cloud admin, on both backends.

Domains, projects, users (human and application), groups and membership,
role assignments (direct and effective), tokens that follow membership,
password policy and self-service password change, role implication cycles.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Api, password_auth

PASSWORD = "a-long-enough-password"


# -- helpers ------------------------------------------------------------------------


def problem(response: Any, status: int, code: str) -> dict[str, Any]:
    """Assert an RFC 9457 error with this status and stable code."""
    body = response.get_json(silent=True)
    assert response.status_code == status, (response.status_code, body)
    assert response.mimetype == "application/problem+json", response.mimetype
    assert body is not None
    assert body["code"] == code, body
    assert body["status"] == status
    return dict(body)


def make_user(api: Api, token: str, name: str, **extra: Any) -> dict[str, Any]:
    body = {"name": name, "password": PASSWORD, **extra}
    return dict(api.ok("POST", "/v1/users", token, body))


def make_project(api: Api, token: str, name: str, **extra: Any) -> dict[str, Any]:
    return dict(api.ok("POST", "/v1/projects", token, {"name": name, **extra}))


def validate(api: Api, token: str, subject: str) -> Any:
    """GET /v1/auth/tokens: the admin checks someone's token."""
    return api.call("GET", "/v1/auth/tokens", token, headers={"X-Subject-Token": subject})


def walk(api: Api, token: str, path: str, key: str, limit: int, **query: str) -> list[str]:
    """Follow next_marker until it runs out; return every id seen, in order."""
    ids: list[str] = []
    marker: str | None = None
    for _ in range(100):
        params = {"limit": str(limit), **query}
        if marker:
            params["marker"] = marker
        response = api.call("GET", path, token, query_string=params)
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        assert len(body[key]) <= limit
        ids += [item["id"] for item in body[key]]
        marker = body["next_marker"]
        if marker is None:
            return ids
    raise AssertionError("pagination never ended")


def effective(api: Api, token: str, **query: str) -> set[tuple[str, str, str | None, str | None]]:
    """(role, scope id, via group, implied_by) for every effective assignment."""
    response = api.call(
        "GET", "/v1/role-assignments", token, query_string={**query, "effective": "true"}
    )
    assert response.status_code == 200, response.get_json()
    found = set()
    for a in response.get_json()["role_assignments"]:
        (scope,) = a["scope"].values()
        found.add(
            (
                a["role"]["name"],
                scope["id"],
                (a.get("via_group") or {}).get("id"),
                a.get("implied_by"),
            )
        )
    return found


# -- domains ------------------------------------------------------------------------


def test_domain_crud_and_delete_requires_disabling(api: Api, admin_token: str) -> None:
    domain = api.ok(
        "POST", "/v1/domains", admin_token, {"name": "acme", "description": "Acme Corp"}
    )
    assert domain["name"] == "acme"
    assert domain["enabled"] is True
    assert domain["identity_backend"] == "sql"
    did = domain["id"]

    assert api.ok("GET", f"/v1/domains/{did}", admin_token) == domain
    patched = api.ok("PATCH", f"/v1/domains/{did}", admin_token, {"description": "ACME"})
    assert patched["description"] == "ACME"
    assert api.ok("GET", f"/v1/domains/{did}", admin_token)["description"] == "ACME"

    listed = api.ok("GET", "/v1/domains?name=acme", admin_token)["domains"]
    assert [d["id"] for d in listed] == [did]

    problem(
        api.call("POST", "/v1/domains", admin_token, {"name": "acme"}), 409, "domain_name_taken"
    )
    problem(
        api.call("PATCH", f"/v1/domains/{did}", admin_token, {"name": "Default"}),
        409,
        "domain_name_taken",
    )

    # An enabled domain cannot be deleted; it is still there afterwards.
    problem(api.call("DELETE", f"/v1/domains/{did}", admin_token), 409, "domain_enabled")
    api.ok("GET", f"/v1/domains/{did}", admin_token)

    api.ok("PATCH", f"/v1/domains/{did}", admin_token, {"enabled": False})
    api.ok("DELETE", f"/v1/domains/{did}", admin_token)
    problem(api.call("GET", f"/v1/domains/{did}", admin_token), 404, "domain_not_found")
    problem(api.call("DELETE", f"/v1/domains/{did}", admin_token), 404, "domain_not_found")


def test_deleting_a_domain_takes_its_contents_and_tokens(api: Api, admin_token: str) -> None:
    did = api.ok("POST", "/v1/domains", admin_token, {"name": "gone"})["id"]
    project = make_project(api, admin_token, "p", domain_id=did)
    user = make_user(api, admin_token, "u", domain_id=did)
    group = api.ok("POST", "/v1/groups", admin_token, {"name": "g", "domain_id": did})
    api.ok("PUT", f"/v1/projects/{project['id']}/users/{user['id']}/roles/member", admin_token)
    token = api.login("u", PASSWORD, project="p", user_domain=did, project_domain=did)

    api.ok("PATCH", f"/v1/domains/{did}", admin_token, {"enabled": False})
    # Disabling the domain already ends its users' tokens.
    problem(validate(api, admin_token, token), 404, "token_not_found")
    api.ok("DELETE", f"/v1/domains/{did}", admin_token)

    problem(api.call("GET", f"/v1/projects/{project['id']}", admin_token), 404, "project_not_found")
    problem(api.call("GET", f"/v1/users/{user['id']}", admin_token), 404, "user_not_found")
    problem(api.call("GET", f"/v1/groups/{group['id']}", admin_token), 404, "group_not_found")
    everything = api.ok("GET", "/v1/role-assignments", admin_token)["role_assignments"]
    assert not [a for a in everything if (a.get("user") or {}).get("id") == user["id"]]
    assert [d["id"] for d in api.ok("GET", "/v1/domains", admin_token)["domains"]] == ["default"]


def test_default_domain_and_admin_project_are_protected(api: Api, admin_token: str) -> None:
    admin_project = api.ok("GET", "/v1/projects?name=admin", admin_token)["projects"][0]
    assert admin_project["is_admin_project"] is True
    problem(
        api.call("DELETE", f"/v1/projects/{admin_project['id']}", admin_token),
        409,
        "project_protected",
    )
    api.ok("GET", f"/v1/projects/{admin_project['id']}", admin_token)
    problem(api.call("DELETE", "/v1/domains/default", admin_token), 409, "domain_enabled")


# -- projects -----------------------------------------------------------------------


def test_project_crud_and_names_unique_per_domain(api: Api, admin_token: str) -> None:
    other = api.ok("POST", "/v1/domains", admin_token, {"name": "other"})["id"]
    web = make_project(api, admin_token, "web", description="the web team")
    assert web["domain_id"] == "default"
    assert web["is_admin_project"] is False
    # The same name is fine in another domain ...
    web2 = make_project(api, admin_token, "web", domain_id=other)
    assert web2["domain_id"] == other
    assert web2["id"] != web["id"]
    # ... but not twice in one.
    problem(
        api.call("POST", "/v1/projects", admin_token, {"name": "web"}), 409, "project_name_taken"
    )
    problem(
        api.call("POST", "/v1/projects", admin_token, {"name": "web", "domain_id": other}),
        409,
        "project_name_taken",
    )
    problem(
        api.call("POST", "/v1/projects", admin_token, {"name": "x", "domain_id": "nope"}),
        404,
        "domain_not_found",
    )

    assert api.ok("GET", f"/v1/projects/{web['id']}", admin_token) == web
    patched = api.ok(
        "PATCH", f"/v1/projects/{web['id']}", admin_token, {"name": "www", "enabled": False}
    )
    assert (patched["name"], patched["enabled"]) == ("www", False)
    # Renaming onto a taken name is refused and changes nothing.
    make_project(api, admin_token, "api")
    problem(
        api.call("PATCH", f"/v1/projects/{web['id']}", admin_token, {"name": "api"}),
        409,
        "project_name_taken",
    )
    assert api.ok("GET", f"/v1/projects/{web['id']}", admin_token)["name"] == "www"

    in_other = api.ok("GET", f"/v1/projects?domain_id={other}", admin_token)["projects"]
    assert [p["id"] for p in in_other] == [web2["id"]]
    in_default = api.ok("GET", "/v1/projects?domain_id=default", admin_token)["projects"]
    assert {p["name"] for p in in_default} == {"admin", "www", "api"}
    by_name = api.ok("GET", "/v1/projects?name=web", admin_token)["projects"]
    assert [p["id"] for p in by_name] == [web2["id"]]
    both = api.ok("GET", f"/v1/projects?name=web&domain_id={other}", admin_token)["projects"]
    assert [p["id"] for p in both] == [web2["id"]]
    assert api.ok("GET", "/v1/projects?name=web&domain_id=default", admin_token)["projects"] == []

    api.ok("DELETE", f"/v1/projects/{web['id']}", admin_token)
    problem(api.call("GET", f"/v1/projects/{web['id']}", admin_token), 404, "project_not_found")
    problem(api.call("DELETE", f"/v1/projects/{web['id']}", admin_token), 404, "project_not_found")
    problem(
        api.call("PATCH", f"/v1/projects/{web['id']}", admin_token, {"name": "z"}),
        404,
        "project_not_found",
    )


# -- users --------------------------------------------------------------------------


def test_user_crud_and_names_unique_per_domain(api: Api, admin_token: str) -> None:
    other = api.ok("POST", "/v1/domains", admin_token, {"name": "other"})["id"]
    alice = make_user(api, admin_token, "alice", email="alice@example.com")
    assert alice["kind"] == "human"
    assert alice["domain_id"] == "default"
    assert alice["owner_project_id"] is None
    assert "password" not in alice
    assert "password_hash" not in alice
    assert alice["password_changed_at"] is not None

    alice2 = make_user(api, admin_token, "alice", domain_id=other)
    assert alice2["id"] != alice["id"]
    problem(
        api.call("POST", "/v1/users", admin_token, {"name": "alice", "password": PASSWORD}),
        409,
        "user_name_taken",
    )
    problem(
        api.call("POST", "/v1/users", admin_token, {"name": "a", "domain_id": "nope"}),
        404,
        "domain_not_found",
    )

    fetched = api.ok("GET", f"/v1/users/{alice['id']}", admin_token)
    assert fetched == alice
    patched = api.ok(
        "PATCH",
        f"/v1/users/{alice['id']}",
        admin_token,
        {"email": "a@example.org", "description": "ops", "enabled": False},
    )
    assert (patched["email"], patched["description"], patched["enabled"]) == (
        "a@example.org",
        "ops",
        False,
    )
    problem(
        api.call("PATCH", f"/v1/users/{alice['id']}", admin_token, {"name": "admin"}),
        409,
        "user_name_taken",
    )
    assert api.ok("GET", f"/v1/users/{alice['id']}", admin_token)["name"] == "alice"

    by_domain = api.ok("GET", f"/v1/users?domain_id={other}", admin_token)["users"]
    assert [u["id"] for u in by_domain] == [alice2["id"]]
    by_name = api.ok("GET", "/v1/users?name=alice", admin_token)["users"]
    assert {u["id"] for u in by_name} == {alice["id"], alice2["id"]}
    humans = api.ok("GET", "/v1/users?kind=human&domain_id=default", admin_token)["users"]
    assert {u["name"] for u in humans} == {"admin", "alice"}

    api.ok("DELETE", f"/v1/users/{alice['id']}", admin_token)
    problem(api.call("GET", f"/v1/users/{alice['id']}", admin_token), 404, "user_not_found")
    problem(api.call("DELETE", f"/v1/users/{alice['id']}", admin_token), 404, "user_not_found")


def test_disabled_user_cannot_log_in_and_loses_tokens(api: Api, admin_token: str) -> None:
    project = make_project(api, admin_token, "web")
    bob = make_user(api, admin_token, "bob")
    api.ok("PUT", f"/v1/projects/{project['id']}/users/{bob['id']}/roles/reader", admin_token)
    token = api.login("bob", PASSWORD, project="web")
    api.ok("PATCH", f"/v1/users/{bob['id']}", admin_token, {"enabled": False})
    problem(validate(api, admin_token, token), 404, "token_not_found")
    response = api.client.post("/v1/auth/tokens", json=password_auth("bob", PASSWORD))
    problem(response, 401, "authentication_failed")


def test_deleting_a_user_revokes_their_tokens(api: Api, admin_token: str) -> None:
    project = make_project(api, admin_token, "web")
    bob = make_user(api, admin_token, "bob")
    api.ok("PUT", f"/v1/projects/{project['id']}/users/{bob['id']}/roles/reader", admin_token)
    token = api.login("bob", PASSWORD, project="web")
    assert validate(api, admin_token, token).status_code == 200
    api.ok("DELETE", f"/v1/users/{bob['id']}", admin_token)
    problem(validate(api, admin_token, token), 404, "token_not_found")


# -- pagination ---------------------------------------------------------------------


@pytest.mark.parametrize("key", ["domains", "projects", "users", "groups"])
def test_pagination_walks_every_item_once(api: Api, admin_token: str, key: str) -> None:
    path = f"/v1/{key}"
    for i in range(7):
        api.ok("POST", path, admin_token, {"name": f"{key}-{i}"})
    everything = [item["id"] for item in api.ok("GET", path, admin_token)[key]]
    assert api.ok("GET", path, admin_token)["next_marker"] is None
    assert len(everything) >= 7

    for limit in (1, 2, 3, len(everything), len(everything) + 5):
        seen = walk(api, admin_token, path, key, limit)
        assert len(seen) == len(set(seen)), f"duplicates with limit={limit}"
        assert sorted(seen) == sorted(everything), f"missing items with limit={limit}"

    # A full page that ends exactly at the last item does not promise more.
    body = api.ok("GET", f"{path}?limit={len(everything)}", admin_token)
    assert body["next_marker"] is None
    # Filters and paging combine.
    if key != "domains":
        in_default = api.ok("GET", f"{path}?domain_id=default", admin_token)[key]
        seen = walk(api, admin_token, path, key, 2, domain_id="default")
        assert len(seen) == len(set(seen))
        assert sorted(seen) == sorted(item["id"] for item in in_default)


def test_user_kind_filter_and_pagination(api: Api, admin_token: str) -> None:
    project = make_project(api, admin_token, "bots")
    humans = {make_user(api, admin_token, f"human-{i}")["id"] for i in range(3)}
    apps = {
        api.ok(
            "POST",
            "/v1/users",
            admin_token,
            {"name": f"app-{i}", "kind": "application", "owner_project_id": project["id"]},
        )["id"]
        for i in range(4)
    }
    assert set(walk(api, admin_token, "/v1/users", "users", 3, kind="application")) == apps
    human_ids = set(walk(api, admin_token, "/v1/users", "users", 2, kind="human"))
    assert humans < human_ids
    assert not human_ids & apps


# -- groups -------------------------------------------------------------------------


def test_group_crud_and_membership(api: Api, admin_token: str) -> None:
    other = api.ok("POST", "/v1/domains", admin_token, {"name": "other"})["id"]
    group = api.ok("POST", "/v1/groups", admin_token, {"name": "devs", "description": "Devs"})
    assert group["domain_id"] == "default"
    gid = group["id"]
    api.ok("POST", "/v1/groups", admin_token, {"name": "devs", "domain_id": other})
    problem(api.call("POST", "/v1/groups", admin_token, {"name": "devs"}), 409, "group_name_taken")

    assert api.ok("GET", f"/v1/groups/{gid}", admin_token) == group
    patched = api.ok("PATCH", f"/v1/groups/{gid}", admin_token, {"description": "Developers"})
    assert patched["description"] == "Developers"
    by_domain = api.ok("GET", "/v1/groups?domain_id=default", admin_token)["groups"]
    assert [g["id"] for g in by_domain] == [gid]
    assert len(api.ok("GET", "/v1/groups?name=devs", admin_token)["groups"]) == 2

    alice, bob = make_user(api, admin_token, "alice"), make_user(api, admin_token, "bob")
    assert api.ok("GET", f"/v1/groups/{gid}/users", admin_token)["users"] == []
    api.ok("PUT", f"/v1/groups/{gid}/users/{alice['id']}", admin_token)
    api.ok("PUT", f"/v1/groups/{gid}/users/{alice['id']}", admin_token)  # idempotent
    api.ok("PUT", f"/v1/groups/{gid}/users/{bob['id']}", admin_token)
    members = api.ok("GET", f"/v1/groups/{gid}/users", admin_token)["users"]
    assert [m["name"] for m in members] == ["alice", "bob"]

    api.ok("DELETE", f"/v1/groups/{gid}/users/{alice['id']}", admin_token)
    members = api.ok("GET", f"/v1/groups/{gid}/users", admin_token)["users"]
    assert [m["name"] for m in members] == ["bob"]
    problem(
        api.call("DELETE", f"/v1/groups/{gid}/users/{alice['id']}", admin_token),
        404,
        "membership_not_found",
    )
    problem(api.call("PUT", f"/v1/groups/{gid}/users/nobody", admin_token), 404, "user_not_found")
    problem(
        api.call("PUT", f"/v1/groups/nogroup/users/{bob['id']}", admin_token),
        404,
        "group_not_found",
    )
    problem(api.call("GET", "/v1/groups/nogroup/users", admin_token), 404, "group_not_found")

    # Deleting a member user removes the membership; deleting the group removes it too.
    api.ok("DELETE", f"/v1/users/{bob['id']}", admin_token)
    assert api.ok("GET", f"/v1/groups/{gid}/users", admin_token)["users"] == []
    api.ok("PUT", f"/v1/groups/{gid}/users/{alice['id']}", admin_token)
    api.ok("DELETE", f"/v1/groups/{gid}", admin_token)
    problem(api.call("GET", f"/v1/groups/{gid}", admin_token), 404, "group_not_found")
    api.ok("GET", f"/v1/users/{alice['id']}", admin_token)


# -- role assignments ---------------------------------------------------------------


def test_role_assignments_to_users_and_groups_on_projects_and_domains(
    api: Api, admin_token: str
) -> None:
    project = make_project(api, admin_token, "web")
    pid = project["id"]
    alice = make_user(api, admin_token, "alice")
    carol = make_user(api, admin_token, "carol")
    group = api.ok("POST", "/v1/groups", admin_token, {"name": "devs"})
    gid = group["id"]
    api.ok("PUT", f"/v1/groups/{gid}/users/{alice['id']}", admin_token)

    api.ok("PUT", f"/v1/projects/{pid}/users/{carol['id']}/roles/admin", admin_token)
    api.ok("PUT", f"/v1/projects/{pid}/users/{carol['id']}/roles/admin", admin_token)  # again
    api.ok("PUT", f"/v1/projects/{pid}/groups/{gid}/roles/member", admin_token)
    api.ok("PUT", f"/v1/domains/default/users/{alice['id']}/roles/reader", admin_token)
    api.ok("PUT", f"/v1/domains/default/groups/{gid}/roles/member", admin_token)

    direct = api.ok("GET", f"/v1/role-assignments?project_id={pid}", admin_token)
    pairs = {
        (a["role"]["name"], (a.get("user") or {}).get("id"), (a.get("group") or {}).get("id"))
        for a in direct["role_assignments"]
    }
    assert pairs == {("admin", carol["id"], None), ("member", None, gid)}
    direct_groups = api.ok("GET", f"/v1/role-assignments?group_id={gid}", admin_token)
    assert {(a["role"]["name"], *a["scope"]) for a in direct_groups["role_assignments"]} == {
        ("member", "project"),
        ("member", "domain"),
    }
    # Without effective=true, a user's listing does not include group grants.
    alice_direct = api.ok("GET", f"/v1/role-assignments?user_id={alice['id']}", admin_token)
    assert [a["role"]["name"] for a in alice_direct["role_assignments"]] == ["reader"]

    # Effective: groups expanded to their members and implied roles added.
    assert effective(api, admin_token, user_id=alice["id"]) == {
        ("member", pid, gid, None),
        ("reader", pid, gid, "member"),
        ("reader", "default", None, None),
        ("member", "default", gid, None),
        ("reader", "default", gid, "member"),
    }
    assert effective(api, admin_token, user_id=carol["id"]) == {
        ("admin", pid, None, None),
        ("member", pid, None, "admin"),
        ("reader", pid, None, "admin"),
    }
    on_project = effective(api, admin_token, project_id=pid)
    assert ("member", pid, gid, None) in on_project
    assert ("reader", pid, None, "admin") in on_project
    only_readers = api.ok(
        "GET", f"/v1/role-assignments?project_id={pid}&effective=true&role=reader", admin_token
    )["role_assignments"]
    assert {a["user"]["id"] for a in only_readers} == {alice["id"], carol["id"]}

    # A domain-scoped login sees the domain grants (direct + via group + implied).
    token = api.login("alice", PASSWORD, domain_scope="default")
    claims = validate(api, admin_token, token).get_json()
    assert sorted(claims["roles"]) == ["member", "reader"]
    assert claims["domain"]["id"] == "default"

    # Revoking, and revoking what is not there.
    api.ok("DELETE", f"/v1/projects/{pid}/users/{carol['id']}/roles/admin", admin_token)
    assert effective(api, admin_token, user_id=carol["id"]) == set()
    problem(
        api.call("DELETE", f"/v1/projects/{pid}/users/{carol['id']}/roles/admin", admin_token),
        404,
        "role_assignment_not_found",
    )
    problem(
        api.call("PUT", f"/v1/projects/{pid}/users/{carol['id']}/roles/nope", admin_token),
        404,
        "role_not_found",
    )
    problem(
        api.call("PUT", f"/v1/projects/nope/users/{carol['id']}/roles/reader", admin_token),
        404,
        "project_not_found",
    )
    problem(
        api.call("PUT", f"/v1/domains/nope/groups/{gid}/roles/reader", admin_token),
        404,
        "domain_not_found",
    )
    problem(
        api.call("PUT", f"/v1/projects/{pid}/users/nobody/roles/reader", admin_token),
        404,
        "user_not_found",
    )
    problem(
        api.call("PUT", f"/v1/projects/{pid}/groups/nogroup/roles/reader", admin_token),
        404,
        "group_not_found",
    )


def test_group_member_logs_in_and_loses_token_when_removed(api: Api, admin_token: str) -> None:
    project = make_project(api, admin_token, "web")
    alice = make_user(api, admin_token, "alice")
    gid = api.ok("POST", "/v1/groups", admin_token, {"name": "devs"})["id"]
    api.ok("PUT", f"/v1/projects/{project['id']}/groups/{gid}/roles/member", admin_token)

    # Not yet a member: no roles on the project, no scoped token.
    response = api.client.post(
        "/v1/auth/tokens", json=password_auth("alice", PASSWORD, project="web")
    )
    problem(response, 401, "scope_not_allowed")

    api.ok("PUT", f"/v1/groups/{gid}/users/{alice['id']}", admin_token)
    token = api.login("alice", PASSWORD, project="web")
    response = validate(api, admin_token, token)
    assert response.status_code == 200, response.get_json()
    claims = response.get_json()
    assert sorted(claims["roles"]) == ["member", "reader"]
    assert claims["project"]["id"] == project["id"]
    assert claims["sub"] == alice["id"]
    # The user may check their own token too.
    assert validate(api, token, token).status_code == 200
    assert [
        p["id"] for p in api.ok("GET", f"/v1/users/{alice['id']}/projects", token)["projects"]
    ] == [project["id"]]

    api.ok("DELETE", f"/v1/groups/{gid}/users/{alice['id']}", admin_token)
    problem(validate(api, admin_token, token), 404, "token_not_found")
    response = api.call("GET", f"/v1/users/{alice['id']}", token)
    problem(response, 401, "invalid_token")
    response = api.client.post(
        "/v1/auth/tokens", json=password_auth("alice", PASSWORD, project="web")
    )
    problem(response, 401, "scope_not_allowed")


def test_revoking_a_group_grant_revokes_member_tokens(api: Api, admin_token: str) -> None:
    project = make_project(api, admin_token, "web")
    alice = make_user(api, admin_token, "alice")
    gid = api.ok("POST", "/v1/groups", admin_token, {"name": "devs"})["id"]
    api.ok("PUT", f"/v1/groups/{gid}/users/{alice['id']}", admin_token)
    api.ok("PUT", f"/v1/projects/{project['id']}/groups/{gid}/roles/member", admin_token)
    token = api.login("alice", PASSWORD, project="web")
    api.ok("DELETE", f"/v1/projects/{project['id']}/groups/{gid}/roles/member", admin_token)
    problem(validate(api, admin_token, token), 404, "token_not_found")


# -- application accounts -----------------------------------------------------------


def test_application_accounts(api: Api, admin_token: str) -> None:
    project = make_project(api, admin_token, "bots")
    pid = project["id"]
    problem(
        api.call("POST", "/v1/users", admin_token, {"name": "ci", "kind": "application"}),
        422,
        "owner_project_required",
    )
    problem(
        api.call(
            "POST",
            "/v1/users",
            admin_token,
            {"name": "ci", "kind": "application", "owner_project_id": pid, "password": PASSWORD},
        ),
        422,
        "application_account_password",
    )
    problem(
        api.call(
            "POST",
            "/v1/users",
            admin_token,
            {"name": "ci", "kind": "application", "owner_project_id": "nope"},
        ),
        404,
        "project_not_found",
    )
    problem(
        api.call(
            "POST",
            "/v1/users",
            admin_token,
            {"name": "ci", "password": PASSWORD, "owner_project_id": pid},
        ),
        422,
        "owner_project_not_allowed",
    )
    # None of the refused attempts left anything behind.
    assert api.ok("GET", "/v1/users?name=ci", admin_token)["users"] == []

    app_user = api.ok(
        "POST",
        "/v1/users",
        admin_token,
        {"name": "ci", "kind": "application", "owner_project_id": pid},
    )
    assert (app_user["kind"], app_user["owner_project_id"]) == ("application", pid)
    assert app_user["password_changed_at"] is None
    listed = api.ok("GET", "/v1/users?kind=application", admin_token)["users"]
    assert [u["id"] for u in listed] == [app_user["id"]]

    # No password can be set, and no password login works.
    problem(
        api.call("PATCH", f"/v1/users/{app_user['id']}", admin_token, {"password": PASSWORD}),
        422,
        "application_account_password",
    )
    api.ok("PUT", f"/v1/projects/{pid}/users/{app_user['id']}/roles/member", admin_token)
    for password in (PASSWORD, "", "x" * 20):
        response = api.client.post(
            "/v1/auth/tokens", json=password_auth("ci", password, project="bots")
        )
        problem(response, 401, "authentication_failed")

    # The account dies with its project.
    api.ok("DELETE", f"/v1/projects/{pid}", admin_token)
    problem(api.call("GET", f"/v1/users/{app_user['id']}", admin_token), 404, "user_not_found")
    assert api.ok("GET", "/v1/users?kind=application", admin_token)["users"] == []


# -- passwords ----------------------------------------------------------------------


def test_password_policy(api: Api, admin_token: str) -> None:
    problem(
        api.call("POST", "/v1/users", admin_token, {"name": "shorty", "password": "short"}),
        422,
        "password_too_short",
    )
    assert api.ok("GET", "/v1/users?name=shorty", admin_token)["users"] == []
    user = make_user(api, admin_token, "shorty")
    problem(
        api.call("PATCH", f"/v1/users/{user['id']}", admin_token, {"password": "x" * 11}),
        422,
        "password_too_short",
    )
    # The old password still works after the refused change.
    api.login("shorty", PASSWORD)
    # An admin reset with a good password works and ends the old one.
    api.ok("PATCH", f"/v1/users/{user['id']}", admin_token, {"password": "x" * 12})
    api.login("shorty", "x" * 12)
    response = api.client.post("/v1/auth/tokens", json=password_auth("shorty", PASSWORD))
    problem(response, 401, "authentication_failed")


def test_self_service_password_change(api: Api, admin_token: str) -> None:
    project = make_project(api, admin_token, "web")
    alice = make_user(api, admin_token, "alice")
    bob = make_user(api, admin_token, "bob")
    api.ok("PUT", f"/v1/projects/{project['id']}/users/{alice['id']}/roles/member", admin_token)
    token = api.login("alice", PASSWORD, project="web")
    unscoped = api.login("alice", PASSWORD)
    path = f"/v1/users/{alice['id']}/password"
    new = "a-brand-new-password"

    problem(
        api.call("POST", path, token, {"original_password": "wrong-password!", "password": new}),
        403,
        "original_password_wrong",
    )
    problem(
        api.call("POST", path, token, {"original_password": PASSWORD, "password": "short"}),
        422,
        "password_too_short",
    )
    # Refused attempts changed nothing: the token is alive and the password unchanged.
    assert validate(api, admin_token, token).status_code == 200
    api.login("alice", PASSWORD)
    # Nobody changes another user's password this way.
    problem(
        api.call(
            "POST",
            f"/v1/users/{bob['id']}/password",
            token,
            {"original_password": PASSWORD, "password": new},
        ),
        403,
        "action_forbidden",
    )

    response = api.call("POST", path, token, {"original_password": PASSWORD, "password": new})
    assert response.status_code == 204, response.get_json()
    problem(validate(api, admin_token, token), 404, "token_not_found")
    problem(validate(api, admin_token, unscoped), 404, "token_not_found")
    response = api.client.post("/v1/auth/tokens", json=password_auth("alice", PASSWORD))
    problem(response, 401, "authentication_failed")
    fresh = api.login("alice", new, project="web")
    assert validate(api, admin_token, fresh).status_code == 200
    # Bob was not touched.
    api.login("bob", PASSWORD)


# -- roles --------------------------------------------------------------------------


def test_role_implications_refuse_cycles(api: Api, admin_token: str) -> None:
    pairs = {
        (i["prior_role"]["name"], i["implies"]["name"])
        for i in api.ok("GET", "/v1/role-implications", admin_token)["role_implications"]
    }
    assert pairs == {("admin", "member"), ("member", "reader")}

    for prior, implied in [("reader", "admin"), ("reader", "member"), ("member", "admin")]:
        problem(
            api.call("PUT", f"/v1/roles/{prior}/implies/{implied}", admin_token),
            422,
            "role_implication_cycle",
        )
    problem(
        api.call("PUT", "/v1/roles/reader/implies/reader", admin_token),
        422,
        "role_implication_cycle",
    )

    api.ok("POST", "/v1/roles", admin_token, {"name": "auditor"})
    api.ok("PUT", "/v1/roles/auditor/implies/reader", admin_token)
    api.ok("PUT", "/v1/roles/auditor/implies/reader", admin_token)  # idempotent
    problem(
        api.call("PUT", "/v1/roles/reader/implies/auditor", admin_token),
        422,
        "role_implication_cycle",
    )
    problem(api.call("PUT", "/v1/roles/auditor/implies/nope", admin_token), 404, "role_not_found")

    pairs = {
        (i["prior_role"]["name"], i["implies"]["name"])
        for i in api.ok("GET", "/v1/role-implications", admin_token)["role_implications"]
    }
    assert pairs == {("admin", "member"), ("member", "reader"), ("auditor", "reader")}

    # The new implication shows up in effective roles.
    project = make_project(api, admin_token, "web")
    dave = make_user(api, admin_token, "dave")
    api.ok("PUT", f"/v1/projects/{project['id']}/users/{dave['id']}/roles/auditor", admin_token)
    token = api.login("dave", PASSWORD, project="web")
    assert sorted(validate(api, admin_token, token).get_json()["roles"]) == ["auditor", "reader"]

    api.ok("DELETE", "/v1/roles/auditor/implies/reader", admin_token)
    problem(
        api.call("DELETE", "/v1/roles/auditor/implies/reader", admin_token),
        404,
        "role_implication_not_found",
    )
    # Removing an implication ends tokens that carried it.
    problem(validate(api, admin_token, token), 404, "token_not_found")
