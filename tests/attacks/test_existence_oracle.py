"""No existence oracle (issue 13, class 9): every endpoint checks the caller before
it looks anything up.

The test walks the application's URL map (``app.url_map``): every route, every
method, its path parameters filled with ids of objects that exist (in a domain
and project the caller has nothing to do with), with random ids, and with each
parameter in turn replaced by a random one. Then:

* without a token every non-public endpoint answers 401 ``token_missing`` (the
  Keystone door: its 401), whatever the ids; the public ones are listed here
  (``PUBLIC``) and must match ``latchkey.frontdoors.http.requests.PUBLIC_ENDPOINTS``;
* a member of another project (``outsider``) gets the same status and code for
  the existing-but-foreign object as for one that does not exist, and never a
  success: the answer says nothing about what exists. The only exceptions are
  the objects every reader may see (``READABLE_BY_EVERY_READER``: roles and the
  service catalog), where 200/404 is the honest answer.

A body that passes each endpoint's schema is sent (``BODIES``), so the request
reaches the service rather than stopping at validation; a new mutating
endpoint without one fails ``test_every_mutating_endpoint_has_a_body``.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from flask import Flask
from werkzeug.routing import Rule
from werkzeug.test import TestResponse

from latchkey.frontdoors.http.requests import PUBLIC_ENDPOINTS
from tests.conftest import ADMIN_PASSWORD, Api

PASSWORD = "oracle-password-1234"

# Answer without a token by design: logging in, discovery, OAuth client
# authentication, health and metrics, the OpenAPI document.
PUBLIC = {
    ("tokens.TokensView", "POST"),
    ("tokens.jwks", "GET"),
    ("keystone.issue_token", "POST"),
    ("keystone.versions", "GET"),
    ("keystone.version", "GET"),
    ("keystone.ec2_tokens", "POST"),  # a signed request is its own authentication
    ("keystone.s3_tokens", "POST"),
    ("oauth2.token", "POST"),
    ("oauth2.introspect", "POST"),
    ("oauth2.revoke", "POST"),
    ("oauth2.authorization_server_metadata", "GET"),
    ("operations.healthz", "GET"),
    ("operations.readyz", "GET"),
    ("operations.metrics", "GET"),
    ("api-docs.openapi_json", "GET"),
    ("static", "GET"),
}
# Objects any holder of `reader` may read (rules `identity:role:get`,
# `identity:service:get` at scope "any"): 200 for one that exists, 404 otherwise.
READABLE_BY_EVERY_READER = {("identity.RoleView", "GET"), ("policy.ServiceView", "GET")}
READABLE_BY_EVERY_READER |= {  # Keystone's roles (issue 14)
    ("keystone.get_role", "GET"),
    ("keystone.list_implied_roles", "GET"),
    ("identity.RoleView", "GET"),
    ("policy.ServiceView", "GET"),
    # The Keystone door's catalog (issue 14): regions, services, endpoints.
    ("keystone.get_region", "GET"),
    ("keystone.get_service", "GET"),
    ("keystone.get_endpoint", "GET"),
}

SERVICE = {
    "type": "oracle",
    "name": "Oracle test service",
    "actions": ["oracle:thing:read"],
    "resource_types": {"oracle:thing": {"attributes": {"env": "string"}}},
}
# A body each mutating endpoint's schema accepts: the request reaches the service.
BODIES: dict[tuple[str, str], Any] = {
    ("identity.DomainView", "PATCH"): {"description": "x"},
    ("identity.ProjectView", "PATCH"): {"description": "x"},
    ("identity.UserView", "PATCH"): {"description": "x"},
    ("identity.GroupView", "PATCH"): {"description": "x"},
    ("identity.change_password", "POST"): {
        "original_password": PASSWORD,
        "password": PASSWORD + "-new",
    },
    ("policy.ServiceView", "PUT"): SERVICE,
    ("policy.PolicyView", "PUT"): {"rules": []},
    ("policy.validate_policy", "POST"): {"rules": []},
    ("policy.simulate_policy", "POST"): {"rules": []},
    ("policy.DomainPolicyView", "PUT"): {"rules": []},
    ("policy.validate_domain_policy", "POST"): {"rules": []},
    ("secrets.SecretsView", "POST"): {"name": "oracle", "payload": "p"},
    ("secrets.PayloadView", "PUT"): {"payload": "p"},
    ("application_credentials.CredentialsView", "POST"): {
        "name": "oracle",
        "project_id": "{project_id}",
    },
    ("application_credentials.add_secret", "POST"): {},
    ("keystone.create_credential", "POST"): {"application_credential": {"name": "oracle"}},
    # Keystone domains, projects, users and groups (issue 14).
    ("keystone.update_domain", "PATCH"): {"domain": {"description": "x"}},
    ("keystone.update_project", "PATCH"): {"project": {"description": "x"}},
    ("keystone.replace_project_tags", "PUT"): {"tags": ["x"]},
    ("keystone.update_user", "PATCH"): {"user": {"description": "x"}},
    ("keystone.update_group", "PATCH"): {"group": {"description": "x"}},
    ("keystone.change_password", "POST"): {
        "user": {"original_password": PASSWORD, "password": PASSWORD + "-new"}
    },
    ("keystone.update_role", "PATCH"): {"role": {"description": "x"}},
    # The Keystone door's catalog (issue 14).
    ("keystone.put_region", "PUT"): {"region": {"description": "x"}},
    ("keystone.update_region", "PATCH"): {"region": {"description": "x"}},
    ("keystone.update_service", "PATCH"): {"service": {"description": "x"}},
    ("keystone.update_endpoint", "PATCH"): {"endpoint": {"url": "http://x/"}},
    ("keystone.update_endpoint_group", "PATCH"): {"endpoint_group": {"name": "x"}},
    ("keystone.update_policy", "PATCH"): {"policy": {"type": "x"}},
    ("keystone.update_credential_v3", "PATCH"): {"credential": {"blob": "x"}},
    ("keystone.create_ec2_credential", "POST"): {"tenant_id": "{project_id}"},
    ("keystone.update_consumer", "PATCH"): {"consumer": {"description": "x"}},
    ("keystone.create_domain_config", "PUT"): {"config": {"identity": {"driver": "x"}}},
    ("keystone.update_domain_config", "PATCH"): {"config": {"identity": {"driver": "x"}}},
}
NO_BODY = {"GET", "DELETE", "HEAD"}
# PUT endpoints whose every input is in the path.
PATH_ONLY = {
    "identity.GroupMemberView",
    "identity.RoleImplicationView",
    "identity.project_user_role",
    "identity.project_group_role",
    "identity.domain_user_role",
    "identity.domain_group_role",
    "policy.activate_policy",
    "policy.activate_domain_policy",
    "keystone.add_group_user",
    "keystone.add_project_tag",
}
PATH_ONLY |= {  # Keystone's grants and implied roles (issue 14)
    "keystone.create_implied_role",
    *(
        f"keystone.grant_{inherited}{scope}_{actor}"
        for inherited in ("", "inherited_")
        for scope in ("project", "domain", "system")
        for actor in ("user", "group")
    ),
}


@dataclass
class World:
    api: Api
    admin: str
    outsider: str  # member of p1 (domain `default`), token scoped to p1
    existing: dict[str, dict[str, str]]  # owner kind -> parameter -> an id that exists


def _ok(api: Api, method: str, path: str, token: str, body: Any = None) -> Any:
    return api.ok(method, path, token, body)


@pytest.fixture
def world(app: Flask, api: Api, admin_token: str) -> World:
    admin = admin_token
    other = _ok(api, "POST", "/v1/domains", admin, {"name": "other"})["id"]
    p1 = _ok(api, "POST", "/v1/projects", admin, {"name": "p1"})["id"]
    o1 = _ok(api, "POST", "/v1/projects", admin, {"name": "o1", "domain_id": other})["id"]
    group = _ok(api, "POST", "/v1/groups", admin, {"name": "staff", "domain_id": other})["id"]
    body = {"name": "stranger", "password": PASSWORD, "domain_id": other}
    stranger = _ok(api, "POST", "/v1/users", admin, body)["id"]
    _ok(api, "PUT", f"/v1/projects/{o1}/users/{stranger}/roles/admin", admin)
    stranger_token = api.login(
        "stranger", PASSWORD, project="o1", user_domain=other, project_domain=other
    )
    outsider = _ok(api, "POST", "/v1/users", admin, {"name": "outsider", "password": PASSWORD})
    _ok(api, "PUT", f"/v1/projects/{p1}/users/{outsider['id']}/roles/member", admin)
    outsider_token = api.login("outsider", PASSWORD, project="p1")
    robot = {"name": "robot", "kind": "application", "owner_project_id": o1, "domain_id": other}
    robot_id = _ok(api, "POST", "/v1/users", admin, robot)["id"]
    _ok(api, "PUT", f"/v1/projects/{o1}/users/{robot_id}/roles/member", admin)
    rule = {"service": "oracle", "method": "GET", "path": "/things"}
    credentials = {}
    for owner, token in ((stranger, stranger_token), (robot_id, admin)):
        created = _ok(
            api,
            "POST",
            f"/v1/users/{owner}/application-credentials",
            token,
            {"name": "ci", "project_id": o1, "access_rules": [rule]},
        )
        credentials[owner] = created
    ec2 = {  # Keystone's EC2 keys (their own path parameter, `access`)
        owner: _ok(api, "POST", f"/v3/users/{owner}/credentials/OS-EC2", admin, {"tenant_id": o1})
        for owner in (stranger, robot_id)
    }
    consumer = _ok(api, "POST", "/v3/OS-OAUTH1/consumers", admin, {"consumer": {}})["consumer"]
    config = {"config": {"identity": {"driver": "ldap"}}}
    api.ok("PUT", f"/v3/domains/{other}/config", admin, config, 201)
    (rule_id,) = [
        r["id"]
        for r in api.ok("GET", f"/v3/users/{stranger}/access_rules", stranger_token)["access_rules"]
    ]
    service = _ok(api, "POST", "/v1/services", admin, SERVICE)["id"]
    keystone = {
        "X-Auth-Token": api.client.post(
            "/v3/auth/tokens",
            json={
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
            },
        ).headers["X-Subject-Token"]
    }
    endpoint = {"service_id": service, "interface": "public", "url": "http://o/", "region": "r"}
    endpoint_id = api.client.post(
        "/v3/endpoints", json={"endpoint": endpoint}, headers=keystone
    ).get_json()["endpoint"]["id"]
    group_body = {"name": "g", "filters": {"service_id": service}}
    endpoint_group_id = api.client.post(
        "/v3/OS-EP-FILTER/endpoint_groups", json={"endpoint_group": group_body}, headers=keystone
    ).get_json()["endpoint_group"]["id"]
    blob_id = api.client.post(
        "/v3/policies", json={"policy": {"blob": "{}", "type": "t"}}, headers=keystone
    ).get_json()["policy"]["id"]
    _ok(api, "POST", "/v1/roles", admin, {"name": "custom"})
    secret = _ok(
        api, "POST", f"/v1/projects/{o1}/secrets", stranger_token, {"name": "db", "payload": "x"}
    )["id"]
    api.ok("PUT", f"/v1/projects/{o1}/policy", admin, {"rules": []}, 200)
    api.ok("PUT", f"/v1/domains/{other}/policy", admin, {"rules": []}, 200)
    trust_body = {  # OS-TRUST (issue 14): the stranger's trust, to the robot
        "trustor_user_id": stranger,
        "trustee_user_id": robot_id,
        "project_id": o1,
        "roles": [{"name": "admin"}],
        "impersonation": False,
    }
    trust = _ok(api, "POST", "/v3/OS-TRUST/trusts", stranger_token, {"trust": trust_body})
    common = {
        "trust_id": trust["trust"]["id"],
        "role_id": trust["trust"]["roles"][0]["id"],
        "domain_id": other,
        "project_id": o1,
        "group_id": group,
        "role": "custom",
        "prior": "custom",
        "implied": "reader",
        "service_id": service,
        "version": "1",
        "rule_id": rule_id,
        "tenant_secret_id": secret,
        "tag": "oracle-tag",
        "region_id": "r",
        "endpoint_id": endpoint_id,
        "endpoint_group_id": endpoint_group_id,
        "blob_id": blob_id,
        "consumer_id": consumer["id"],
        "group": "identity",
        "option": "driver",
    }
    existing = {
        kind: {
            **common,
            "user_id": owner,
            "credential_id": credentials[owner]["id"],
            "credential_secret_id": credentials[owner]["secret_id"],
            "access": ec2[owner]["credential"]["access"],
        }
        for kind, owner in (("human", stranger), ("application", robot_id))
    }
    return World(api, admin, outsider_token, existing)


def routes(app: Flask) -> Iterator[tuple[Rule, str]]:
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: (r.rule, r.endpoint)):
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            yield rule, method


def _param(rule: Rule, name: str) -> str:
    """The kind of object a path parameter names, where the name alone is ambiguous."""
    if name == "scope_id":
        return "domain_id" if rule.rule.startswith("/v1/domains/") else "project_id"
    if name == "group_id" and "/OS-EP-FILTER/" in rule.rule:
        return "endpoint_group_id"
    if name == "actor_id":
        return "group_id" if "/groups/" in rule.rule else "user_id"
    if name == "secret_id":
        return (
            "credential_secret_id"
            if "application-credentials" in rule.rule
            else ("tenant_secret_id")
        )
    return name


def variants(rule: Rule, existing: dict[str, str]) -> dict[str, dict[str, str]]:
    """Label -> path values: all existing, all random, and each one random in turn."""
    names = sorted(rule.arguments)
    real = {name: existing[_param(rule, name)] for name in names}
    fake = {name: _random(rule, name) for name in names}
    found = {"existing": real, "missing": fake}
    if len(names) > 1:
        for name in names:
            found[f"missing-{name}"] = {**real, name: fake[name]}
    return found


def _random(rule: Rule, name: str) -> str:
    if name == "version":
        return "98765"
    return "x" + secrets.token_hex(8)


def _path(rule: Rule, values: dict[str, str]) -> str:
    path = rule.rule
    for name, value in values.items():
        path = path.replace(f"<int:{name}>", value).replace(f"<{name}>", value)
    return path


def _body(endpoint: str, method: str, values: dict[str, str], existing: dict[str, str]) -> Any:
    body = BODIES.get((endpoint, method))
    if body is None:
        return None
    filled = {**existing, **values}

    def fill(node: Any) -> Any:
        if isinstance(node, str):
            return node.format_map(filled)
        if isinstance(node, dict):
            return {k: fill(v) for k, v in node.items()}
        return node

    return fill(body)


def answer(response: TestResponse) -> tuple[int, str]:
    """(status, stable code): problem+json's ``code``, or a Keystone error's title."""
    body = response.get_json(silent=True) or {}
    if isinstance(body.get("error"), dict):
        return response.status_code, str(body["error"].get("title"))
    return response.status_code, str(body.get("code") or body.get("error") or "")


def test_public_endpoints_are_the_listed_ones() -> None:
    assert set(PUBLIC_ENDPOINTS) == PUBLIC


def test_every_mutating_endpoint_has_a_body(app: Flask) -> None:
    missing = [
        (rule.endpoint, method)
        for rule, method in routes(app)
        if method not in NO_BODY
        and rule.arguments
        and (rule.endpoint, method) not in BODIES
        and rule.endpoint not in PATH_ONLY
    ]
    assert not missing, f"add a body to BODIES (or the endpoint to PATH_ONLY): {missing}"


def test_anonymous_callers_get_401_whatever_the_ids(
    app: Flask, world: World, subtests: pytest.Subtests
) -> None:
    for rule, method in routes(app):
        if (rule.endpoint, "GET" if method == "HEAD" else method) in PUBLIC:
            continue
        for label, values in variants(rule, world.existing["human"]).items():
            with subtests.test(msg=f"{method} {rule.rule} {label}"):
                body = _body(rule.endpoint, method, values, world.existing["human"])
                response = world.api.call(method, _path(rule, values), None, body)
                status, code = answer(response)
                assert status == 401, (method, rule.rule, label, response.get_json())
                if not rule.rule.startswith("/v3"):
                    assert code == "token_missing", (method, rule.rule, label, code)


def test_anonymous_callers_get_401_before_their_body_is_read(world: World) -> None:
    """Not even a schema error: the caller is checked first."""
    response = world.api.call("POST", "/v1/projects", None, {"unknown": ["x" * 10]})
    assert answer(response) == (401, "token_missing")
    response = world.api.call("PUT", f"/v1/projects/{world.existing['human']['project_id']}/policy")
    assert answer(response) == (401, "token_missing")


@pytest.mark.parametrize("owner", ["human", "application"])
def test_another_projects_member_cannot_tell_foreign_from_missing(
    app: Flask, world: World, owner: str, subtests: pytest.Subtests
) -> None:
    existing = world.existing[owner]
    for rule, method in routes(app):
        if not rule.arguments or (rule.endpoint, method) in PUBLIC:
            continue
        if (rule.endpoint, method) in READABLE_BY_EVERY_READER:
            continue
        if owner == "application" and "user_id" not in rule.arguments:
            continue  # the same requests as for the human owner
        seen: dict[str, tuple[int, str]] = {}
        for label, values in variants(rule, existing).items():
            body = _body(rule.endpoint, method, values, existing)
            response = world.api.call(method, _path(rule, values), world.outsider, body)
            seen[label] = answer(response)
        with subtests.test(msg=f"{method} {rule.rule}"):
            assert len(set(seen.values())) == 1, (method, rule.rule, seen)
            status = seen["existing"][0]
            assert status in (403, 404), (method, rule.rule, seen)


def test_granting_an_unknown_role_looks_like_granting_a_known_one(world: World) -> None:
    """The issue's example: 404 for an unknown role, 401/403 for a known one."""
    ids = world.existing["human"]
    base = f"/v1/projects/{ids['project_id']}/users/{ids['user_id']}/roles"
    for token, expected in ((None, (401, "token_missing")), (world.outsider, None)):
        known = answer(world.api.call("PUT", f"{base}/admin", token))
        unknown = answer(world.api.call("PUT", f"{base}/no-such-role", token))
        assert known == unknown
        if expected:
            assert known == expected
        else:
            assert known == (403, "action_forbidden")
    # Those allowed to act on the project still learn that the role is unknown.
    response = world.api.call("PUT", f"{base}/no-such-role", world.admin)
    assert answer(response) == (404, "role_not_found")


