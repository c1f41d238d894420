"""Issue 13, class 5: no input yields a 500.

Numbers no column can hold, empty ids and references, and the logs of an
unexpected database error (no SQL parameters: no password hash in a log).
Every refusal is a 4xx problem document (the test client fails on any 5xx).
"""

from __future__ import annotations

import copy as copy_module
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import event

from tests.conftest import ADMIN_PASSWORD, Api, database_of
from tests.integration.test_bad_input import assert_problem

PASSWORD = "a-long-enough-password"
HUGE = "9" * 5000  # beyond Python's 4300-digit int() limit
INT64_OVER = str(2**63)
INT32_OVER = str(2**31)


def _put(template: str, value: object) -> str:
    """The template with ``$`` replaced by the value (JSON braces stay as written)."""
    return template.replace("$", str(value))


def _raw(api: Api, method: str, path: str, body: str, token: str | None = None) -> Any:
    return api.call(method, path, token, data=body, content_type="application/json")


# -- numbers ------------------------------------------------------------------------


def test_huge_json_integers_are_400_anywhere_in_any_body(api: Api, admin_token: str) -> None:
    login = '{"auth": {"password": {"user": {"name": "admin", "domain": {"id": "default"}},'
    bodies = [
        ("POST", "/v1/auth/tokens", None, HUGE),  # anonymous, the body a bare number
        ("POST", "/v1/auth/tokens", None, _put('{"auth": $}', HUGE)),
        ("POST", "/v1/auth/tokens", None, login + _put(' "password": $}}}', HUGE)),
        ("POST", "/v1/auth/tokens", None, login + _put(' "password": "x"}}, "x": [-$]}', HUGE)),
        ("POST", "/v1/domains", admin_token, _put('{"name": "d", "enabled": $}', INT64_OVER)),
        ("POST", "/v1/users", admin_token, _put('{"name": "u", "attributes": {"n": $}}', HUGE)),
        ("PUT", "/v1/projects/admin/policy", admin_token, _put('{"rules": [$]}', INT64_OVER)),
        ("POST", "/v1/authorize", admin_token, _put('{"action": $}', HUGE)),
    ]
    for method, path, token, body in bodies:
        problem = assert_problem(_raw(api, method, path, body, token), 400, "malformed_request")
        assert "Traceback" not in problem["detail"]
    # The Keystone subset answers in Keystone's own error format, a 400 all the same.
    response = _raw(api, "POST", "/v3/auth/tokens", _put('{"auth": {"identity": $}}', HUGE))
    assert response.status_code == 400, response.get_data(as_text=True)
    # The edges of 64 bits are numbers like any other: judged by the field.
    body = _put('{"name": "d", "enabled": $}', (2**63 - 1))
    assert_problem(_raw(api, "POST", "/v1/domains", body, admin_token), 422, "invalid_request")
    body = _put('{"name": "d", "enabled": $}', -(2**63))
    assert_problem(_raw(api, "POST", "/v1/domains", body, admin_token), 422, "invalid_request")


def test_nan_infinity_and_overflowing_floats_are_400(api: Api, admin_token: str) -> None:
    for value in ["NaN", "Infinity", "-Infinity", "1e400", "-1e400"]:
        for method, path, body in [
            ("POST", "/v1/users", _put('{"name": "u", "attributes": {"n": $}}', value)),
            ("POST", "/v1/domains", _put('{"name": "d", "enabled": $}', value)),
            ("PUT", "/v1/projects/admin/policy", _put('{"rules": [{"effect": $}]}', value)),
        ]:
            assert_problem(_raw(api, method, path, body, admin_token), 400, "malformed_request")
    # Ordinary floats are read as before.
    body = _put('{"name": "u", "password": "$", "attributes": {"n": 1.5e300}}', PASSWORD)
    response = _raw(api, "POST", "/v1/users", body, admin_token)
    assert response.status_code == 201, response.get_json()


