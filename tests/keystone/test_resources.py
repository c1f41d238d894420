"""Keystone v3 domains, projects, users and groups (issue 14)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.attacks.test_bad_input_500 import JSON_VALUES, _paths, _replace
from tests.conftest import Api
from tests.integration.test_ldap import create_domain, example_options
from tests.integration.test_openstack_clients import (  # the fixtures: latchkey, openstack_venv
    Served,
    latchkey,  # noqa: F401
    openstack,
    openstack_json,
    openstack_venv,  # noqa: F401
    password_env,
)
from tests.ldap_server import Slapd

PASSWORD = "correct horse battery staple 1"


def kcall(api: Api, method: str, path: str, token: str, json: Any = None, **kw: Any) -> Any:
    headers = {"X-Auth-Token": token}
    return api.client.open(path, method=method, json=json, headers=headers, **kw)


def kok(api: Api, method: str, path: str, token: str, json: Any = None, status: int = 0) -> Any:
    response = kcall(api, method, path, token, json)
    expected = status or {"POST": 201, "DELETE": 204, "PUT": 204}.get(method, 200)
    assert response.status_code == expected, (method, path, response.get_json(silent=True))
    return response.get_json(silent=True)


def kerror(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.get_json())
    body = response.get_json()
    assert body["error"]["code"] == status, body
    return dict(body["error"])


def login(api: Api, name: str, **scope: Any) -> str:
    return api.login(name, PASSWORD, **scope)


# -- domains ---------------------------------------------------------------------------


def test_domain_lifecycle(api: Api, admin_token: str) -> None:
    domain = kok(
        api,
        "POST",
        "/v3/domains",
        admin_token,
        {"domain": {"name": "d1", "description": "first", "colour": "blue"}},
    )["domain"]
    assert domain["enabled"] is True and domain["options"] == {} and domain["tags"] == []
    assert domain["colour"] == "blue"
    assert domain["links"]["self"].endswith(f"/v3/domains/{domain['id']}")
    assert kok(api, "GET", f"/v3/domains/{domain['id']}", admin_token)["domain"] == domain
    listed = kok(api, "GET", "/v3/domains?name=d1", admin_token)
    assert listed["domains"] == [domain] and listed["links"]["next"] is None
    enabled = kok(api, "GET", "/v3/domains?enabled=true", admin_token)["domains"]
    assert domain in enabled and all(d["enabled"] for d in enabled)
    kerror(kcall(api, "POST", "/v3/domains", admin_token, {"domain": {"name": "d1"}}), 409)
    kerror(kcall(api, "POST", "/v3/domains", admin_token, {"domain": {"name": ""}}), 400)
    kerror(kcall(api, "POST", "/v3/domains", admin_token, {"domain": {"name": "a" * 65}}), 400)
    kerror(
        kcall(api, "POST", "/v3/domains", admin_token, {"domain": {"name": "x", "enabled": "1"}}),
        400,
    )
    # Keystone refuses to delete an enabled domain with 403.
    kerror(kcall(api, "DELETE", f"/v3/domains/{domain['id']}", admin_token), 403)
    updated = kok(
        api,
        "PATCH",
        f"/v3/domains/{domain['id']}",
        admin_token,
        {"domain": {"enabled": False, "description": "off"}},
    )["domain"]
    assert updated["enabled"] is False and updated["colour"] == "blue"
    assert kok(api, "GET", "/v3/domains?enabled=false&name=d1", admin_token)["domains"] != []
    kok(api, "DELETE", f"/v3/domains/{domain['id']}", admin_token)
    kerror(kcall(api, "GET", f"/v3/domains/{domain['id']}", admin_token), 404)
    kerror(kcall(api, "DELETE", f"/v3/domains/{domain['id']}", admin_token), 404)
    # The domain is sql: the native door says so.
    native = api.ok(
        "POST", "/v1/domains", admin_token, {"name": "d2"}
    )  # native-made, for comparison
    made = kok(api, "POST", "/v3/domains", admin_token, {"domain": {"name": "d3"}})["domain"]
    assert api.ok("GET", f"/v1/domains/{made['id']}", admin_token)["identity_backend"] == "sql"
    assert native["identity_backend"] == "sql"


# -- projects --------------------------------------------------------------------------


def test_project_lifecycle_hierarchy_and_tags(api: Api, admin_token: str) -> None:
    root = kok(
        api,
        "POST",
        "/v3/projects",
        admin_token,
        {"project": {"name": "root", "tags": ["a", "b"], "flavour": "x", "description": "r"}},
    )["project"]
    assert root["domain_id"] == "default" and root["parent_id"] == "default"
    assert root["is_domain"] is False and sorted(root["tags"]) == ["a", "b"]
    assert root["flavour"] == "x"
    child = kok(
        api,
        "POST",
        "/v3/projects",
        admin_token,
        {"project": {"name": "leaf", "parent_id": root["id"]}},
    )["project"]
    assert child["parent_id"] == root["id"] and child["domain_id"] == "default"
    shown = kok(api, "GET", f"/v3/projects/{root['id']}", admin_token)["project"]
    listed = kok(api, "GET", "/v3/projects", admin_token)["projects"]
    assert next(p for p in listed if p["id"] == root["id"]) == shown

    # Filters.
    def names(query: str) -> set[str]:
        found = kok(api, "GET", "/v3/projects?" + query, admin_token)["projects"]
        return {p["name"] for p in found}

    assert names(f"parent_id={root['id']}") == {"leaf"}
    assert "root" in names("parent_id=default") and "leaf" not in names("parent_id=default")
    assert names("tags=a,b") == {"root"}
    assert names("tags-any=b,zz") == {"root"}
    assert "root" not in names("not-tags-any=a")
    assert "root" in names("not-tags=a,zz")
    assert names("name=leaf") == {"leaf"}
    assert "leaf" in names("enabled=true") and names("is_domain=true") == {"Default"}
    # Parents and subtree.
    with_parents = kok(api, "GET", f"/v3/projects/{child['id']}?parents_as_list", admin_token)
    assert [p["project"]["id"] for p in with_parents["project"]["parents"]] == [root["id"]]
    subtree = kok(api, "GET", f"/v3/projects/{root['id']}?subtree_as_list", admin_token)
    assert [p["project"]["id"] for p in subtree["project"]["subtree"]] == [child["id"]]
    # Bad input and conflicts.
    bad = [
        {"name": ""},
        {"name": "a" * 65},
        {"name": "x", "enabled": "yes"},
        {"name": "x", "tags": "a"},
    ]
    for body in bad:
        kerror(kcall(api, "POST", "/v3/projects", admin_token, {"project": body}), 400)
    kerror(kcall(api, "POST", "/v3/projects", admin_token, {"project": {"name": "root"}}), 409)
    kerror(kcall(api, "POST", "/v3/projects", admin_token, {"project": []}), 400)
    kerror(
        kcall(
            api, "POST", "/v3/projects", admin_token, {"project": {"name": "t", "tags": ["a/b"]}}
        ),
        400,
    )
    other = kok(api, "POST", "/v3/domains", admin_token, {"domain": {"name": "elsewhere"}})[
        "domain"
    ]
    cross = {"project": {"name": "x", "parent_id": root["id"], "domain_id": other["id"]}}
    kerror(kcall(api, "POST", "/v3/projects", admin_token, cross), 400)
    unknown = {"project": {"name": "x", "parent_id": "f" * 32}}
    kerror(kcall(api, "POST", "/v3/projects", admin_token, unknown), 400)
    # Without a domain_id: the parent's domain, or the domain named as the parent.
    top = {"project": {"name": "top", "parent_id": other["id"]}}
    made = kok(api, "POST", "/v3/projects", admin_token, top)["project"]
    assert made["domain_id"] == other["id"] and made["parent_id"] == other["id"]
    below = {"project": {"name": "below", "parent_id": made["id"]}}
    assert (
        kok(api, "POST", "/v3/projects", admin_token, below)["project"]["domain_id"] == other["id"]
    )
    # Moving is refused as Keystone refuses it.
    move = {"project": {"parent_id": child["id"]}}
    kerror(kcall(api, "PATCH", f"/v3/projects/{root['id']}", admin_token, move), 403)
    # Tags.
    base = f"/v3/projects/{root['id']}/tags"
    assert sorted(kok(api, "GET", base, admin_token)["tags"]) == ["a", "b"]
    added = kcall(api, "PUT", base + "/c", admin_token, {})
    assert added.status_code == 201 and added.data == b"" and added.headers["Location"]
    assert kok(api, "GET", base, admin_token)["tags"] == ["a", "b", "c"]
    kok(api, "GET", base + "/c", admin_token, status=204)
    kok(api, "DELETE", base + "/c", admin_token)
    kerror(kcall(api, "GET", base + "/c", admin_token), 404)
    assert kok(api, "PUT", base, admin_token, {"tags": ["x", "y"]}, 200)["tags"] == ["x", "y"]
    kerror(kcall(api, "PUT", base, admin_token, {"tags": ["x", "x"]}), 400)
    kerror(kcall(api, "PUT", base, admin_token, {"tags": [str(i) for i in range(81)]}), 400)
    kok(api, "DELETE", base, admin_token)
    assert kok(api, "GET", base, admin_token)["tags"] == []
    # Update, then delete: a parent with children is refused (403).
    updated = kok(
        api,
        "PATCH",
        f"/v3/projects/{root['id']}",
        admin_token,
        {"project": {"name": "root2", "enabled": False, "tags": ["t"]}},
    )["project"]
    assert updated["name"] == "root2" and updated["enabled"] is False and updated["tags"] == ["t"]
    assert updated["flavour"] == "x"
    kerror(kcall(api, "DELETE", f"/v3/projects/{root['id']}", admin_token), 403)
    kok(api, "DELETE", f"/v3/projects/{child['id']}", admin_token)
    kok(api, "DELETE", f"/v3/projects/{root['id']}", admin_token)
    kerror(kcall(api, "DELETE", f"/v3/projects/{root['id']}", admin_token), 404)


def test_a_domain_acting_as_a_project(api: Api, admin_token: str) -> None:
    """Keystone's is_domain projects are Latchkey's domains, seen through /v3/projects."""
    made = kok(
        api,
        "POST",
        "/v3/projects",
        admin_token,
        {"project": {"name": "dp", "is_domain": True, "domain_id": None}},
    )["project"]
    assert made["is_domain"] is True and made["domain_id"] is None and made["parent_id"] is None
    as_domain = kok(api, "GET", f"/v3/domains/{made['id']}", admin_token)["domain"]
    assert as_domain["name"] == "dp"
    listed = kok(api, "GET", "/v3/projects?is_domain=true", admin_token)["projects"]
    assert made in listed
    assert made["id"] not in [
        p["id"] for p in kok(api, "GET", "/v3/projects", admin_token)["projects"]
    ]
    assert kok(api, "GET", f"/v3/projects/{made['id']}", admin_token)["project"] == made
    kerror(kcall(api, "DELETE", f"/v3/projects/{made['id']}", admin_token), 403)
    off = {"project": {"enabled": False}}
    assert (
        kok(api, "PATCH", f"/v3/projects/{made['id']}", admin_token, off)["project"]["enabled"]
        is False
    )
    kerror(
        kcall(
            api, "PATCH", f"/v3/projects/{made['id']}", admin_token, {"project": {"parent_id": "x"}}
        ),
        400,
    )
    kok(api, "DELETE", f"/v3/projects/{made['id']}", admin_token)
    kerror(kcall(api, "GET", f"/v3/domains/{made['id']}", admin_token), 404)


# -- users and groups ------------------------------------------------------------------


def test_user_lifecycle_and_password_change(api: Api, admin_token: str) -> None:
    project = kok(api, "POST", "/v3/projects", admin_token, {"project": {"name": "home"}})[
        "project"
    ]
    user = kok(
        api,
        "POST",
        "/v3/users",
        admin_token,
        {
            "user": {
                "name": "ann",
                "password": PASSWORD,
                "email": "ann@example.org",
                "description": "Ann",
                "default_project_id": project["id"],
                "team": "blue",
            }
        },
    )["user"]
    assert "password" not in user and user["password_expires_at"] is None
    assert user["options"] == {} and user["team"] == "blue" and user["domain_id"] == "default"
    assert user["default_project_id"] == project["id"] and user["email"] == "ann@example.org"
    assert kok(api, "GET", f"/v3/users/{user['id']}", admin_token)["user"] == user
    assert [u["id"] for u in kok(api, "GET", "/v3/users?name=ann", admin_token)["users"]] == [
        user["id"]
    ]
    kerror(kcall(api, "POST", "/v3/users", admin_token, {"user": {"name": "ann"}}), 409)
    kerror(kcall(api, "POST", "/v3/users", admin_token, {"user": {"name": ""}}), 400)
    missing = {"user": {"name": "zed", "domain_id": "f" * 32}}
    kerror(kcall(api, "POST", "/v3/users", admin_token, missing), 404)
    updated = kok(
        api,
        "PATCH",
        f"/v3/users/{user['id']}",
        admin_token,
        {"user": {"project_id": project["id"], "email": "a@b.c", "enabled": False}},
    )["user"]
    assert updated["project_id"] == project["id"] and updated["email"] == "a@b.c"
    assert updated["enabled"] is False and updated["team"] == "blue"
    enabled_false = kok(api, "GET", "/v3/users?enabled=false", admin_token)["users"]
    assert [u["id"] for u in enabled_false] == [user["id"]]
    kok(api, "PATCH", f"/v3/users/{user['id']}", admin_token, {"user": {"enabled": True}})
    # Self-service password change: 204; the old token is revoked; wrong original: 401.
    api.ok("PUT", f"/v1/projects/{project['id']}/users/{user['id']}/roles/member", admin_token)
    token = login(api, "ann", project="home")
    change = {"user": {"original_password": "wrong one", "password": "another long pass 2"}}
    kerror(kcall(api, "POST", f"/v3/users/{user['id']}/password", token, change), 401)
    change["user"]["original_password"] = PASSWORD
    kok(api, "POST", f"/v3/users/{user['id']}/password", token, change, status=204)
    kerror(kcall(api, "GET", f"/v3/users/{user['id']}", token), 401)
    api.login("ann", "another long pass 2", project="home")
    projects = kok(api, "GET", f"/v3/users/{user['id']}/projects", admin_token)["projects"]
    assert [p["id"] for p in projects] == [project["id"]]
    kok(api, "DELETE", f"/v3/users/{user['id']}", admin_token)
    kerror(kcall(api, "GET", f"/v3/users/{user['id']}", admin_token), 404)


def test_groups_and_membership(api: Api, admin_token: str) -> None:
    group = kok(
        api, "POST", "/v3/groups", admin_token, {"group": {"name": "ops", "description": "d"}}
    )["group"]
    assert group["domain_id"] == "default" and group["description"] == "d"
    kerror(kcall(api, "POST", "/v3/groups", admin_token, {"group": {"name": "ops"}}), 409)
    user = kok(api, "POST", "/v3/users", admin_token, {"user": {"name": "bo"}})["user"]
    member = f"/v3/groups/{group['id']}/users/{user['id']}"
    assert kcall(api, "HEAD", member, admin_token).status_code == 404
    kok(api, "PUT", member, admin_token)
    kok(api, "HEAD", member, admin_token, status=204)
    kok(api, "GET", member, admin_token, status=204)
    users = kok(api, "GET", f"/v3/groups/{group['id']}/users", admin_token)["users"]
    assert [u["id"] for u in users] == [user["id"]]
    groups = kok(api, "GET", f"/v3/users/{user['id']}/groups", admin_token)["groups"]
    assert [g["id"] for g in groups] == [group["id"]]
    assert kok(api, "GET", "/v3/groups?name=ops", admin_token)["groups"] == [group]
    renamed = kok(
        api, "PATCH", f"/v3/groups/{group['id']}", admin_token, {"group": {"name": "ops2"}}
    )["group"]
    assert renamed["name"] == "ops2"
    kok(api, "DELETE", member, admin_token)
    kerror(kcall(api, "DELETE", member, admin_token), 404)
    kok(api, "DELETE", f"/v3/groups/{group['id']}", admin_token)
    kerror(kcall(api, "GET", f"/v3/groups/{group['id']}", admin_token), 404)


# -- attacks -----------------------------------------------------------------------------


def test_a_project_admin_stays_in_the_project(api: Api, admin_token: str) -> None:
    mine = kok(api, "POST", "/v3/projects", admin_token, {"project": {"name": "mine"}})["project"]
    theirs = kok(api, "POST", "/v3/projects", admin_token, {"project": {"name": "theirs"}})[
        "project"
    ]
    boss = kok(
        api, "POST", "/v3/users", admin_token, {"user": {"name": "boss", "password": PASSWORD}}
    )["user"]
    api.ok("PUT", f"/v1/projects/{mine['id']}/users/{boss['id']}/roles/admin", admin_token)
    token = login(api, "boss", project="mine")
    for method, path, body in [
        ("GET", f"/v3/projects/{theirs['id']}", None),
        ("PATCH", f"/v3/projects/{theirs['id']}", {"project": {"name": "pwned"}}),
        ("DELETE", f"/v3/projects/{theirs['id']}", None),
        ("PUT", f"/v3/projects/{theirs['id']}/tags/x", {}),
        ("PUT", f"/v3/projects/{theirs['id']}/tags", {"tags": ["x"]}),
        ("DELETE", f"/v3/projects/{theirs['id']}/tags", None),
        ("POST", "/v3/domains", {"domain": {"name": "evil"}}),
        ("PATCH", "/v3/domains/default", {"domain": {"enabled": False}}),
        ("DELETE", "/v3/domains/default", None),
        ("POST", "/v3/projects", {"project": {"name": "more"}}),
        ("POST", "/v3/groups", {"group": {"name": "g"}}),
        ("GET", "/v3/domains", None),
        ("POST", "/v3/projects", {"project": {"name": "c", "parent_id": theirs["id"]}}),
        ("POST", "/v3/projects", {"project": {"name": "c", "parent_id": "f" * 32}}),
        ("GET", f"/v3/projects?domain_id={theirs['domain_id']}", None),
    ]:
        response = kcall(api, method, path, token, body)
        assert response.status_code in (403, 404), (method, path, response.get_json())
        assert "error" in response.get_json()
    assert (
        kok(api, "GET", f"/v3/projects/{theirs['id']}", admin_token)["project"]["name"] == "theirs"
    )
    # Its own project it may read and tag; its own projects it may list.
    mine_only = kok(api, "GET", f"/v3/users/{boss['id']}/projects", token)["projects"]
    assert [p["id"] for p in mine_only] == [mine["id"]]
    kok(api, "GET", f"/v3/projects/{mine['id']}", token)
    assert kcall(api, "PUT", f"/v3/projects/{mine['id']}/tags/ok", token, {}).status_code == 201


def test_a_domain_admin_stays_in_the_domain(api: Api, admin_token: str) -> None:
    a = kok(api, "POST", "/v3/domains", admin_token, {"domain": {"name": "da"}})["domain"]
    b = kok(api, "POST", "/v3/domains", admin_token, {"domain": {"name": "db"}})["domain"]
    b_project = kok(
        api, "POST", "/v3/projects", admin_token, {"project": {"name": "pb", "domain_id": b["id"]}}
    )["project"]
    b_user = kok(
        api, "POST", "/v3/users", admin_token, {"user": {"name": "ub", "domain_id": b["id"]}}
    )["user"]
    b_group = kok(
        api, "POST", "/v3/groups", admin_token, {"group": {"name": "gb", "domain_id": b["id"]}}
    )["group"]
    body = {"user": {"name": "keeper", "domain_id": a["id"], "password": PASSWORD}}
    keeper = kok(api, "POST", "/v3/users", admin_token, body)["user"]
    api.ok("PUT", f"/v1/domains/{a['id']}/users/{keeper['id']}/roles/admin", admin_token)
    token = api.login("keeper", PASSWORD, domain_scope=a["id"], user_domain=a["id"])
    # Its own domain: new objects land there by default.
    mine = kok(api, "POST", "/v3/projects", token, {"project": {"name": "pa"}})["project"]
    assert mine["domain_id"] == a["id"]
    group = kok(api, "POST", "/v3/groups", token, {"group": {"name": "ga"}})["group"]
    assert group["domain_id"] == a["id"]
    assert [p["id"] for p in kok(api, "GET", "/v3/projects", token)["projects"]] == [mine["id"]]
    for method, path, payload in [
        ("GET", f"/v3/projects/{b_project['id']}", None),
        ("PATCH", f"/v3/projects/{b_project['id']}", {"project": {"name": "x"}}),
        ("DELETE", f"/v3/projects/{b_project['id']}", None),
        ("GET", f"/v3/projects?domain_id={b['id']}", None),
        ("POST", "/v3/projects", {"project": {"name": "x", "domain_id": b["id"]}}),
        ("POST", "/v3/projects", {"project": {"name": "x", "parent_id": b_project["id"]}}),
        ("POST", "/v3/projects", {"project": {"name": "x", "parent_id": b["id"]}}),
        ("GET", f"/v3/users/{b_user['id']}", None),
        ("PATCH", f"/v3/users/{b_user['id']}", {"user": {"enabled": False}}),
        ("DELETE", f"/v3/users/{b_user['id']}", None),
        ("GET", f"/v3/users?domain_id={b['id']}", None),
        ("GET", f"/v3/groups/{b_group['id']}", None),
        ("PUT", f"/v3/groups/{b_group['id']}/users/{keeper['id']}", None),
        ("PUT", f"/v3/groups/{group['id']}/users/{b_user['id']}", None),
        ("GET", f"/v3/domains/{b['id']}", None),
        ("PATCH", f"/v3/domains/{a['id']}", {"domain": {"enabled": False}}),
    ]:
        response = kcall(api, method, path, token, payload)
        assert response.status_code in (403, 404), (method, path, response.get_json())
    assert kok(api, "GET", f"/v3/users/{b_user['id']}", admin_token)["user"]["enabled"] is True


def test_deleting_a_domain_deletes_what_it_holds(api: Api, admin_token: str) -> None:
    domain = kok(api, "POST", "/v3/domains", admin_token, {"domain": {"name": "gone"}})["domain"]
    did = domain["id"]
    root = kok(
        api, "POST", "/v3/projects", admin_token, {"project": {"name": "r", "domain_id": did}}
    )["project"]
    leaf = kok(
        api,
        "POST",
        "/v3/projects",
        admin_token,
        {"project": {"name": "l", "parent_id": root["id"], "tags": ["t"]}},
    )["project"]
    user = kok(api, "POST", "/v3/users", admin_token, {"user": {"name": "u", "domain_id": did}})[
        "user"
    ]
    group = kok(api, "POST", "/v3/groups", admin_token, {"group": {"name": "g", "domain_id": did}})[
        "group"
    ]
    kok(api, "PUT", f"/v3/groups/{group['id']}/users/{user['id']}", admin_token)
    kok(api, "PATCH", f"/v3/domains/{did}", admin_token, {"domain": {"enabled": False}})
    kok(api, "DELETE", f"/v3/domains/{did}", admin_token)
    for path in (
        f"/v3/users/{user['id']}",
        f"/v3/groups/{group['id']}",
        f"/v3/projects/{root['id']}",
        f"/v3/projects/{leaf['id']}",
    ):
        kerror(kcall(api, "GET", path, admin_token), 404)


def test_restricted_application_credential_changes_nothing(
    client: FlaskClient, api: Api, admin_token: str
) -> None:
    v3 = client.post(
        "/v3/auth/tokens",
        json={
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {"name": "admin", "domain": {"id": "default"}, "password": _admin()}
                    },
                },
                "scope": {"project": {"name": "admin", "domain": {"id": "default"}}},
            }
        },
    )
    assert v3.status_code == 201, v3.get_json()
    admin_v3 = v3.headers["X-Subject-Token"]
    user_id = v3.get_json()["token"]["user"]["id"]
    made = kok(
        api,
        "POST",
        f"/v3/users/{user_id}/application_credentials",
        admin_v3,
        {"application_credential": {"name": "ro"}},
    )["application_credential"]
    issued = client.post(
        "/v3/auth/tokens",
        json={
            "auth": {
                "identity": {
                    "methods": ["application_credential"],
                    "application_credential": {"id": made["id"], "secret": made["secret"]},
                }
            }
        },
    )
    assert issued.status_code == 201, issued.get_json()
    token = issued.headers["X-Subject-Token"]
    for method, path, body in [
        ("POST", "/v3/domains", {"domain": {"name": "nope"}}),
        ("POST", "/v3/projects", {"project": {"name": "nope"}}),
        ("POST", "/v3/users", {"user": {"name": "nope"}}),
        ("POST", "/v3/groups", {"group": {"name": "nope"}}),
        ("PATCH", "/v3/domains/default", {"domain": {"description": "nope"}}),
        ("PATCH", f"/v3/users/{user_id}", {"user": {"description": "nope"}}),
    ]:
        response = kcall(api, method, path, token, body)
        assert response.status_code == 403, (method, path, response.get_json())
    # Reading is allowed.
    kok(api, "GET", "/v3/domains", token)


def _admin() -> str:
    from tests.conftest import ADMIN_PASSWORD

    return ADMIN_PASSWORD


def test_bad_input_is_a_keystone_400(api: Api, admin_token: str) -> None:
    for path, body in [
        ("/v3/domains", {"domain": "x"}),
        ("/v3/projects", {"project": {"name": 5}}),
        ("/v3/users", {"user": {"name": "u", "email": 7}}),
        ("/v3/users", {"user": {"name": "u", "options": {"lock_password": True}}}),
        ("/v3/groups", {"group": {"name": ["g"]}}),
        ("/v3/users", {"user": {"name": "u", "default_project_id": "nope"}}),
        ("/v3/projects", {"project": {"name": "p", "big": "x" * 20_000}}),
    ]:
        kerror(kcall(api, "POST", path, admin_token, body), 400)
    response = api.client.post(
        "/v3/projects",
        data="not json",
        headers={"X-Auth-Token": admin_token, "Content-Type": "application/json"},
    )
    kerror(response, 400)
    kerror(api.client.get("/v3/projects"), 401)


# -- python-openstackclient --------------------------------------------------------------


def test_openstack_client_resources(
    openstack_venv: Path,  # noqa: F811 (the imported fixture)
    latchkey: Served,  # noqa: F811 (the imported fixture)
    tmp_path: Path,
) -> None:
    run = (openstack_venv, tmp_path, password_env(latchkey))
    domain = openstack_json(*run, "domain", "create", "cli-dom", "--description", "d")
    assert domain["name"] == "cli-dom" and domain["enabled"] is True
    assert "cli-dom" in [row["Name"] for row in openstack_json(*run, "domain", "list")]
    openstack(*run, "domain", "set", "--description", "changed", "cli-dom")
    assert openstack_json(*run, "domain", "show", "cli-dom")["description"] == "changed"

    parent = openstack_json(
        *run, "project", "create", "cli-parent", "--domain", "cli-dom", "--tag", "a", "--tag", "b"
    )
    assert sorted(parent["tags"]) == ["a", "b"] and parent["parent_id"] == domain["id"]
    child = openstack_json(
        *run, "project", "create", "cli-child", "--domain", "cli-dom", "--parent", "cli-parent"
    )
    assert child["parent_id"] == parent["id"]
    listed = openstack_json(*run, "project", "list", "--domain", "cli-dom", "--tags", "a")
    assert [row["Name"] for row in listed] == ["cli-parent"]
    openstack(*run, "project", "set", "--disable", "--tag", "c", "--domain", "cli-dom", "cli-child")
    shown = openstack_json(*run, "project", "show", "--domain", "cli-dom", "cli-child")
    assert shown["enabled"] is False and shown["tags"] == ["c"]

    user = openstack_json(
        *run,
        "user", "create", "cli-user", "--domain", "cli-dom", "--password", PASSWORD,
        "--email", "u@example.org", "--project", "cli-parent", "--project-domain", "cli-dom",
    )  # fmt: skip
    assert user["default_project_id"] == parent["id"] and "password" not in user
    users = openstack_json(*run, "user", "list", "--domain", "cli-dom")
    assert [row["Name"] for row in users] == ["cli-user"]
    openstack(*run, "user", "set", "--email", "v@example.org", "--domain", "cli-dom", "cli-user")
    assert openstack_json(*run, "user", "show", user["id"])["email"] == "v@example.org"

    openstack_json(*run, "group", "create", "cli-group", "--domain", "cli-dom")
    openstack(*run, "group", "add", "user", "--group-domain", "cli-dom", "--user-domain",
              "cli-dom", "cli-group", "cli-user")  # fmt: skip
    contains = openstack(*run, "group", "contains", "user", "--group-domain", "cli-dom",
                         "--user-domain", "cli-dom", "cli-group", "cli-user")  # fmt: skip
    assert contains.stdout.strip() == "cli-user in group cli-group"
    openstack(*run, "group", "set", "--description", "ops", "--domain", "cli-dom", "cli-group")
    assert (
        openstack_json(*run, "group", "show", "--domain", "cli-dom", "cli-group")["description"]
        == "ops"
    )
    openstack(*run, "group", "remove", "user", "--group-domain", "cli-dom", "--user-domain",
              "cli-dom", "cli-group", "cli-user")  # fmt: skip
    contains = openstack(*run, "group", "contains", "user", "--group-domain", "cli-dom",
                         "--user-domain", "cli-dom", "cli-group", "cli-user", ok=False)  # fmt: skip
    assert "not in group" in contains.stdout + contains.stderr
    openstack(*run, "group", "delete", "--domain", "cli-dom", "cli-group")

    # The user's own password change (needs a role to log in with).
    latchkey.api.ok(
        "PUT",
        f"/v1/projects/{parent['id']}/users/{user['id']}/roles/member",
        latchkey.api.admin_token(),
    )
    as_user = {
        **password_env(latchkey),
        "OS_USERNAME": "cli-user",
        "OS_PASSWORD": PASSWORD,
        "OS_USER_DOMAIN_NAME": "cli-dom",
        "OS_PROJECT_NAME": "cli-parent",
        "OS_PROJECT_DOMAIN_NAME": "cli-dom",
    }
    del as_user["OS_USER_DOMAIN_ID"], as_user["OS_PROJECT_DOMAIN_ID"]
    new_password = "a brand new password 42"
    openstack(
        openstack_venv, tmp_path, as_user,
        "user", "password", "set", "--original-password", PASSWORD, "--password", new_password,
    )  # fmt: skip
    as_user["OS_PASSWORD"] = new_password
    assert (
        openstack_json(openstack_venv, tmp_path, as_user, "token", "issue")["user_id"]
        == (user["id"])
    )

    openstack(*run, "user", "delete", "--domain", "cli-dom", "cli-user")
    refused = openstack(*run, "project", "delete", "--domain", "cli-dom", "cli-parent", ok=False)
    assert refused.returncode != 0  # it has a child: Keystone's 403
    openstack(*run, "project", "delete", "--domain", "cli-dom", "cli-child")
    openstack(*run, "project", "delete", "--domain", "cli-dom", "cli-parent")
    refused = openstack(*run, "domain", "delete", "cli-dom", ok=False)
    assert refused.returncode != 0  # still enabled
    openstack(*run, "domain", "set", "--disable", "cli-dom")
    openstack(*run, "domain", "delete", "cli-dom")
    assert "cli-dom" not in [row["Name"] for row in openstack_json(*run, "domain", "list")]


def test_resource_bodies_with_any_value_anywhere_are_never_a_5xx(sqlite_app: Flask) -> None:
    client = sqlite_app.test_client()  # fails on any 5xx
    api = Api(client)
    token = api.admin_token()
    project = kok(api, "POST", "/v3/projects", token, {"project": {"name": "fuzz"}})["project"]
    user = kok(api, "POST", "/v3/users", token, {"user": {"name": "fuzz"}})["user"]
    group = kok(api, "POST", "/v3/groups", token, {"group": {"name": "fuzz"}})["group"]
    domain = {"name": "d", "description": "x", "enabled": True, "tags": ["a"], "options": {}}
    targets = [
        ("POST", "/v3/domains", {"domain": domain}),
        ("PATCH", "/v3/domains/default", {"domain": {"description": "x", "k": "v"}}),
        (
            "POST",
            "/v3/projects",
            {"project": {"name": "p", "parent_id": project["id"], "tags": ["a"], "k": 1}},
        ),
        ("PATCH", f"/v3/projects/{project['id']}", {"project": {"name": "q", "tags": ["b"]}}),
        ("PUT", f"/v3/projects/{project['id']}/tags", {"tags": ["a", "b"]}),
        (
            "POST",
            "/v3/users",
            {
                "user": {
                    "name": "u",
                    "password": PASSWORD,
                    "email": "e",
                    "default_project_id": project["id"],
                    "enabled": True,
                }
            },
        ),
        ("PATCH", f"/v3/users/{user['id']}", {"user": {"email": "e", "k": [1]}}),
        (
            "POST",
            f"/v3/users/{user['id']}/password",
            {"user": {"original_password": PASSWORD, "password": PASSWORD}},
        ),
        ("POST", "/v3/groups", {"group": {"name": "g", "description": "d"}}),
        ("PATCH", f"/v3/groups/{group['id']}", {"group": {"name": "h"}}),
    ]

    @given(which=st.sampled_from(targets), data=st.data())
    @settings(max_examples=200, deadline=None, derandomize=True, database=None)
    def probe(which: tuple[str, str, dict[str, Any]], data: st.DataObject) -> None:
        method, path, template = which
        where = data.draw(st.sampled_from(_paths(template)))
        body = _replace(template, where, data.draw(JSON_VALUES))
        response = kcall(api, method, path, token, body)
        assert response.status_code < 500, (method, path, body)

    probe()


def test_ldap_domains_are_read_only_and_listed(api: Api, admin_token: str, slapd_up: Slapd) -> None:
    ldap = create_domain(api, admin_token, "corp-ldap", example_options(slapd_up))
    did = ldap["id"]
    shown = kok(api, "GET", f"/v3/domains/{did}", admin_token)["domain"]
    assert shown["name"] == "corp-ldap" and "ldap" not in shown
    users = kok(api, "GET", f"/v3/users?domain_id={did}", admin_token)["users"]
    assert users and all(u["domain_id"] == did and "password" not in u for u in users)
    groups = kok(api, "GET", f"/v3/groups?domain_id={did}", admin_token)["groups"]
    assert groups and all(g["domain_id"] == did for g in groups)
    user = next(u for u in users if u["enabled"])  # the directory has disabled ones too
    group = groups[0]
    assert kok(api, "GET", f"/v3/users/{user['id']}", admin_token)["user"]["id"] == user["id"]
    members = kok(api, "GET", f"/v3/groups/{group['id']}/users", admin_token)["users"]
    assert all(m["domain_id"] == did for m in members)
    writes = [
        ("POST", "/v3/users", {"user": {"name": "mallory", "domain_id": did}}),
        ("PATCH", f"/v3/users/{user['id']}", {"user": {"enabled": False}}),
        ("DELETE", f"/v3/users/{user['id']}", None),
        (
            "POST",
            f"/v3/users/{user['id']}/password",
            {"user": {"original_password": "whatever-it-is", "password": "x" * 16}},
        ),
        ("POST", "/v3/groups", {"group": {"name": "hackers", "domain_id": did}}),
        ("PATCH", f"/v3/groups/{group['id']}", {"group": {"name": "renamed"}}),
        ("DELETE", f"/v3/groups/{group['id']}", None),
        ("PUT", f"/v3/groups/{group['id']}/users/{user['id']}", None),
    ]
    for method, path, body in writes:
        error = kerror(kcall(api, method, path, admin_token, body), 403)
        assert "read-only" in error["message"], (method, path, error)
    assert kok(api, "GET", f"/v3/users/{user['id']}", admin_token)["user"]["enabled"] is True
