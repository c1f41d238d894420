"""Keystone v3 regions, services and endpoints, and the region in a token's catalog.

One catalog behind both doors: what /v3 writes, /v1/services reads, and the reverse.
The shapes, filters and status codes are Keystone's (Tempest's admin/v3 test_regions,
test_services, test_endpoints, test_endpoints_negative; v3/test_catalog).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask_migrate import downgrade, upgrade
from sqlalchemy import create_engine, text
from werkzeug.test import TestResponse

from latchkey.frontdoors.keystone.catalog import token_catalog
from tests.conftest import ADMIN_PASSWORD, PG_ADMIN_URL, Api, build_app, database_of, make_settings
from tests.integration.test_openstack_clients import (
    Served,
    openstack,
    openstack_json,
)
from tests.integration.test_openstack_clients import latchkey as latchkey
from tests.integration.test_openstack_clients import openstack_venv as openstack_venv

PASSWORD = "catalog-password-1234"
NATIVE = {
    "type": "objects",
    "name": "Object store",
    "endpoints": [{"interface": "public", "url": "http://objects.example/v1", "region": "r1"}],
    "actions": ["objects:container:read"],
    "resource_types": {"objects:container": {"attributes": {}}},
}


def v3_token(
    api: Api, name: str = "admin", password: str = ADMIN_PASSWORD, project: str = "admin"
) -> str:
    body = {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {"name": name, "domain": {"id": "default"}, "password": password}
                },
            },
            "scope": {"project": {"name": project, "domain": {"id": "default"}}},
        }
    }
    response = api.client.post("/v3/auth/tokens", json=body)
    assert response.status_code == 201, response.get_json()
    return str(response.headers["X-Subject-Token"])


def call(api: Api, method: str, path: str, token: str | None, body: Any = None) -> TestResponse:
    headers = {"X-Auth-Token": token} if token else {}
    return api.client.open(path, method=method, json=body, headers=headers)


def ok(api: Api, method: str, path: str, token: str, body: Any = None, status: int = 0) -> Any:
    response = call(api, method, path, token, body)
    expected = status or {"POST": 201, "PUT": 201, "DELETE": 204}.get(method, 200)
    assert response.status_code == expected, (method, path, response.get_json())
    return response.get_json(silent=True)


def keystone_error(response: TestResponse, status: int) -> dict[str, Any]:
    body = response.get_json()
    assert response.status_code == status, body
    assert body["error"]["code"] == status, body
    return dict(body["error"])


@pytest.fixture
def admin(api: Api) -> str:
    return v3_token(api)


def member(api: Api, admin_v1: str, role: str = "member") -> str:
    project = api.ok("POST", "/v1/projects", admin_v1, {"name": "web"})["id"]
    user = api.ok("POST", "/v1/users", admin_v1, {"name": "bob", "password": PASSWORD})
    api.ok("PUT", f"/v1/projects/{project}/users/{user['id']}/roles/{role}", admin_v1)
    return v3_token(api, "bob", PASSWORD, "web")


# -- regions ----------------------------------------------------------------------------


def test_regions_lifecycle(api: Api, admin: str) -> None:
    listed = ok(api, "GET", "/v3/regions", admin)
    assert "RegionOne" in [r["id"] for r in listed["regions"]]
    first = ok(api, "POST", "/v3/regions", admin, {"region": {"description": "one"}})["region"]
    assert first["id"] and first["description"] == "one" and first["parent_region_id"] is None
    assert first["links"]["self"].endswith("/v3/regions/" + first["id"])
    second = ok(api, "PUT", "/v3/regions/north", admin, {"region": {"description": "two"}})
    assert second["region"]["id"] == "north"
    child = ok(
        api,
        "POST",
        "/v3/regions",
        admin,
        {"region": {"description": "c", "parent_region_id": first["id"], "zone": "a"}},
    )["region"]
    assert child["parent_region_id"] == first["id"] and child["zone"] == "a"
    changed = ok(
        api,
        "PATCH",
        f"/v3/regions/{child['id']}",
        admin,
        {"region": {"description": "moved", "parent_region_id": "north"}},
    )["region"]
    assert (changed["description"], changed["parent_region_id"]) == ("moved", "north")
    assert ok(api, "GET", f"/v3/regions/{child['id']}", admin)["region"] == changed
    below = ok(api, "GET", "/v3/regions?parent_region_id=north", admin)["regions"]
    assert [r["id"] for r in below] == [child["id"]]
    # A circle, a duplicate id, conflicting ids, an unknown parent.
    keystone_error(
        call(
            api, "PATCH", "/v3/regions/north", admin, {"region": {"parent_region_id": child["id"]}}
        ),
        400,
    )
    keystone_error(call(api, "PUT", "/v3/regions/north", admin, {"region": {}}), 409)
    keystone_error(call(api, "PUT", "/v3/regions/x", admin, {"region": {"id": "y"}}), 400)
    keystone_error(
        call(api, "POST", "/v3/regions", admin, {"region": {"parent_region_id": "nowhere"}}), 404
    )
    keystone_error(call(api, "PATCH", "/v3/regions/north", admin, {"region": {"id": "z"}}), 400)
    keystone_error(call(api, "GET", "/v3/regions/nowhere", admin), 404)
    # Deleting a region takes the regions below it along (Keystone does).
    ok(api, "DELETE", "/v3/regions/north", admin)
    keystone_error(call(api, "GET", f"/v3/regions/{child['id']}", admin), 404)
    ok(api, "DELETE", f"/v3/regions/{first['id']}", admin)


def test_a_region_with_endpoints_or_latchkeys_own_stays(api: Api, admin: str) -> None:
    service = ok(api, "POST", "/v3/services", admin, {"service": {"type": "compute"}})["service"]
    ok(api, "PUT", "/v3/regions/parent", admin, {"region": {}})
    ok(api, "PUT", "/v3/regions/leaf", admin, {"region": {"parent_region_id": "parent"}})
    endpoint = {
        "service_id": service["id"],
        "interface": "public",
        "url": "http://c/",
        "region_id": "leaf",
    }
    created = ok(api, "POST", "/v3/endpoints", admin, {"endpoint": endpoint})["endpoint"]
    for region in ("leaf", "parent", "RegionOne"):
        keystone_error(call(api, "DELETE", f"/v3/regions/{region}", admin), 403)
    ok(api, "DELETE", f"/v3/endpoints/{created['id']}", admin)
    ok(api, "DELETE", "/v3/regions/parent", admin)


# -- services ---------------------------------------------------------------------------


def test_services_lifecycle(api: Api, admin: str) -> None:
    # Tempest's random types: capitals, digits, longer than the native API's words.
    kind = "tempest-ServicesTestJSON-Type-1234567890"
    created = ok(
        api,
        "POST",
        "/v3/services",
        admin,
        {"service": {"type": kind, "name": "svc", "description": "d"}},
    )["service"]
    assert {k: created[k] for k in ("type", "name", "description", "enabled")} == {
        "type": kind,
        "name": "svc",
        "description": "d",
        "enabled": True,
    }
    twin = ok(api, "POST", "/v3/services", admin, {"service": {"type": kind}})["service"]
    assert twin["name"] == ""
    listed = ok(api, "GET", f"/v3/services?type={kind}", admin)["services"]
    assert {s["id"] for s in listed} == {created["id"], twin["id"]}
    updated = ok(
        api, "PATCH", f"/v3/services/{created['id']}", admin, {"service": {"description": "e"}}
    )["service"]
    assert updated["description"] == "e"
    assert ok(api, "GET", f"/v3/services/{created['id']}", admin)["service"] == updated
    # Deleting a service removes its endpoints.
    endpoint = ok(
        api,
        "POST",
        "/v3/endpoints",
        admin,
        {"endpoint": {"service_id": twin["id"], "interface": "admin", "url": "http://t/"}},
    )["endpoint"]
    ok(api, "DELETE", f"/v3/services/{twin['id']}", admin)
    keystone_error(call(api, "GET", f"/v3/services/{twin['id']}", admin), 404)
    keystone_error(call(api, "GET", f"/v3/endpoints/{endpoint['id']}", admin), 404)
    # Bad input is Keystone's 400.
    for body in (
        {"service": {"name": "no type"}},
        {"service": {"type": ""}},
        {"service": {"type": "x", "enabled": "True"}},
        {"service": "compute"},
        {},
    ):
        keystone_error(call(api, "POST", "/v3/services", admin, body), 400)
    keystone_error(call(api, "PATCH", f"/v3/services/{created['id']}", admin, {"service": {}}), 400)


def test_one_catalog_behind_both_doors(api: Api, admin: str, admin_token: str) -> None:
    native = api.ok("POST", "/v1/services", admin_token, NATIVE)
    # The native endpoints are /v3 endpoints, their region a region.
    endpoints = ok(api, "GET", f"/v3/endpoints?service_id={native['id']}", admin)["endpoints"]
    assert [(e["interface"], e["url"], e["region"], e["region_id"]) for e in endpoints] == [
        ("public", "http://objects.example/v1", "r1", "r1")
    ]
    assert ok(api, "GET", "/v3/regions/r1", admin)["region"]["id"] == "r1"
    # A /v3 endpoint shows in the native shape; the native type stays unique there.
    ok(
        api,
        "POST",
        "/v3/endpoints",
        admin,
        {"endpoint": {"service_id": native["id"], "interface": "internal", "url": "http://in/"}},
    )
    assert api.ok("GET", "/v1/services/objects", admin_token)["endpoints"] == [
        {"interface": "public", "url": "http://objects.example/v1", "region": "r1"},
        {"interface": "internal", "url": "http://in/"},
    ]
    again = api.call("POST", "/v1/services", admin_token, NATIVE)
    assert (again.status_code, again.get_json()["code"]) == (409, "service_type_taken")
    # Keystone allows a second service of the type; the native door still finds its own.
    ok(api, "POST", "/v3/services", admin, {"service": {"type": "objects", "name": "other"}})
    assert api.ok("GET", "/v1/services/objects", admin_token)["id"] == native["id"]
    # A native PUT keeps the ids of the endpoints it keeps.
    kept = {e["url"]: e["id"] for e in ok(api, "GET", "/v3/endpoints", admin)["endpoints"]}
    api.ok("PUT", "/v1/services/objects", admin_token, NATIVE, status=200)
    now = {e["url"]: e["id"] for e in ok(api, "GET", "/v3/endpoints", admin)["endpoints"]}
    assert now["http://objects.example/v1"] == kept["http://objects.example/v1"]
    assert "http://in/" not in now
    # Latchkey's own services are not removed nor disabled through /v3 either.
    identity = ok(api, "GET", "/v3/services?type=identity", admin)["services"][0]
    keystone_error(call(api, "DELETE", f"/v3/services/{identity['id']}", admin), 409)
    keystone_error(
        call(
            api, "PATCH", f"/v3/services/{identity['id']}", admin, {"service": {"enabled": False}}
        ),
        409,
    )


# -- endpoints --------------------------------------------------------------------------


def test_endpoints_lifecycle_and_refusals(api: Api, admin: str) -> None:
    one = ok(api, "POST", "/v3/services", admin, {"service": {"type": "t1"}})["service"]
    two = ok(api, "POST", "/v3/services", admin, {"service": {"type": "t2"}})["service"]
    # Keystone's legacy `region` makes the region; `region_id` must name one.
    body = {
        "service_id": one["id"],
        "interface": "public",
        "url": "http://a/",
        "region": "tempest-r",
        "enabled": True,
    }
    created = ok(api, "POST", "/v3/endpoints", admin, {"endpoint": body})["endpoint"]
    assert (created["region"], created["region_id"], created["enabled"]) == (
        "tempest-r",
        "tempest-r",
        True,
    )
    assert ok(api, "GET", "/v3/regions/tempest-r", admin)["region"]["id"] == "tempest-r"
    assert ok(api, "GET", f"/v3/endpoints/{created['id']}", admin)["endpoint"] == created
    changed = ok(
        api,
        "PATCH",
        f"/v3/endpoints/{created['id']}",
        admin,
        {
            "endpoint": {
                "service_id": two["id"],
                "interface": "internal",
                "url": "http://b/",
                "region": "r2",
                "enabled": False,
            }
        },
    )["endpoint"]
    assert (
        changed["service_id"],
        changed["interface"],
        changed["url"],
        changed["region"],
        changed["enabled"],
    ) == (two["id"], "internal", "http://b/", "r2", False)
    for query, expected in (
        (f"service_id={two['id']}", [created["id"]]),
        (f"service_id={one['id']}", []),
        ("region_id=r2", [created["id"]]),
        ("interface=internal", [created["id"]]),
    ):
        found = [e["id"] for e in ok(api, "GET", f"/v3/endpoints?{query}", admin)["endpoints"]]
        assert [i for i in found if i == created["id"]] == expected, query
    keystone_error(call(api, "GET", "/v3/endpoints?interface=sideways", admin), 400)
    for bad in (
        {**body, "enabled": "False"},
        {**body, "enabled": "True"},
        {**body, "interface": "sideways"},
        {**body, "region_id": "nowhere"},
        {**body, "service_id": "no-such-service"},
        {**body, "url": "not a url"},
        {**body, "url": "http://x/$(unknown)s"},
        {k: v for k, v in body.items() if k != "url"},
    ):
        keystone_error(call(api, "POST", "/v3/endpoints", admin, {"endpoint": bad}), 400)
    for patch in (
        {"enabled": "True"},
        {"enabled": "False"},
        {"region_id": "nowhere"},
        {"interface": 1},
    ):
        keystone_error(
            call(api, "PATCH", f"/v3/endpoints/{created['id']}", admin, {"endpoint": patch}), 400
        )
    ok(api, "DELETE", f"/v3/endpoints/{created['id']}", admin)
    keystone_error(call(api, "DELETE", f"/v3/endpoints/{created['id']}", admin), 404)


# -- the token's catalog ----------------------------------------------------------------


def identity_entry(catalog: list[dict[str, Any]]) -> dict[str, Any]:
    return next(s for s in catalog if s["type"] == "identity")


def test_identity_endpoints_carry_the_region(api: Api, admin: str) -> None:
    catalog = ok(api, "GET", "/v3/auth/catalog", admin)["catalog"]
    endpoints = identity_entry(catalog)["endpoints"]
    assert {e["interface"] for e in endpoints} == {"public", "internal", "admin"}
    assert all(e["region"] == e["region_id"] == "RegionOne" for e in endpoints)
    assert all(e["url"].endswith("/v3") for e in endpoints)
    # /v3/endpoints lists them too, with the same ids.
    listed = ok(api, "GET", "/v3/endpoints?region_id=RegionOne", admin)["endpoints"]
    assert {e["id"] for e in listed} == {e["id"] for e in endpoints}
    one = endpoints[0]
    assert ok(api, "GET", f"/v3/endpoints/{one['id']}", admin)["endpoint"]["url"] == one["url"]
    # Changing one stores all three (same ids); the token catalog follows.
    ok(
        api,
        "PATCH",
        f"/v3/endpoints/{one['id']}",
        admin,
        {"endpoint": {"url": "https://id.example/v3"}},
    )
    after = identity_entry(ok(api, "GET", "/v3/auth/catalog", admin)["catalog"])["endpoints"]
    assert {e["id"] for e in after} == {e["id"] for e in endpoints}
    assert [e["url"] for e in after if e["id"] == one["id"]] == ["https://id.example/v3"]
    # A disabled endpoint or service leaves the token's catalog, as in Keystone.
    ok(api, "PATCH", f"/v3/endpoints/{one['id']}", admin, {"endpoint": {"enabled": False}})
    after = identity_entry(ok(api, "GET", "/v3/auth/catalog", admin)["catalog"])["endpoints"]
    assert one["id"] not in {e["id"] for e in after}
    service = ok(
        api, "POST", "/v3/services", admin, {"service": {"type": "compute", "enabled": False}}
    )
    catalog = ok(api, "GET", "/v3/auth/catalog", admin)["catalog"]
    assert service["service"]["id"] not in {s["id"] for s in catalog}


def test_the_token_answer_carries_the_region(api: Api) -> None:
    body = {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {
                        "name": "admin",
                        "domain": {"id": "default"},
                        "password": ADMIN_PASSWORD,
                    }
                },
            },
            "scope": {"project": {"name": "admin", "domain": {"id": "default"}}},
        }
    }
    token = api.client.post("/v3/auth/tokens", json=body).get_json()["token"]
    endpoints = identity_entry(token["catalog"])["endpoints"]
    assert {e["region_id"] for e in endpoints} == {"RegionOne"}


def test_the_region_is_a_setting(tmp_path: Path) -> None:
    app = build_app(make_settings(tmp_path, f"sqlite:///{tmp_path / 'r.db'}", region="Zone9"))
    with app.app_context():
        app.extensions["latchkey"].bootstrap.run(ADMIN_PASSWORD)
        database_of(app).session.remove()
    api = Api(app.test_client())
    token = v3_token(api)
    catalog = ok(api, "GET", "/v3/auth/catalog", token)["catalog"]
    assert {e["region_id"] for e in identity_entry(catalog)["endpoints"]} == {"Zone9"}
    assert "Zone9" in [r["id"] for r in ok(api, "GET", "/v3/regions", token)["regions"]]


def test_url_templates_are_filled_in_per_token(app: Flask, api: Api, admin: str) -> None:
    service = ok(api, "POST", "/v3/services", admin, {"service": {"type": "volumev3"}})["service"]
    for url in ("http://cinder/v3/$(project_id)s", "http://swift/AUTH_%(tenant_id)s", "http://n/"):
        endpoint = {"service_id": service["id"], "interface": "public", "url": url}
        ok(api, "POST", "/v3/endpoints", admin, {"endpoint": endpoint})
    with app.test_request_context("/v3/auth/catalog"):
        cached = token_catalog()
        assert token_catalog() is cached  # no template filled in: the cached list itself
        filled = token_catalog(project_id="p1", user_id="u1")
        unscoped = token_catalog(user_id="u1")
    urls = [e["url"] for e in next(s for s in filled if s["id"] == service["id"])["endpoints"]]
    assert urls == ["http://cinder/v3/p1", "http://swift/AUTH_p1", "http://n/"]
    # Without a project, the endpoints that need one are left out (Keystone does).
    urls = [e["url"] for e in next(s for s in unscoped if s["id"] == service["id"])["endpoints"]]
    assert urls == ["http://n/"]
    raw = [e["url"] for e in next(s for s in cached if s["id"] == service["id"])["endpoints"]]
    assert "http://cinder/v3/$(project_id)s" in raw  # the cached catalog is never changed


# -- who may ----------------------------------------------------------------------------


def test_readers_read_and_only_cloud_admins_write(api: Api, admin: str, admin_token: str) -> None:
    service = ok(api, "POST", "/v3/services", admin, {"service": {"type": "compute"}})["service"]
    endpoint = ok(
        api,
        "POST",
        "/v3/endpoints",
        admin,
        {
            "endpoint": {
                "service_id": service["id"],
                "interface": "public",
                "url": "http://c/",
                "region": "r",
            }
        },
    )["endpoint"]
    for role in ("admin", "member"):  # a project's admin is no cloud admin
        token = (
            member(api, admin_token, role)
            if role == "admin"
            else v3_token(api, "bob", PASSWORD, "web")
        )
        for path in (
            "/v3/regions",
            "/v3/services",
            "/v3/endpoints",
            f"/v3/endpoints/{endpoint['id']}",
        ):
            ok(api, "GET", path, token)
        for method, path, body in (
            ("POST", "/v3/regions", {"region": {}}),
            ("PUT", "/v3/regions/mine", {"region": {}}),
            ("PATCH", "/v3/regions/r", {"region": {"description": "x"}}),
            ("DELETE", "/v3/regions/r", None),
            ("POST", "/v3/services", {"service": {"type": "x"}}),
            ("PATCH", f"/v3/services/{service['id']}", {"service": {"name": "x"}}),
            ("DELETE", f"/v3/services/{service['id']}", None),
            (
                "POST",
                "/v3/endpoints",
                {
                    "endpoint": {
                        "service_id": service["id"],
                        "interface": "public",
                        "url": "http://x/",
                    }
                },
            ),
            ("PATCH", f"/v3/endpoints/{endpoint['id']}", {"endpoint": {"url": "http://evil/"}}),
            ("DELETE", f"/v3/endpoints/{endpoint['id']}", None),
        ):
            keystone_error(call(api, method, path, token, body), 403)
    for path in ("/v3/regions", "/v3/services", "/v3/endpoints"):
        keystone_error(call(api, "GET", path, None), 401)
    assert (
        ok(api, "GET", f"/v3/endpoints/{endpoint['id']}", admin)["endpoint"]["url"] == "http://c/"
    )


def test_a_restricted_credential_changes_nothing(api: Api, admin: str) -> None:
    info = api.client.get(
        "/v3/auth/tokens", headers={"X-Auth-Token": admin, "X-Subject-Token": admin}
    )
    user_id = info.get_json()["token"]["user"]["id"]
    credential = ok(
        api,
        "POST",
        f"/v3/users/{user_id}/application_credentials",
        admin,
        {"application_credential": {"name": "ci"}},
    )["application_credential"]
    body = {
        "auth": {
            "identity": {
                "methods": ["application_credential"],
                "application_credential": {"id": credential["id"], "secret": credential["secret"]},
            }
        }
    }
    response = api.client.post("/v3/auth/tokens", json=body)
    assert response.status_code == 201, response.get_json()
    token = response.headers["X-Subject-Token"]
    ok(api, "GET", "/v3/endpoints", token)
    keystone_error(call(api, "POST", "/v3/regions", token, {"region": {}}), 403)
    keystone_error(call(api, "POST", "/v3/services", token, {"service": {"type": "x"}}), 403)


# -- OS-EP-FILTER endpoint groups and /v3/policies --------------------------------------

GROUPS = "/v3/OS-EP-FILTER/endpoint_groups"


def test_endpoint_groups(api: Api, admin: str, admin_token: str) -> None:
    one = ok(api, "POST", "/v3/services", admin, {"service": {"type": "t1"}})["service"]
    two = ok(api, "POST", "/v3/services", admin, {"service": {"type": "t2"}})["service"]
    endpoint = {"service_id": one["id"], "interface": "public", "url": "http://a/"}
    ep = ok(api, "POST", "/v3/endpoints", admin, {"endpoint": endpoint})["endpoint"]
    body = {"name": "g", "description": "d", "filters": {"service_id": one["id"]}}
    group = ok(api, "POST", GROUPS, admin, {"endpoint_group": body})["endpoint_group"]
    assert (group["name"], group["description"], group["filters"]) == ("g", "d", body["filters"])
    assert group in ok(api, "GET", GROUPS, admin)["endpoint_groups"]
    assert ok(api, "GET", f"{GROUPS}/{group['id']}", admin)["endpoint_group"] == group
    assert (
        api.client.head(f"{GROUPS}/{group['id']}", headers={"X-Auth-Token": admin}).status_code
        == 200
    )
    members = ok(api, "GET", f"{GROUPS}/{group['id']}/endpoints", admin)["endpoints"]
    assert [e["id"] for e in members] == [ep["id"]]
    changed = ok(
        api,
        "PATCH",
        f"{GROUPS}/{group['id']}",
        admin,
        {"endpoint_group": {"name": "h", "filters": {"service_id": two["id"]}}},
    )["endpoint_group"]
    assert (changed["name"], changed["filters"]["service_id"]) == ("h", two["id"])
    for bad in (
        {"name": "x"},
        {"name": "x", "filters": {}},
        {"name": "x", "filters": {"url": "http://a/"}},
        {"name": "x", "filters": {"interface": "sideways"}},
        {"filters": {"service_id": "s"}},
    ):
        keystone_error(call(api, "POST", GROUPS, admin, {"endpoint_group": bad}), 400)
    bob = member(api, admin_token, "admin")
    keystone_error(call(api, "GET", GROUPS, bob), 403)
    keystone_error(call(api, "POST", GROUPS, bob, {"endpoint_group": body}), 403)
    ok(api, "DELETE", f"{GROUPS}/{group['id']}", admin)
    keystone_error(call(api, "GET", f"{GROUPS}/{group['id']}", admin), 404)


def test_keystone_policy_blobs(api: Api, admin: str, admin_token: str) -> None:
    created = ok(
        api, "POST", "/v3/policies", admin, {"policy": {"blob": "{}", "type": "application/json"}}
    )["policy"]
    assert (created["blob"], created["type"]) == ("{}", "application/json")
    assert created["id"] in [p["id"] for p in ok(api, "GET", "/v3/policies", admin)["policies"]]
    ok(api, "PATCH", f"/v3/policies/{created['id']}", admin, {"policy": {"type": "text/x"}})
    shown = ok(api, "GET", f"/v3/policies/{created['id']}", admin)["policy"]
    assert (shown["blob"], shown["type"]) == ("{}", "text/x")
    for bad in ({"blob": "{}"}, {"type": "t"}, {"blob": 1, "type": "t"}):
        keystone_error(call(api, "POST", "/v3/policies", admin, {"policy": bad}), 400)
    bob = member(api, admin_token, "admin")
    keystone_error(call(api, "GET", "/v3/policies", bob), 403)
    keystone_error(call(api, "DELETE", f"/v3/policies/{created['id']}", bob), 403)
    ok(api, "DELETE", f"/v3/policies/{created['id']}", admin)
    keystone_error(call(api, "GET", f"/v3/policies/{created['id']}", admin), 404)


# -- the migration ----------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def migration_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database of its own: the test walks the schema down and up again."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'm.db'}"
        return
    name = "latchkey_migration_" + secrets.token_hex(4)
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_the_migration_moves_json_endpoints_into_rows(tmp_path: Path, migration_url: str) -> None:
    app = build_app(make_settings(tmp_path, migration_url))
    json_value = "CAST(:e AS JSON)" if migration_url.startswith("postgresql") else ":e"
    with app.app_context():
        downgrade(revision="b2c4d6e8f013")
        endpoints = (
            '[{"interface": "public", "url": "http://o/v1", "region": "r1"},'
            ' {"interface": "admin", "url": "http://o/admin"}]'
        )
        with database_of(app).engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO catalog_service (id, type, name, description, endpoints, actions,"  # noqa: S608 (a constant)
                    " resource_types, created_at, updated_at) VALUES ('s1', 'objects', 'O', '',"
                    f" {json_value}, '[]', '{{}}', '2026-01-01', '2026-01-01'),"
                    " ('s2', 'identity', 'I', '',"
                    " '[]', '[]', '{}', '2026-01-01', '2026-01-01')"
                ),
                {"e": endpoints},
            )
        upgrade(revision="c3d5e7f90014")
        with database_of(app).engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT service_id, interface, url, region_id, position"
                    " FROM catalog_endpoint ORDER BY position"
                )
            ).all()
            regions = conn.execute(text("SELECT id FROM catalog_region")).scalars().all()
            builtin = dict(conn.execute(text("SELECT id, builtin FROM catalog_service")).all())
        assert [tuple(r) for r in rows] == [
            ("s1", "public", "http://o/v1", "r1", 0),
            ("s1", "admin", "http://o/admin", None, 1),
        ]
        assert regions == ["r1"]
        assert builtin == {"s1": False, "s2": True}
        # And back: the JSON as it was.
        downgrade(revision="b2c4d6e8f013")
        with database_of(app).engine.connect() as conn:
            stored = conn.execute(
                text("SELECT endpoints FROM catalog_service WHERE id = 's1'")
            ).scalar()
        stored = stored if isinstance(stored, str) else json.dumps(stored)
        assert '"region": "r1"' in stored and "http://o/admin" in stored
        upgrade()
        database_of(app).session.remove()
        database_of(app).engine.dispose()


# -- python-openstackclient with region_name ---------------------------------------------

CLOUDS_YAML = """\
clouds:
  latchkey:
    auth:
      auth_url: {url}/v3
      username: admin
      password: {password}
      user_domain_id: default
      project_name: admin
      project_domain_id: default
    region_name: RegionOne
    interface: public
    identity_api_version: 3