def test_path_integers_beyond_the_column_are_404(api: Api, admin_token: str) -> None:
    project = api.ok("POST", "/v1/projects", admin_token, {"name": "p"})
    for scope in [f"projects/{project['id']}", "domains/default"]:
        for version in [INT32_OVER, INT64_OVER, "99999999999", HUGE]:
            path = f"/v1/{scope}/policy/versions/{version}/activate"
            assert_problem(api.call("POST", path, admin_token), 404)
        # The largest number the column holds is looked up (and is not there).
        path = f"/v1/{scope}/policy/versions/{2**31 - 1}/activate"
        assert_problem(api.call("POST", path, admin_token), 404, "policy_version_not_found")
    # The document says so.
    spec = api.ok("GET", "/v1/openapi.json")
    activate = spec["paths"]["/v1/projects/{project_id}/policy/versions/{version}/activate"]
    (param,) = [p for p in activate["parameters"] if p["name"] == "version"]
    assert param["schema"] == {"type": "integer", "minimum": 0, "maximum": 2**31 - 1}


def test_query_integers_beyond_the_column_are_422(api: Api, admin_token: str) -> None:
    for path in [
        f"/v1/revocations?since={INT64_OVER}",
        f"/v1/revocations?since={HUGE}",
        f"/v1/revocations?limit={HUGE}",
        f"/v1/audit/events?since={HUGE}",
        f"/v1/domains?limit={HUGE}",
    ]:
        assert_problem(api.call("GET", path, admin_token), 422, "invalid_request")


# -- empty strings ------------------------------------------------------------------


def test_empty_ids_and_references_are_422_naming_the_field(api: Api, admin_token: str) -> None:
    project = api.ok("POST", "/v1/projects", admin_token, {"name": "p"})
    user = api.ok("POST", "/v1/users", admin_token, {"name": "u", "password": PASSWORD})
    before = api.ok("GET", "/v1/users", admin_token)["users"]
    bodies: list[tuple[str, dict[str, Any], str]] = [
        (
            "/v1/users",
            {"name": "h", "password": PASSWORD, "owner_project_id": ""},
            "owner_project_id",
        ),
        (
            "/v1/users",
            {"name": "a", "kind": "application", "owner_project_id": ""},
            "owner_project_id",
        ),
        ("/v1/users", {"name": "d", "domain_id": ""}, "domain_id"),
        ("/v1/projects", {"name": "q", "domain_id": ""}, "domain_id"),
        ("/v1/groups", {"name": "g", "domain_id": ""}, "domain_id"),
        (
            f"/v1/users/{user['id']}/application-credentials",
            {"name": "c", "project_id": ""},
            "project_id",
        ),
        (
            f"/v1/users/{user['id']}/application-credentials",
            {"name": "c", "project_id": project["id"], "roles": [""]},
            "roles",
        ),
        (
            f"/v1/users/{user['id']}/application-credentials",
            {"name": "c", "project_id": project["id"], "allowed_cidrs": [""]},
            "allowed_cidrs",
        ),
        ("/v1/authorize", _check(subject_token=""), "subject_token"),
        ("/v1/authorize/batch", {"checks": [_check()], "subject_token": ""}, "subject_token"),
        (
            "/v1/authorize/actions",
            {"resource": _check()["resource"], "subject_token": ""},
            "subject_token",
        ),
        (
            "/v1/authorize/plan",
            {"action": "a", "resource_type": "t", "project_id": "p", "subject_token": ""},
            "subject_token",
        ),
    ]
    for path, payload, field in bodies:
        body = assert_problem(api.call("POST", path, admin_token, payload), 422, "invalid_request")
        assert field in body["errors"]["json"], (path, body)
    for query in [
        "/v1/users?owner_project_id=",
        "/v1/users?domain_id=",
        "/v1/projects?domain_id=",
        "/v1/groups?domain_id=",
        "/v1/domains?marker=",
        "/v1/role-assignments?user_id=",
        "/v1/role-assignments?project_id=",
        "/v1/audit/events?project_id=",
    ]:
        body = assert_problem(api.call("GET", query, admin_token), 422, "invalid_request")
        assert body["errors"]["query"], (query, body)
    # Nothing was written: no user with an empty owner project.
    assert api.ok("GET", "/v1/users", admin_token)["users"] == before


