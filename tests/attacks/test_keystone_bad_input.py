"""Hostile input on every /v3 route never yields a 5xx (issue 14).

Every route of the Keystone door, every method, with malformed bodies (not JSON,
not objects, wrong types in every field the door reads, oversize names) and
hostile query strings, as a system admin (the caller who gets furthest): once
on placeholder ids, once on ids of objects that exist. The answers must be 4xx
in Keystone's shape; which 4xx is the parts' own tests' business.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from tests.conftest import ADMIN_PASSWORD

BODIES: list[Any] = [
    "not json",
    [],
    1,
    {},
    {"project": [], "user": "x", "domain": {"name": 5}, "role": {"name": ["x"]}},
    {"group": {"name": {"a": 1}}, "region": {"id": 1}, "service": {"type": []}},
    {"endpoint": {"url": 3, "interface": None, "region_id": {}}},
    {"trust": {"trustee_user_id": 1, "project_id": {}, "roles": "x", "expires_at": "nope"}},
    {"credential": {"blob": 5, "type": [], "user_id": None}, "tags": "x"},
    {"tags": [1, {}], "consumer": {"description": 7}, "config": {"ldap": "x"}},
    {"credentials": {"access": 1, "signature": []}, "policy": {"blob": None}},
    {"auth": {"identity": {"methods": ["token"], "token": {"id": 5}}}},
    {"auth": {"identity": {"methods": ["password", "token"]}, "scope": {"system": "x"}}},
    {"user": {"original_password": 1, "password": None}},
    {"application_credential": {"name": "x", "expires_at": 5, "roles": [1], "access_rules": "x"}},
    {"endpoint_group": {"filters": "x"}},
    {"project": {"name": "x" * 300, "parent_id": 5, "tags": ["a" * 300], "enabled": "yes"}},
    {"user": {"name": "u", "default_project_id": ["x"], "enabled": "yes", "options": {"x": 1}}},
]
QUERY = "?name=%00&enabled=maybe&tags=,&parent_id=&effective=x&include_names=2&scope.system=x"


def _system_admin(client: FlaskClient) -> dict[str, str]:
    identity = {"user": {"name": "admin", "domain": {"id": "default"}, "password": ADMIN_PASSWORD}}
    response = client.post(
        "/v3/auth/tokens",
        json={
            "auth": {
                "identity": {"methods": ["password"], "password": identity},
                "scope": {"system": {"all": True}},
            }
        },
    )
    assert response.status_code == 201, response.get_json()
    return {"X-Auth-Token": response.headers["X-Subject-Token"]}


def _made(client: FlaskClient, headers: dict[str, str], path: str, key: str, body: Any) -> str:
    response = client.post(path, json={key: body}, headers=headers)
    assert response.status_code == 201, response.get_json()
    made: str = response.get_json()[key]["id"]
    return made


def _real_ids(client: FlaskClient, headers: dict[str, str]) -> dict[str, str]:
    ids = {"domain_id": "default"}
    ids["project_id"] = _made(client, headers, "/v3/projects", "project", {"name": "fz"})
    user = {"name": "fz", "password": "a-password-of-length"}
    ids["user_id"] = _made(client, headers, "/v3/users", "user", user)
    ids["group_id"] = _made(client, headers, "/v3/groups", "group", {"name": "fz"})
    ids["role_id"] = ids["prior_role_id"] = ids["implied_role_id"] = _made(
        client, headers, "/v3/roles", "role", {"name": "fz"}
    )
    ids["region_id"] = _made(client, headers, "/v3/regions", "region", {"description": "fz"})
    ids["service_id"] = _made(client, headers, "/v3/services", "service", {"type": "fz"})
    endpoint = {"service_id": ids["service_id"], "interface": "public", "url": "http://x/"}
    ids["endpoint_id"] = _made(client, headers, "/v3/endpoints", "endpoint", endpoint)
    return ids


def _fill(rule: str, ids: dict[str, str]) -> str:
    return re.sub(r"<(?:[^:>]+:)?([^>]+)>", lambda m: ids.get(m.group(1), "zzz"), rule)


def _send(client: FlaskClient, method: str, path: str, body: Any, headers: dict[str, str]) -> int:
    options: dict[str, Any] = {"headers": headers}
    if isinstance(body, str):
        options.update(data=body, content_type="application/json")
    elif body is not None:
        options["json"] = body
    return client.open(path, method=method, **options).status_code


def test_no_hostile_input_on_any_v3_route_is_a_server_error(sqlite_app: Flask) -> None:
    client = sqlite_app.test_client()
    headers = _system_admin(client)
    ids = _real_ids(client, headers)
    rules = [rule for rule in sqlite_app.url_map.iter_rules() if rule.rule.startswith("/v3")]
    assert len(rules) > 80  # every part of the door is registered
    errors = []
    for real in (False, True):
        for rule in rules:
            path = _fill(rule.rule, ids if real else {})
            # Deletes come last: they remove what the other requests use.
            methods = sorted((rule.methods or set()) - {"OPTIONS", "DELETE"})
            for method in methods:
                writes = method in ("POST", "PUT", "PATCH")
                for body in BODIES if writes else [None]:
                    for query in ("", QUERY):
                        status = _send(client, method, path + query, body, headers)
                        if status >= 500:
                            errors.append((method, rule.rule, query, body, status))
    for rule in rules:
        if "DELETE" in (rule.methods or set()):
            status = _send(client, "DELETE", _fill(rule.rule, ids), None, headers)
            if status >= 500:
                errors.append(("DELETE", rule.rule, "", None, status))
    assert errors == []