"""


def test_openstackclient_with_region_name(
    openstack_venv: Path,
    latchkey: Served,
    tmp_path: Path,
) -> None:
    (tmp_path / "clouds.yaml").write_text(
        CLOUDS_YAML.format(url=latchkey.url, password=ADMIN_PASSWORD)
    )
    run = (openstack_venv, tmp_path, {"OS_CLOUD": "latchkey"})
    assert openstack_json(*run, "token", "issue")["project_id"] == latchkey.admin_project_id
    catalog = openstack_json(*run, "catalog", "list")
    identity = next(s for s in catalog if s["Type"] == "identity")
    assert all(e["region"] == "RegionOne" for e in identity["Endpoints"])
    shown = openstack_json(*run, "catalog", "show", "identity")
    assert "RegionOne" in json.dumps(shown)
    # Regions.
    openstack(*run, "region", "create", "--description", "north", "North")
    openstack(*run, "region", "create", "--parent-region", "North", "NorthEast")
    assert {"North", "NorthEast", "RegionOne"} <= {
        r["Region"] for r in openstack_json(*run, "region", "list")
    }
    openstack(*run, "region", "set", "--description", "cold", "North")
    assert openstack_json(*run, "region", "show", "North")["description"] == "cold"
    # Services and endpoints.
    service = openstack_json(
        *run, "service", "create", "--name", "nova", "--description", "c", "compute"
    )
    assert service["type"] == "compute"
    assert "compute" in [s["Type"] for s in openstack_json(*run, "service", "list")]
    openstack(*run, "service", "set", "--description", "d", service["id"])
    assert openstack_json(*run, "service", "show", service["id"])["description"] == "d"
    endpoint = openstack_json(
        *run, "endpoint", "create", "--region", "North", service["id"], "public", "http://nova/v2.1"
    )
    assert (endpoint["region"], endpoint["url"]) == ("North", "http://nova/v2.1")
    listed = openstack_json(*run, "endpoint", "list", "--service", service["id"])
    assert [e["ID"] for e in listed] == [endpoint["id"]]
    openstack(*run, "endpoint", "set", "--url", "http://nova2/v2.1", endpoint["id"])
    assert openstack_json(*run, "endpoint", "show", endpoint["id"])["url"] == "http://nova2/v2.1"
    catalog = openstack_json(*run, "catalog", "list")
    assert "compute" in [s["Type"] for s in catalog]
    openstack(*run, "endpoint", "delete", endpoint["id"])
    openstack(*run, "service", "delete", service["id"])
    openstack(*run, "region", "delete", "North")
    assert "NorthEast" not in {r["Region"] for r in openstack_json(*run, "region", "list")}