def _check(**extra: Any) -> dict[str, Any]:
    return {
        "action": "identity:project:get",
        "resource": {"type": "project", "project_id": "x"},
        **extra,
    }


# -- logs ---------------------------------------------------------------------------


@pytest.fixture
def broken_user_insert(app: Flask) -> Iterator[None]:
    """A fault: the INSERT of a user account fails in the database (a table gone)."""

    def break_it(
        conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: Any
    ) -> Any:
        if statement.startswith("INSERT INTO user_account"):
            statement = statement.replace("INSERT INTO user_account", "INSERT INTO gone_table", 1)
        return statement, params

    with app.app_context():
        engine = database_of(app).engine
    event.listen(engine, "before_cursor_execute", break_it, retval=True)
    yield
    event.remove(engine, "before_cursor_execute", break_it)


def test_a_database_error_is_logged_without_its_parameters(
    app: Flask,
    api: Api,
    admin_token: str,
    broken_user_insert: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    api.client.allow_5xx = True  # type: ignore[attr-defined]
    caplog.set_level(logging.ERROR, logger="latchkey")
    payload = {
        "name": "victim-name-7f3a",
        "password": "victim-password-9c2e",
        "email": "v@example.com",
    }
    response = api.call("POST", "/v1/users", admin_token, payload)
    assert response.status_code == 500
    body = response.get_json()
    assert body["code"] == "internal_error" and "gone_table" not in str(body)
    # The operator sees the failure and the statement, never the values.
    logged = caplog.text
    assert "unexpected error" in logged and "gone_table" in logged
    assert "SQL parameters hidden" in logged
    for secret in ["$argon2", "victim-name-7f3a", "v@example.com", "victim-password-9c2e"]:
        assert secret not in logged, secret
    api.client.allow_5xx = False  # type: ignore[attr-defined]
    # Login works again (and the admin's hash never showed either).
    assert api.login("admin", ADMIN_PASSWORD)


# -- the Keystone subset (outside the OpenAPI document, so outside schemathesis) -----

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found.extend(_paths(value, (*prefix, key)))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found.extend(_paths(value, (*prefix, i)))
    return found


def _replace(node: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    copy = copy_module.deepcopy(node)
    target = copy
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return copy


def test_keystone_bodies_with_any_value_anywhere_are_never_a_5xx(sqlite_app: Flask) -> None:
    client = sqlite_app.test_client()  # fails on any 5xx
    login = {
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
    issued = client.post("/v3/auth/tokens", json=login)
    assert issued.status_code == 201, issued.get_json()
    token = issued.headers["X-Subject-Token"]
    user_id = issued.get_json()["token"]["user"]["id"]
    credential = {
        "application_credential": {
            "name": "c",
            "roles": [{"name": "admin"}],
            "access_rules": [{"service": "identity", "method": "GET", "path": "/v3/x"}],
            "expires_at": None,
        }
    }
    targets = [
        ("/v3/auth/tokens", login),
        (f"/v3/users/{user_id}/application_credentials", credential),
    ]

    @given(which=st.sampled_from(targets), data=st.data())
    @settings(max_examples=150, deadline=None, derandomize=True, database=None)
    def probe(which: tuple[str, dict[str, Any]], data: st.DataObject) -> None:
        path, template = which
        where = data.draw(st.sampled_from(_paths(template)))
        body = _replace(template, where, data.draw(JSON_VALUES))
        response = client.post(path, json=body, headers={"X-Auth-Token": token})
        assert response.status_code < 500

    probe()
