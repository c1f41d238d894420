"""Hostile and broken input: every refusal is a 4xx problem document, never a 500.

Each test walks a representative set of endpoints (POST domains, projects,
users, groups, roles, tokens; PATCH users, domains, projects, groups; the
self-service password change; the list endpoints' query parameters) on both
backends. Every error must be ``application/problem+json`` with ``type``,
``title``, ``status``, ``detail`` and ``code``, and never show a stack trace.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
from flask import Flask
from werkzeug.test import TestResponse

from tests.conftest import ADMIN_PASSWORD, Api, password_auth

PASSWORD = "a-long-enough-password"
PROBLEM_MEMBERS = {"type", "title", "status", "detail", "code"}
LIST_PATHS = ["/v1/domains", "/v1/projects", "/v1/users", "/v1/groups"]


def assert_problem(
    response: TestResponse, status: int | None = None, code: str | None = None
) -> dict[str, Any]:
    text = response.get_data(as_text=True)
    where = f"{response.request.method} {response.request.path}"
    assert "Traceback" not in text, where
    assert 400 <= response.status_code < 500, (where, response.status_code, text[:300])
    if status is not None:
        assert response.status_code == status, (where, response.status_code, text[:300])
    assert response.mimetype == "application/problem+json", (where, response.mimetype)
    body = json.loads(text)
    assert isinstance(body, dict), where
    assert body.keys() >= PROBLEM_MEMBERS, (where, body)
    assert body["status"] == response.status_code, (where, body)
    assert isinstance(body["code"], str) and body["code"], (where, body)
    assert body["type"].endswith("/" + body["code"]), (where, body)
    assert isinstance(body["title"], str) and isinstance(body["detail"], str), (where, body)
    if code is not None:
        assert body["code"] == code, (where, body)
    return dict(body)


@dataclass
class Target:
    """One JSON-taking endpoint: how to call it validly, and how to get its types wrong."""

    method: str
    path: str
    valid: dict[str, Any]
    wrong_types: dict[str, Any]
    wrong_fields: set[str]


@pytest.fixture
def targets(api: Api, admin_token: str) -> list[Target]:
    project = api.ok("POST", "/v1/projects", admin_token, {"name": "existing"})
    user = api.ok("POST", "/v1/users", admin_token, {"name": "someone", "password": PASSWORD})
    group = api.ok("POST", "/v1/groups", admin_token, {"name": "existing"})
    login = password_auth("someone", PASSWORD)
    return [
        Target(
            "POST",
            "/v1/domains",
            {"name": "new-domain"},
            {"name": 5, "enabled": "maybe"},
            {"name", "enabled"},
        ),
        Target(
            "POST",
            "/v1/projects",
            {"name": "new-project"},
            {"name": ["web"], "domain_id": 7},
            {"name", "domain_id"},
        ),
        Target(
            "POST",
            "/v1/users",
            {"name": "new-user", "password": PASSWORD},
            {"name": "u", "password": 1234567890123, "email": "not-an-email", "kind": "robot"},
            {"password", "email", "kind"},
        ),
        Target("POST", "/v1/groups", {"name": "new-group"}, {"name": {"x": 1}}, {"name"}),
        Target("POST", "/v1/roles", {"name": "new-role"}, {"name": 3.5}, {"name"}),
        Target(
            "POST",
            "/v1/auth/tokens",
            login,
            {"auth": {"password": {"user": {"name": 1, "domain": "default"}, "password": True}}},
            {"auth"},
        ),
        Target(
            "PATCH",
            f"/v1/users/{user['id']}",
            {"description": "patched"},
            {"enabled": "maybe", "name": ""},
            {"enabled", "name"},
        ),
        Target("PATCH", "/v1/domains/default", {"description": "d"}, {"enabled": []}, {"enabled"}),
        Target(
            "PATCH",
            f"/v1/projects/{project['id']}",
            {"description": "p"},
            {"name": None},
            {"name"},
        ),
        Target(
            "PATCH",
            f"/v1/groups/{group['id']}",
            {"description": "g"},
            {"description": 12},
            {"description"},
        ),
        Target(
            "POST",
            f"/v1/users/{user['id']}/password",
            {"original_password": PASSWORD, "password": "another-long-password"},
            {"original_password": 1, "password": None},
            {"original_password", "password"},
        ),
    ]


def snapshot(api: Api, token: str) -> dict[str, list[str]]:
    """Every id of every listable collection (to show refused calls wrote nothing)."""
    found = {}
    for path in [*LIST_PATHS, "/v1/roles"]:
        key = path.rsplit("/", 1)[1]
        found[key] = sorted(item["id"] for item in api.ok("GET", path, token)[key])
    return found


# -- bodies -------------------------------------------------------------------------


MALFORMED = [
    '{"name":',
    '{"name": "x",}',
    "{'name': 'x'}",
    '{"name": "x"} trailing',
    b'{"name": "\xff"}',
]


def test_malformed_json_is_400(api: Api, admin_token: str, targets: list[Target]) -> None:
    before = snapshot(api, admin_token)
    for data in MALFORMED:
        for t in targets:
            response = api.call(
                t.method, t.path, admin_token, data=data, content_type="application/json"
            )
            assert_problem(response, 400, "malformed_request")
    assert snapshot(api, admin_token) == before


def test_deeply_nested_json_is_refused(api: Api, admin_token: str, targets: list[Target]) -> None:
    data = "[" * 100_000 + "]" * 100_000
    for t in targets:
        response = api.call(
            t.method, t.path, admin_token, data=data, content_type="application/json"
        )
        assert_problem(response, 400, "malformed_request")


def test_wrong_types_are_422_with_errors(api: Api, admin_token: str, targets: list[Target]) -> None:
    before = snapshot(api, admin_token)
    for t in targets:
        body = assert_problem(
            api.call(t.method, t.path, admin_token, t.wrong_types), 422, "invalid_request"
        )
        assert "errors" in body, (t.path, body)
        assert t.wrong_fields <= set(body["errors"]["json"]), (t.path, body["errors"])
    assert snapshot(api, admin_token) == before


def test_unknown_fields_are_422_unknown_field(
    api: Api, admin_token: str, targets: list[Target]
) -> None:
    before = snapshot(api, admin_token)
    for t in targets:
        body = assert_problem(
            api.call(t.method, t.path, admin_token, {**t.valid, "bogus": 1}), 422, "unknown_field"
        )
        assert body["errors"]["json"] == {"bogus": ["Unknown field."]}, (t.path, body)
        # Unknown and invalid together: the broader code wins.
        assert_problem(
            api.call(t.method, t.path, admin_token, {**t.wrong_types, "bogus": 1}),
            422,
            "invalid_request",
        )
    # Nested unknown fields are found too.
    nested = password_auth("admin", ADMIN_PASSWORD)
    nested["auth"]["password"]["user"]["nickname"] = "root"
    body = assert_problem(api.call("POST", "/v1/auth/tokens", json=nested), 422, "unknown_field")
    assert body["errors"]["json"]["auth"]["password"]["user"] == {"nickname": ["Unknown field."]}
    assert snapshot(api, admin_token) == before


def test_non_object_bodies_are_422(api: Api, admin_token: str, targets: list[Target]) -> None:
    before = snapshot(api, admin_token)
    for payload in [[], [{"name": "x"}], "name", 5, 1.5, True, None]:
        data = json.dumps(payload)
        for t in targets:
            response = api.call(
                t.method, t.path, admin_token, data=data, content_type="application/json"
            )
            assert_problem(response, 422, "invalid_request")
    assert snapshot(api, admin_token) == before


def test_oversize_bodies_are_413(
    app: Flask, api: Api, admin_token: str, targets: list[Target]
) -> None:
    limit = app.extensions["latchkey"].settings.max_request_bytes
    assert app.config["MAX_CONTENT_LENGTH"] == limit
    too_big = json.dumps({"name": "x" * limit})
    assert len(too_big.encode()) > limit
    before = snapshot(api, admin_token)
    for t in [*targets, Target("PUT", "/v1/domains/default/users/x/roles/y", {}, {}, set())]:
        response = api.call(
            t.method, t.path, admin_token, data=too_big, content_type="application/json"
        )
        assert_problem(response, 413, "request_too_large")
    # A body just under the limit is read and judged on its content.
    just_under = json.dumps({"name": "d", "description": "x" * (limit - 100)})
    assert len(just_under.encode()) <= limit
    response = api.call(
        "POST", "/v1/domains", admin_token, data=just_under, content_type="application/json"
    )
    body = assert_problem(response, 422, "invalid_request")
    assert "description" in body["errors"]["json"]
    assert snapshot(api, admin_token) == before


# -- unknown things -----------------------------------------------------------------


def test_unknown_ids_are_404_with_distinct_codes(api: Api, admin_token: str) -> None:
    user = api.ok("POST", "/v1/users", admin_token, {"name": "u", "password": PASSWORD})
    project = api.ok("POST", "/v1/projects", admin_token, {"name": "p"})
    group = api.ok("POST", "/v1/groups", admin_token, {"name": "g"})
    missing = "0123456789abcdef0123456789abcdef"
    cases: list[tuple[str, str, Any, str]] = [
        ("GET", f"/v1/domains/{missing}", None, "domain_not_found"),
        ("PATCH", f"/v1/domains/{missing}", {"description": "x"}, "domain_not_found"),
        ("DELETE", f"/v1/domains/{missing}", None, "domain_not_found"),
        ("GET", f"/v1/projects/{missing}", None, "project_not_found"),
        ("PATCH", f"/v1/projects/{missing}", {"description": "x"}, "project_not_found"),
        ("DELETE", f"/v1/projects/{missing}", None, "project_not_found"),
        ("POST", "/v1/projects", {"name": "n", "domain_id": missing}, "domain_not_found"),
        ("GET", f"/v1/users/{missing}", None, "user_not_found"),
        ("PATCH", f"/v1/users/{missing}", {"description": "x"}, "user_not_found"),
        ("DELETE", f"/v1/users/{missing}", None, "user_not_found"),
        ("GET", f"/v1/users/{missing}/projects", None, "user_not_found"),
        (
            "POST",
            f"/v1/users/{missing}/password",
            {"original_password": PASSWORD, "password": PASSWORD},
            "user_not_found",
        ),
        ("POST", "/v1/users", {"name": "n", "domain_id": missing}, "domain_not_found"),
        (
            "POST",
            "/v1/users",
            {"name": "n", "kind": "application", "owner_project_id": missing},
            "project_not_found",
        ),
        ("GET", f"/v1/groups/{missing}", None, "group_not_found"),
        ("PATCH", f"/v1/groups/{missing}", {"description": "x"}, "group_not_found"),
        ("DELETE", f"/v1/groups/{missing}", None, "group_not_found"),
        ("GET", f"/v1/groups/{missing}/users", None, "group_not_found"),
        ("PUT", f"/v1/groups/{missing}/users/{user['id']}", None, "group_not_found"),
        ("PUT", f"/v1/groups/{group['id']}/users/{missing}", None, "user_not_found"),
        ("POST", "/v1/groups", {"name": "n", "domain_id": missing}, "domain_not_found"),
        ("GET", f"/v1/roles/{missing}", None, "role_not_found"),
        ("DELETE", f"/v1/roles/{missing}", None, "role_not_found"),
        ("PUT", f"/v1/roles/{missing}/implies/reader", None, "role_not_found"),
        (
            "PUT",
            f"/v1/projects/{project['id']}/users/{user['id']}/roles/{missing}",
            None,
            "role_not_found",
        ),
        (
            "PUT",
            f"/v1/projects/{missing}/users/{user['id']}/roles/reader",
            None,
            "project_not_found",
        ),
        (
            "PUT",
            f"/v1/domains/{missing}/groups/{group['id']}/roles/reader",
            None,
            "domain_not_found",
        ),
        (
            "PUT",
            f"/v1/projects/{project['id']}/users/{missing}/roles/reader",
            None,
            "user_not_found",
        ),
        ("PUT", f"/v1/domains/default/groups/{missing}/roles/reader", None, "group_not_found"),
    ]
    before = snapshot(api, admin_token)
    seen = set()
    for method, path, payload, code in cases:
        seen.add(assert_problem(api.call(method, path, admin_token, payload), 404, code)["code"])
    assert seen == {
        "domain_not_found",
        "project_not_found",
        "user_not_found",
        "group_not_found",
        "role_not_found",
    }
    assert snapshot(api, admin_token) == before


def test_duplicate_names_are_409_with_distinct_codes(api: Api, admin_token: str) -> None:
    cases = [
        ("/v1/domains", {"name": "dup"}, "domain_name_taken"),
        ("/v1/projects", {"name": "dup"}, "project_name_taken"),
        ("/v1/users", {"name": "dup", "password": PASSWORD}, "user_name_taken"),
        ("/v1/groups", {"name": "dup"}, "group_name_taken"),
        ("/v1/roles", {"name": "dup"}, "role_name_taken"),
    ]
    for path, payload, code in cases:
        api.ok("POST", path, admin_token, payload)
        before = snapshot(api, admin_token)
        assert_problem(api.call("POST", path, admin_token, payload), 409, code)
        assert snapshot(api, admin_token) == before
    # Renaming onto a taken name is the same conflict.
    renames = [
        ("domains", "domain_name_taken"),
        ("projects", "project_name_taken"),
        ("users", "user_name_taken"),
        ("groups", "group_name_taken"),
    ]
    for key, code in renames:
        payload = {"name": "other"} if key != "users" else {"name": "other", "password": PASSWORD}
        other = api.ok("POST", f"/v1/{key}", admin_token, payload)
        response = api.call("PATCH", f"/v1/{key}/{other['id']}", admin_token, {"name": "dup"})
        assert_problem(response, 409, code)
        assert api.ok("GET", f"/v1/{key}/{other['id']}", admin_token)["name"] == "other"


def test_unknown_routes_and_wrong_methods(api: Api, admin_token: str) -> None:
    for path in ["/v1/nowhere", "/nowhere", "/v1/domains/default/nowhere", "/v2/domains", "/v1/"]:
        assert_problem(api.call("GET", path, admin_token), 404, "not_found")
    wrong = [
        ("PUT", "/v1/domains"),
        ("DELETE", "/v1/domains"),
        ("POST", "/v1/domains/default"),
        ("PUT", "/v1/users"),
        ("PATCH", "/v1/auth/tokens"),
        ("GET", "/v1/users/x/password"),
        ("POST", "/v1/role-assignments"),
        ("POST", "/v1/groups/x/users/y"),
    ]
    for method, path in wrong:
        response = api.call(method, path, admin_token)
        assert_problem(response, 405, "method_not_allowed")
        assert response.headers.get("Allow"), (method, path)
        assert method not in response.headers["Allow"]


# -- query parameters ---------------------------------------------------------------


BAD_LIST_QUERIES = [
    "limit=0",
    "limit=-1",
    "limit=100000",
    "limit=99999999999999999999999999",
    "limit=abc",
    "limit=1.5",
    "limit=",
    "marker=" + "m" * 65,
    "name=" + "n" * 256,
    "name=",
]


def test_bad_list_parameters_are_422(api: Api, admin_token: str) -> None:
    for query in BAD_LIST_QUERIES:
        for path in LIST_PATHS:
            response = api.call("GET", f"{path}?{query}", admin_token)
            body = assert_problem(response, 422, "invalid_request")
            assert body["errors"]["query"], body


def test_more_bad_query_parameters(api: Api, admin_token: str) -> None:
    for path in [
        "/v1/users?kind=robot",
        "/v1/users?domain_id=" + "d" * 65,
        "/v1/projects?domain_id=" + "d" * 65,
        "/v1/role-assignments?effective=maybe",
        "/v1/role-assignments?user_id=" + "u" * 65,
        "/v1/revocations?since=-1",
        "/v1/revocations?since=99999999999999999999999999",
        "/v1/revocations?since=2147483648",
        "/v1/revocations?limit=0",
        "/v1/audit/events?since=99999999999999999999999999",
        "/v1/audit/events?limit=100000",
    ]:
        body = assert_problem(api.call("GET", path, admin_token), 422, "invalid_request")
        assert body["errors"]["query"], (path, body)
    # The largest accepted cursor is fine.
    api.ok("GET", "/v1/revocations?since=2147483647", admin_token)
    # Unknown query parameters are ignored, as HTTP clients expect.
    assert api.ok("GET", "/v1/domains?color=blue", admin_token)["domains"]
    # Good limits at the edges work.
    assert len(api.ok("GET", "/v1/domains?limit=1", admin_token)["domains"]) == 1
    api.ok("GET", "/v1/domains?limit=1000", admin_token)


def test_missing_and_bad_tokens(api: Api, admin_token: str) -> None:
    for path in [*LIST_PATHS, "/v1/role-assignments"]:
        assert_problem(api.call("GET", path), 401, "token_missing")
        response = api.call("GET", path, "not-a-token")
        assert_problem(response, 401, "invalid_token")
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert_problem(api.call("GET", "/v1/auth/tokens", admin_token), 422, "subject_token_missing")
    for subject in ["garbage", "a.b.c", "x" * 10_000, "eyJhbGciOiJub25lIn0.e30."]:
        response = api.call(
            "GET", "/v1/auth/tokens", admin_token, headers={"X-Subject-Token": subject}
        )
        assert_problem(response, 404, "token_not_found")


# -- awkward strings ----------------------------------------------------------------

AWKWARD_NAMES = [
    "Ünïcødé 名前 имя",
    "🚀🔑" * 10,
    "\u202eevil\u202c",
    "zero\u200bwidth",
    "x'; DROP TABLE domain; --",
    "' OR '1'='1",
    'Robert"); DELETE FROM user_account;--',
    "%s %(name)s {name} $1 ?",
    "<script>alert(1)</script>",
    "../../etc/passwd",
    "  spaces  ",
    "tab\tnew\nline",
    "n" * 255,
    "é" * 255,
    "\U0001f511" * 255,
]


def test_awkward_names_are_stored_exactly_or_refused(api: Api, admin_token: str) -> None:
    for kind in ["domains", "projects", "users", "groups"]:
        for i, name in enumerate(AWKWARD_NAMES):
            payload: dict[str, Any] = {"name": name, "description": name}
            if kind == "users":
                payload["password"] = name + PASSWORD
            response = api.call("POST", f"/v1/{kind}", admin_token, payload)
            if response.status_code >= 400:
                assert_problem(response)
                continue
            assert response.status_code == 201, (kind, i, response.get_json())
            created = response.get_json()
            fetched = api.ok("GET", f"/v1/{kind}/{created['id']}", admin_token)
            assert (fetched["name"], fetched["description"]) == (name, name), (kind, i)
            listed = api.call("GET", f"/v1/{kind}", admin_token, query_string={"name": name})
            assert [x["id"] for x in listed.get_json()[kind]] == [created["id"]], (kind, i)
    # Nothing was dropped or rewritten along the way.
    assert api.ok("GET", "/v1/domains/default", admin_token)["name"] == "Default"
    assert api.login(AWKWARD_NAMES[4], AWKWARD_NAMES[4] + PASSWORD)


def test_too_long_names_are_422(api: Api, admin_token: str) -> None:
    before = snapshot(api, admin_token)
    for kind in ["domains", "projects", "users", "groups"]:
        for name in ["", "n" * 256, "\U0001f511" * 256, "n" * 100_000]:
            response = api.call("POST", f"/v1/{kind}", admin_token, {"name": name})
            body = assert_problem(response, 422, "invalid_request")
            assert "name" in body["errors"]["json"]
    assert snapshot(api, admin_token) == before


def test_nul_and_lone_surrogates_are_refused(api: Api, admin_token: str) -> None:
    user = api.ok("POST", "/v1/users", admin_token, {"name": "u", "password": PASSWORD})
    before = snapshot(api, admin_token)
    for bad in ["a\x00b", "\x00", "a\ud800b", "\udfff"]:
        escaped = json.dumps(bad)  # \u0000 and \ud800 escapes: valid JSON text
        for method, path, template in [
            ("POST", "/v1/domains", '{"name": %s}'),
            ("POST", "/v1/projects", '{"name": "p", "description": %s}'),
            ("POST", "/v1/users", '{"name": %s, "password": "a-long-enough-password"}'),
            ("POST", "/v1/users", '{"name": "v", "password": %s}'),
            ("POST", "/v1/groups", '{"name": %s}'),
            ("PATCH", f"/v1/users/{user['id']}", '{"description": %s}'),
            ("PATCH", "/v1/domains/default", '{"name": %s}'),
            (
                "POST",
                "/v1/auth/tokens",
                '{"auth": {"password": {"user": {"name": %s, "domain": {"id": "default"}},'
                ' "password": "x"}}}',
            ),
            (
                "POST",
                "/v1/auth/tokens",
                '{"auth": {"password": {"user": {"id": %s}, "password": "x"}}}',
            ),
            ("POST", "/v1/domains", '{"name": "ok", %s: 1}'),
        ]:
            response = api.call(
                method, path, admin_token, data=template % escaped, content_type="application/json"
            )
            assert_problem(response, 422, "invalid_character")
    for path in [
        "/v1/domains/a%00b",
        "/v1/users/%00",
        "/v1/roles/a%00",
        "/v1/domains?name=a%00b",
        "/v1/projects?marker=%00",
        "/v1/users?domain_id=%00",
        "/v1/role-assignments?user_id=a%00",
        "/v1/groups?na%00me=x",
    ]:
        assert_problem(api.call("GET", path, admin_token), 422, "invalid_character")
    assert snapshot(api, admin_token) == before
    assert api.ok("GET", "/v1/domains/default", admin_token)["name"] == "Default"


def test_sql_looking_input_in_queries_and_paths(api: Api, admin_token: str) -> None:
    for value in ["' OR '1'='1", "x' UNION SELECT * FROM user_account --", "%", "_", "*"]:
        for path in LIST_PATHS:
            body = api.call("GET", path, admin_token, query_string={"name": value}).get_json()
            assert body[path.rsplit("/", 1)[1]] == [], (path, value)
        response = api.call("GET", "/v1/users/x' OR '1'='1", admin_token)
        assert_problem(response, 404, "user_not_found")
        response = api.client.post("/v1/auth/tokens", json=password_auth(value, "x' OR '1'='1"))
        assert_problem(response, 401, "authentication_failed")
    # The tables are intact.
    assert [d["id"] for d in api.ok("GET", "/v1/domains", admin_token)["domains"]] == ["default"]
    assert [u["name"] for u in api.ok("GET", "/v1/users", admin_token)["users"]] == ["admin"]


def test_oversized_fields_within_the_body_limit(api: Api, admin_token: str) -> None:
    before = snapshot(api, admin_token)
    cases = [
        ("/v1/domains", {"name": "d", "description": "x" * 10_001}, "description"),
        ("/v1/users", {"name": "u", "email": "a" * 400 + "@example.com"}, "email"),
        ("/v1/users", {"name": "u", "password": "p" * 4097}, "password"),
        ("/v1/users", {"name": "u", "owner_project_id": "o" * 65}, "owner_project_id"),
        ("/v1/projects", {"name": "p", "domain_id": "d" * 65}, "domain_id"),
    ]
    for path, payload, field in cases:
        body = assert_problem(api.call("POST", path, admin_token, payload), 422, "invalid_request")
        assert field in body["errors"]["json"], (path, body)
    huge_password = password_auth("admin", "p" * 100_000)
    assert_problem(api.call("POST", "/v1/auth/tokens", json=huge_password), 422)
    assert snapshot(api, admin_token) == before
    # Ids far longer than any id are simply not found.
    assert_problem(api.call("GET", "/v1/users/" + "u" * 5000, admin_token), 404, "user_not_found")
    assert_problem(
        api.call("GET", "/v1/domains/" + "d" * 5000, admin_token), 404, "domain_not_found"
    )


def test_non_json_content_types(api: Api, admin_token: str) -> None:
    before = snapshot(api, admin_token)
    for content_type in ["text/plain", "application/x-www-form-urlencoded", "application/xml"]:
        response = api.call(
            "POST", "/v1/domains", admin_token, data='{"name": "x"}', content_type=content_type
        )
        body = assert_problem(response, 422, "invalid_request")
        assert "name" in body["errors"]["json"]
    assert snapshot(api, admin_token) == before