def test_managers_cannot_tell_a_foreign_user_from_a_missing_one(world: World) -> None:
    """A project or domain admin reaching for a user or group of another domain gets
    the same refusal whether it exists or not (a missing one lies in no domain of
    theirs); the cloud admin, who may reach everywhere, learns that it is missing."""
    api, ids = world.api, world.existing["human"]
    p1 = api.ok("GET", "/v1/projects?name=p1", world.admin)["projects"][0]["id"]
    group = api.ok("POST", "/v1/groups", world.admin, {"name": "own"})["id"]
    tokens = {}
    for name, scope, login in (
        ("padmin", f"/v1/projects/{p1}", {"project": "p1"}),
        ("dadmin", "/v1/domains/default", {"domain_scope": "default"}),
    ):
        user = api.ok("POST", "/v1/users", world.admin, {"name": name, "password": PASSWORD})
        api.ok("PUT", f"{scope}/users/{user['id']}/roles/admin", world.admin)
        tokens[name] = api.login(name, PASSWORD, **login)
    missing = "x" + secrets.token_hex(8)
    cases = [
        ("padmin", f"/v1/projects/{p1}/users/{{}}/roles/member", ids["user_id"]),
        ("padmin", f"/v1/projects/{p1}/groups/{{}}/roles/member", ids["group_id"]),
        ("dadmin", f"/v1/projects/{p1}/users/{{}}/roles/member", ids["user_id"]),
        ("dadmin", "/v1/domains/default/users/{}/roles/reader", ids["user_id"]),
        ("dadmin", "/v1/domains/default/groups/{}/roles/reader", ids["group_id"]),
        ("dadmin", f"/v1/groups/{group}/users/{{}}", ids["user_id"]),
    ]
    for persona, template, foreign in cases:
        for method in ("PUT", "DELETE"):
            if method == "DELETE" and "/groups/" in template and "/roles/" not in template:
                continue  # removing a non-member: the group is theirs, 404 says nothing
            token = tokens[persona]
            seen = answer(api.call(method, template.format(foreign), token))
            unseen = answer(api.call(method, template.format(missing), token))
            assert seen == unseen == (403, "action_forbidden"), (persona, method, template)
    refused = answer(api.call("PUT", f"/v1/groups/{group}/users/{missing}", world.admin))
    assert refused == (404, "user_not_found")

    # Ids in a body: a project for one's own credential, an application account's owner
    # project, a user to simulate a draft for.
    padmin = api.ok("GET", "/v1/users?name=padmin", world.admin)["users"][0]["id"]
    for project, token, expected in (
        ("project_id", tokens["padmin"], (403, "no_roles_on_project")),
        ("owner_project_id", tokens["dadmin"], (403, "action_forbidden")),
    ):
        seen_unseen = []
        for value in (ids["project_id"], missing):
            if project == "project_id":
                path, body = f"/v1/users/{padmin}/application-credentials", {"name": "c"}
            else:
                path, body = "/v1/users", {"name": "app", "kind": "application"}
            body[project] = value
            seen_unseen.append(answer(api.call("POST", path, token, body)))
        assert seen_unseen == [expected, expected], project
    simulate = f"/v1/projects/{p1}/policy/simulate"
    for user in (ids["user_id"], missing):
        case = {
            "action": "oracle:thing:read",
            "resource": {"type": "oracle:thing", "project_id": p1},
            "principal": {"user_id": user},
        }
        body = {"rules": [], "cases": [case]}
        response = api.call("POST", simulate, tokens["padmin"], body)
        assert answer(response) == (422, "user_not_found"), user
    # The cloud admin still learns that an owner project is missing.
    body = {"name": "app", "kind": "application", "owner_project_id": missing}
    assert answer(api.call("POST", "/v1/users", world.admin, body)) == (404, "project_not_found")
