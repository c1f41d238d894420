"""LDAP identity domains against the real OpenLDAP of ``tests/ldap_server.py``.

On SQLite and PostgreSQL: configuration checked on save, login by binding as the
user, LDAP injection in user names, enabled state (mask, invert, default),
group-derived roles (groupOfNames and posixGroup), read-only refusals, listing and
paging (10,000 users), an Active-Directory-style domain, StartTLS/LDAPS/failover, the
directory changing behind Latchkey's back while an LDAP human's application
credential is in use, and slapd stopped and restarted mid-test.

Tests that need other settings (``ldap_recheck_seconds``, ``ldap_outage_grace_seconds``)
build a second app on the same database and instance folder as the backend's app
(``tuned``), so they run on both backends too. Tests that change the directory add
their own people (``newcomer``) and take them away afterwards; nothing reseeds.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from werkzeug.test import TestResponse

from latchkey.identity.backends.ldap.domains import public_id
from tests import ldap_server as seed
from tests.conftest import Api, build_app, database_of, make_settings
from tests.ldap_server import Slapd

# Names that would match somebody if placed in a filter unescaped.
INJECTIONS = [
    "*",
    ")(uid=*",
    "*)(|(uid=*",
    "al*",
    "*lice",
    "alice)(",
    "alice)(|(uid=*",
    "alice)(|(objectClass=*",
    "\\2a",
    "alice\\00",
    "\\00",
    "alice\\00)(uid=*",
    "(uid=alice)",
    "develop*",
    seed.ALICE.dn,
]
# With a real NUL: refused before anything else looks at them.
NUL_NAMES = ["alice\x00", "\x00", "alice\x00)(uid=*", "*\x00"]


# -- helpers ----------------------------------------------------------------------------


def example_options(slapd: Slapd, **overrides: Any) -> dict[str, Any]:
    """The example.org directory, OpenLDAP style: shadowFlag with mask 1."""
    options: dict[str, Any] = {
        "url": slapd.url,
        "user": seed.EXAMPLE_READER_DN,
        "password": seed.READER_PASSWORD,
        "suffix": seed.EXAMPLE_BASE,
        "user_tree_dn": seed.EXAMPLE_PEOPLE_DN,
        "group_tree_dn": seed.EXAMPLE_GROUPS_DN,
        "user_enabled_attribute": seed.ENABLED_ATTRIBUTE,
        "user_enabled_mask": seed.EXAMPLE_ENABLED_MASK,
        "connection_timeout": 2,
    }
    options.update(overrides)
    return options


def corp_options(slapd: Slapd, **overrides: Any) -> dict[str, Any]:
    """The corp.test directory, Active-Directory style: users named by cn, mask 2."""
    options: dict[str, Any] = {
        "url": slapd.url,
        "user": seed.CORP_READER_DN,
        "password": seed.READER_PASSWORD,
        "suffix": seed.CORP_BASE,
        "user_tree_dn": seed.CORP_USERS_DN,
        "group_tree_dn": seed.CORP_GROUPS_DN,
        "user_enabled_attribute": seed.ENABLED_ATTRIBUTE,
        "user_enabled_mask": seed.CORP_ENABLED_MASK,
        "connection_timeout": 2,
    }
    options.update(overrides)
    return options


def create_domain(api: Api, token: str, name: str, options: dict[str, Any]) -> dict[str, Any]:
    response = api.call(
        "POST", "/v1/domains", token, {"name": name, "identity_backend": "ldap", "ldap": options}
    )
    assert response.status_code == 201, response.get_json()
    body: dict[str, Any] = response.get_json()
    return body


def refused(response: TestResponse, status: int, code: str) -> dict[str, Any]:
    body: dict[str, Any] = response.get_json()
    assert response.status_code == status, body
    assert body["code"] == code, body
    assert response.headers["Content-Type"].startswith("application/problem+json")
    return body


def login(
    api: Api, name: str, password: str, domain_id: str, project_id: str | None = None
) -> TestResponse:
    body: dict[str, Any] = {
        "auth": {
            "password": {"user": {"name": name, "domain": {"id": domain_id}}, "password": password}
        }
    }
    if project_id:
        body["scope"] = {"project": {"id": project_id}}
    return api.call("POST", "/v1/auth/tokens", json=body)


def token_of(
    api: Api, name: str, password: str, domain_id: str, project_id: str | None = None
) -> dict[str, Any]:
    response = login(api, name, password, domain_id, project_id)
    assert response.status_code == 201, response.get_json()
    body: dict[str, Any] = response.get_json()
    return body


def login_fails(api: Api, name: str, password: str, domain_id: str) -> None:
    refused(login(api, name, password, domain_id), 401, "authentication_failed")


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return decoded


def validity(api: Api, admin: str, token: str) -> int:
    """200 while the token is good, 404 once invalid/expired/revoked."""
    return api.call("GET", "/v1/auth/tokens", admin, headers={"X-Subject-Token": token}).status_code


def ldap_user(api: Api, admin: str, domain_id: str, name: str) -> dict[str, Any]:
    users = api.ok("GET", f"/v1/users?domain_id={domain_id}&name={name}", admin)["users"]
    assert [u["name"] for u in users] == [name], users
    user: dict[str, Any] = users[0]
    return user


def ldap_group(api: Api, admin: str, domain_id: str, name: str) -> dict[str, Any]:
    groups = api.ok("GET", f"/v1/groups?domain_id={domain_id}&name={name}", admin)["groups"]
    assert [g["name"] for g in groups] == [name], groups
    group: dict[str, Any] = groups[0]
    return group


def grant_user(api: Api, admin: str, project_id: str, user_id: str, role: str = "member") -> None:
    api.ok("PUT", f"/v1/projects/{project_id}/users/{user_id}/roles/{role}", admin)


def grant_group(api: Api, admin: str, project_id: str, group_id: str, role: str = "member") -> None:
    api.ok("PUT", f"/v1/projects/{project_id}/groups/{group_id}/roles/{role}", admin)


def create_credential(api: Api, token: str, owner_id: str, project_id: str) -> dict[str, Any]:
    body: dict[str, Any] = api.ok(
        "POST",
        f"/v1/users/{owner_id}/application-credentials",
        token,
        {"name": "ci", "project_id": project_id},
    )
    return body


def credential_login(api: Api, credential: dict[str, Any]) -> TestResponse:
    return api.call(
        "POST",
        "/v1/auth/tokens",
        json={
            "auth": {
                "application_credential": {"id": credential["id"], "secret": credential["secret"]}
            }
        },
    )


def credential_token(api: Api, credential: dict[str, Any]) -> str:
    response = credential_login(api, credential)
    assert response.status_code == 201, response.get_json()
    return str(response.get_json()["token"])


def eventually(check: Callable[[], bool], seconds: float = 8.0) -> None:
    """Poll until ``check()`` holds: the pool skips a dead server for a few seconds."""
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "still failing after the directory came back"
        time.sleep(0.2)


class Newcomer:
    """A person added to example.org by the test (and removed afterwards)."""

    uid = "zoe"
    password = "zoe-ldap-pw"
    dn = f"uid=zoe,{seed.EXAMPLE_ENG_DN}"


# -- fixtures -----------------------------------------------------------------------------


@pytest.fixture
def example(api: Api, admin_token: str, slapd_up: Slapd) -> dict[str, Any]:
    return create_domain(api, admin_token, "example", example_options(slapd_up))


@pytest.fixture
def web(api: Api, admin_token: str) -> dict[str, Any]:
    body: dict[str, Any] = api.ok("POST", "/v1/projects", admin_token, {"name": "web"})
    return body


@pytest.fixture
def newcomer(slapd_up: Slapd) -> Iterator[Newcomer]:
    person = Newcomer()
    if slapd_up.exists(person.dn):
        slapd_up.delete(person.dn)
    slapd_up.add(
        person.dn,
        {
            "objectClass": ["inetOrgPerson", "shadowAccount"],
            "uid": person.uid,
            "cn": "Zoe Zed",
            "sn": "Zed",
            "mail": "zoe@example.org",
            "userPassword": person.password,
            "shadowFlag": "0",
        },
    )
    yield person
    slapd_up.start()
    if slapd_up.exists(person.dn):
        slapd_up.delete(person.dn)


@pytest.fixture
def tuned(app: Flask) -> Iterator[Callable[..., Api]]:
    """Another app on the backend's database and instance folder, with other settings."""
    built: list[Flask] = []
    base = app.extensions["latchkey"].settings

    def make(**overrides: Any) -> Api:
        other = build_app(make_settings(Path(base.home), base.database_url, **overrides))
        built.append(other)
        return Api(other.test_client())

    yield make
    for other in built:
        with other.app_context():
            database_of(other).session.remove()
            database_of(other).engine.dispose()


@pytest.fixture
def outage(api: Api) -> Iterator[None]:
    """The client accepts 5xx answers while the directory is deliberately down."""
    api.client.allow_5xx = True  # type: ignore[attr-defined]
    yield
    api.client.allow_5xx = False  # type: ignore[attr-defined]


# -- 1. configuration ---------------------------------------------------------------------


def test_configuration_is_checked_on_save(api: Api, admin_token: str, slapd_up: Slapd) -> None:
    def create(options: dict[str, Any], name: str = "bad") -> TestResponse:
        return api.call(
            "POST",
            "/v1/domains",
            admin_token,
            {"name": name, "identity_backend": "ldap", "ldap": options},
        )

    refused(
        create(example_options(slapd_up, url="http://127.0.0.1:389")), 422, "ldap_invalid_config"
    )
    refused(create(example_options(slapd_up, url="")), 422, "ldap_invalid_config")
    body = refused(
        create(example_options(slapd_up, user_colour="blue")), 422, "ldap_invalid_config"
    )
    assert "user_colour" in body["detail"]
    refused(create(example_options(slapd_up, query_scope="everything")), 422, "ldap_invalid_config")
    refused(create(example_options(slapd_up, page_size=0)), 422, "ldap_invalid_config")
    refused(create(example_options(slapd_up, user_tree_dn="not a dn")), 422, "ldap_invalid_config")
    refused(create(example_options(slapd_up, url="ldap://127.0.0.1:1")), 422, "ldap_unreachable")
    body = refused(create(example_options(slapd_up, password="not-it")), 422, "ldap_bind_failed")
    assert "not-it" not in json.dumps(body)
    refused(
        create(example_options(slapd_up, use_tls=True, tls_cacertfile=str(slapd_up.other_ca_file))),
        422,
        "ldap_tls_failed",
    )
    refused(
        create(
            example_options(
                slapd_up, url=slapd_up.ldaps_url, tls_cacertfile=str(slapd_up.other_ca_file)
            )
        ),
        422,
        "ldap_tls_failed",
    )
    # An ldap domain needs options; a sql domain takes none.
    refused(
        api.call("POST", "/v1/domains", admin_token, {"name": "bad", "identity_backend": "ldap"}),
        422,
        "ldap_invalid_config",
    )
    refused(
        api.call(
            "POST", "/v1/domains", admin_token, {"name": "bad", "ldap": example_options(slapd_up)}
        ),
        422,
        "ldap_invalid_config",
    )
    # Nothing was saved by any refusal.
    assert api.ok("GET", "/v1/domains?name=bad", admin_token)["domains"] == []

    # A good one: the bind password never comes back.
    created = create(example_options(slapd_up), "example")
    assert created.status_code == 201, created.get_json()
    domain = created.get_json()
    for shown in (
        domain,
        api.ok("GET", f"/v1/domains/{domain['id']}", admin_token),
        api.ok("GET", "/v1/domains?name=example", admin_token)["domains"][0],
    ):
        assert shown["identity_backend"] == "ldap"
        assert shown["ldap_password_set"] is True
        assert "password" not in shown["ldap"]
        assert shown["ldap"]["url"] == slapd_up.url
        assert seed.READER_PASSWORD not in json.dumps(shown)

    # A change is tested before it is saved: a broken one leaves the domain as it was.
    path = f"/v1/domains/{domain['id']}"
    refused(
        api.call("PATCH", path, admin_token, {"ldap": {"password": "nope"}}),
        422,
        "ldap_bind_failed",
    )
    refused(
        api.call("PATCH", path, admin_token, {"ldap": {"url": "ldap://127.0.0.1:1"}}),
        422,
        "ldap_unreachable",
    )
    refused(
        api.call("PATCH", path, admin_token, {"ldap": {"nonsense": 1}}), 422, "ldap_invalid_config"
    )
    assert api.ok("GET", path, admin_token)["ldap"]["url"] == slapd_up.url
    token_of(api, seed.ALICE.uid, seed.ALICE.password, domain["id"])
    # Without a new password the stored one is kept.
    changed = api.ok("PATCH", path, admin_token, {"ldap": {"page_size": 100}})
    assert changed["ldap"]["page_size"] == 100 and changed["ldap_password_set"] is True
    token_of(api, seed.ALICE.uid, seed.ALICE.password, domain["id"])


WRONG_TYPES = [
    ("url", 5),
    ("url", ["ldap://x"]),
    ("page_size", "100"),
    ("page_size", True),
    ("user_enabled_mask", "2"),
    ("user_enabled_invert", "false"),
    ("user_enabled_default", 0),
    ("use_tls", "no"),
    ("connection_timeout", None),
    ("password", 12),
    ("user_tree_dn", 7),
    ("user_filter", {"uid": "*"}),
]


def test_options_of_the_wrong_type_are_422(api: Api, admin_token: str, slapd_up: Slapd) -> None:
    for option, value in WRONG_TYPES:
        response = api.call(
            "POST",
            "/v1/domains",
            admin_token,
            {
                "name": "typed",
                "identity_backend": "ldap",
                "ldap": example_options(slapd_up, **{option: value}),
            },
        )
        assert response.status_code == 422, (option, value, response.get_json())
        assert response.get_json()["code"] == "ldap_invalid_config", (option, value)
    assert api.ok("GET", "/v1/domains?name=typed", admin_token)["domains"] == []


# -- 2. login -----------------------------------------------------------------------------


def test_login_and_stable_user_ids(
    api: Api, admin_token: str, slapd_up: Slapd, example: dict[str, Any]
) -> None:
    expected = public_id(example["id"], "user", seed.ALICE.uid)
    first = token_of(api, seed.ALICE.uid, seed.ALICE.password, example["id"])
    assert first["user"]["id"] == expected
    assert first["user"]["name"] == seed.ALICE.uid
    assert first["user"]["domain"]["id"] == example["id"]
    assert claims_of(first["token"])["sub"] == expected
    assert validity(api, admin_token, first["token"]) == 200
    again = token_of(api, seed.ALICE.uid, seed.ALICE.password, example["id"])
    assert again["user"]["id"] == expected
    # The directory matches names case-insensitively: the same person, not a second row.
    shouting = token_of(api, seed.ALICE.uid.upper(), seed.ALICE.password, example["id"])
    assert shouting["user"]["id"] == expected
    # Changing the domain's configuration does not change anybody's id.
    api.ok(
        "PATCH",
        f"/v1/domains/{example['id']}",
        admin_token,
        {"description": "corporate directory", "ldap": {"page_size": 50, "pool_size": 2}},
    )
    assert (
        token_of(api, seed.ALICE.uid, seed.ALICE.password, example["id"])["user"]["id"] == expected
    )
    shown = api.ok("GET", f"/v1/users/{expected}", admin_token)
    assert shown["name"] == seed.ALICE.uid and shown["email"] == seed.ALICE.mail
    assert shown["domain_id"] == example["id"] and shown["kind"] == "human"
    # Another person, another id; a non-ASCII name in the directory comes through.
    dave = token_of(api, seed.DAVE.uid, seed.DAVE.password, example["id"])
    assert dave["user"]["id"] == public_id(example["id"], "user", seed.DAVE.uid) != expected


def test_wrong_and_empty_passwords(api: Api, slapd_up: Slapd, example: dict[str, Any]) -> None:
    domain_id = example["id"]
    wrong = ["", "wrong", seed.BOB.password, seed.ALICE.password + " ", " ", "ALICE-LDAP-PW"]
    # In runs shorter than the lockout threshold (5): a success resets the count.
    for run in (wrong[:3], wrong[3:]):
        for password in run:
            login_fails(api, seed.ALICE.uid, password, domain_id)
        token_of(api, seed.ALICE.uid, seed.ALICE.password, domain_id)
    # A NUL never reaches the directory: the request itself is refused.
    refused(
        login(api, seed.ALICE.uid, seed.ALICE.password + "\x00", domain_id),
        422,
        "invalid_character",
    )
    login_fails(api, "nobody", seed.ALICE.password, domain_id)
    refused(login(api, "", seed.ALICE.password, domain_id), 422, "invalid_request")
    # Latchkey's own lockout covers LDAP humans too: after five failures in a row even the
    # right password is refused (the directory is not asked to check guesses).
    for _ in range(5):
        login_fails(api, seed.ALICE.uid, "guess", domain_id)
    login_fails(api, seed.ALICE.uid, seed.ALICE.password, domain_id)
    token_of(api, seed.DAVE.uid, seed.DAVE.password, domain_id)  # others are not affected


def test_injection_in_user_names(
    api: Api, admin_token: str, slapd_up: Slapd, example: dict[str, Any]
) -> None:
    domain_id = example["id"]
    for name in INJECTIONS:
        for password in (seed.ALICE.password, seed.BOB.password, ""):
            refused(login(api, name, password, domain_id), 401, "authentication_failed")
        # Lookups by name are escaped too: nobody is found, nothing is listed.
        for kind in ("users", "groups"):
            query = {"domain_id": domain_id, "name": name}
            found = api.call("GET", f"/v1/{kind}", admin_token, query_string=query)
            assert found.status_code == 200, (name, found.get_json())
            assert found.get_json()[kind] == [], name
    for name in NUL_NAMES:
        refused(login(api, name, seed.ALICE.password, domain_id), 422, "invalid_character")
    # None of it disturbed the real thing.
    token_of(api, seed.ALICE.uid, seed.ALICE.password, domain_id)


def test_enabled_state_mask_default_and_invert(
    api: Api, admin_token: str, slapd_up: Slapd, example: dict[str, Any]
) -> None:
    # Mask 1 on shadowFlag: carol (1) is disabled, alice (0) is not, dave has no flag.
    login_fails(api, seed.CAROL.uid, seed.CAROL.password, example["id"])
    token_of(api, seed.ALICE.uid, seed.ALICE.password, example["id"])
    token_of(api, seed.DAVE.uid, seed.DAVE.password, example["id"])  # default: enabled
    carol = ldap_user(api, admin_token, example["id"], seed.CAROL.uid)
    assert carol["enabled"] is False

    strict = create_domain(
        api, admin_token, "strict", example_options(slapd_up, user_enabled_default=False)
    )
    login_fails(api, seed.DAVE.uid, seed.DAVE.password, strict["id"])
    token_of(api, seed.ALICE.uid, seed.ALICE.password, strict["id"])

    # Without a mask the attribute is a boolean ("1" true, "0" false) ...
    boolean = create_domain(
        api, admin_token, "boolean", example_options(slapd_up, user_enabled_mask=0)
    )
    token_of(api, seed.CAROL.uid, seed.CAROL.password, boolean["id"])
    login_fails(api, seed.ALICE.uid, seed.ALICE.password, boolean["id"])
    # ... and user_enabled_invert reads it the other way round (Keystone's semantics).
    inverted = create_domain(
        api,
        admin_token,
        "inverted",
        example_options(slapd_up, user_enabled_mask=0, user_enabled_invert=True),
    )
    token_of(api, seed.ALICE.uid, seed.ALICE.password, inverted["id"])
    login_fails(api, seed.CAROL.uid, seed.CAROL.password, inverted["id"])

    # No enabled attribute configured: everybody is enabled_default.
    everyone = create_domain(
        api, admin_token, "everyone", example_options(slapd_up, user_enabled_attribute="")
    )
    token_of(api, seed.CAROL.uid, seed.CAROL.password, everyone["id"])


# -- 3. groups and roles ------------------------------------------------------------------


def test_group_derived_roles(
    api: Api, admin_token: str, slapd_up: Slapd, example: dict[str, Any], web: dict[str, Any]
) -> None:
    developers = ldap_group(api, admin_token, example["id"], seed.DEVELOPERS.cn)
    assert developers["id"] == public_id(example["id"], "group", seed.DEVELOPERS.cn)
    grant_group(api, admin_token, web["id"], developers["id"], "member")

    alice = token_of(api, seed.ALICE.uid, seed.ALICE.password, example["id"], web["id"])
    assert set(alice["roles"]) == {"member", "reader"}
    dave = token_of(api, seed.DAVE.uid, seed.DAVE.password, example["id"], web["id"])
    assert "member" in dave["roles"]
    refused(
        login(api, seed.BOB.uid, seed.BOB.password, example["id"], web["id"]),
        401,
        "scope_not_allowed",
    )
    token_of(api, seed.BOB.uid, seed.BOB.password, example["id"])  # unscoped is fine

    assignments = api.ok(
        "GET",
        f"/v1/role-assignments?user_id={alice['user']['id']}&project_id={web['id']}&effective=true",
        admin_token,
    )
    effective = {
        (a["role"]["name"], a.get("via_group", {}).get("id"))
        for a in assignments["role_assignments"]
    }
    assert effective == {("member", developers["id"]), ("reader", developers["id"])}

    # Taking the role away from the LDAP group revokes its members' live tokens.
    api.ok(
        "DELETE", f"/v1/projects/{web['id']}/groups/{developers['id']}/roles/member", admin_token
    )
    assert validity(api, admin_token, alice["token"]) == 404
    assert validity(api, admin_token, dave["token"]) == 404
    refused(
        login(api, seed.ALICE.uid, seed.ALICE.password, example["id"], web["id"]),
        401,
        "scope_not_allowed",
    )
    grant_group(api, admin_token, web["id"], developers["id"], "member")

    # A second configuration of the same base reads posixGroup/memberUid groups.
    posix = create_domain(
        api,
        admin_token,
        "example-posix",
        example_options(
            slapd_up,
            group_objectclass="posixGroup",
            group_member_attribute="memberUid",
            group_members_are_ids=True,
        ),
    )
    operators = ldap_group(api, admin_token, posix["id"], seed.OPERATORS.cn)
    assert operators["id"] == public_id(posix["id"], "group", seed.OPERATORS.cn)
    assert operators["id"] != developers["id"]
    grant_group(api, admin_token, web["id"], operators["id"], "admin")
    bob_token = token_of(api, seed.BOB.uid, seed.BOB.password, posix["id"], web["id"])
    assert set(bob_token["roles"]) == {"admin", "member", "reader"}
    assert bob_token["user"]["id"] == public_id(posix["id"], "user", seed.BOB.uid)
    # groupOfNames groups are not groups of that domain; alice has no role there.
    assert (
        api.ok("GET", f"/v1/groups?domain_id={posix['id']}&name=developers", admin_token)["groups"]
        == []
    )
    refused(
        login(api, seed.ALICE.uid, seed.ALICE.password, posix["id"], web["id"]),
        401,
        "scope_not_allowed",
    )


def test_read_only_refusals_and_role_assignments(
    api: Api, admin_token: str, slapd_up: Slapd, example: dict[str, Any], web: dict[str, Any]
) -> None:
    alice = ldap_user(api, admin_token, example["id"], seed.ALICE.uid)
    developers = ldap_group(api, admin_token, example["id"], seed.DEVELOPERS.cn)
    bob = ldap_user(api, admin_token, example["id"], seed.BOB.uid)
    writes = [
        (
            "POST",
            "/v1/users",
            {"name": "mallory", "domain_id": example["id"], "password": "x" * 16},
        ),
        (
            "POST",
            "/v1/users",
            {
                "name": "bot",
                "domain_id": example["id"],
                "kind": "application",
                "owner_project_id": web["id"],
            },
        ),
        ("PATCH", f"/v1/users/{alice['id']}", {"enabled": False}),
        ("PATCH", f"/v1/users/{alice['id']}", {"password": "a-brand-new-password"}),
        ("DELETE", f"/v1/users/{alice['id']}", None),
        ("POST", "/v1/groups", {"name": "hackers", "domain_id": example["id"]}),
        ("PATCH", f"/v1/groups/{developers['id']}", {"name": "renamed"}),
        ("DELETE", f"/v1/groups/{developers['id']}", None),
        ("PUT", f"/v1/groups/{developers['id']}/users/{bob['id']}", None),
        ("DELETE", f"/v1/groups/{developers['id']}/users/{alice['id']}", None),
    ]
    for method, path, body in writes:
        refused(api.call(method, path, admin_token, body), 403, "domain_read_only")
    # Nothing changed: alice still logs in, bob is still not a developer.
    token_of(api, seed.ALICE.uid, seed.ALICE.password, example["id"])
    assert ldap_user(api, admin_token, example["id"], seed.ALICE.uid)["enabled"] is True

    # Role assignments live in Latchkey's database and work for LDAP users and groups.
    grant_user(api, admin_token, web["id"], bob["id"], "reader")
    grant_group(api, admin_token, web["id"], developers["id"], "member")
    assert token_of(api, seed.BOB.uid, seed.BOB.password, example["id"], web["id"])["roles"] == [
        "reader"
    ]
    assert (
        "member"
        in token_of(api, seed.ALICE.uid, seed.ALICE.password, example["id"], web["id"])["roles"]
    )
    api.ok("DELETE", f"/v1/projects/{web['id']}/users/{bob['id']}/roles/reader", admin_token)
    refused(
        login(api, seed.BOB.uid, seed.BOB.password, example["id"], web["id"]),
        401,
        "scope_not_allowed",
    )
    # Domain-level roles too.
    api.ok("PUT", f"/v1/domains/{example['id']}/users/{alice['id']}/roles/admin", admin_token)


# -- 4. listing ---------------------------------------------------------------------------


def test_listing_users_and_groups(
    api: Api, admin_token: str, slapd_up: Slapd, example: dict[str, Any]
) -> None:
    users = api.ok("GET", f"/v1/users?domain_id={example['id']}", admin_token)
    assert users["next_marker"] is None
    by_name = {u["name"]: u for u in users["users"]}
    assert set(by_name) == {u.uid for u in seed.EXAMPLE_USERS}
    for person in seed.EXAMPLE_USERS:
        shown = by_name[person.uid]
        assert shown["id"] == public_id(example["id"], "user", person.uid)
        assert shown["enabled"] is person.enabled
        assert shown["email"] == person.mail
        assert shown["domain_id"] == example["id"]
    groups = api.ok("GET", f"/v1/groups?domain_id={example['id']}", admin_token)["groups"]
    # The default group_objectclass is groupOfNames: the posixGroup is not listed.
    assert [g["name"] for g in groups] == [seed.DEVELOPERS.cn]
    # Paging over the directory walks everyone once.
    seen: list[str] = []
    marker = None
    for _ in range(10):
        query = {"domain_id": example["id"], "limit": "1"}
        if marker:
            query["marker"] = marker
        response = api.call("GET", "/v1/users", admin_token, query_string=query)
        assert response.status_code == 200, response.get_json()
        page = response.get_json()
        assert len(page["users"]) <= 1
        seen += [u["id"] for u in page["users"]]
        marker = page["next_marker"]
        if marker is None:
            break
    assert sorted(seen) == sorted(by_name[u.uid]["id"] for u in seed.EXAMPLE_USERS)
    # Nested OUs: a one-level search of ou=people sees only the sub-OUs, not people.
    shallow = create_domain(
        api, admin_token, "shallow", example_options(slapd_up, query_scope="one")
    )
    assert api.ok("GET", f"/v1/users?domain_id={shallow['id']}", admin_token)["users"] == []
    login_fails(api, seed.ALICE.uid, seed.ALICE.password, shallow["id"])
    eng = create_domain(
        api,
        admin_token,
        "eng",
        example_options(slapd_up, query_scope="one", user_tree_dn=seed.EXAMPLE_ENG_DN),
    )
    listed = api.ok("GET", f"/v1/users?domain_id={eng['id']}", admin_token)["users"]
    assert sorted(u["name"] for u in listed) == ["alice", "carol", "dave"]
    login_fails(api, seed.BOB.uid, seed.BOB.password, eng["id"])
    # The sql default domain still lists its own users only.
    default_users = api.ok("GET", "/v1/users?domain_id=default", admin_token)["users"]
    assert [u["name"] for u in default_users] == ["admin"]


def test_paging_walks_ten_thousand_users_once(api: Api, admin_token: str, slapd_up: Slapd) -> None:
    bulk = create_domain(
        api,
        admin_token,
        "bulk",
        example_options(slapd_up, user_tree_dn=seed.BULK_DN, user_enabled_attribute=""),
    )
    seen: list[str] = []
    marker: str | None = None
    pages = 0
    while True:
        query = {"domain_id": bulk["id"], "limit": "1000"}
        if marker:
            query["marker"] = marker
        response = api.call("GET", "/v1/users", admin_token, query_string=query)
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        assert len(body["users"]) <= 1000
        seen += [u["id"] for u in body["users"]]
        pages += 1
        marker = body["next_marker"]
        if marker is None:
            break
        assert pages < 20
    assert len(seen) == seed.BULK_COUNT
    assert len(set(seen)) == seed.BULK_COUNT
    expected = {
        public_id(bulk["id"], "user", seed.bulk_uid(i)) for i in range(1, seed.BULK_COUNT + 1)
    }
    assert set(seen) == expected
    # A bulk user with a password logs in.
    token_of(api, seed.bulk_uid(1), seed.bulk_password(1) or "", bulk["id"])


# -- 5. another base, TLS, failover -------------------------------------------------------


def test_active_directory_style_second_domain(
    api: Api, admin_token: str, slapd_up: Slapd, example: dict[str, Any], web: dict[str, Any]
) -> None:
    corp = create_domain(api, admin_token, "corp", corp_options(slapd_up))
    erin = token_of(api, seed.ERIN.uid, seed.ERIN.password, corp["id"])
    assert erin["user"]["id"] == public_id(corp["id"], "user", seed.ERIN.uid)
    login_fails(api, seed.FRANK.uid, seed.FRANK.password, corp["id"])
    # The two domains do not see each other's people.
    login_fails(api, seed.ALICE.uid, seed.ALICE.password, corp["id"])
    login_fails(api, seed.ERIN.uid, seed.ERIN.password, example["id"])
    listed = api.ok("GET", f"/v1/users?domain_id={corp['id']}", admin_token)["users"]
    assert {u["name"]: u["enabled"] for u in listed} == {"erin": True, "frank": False}
    admins = ldap_group(api, admin_token, corp["id"], seed.ADMINS.cn)
    grant_group(api, admin_token, web["id"], admins["id"], "member")
    assert (
        "member" in token_of(api, seed.ERIN.uid, seed.ERIN.password, corp["id"], web["id"])["roles"]
    )
    # Same login name in two domains: two different people.
    token_of(api, seed.ALICE.uid, seed.ALICE.password, example["id"])


def test_starttls_ldaps_and_failover(api: Api, admin_token: str, slapd_up: Slapd) -> None:
    ca = str(slapd_up.ca_file)
    starttls = create_domain(
        api, admin_token, "starttls", example_options(slapd_up, use_tls=True, tls_cacertfile=ca)
    )
    token_of(api, seed.ALICE.uid, seed.ALICE.password, starttls["id"])
    ldaps = create_domain(
        api,
        admin_token,
        "ldaps",
        example_options(slapd_up, url=slapd_up.ldaps_url, tls_cacertfile=ca),
    )
    token_of(api, seed.ALICE.uid, seed.ALICE.password, ldaps["id"])
    login_fails(api, seed.ALICE.uid, "wrong", ldaps["id"])
    failover = create_domain(
        api,
        admin_token,
        "failover",
        example_options(slapd_up, url=f"ldap://127.0.0.1:1,{slapd_up.url}"),
    )
    token_of(api, seed.ALICE.uid, seed.ALICE.password, failover["id"])
    token_of(api, seed.ALICE.uid, seed.ALICE.password, failover["id"])
    login_fails(api, seed.ALICE.uid, "wrong", failover["id"])


# -- 6. the directory changes behind Latchkey's back --------------------------------------


def ldap_human_with_credential(
    api: Api, admin: str, domain_id: str, project: dict[str, Any], person: Newcomer
) -> tuple[dict[str, Any], dict[str, Any], str]:
    """(user, credential, password token) for a directory person with member on project."""
    user = ldap_user(api, admin, domain_id, person.uid)
    grant_user(api, admin, project["id"], user["id"], "member")
    token = token_of(api, person.uid, person.password, domain_id, project["id"])["token"]
    credential = create_credential(api, token, user["id"], project["id"])
    return user, credential, token


def test_ldap_humans_application_credential(
    api: Api, admin_token: str, slapd_up: Slapd, example: dict[str, Any], web: dict[str, Any]
) -> None:
    developers = ldap_group(api, admin_token, example["id"], seed.DEVELOPERS.cn)
    grant_group(api, admin_token, web["id"], developers["id"], "member")
    alice = token_of(api, seed.ALICE.uid, seed.ALICE.password, example["id"], web["id"])
    credential = create_credential(api, alice["token"], alice["user"]["id"], web["id"])
    assert credential["roles"] == ["member", "reader"]
    token = credential_token(api, credential)
    claims = claims_of(token)
    assert claims["sub"] == alice["user"]["id"]
    assert claims["roles"] == ["member", "reader"]
    assert validity(api, admin_token, token) == 200
    # The directory's password never travels with the credential.
    assert seed.ALICE.password not in json.dumps(credential)


@pytest.mark.parametrize("change", ["deleted", "disabled"])
def test_human_removed_or_disabled_in_ldap_while_credential_in_use(
    tuned: Callable[..., Api],
    slapd_up: Slapd,
    newcomer: Newcomer,
    change: str,
) -> None:
    api = tuned(ldap_recheck_seconds=0)
    admin = api.admin_token()
    domain = create_domain(api, admin, "example", example_options(slapd_up))
    project: dict[str, Any] = api.ok("POST", "/v1/projects", admin, {"name": "web"})
    user, credential, password_token = ldap_human_with_credential(
        api, admin, domain["id"], project, newcomer
    )
    live = credential_token(api, credential)
    assert validity(api, admin, live) == 200

    if change == "deleted":
        slapd_up.delete(newcomer.dn)
    else:
        slapd_up.replace(newcomer.dn, seed.ENABLED_ATTRIBUTE, 1)
    refused(credential_login(api, credential), 401, "authentication_failed")
    assert validity(api, admin, live) == 404
    assert validity(api, admin, password_token) == 404
    refused(credential_login(api, credential), 401, "authentication_failed")
    login_fails(api, newcomer.uid, newcomer.password, domain["id"])
    if change == "disabled":
        # Enabled again in the directory: the credential works again, old tokens stay dead.
        slapd_up.replace(newcomer.dn, seed.ENABLED_ATTRIBUTE, 0)
        fresh = credential_token(api, credential)
        assert validity(api, admin, fresh) == 200
        assert validity(api, admin, live) == 404
    assert api.ok("GET", f"/v1/users/{user['id']}", admin)["id"] == user["id"]


def test_a_cached_recheck_does_not_ask_the_directory_every_time(
    api: Api,
    admin_token: str,
    slapd_up: Slapd,
    newcomer: Newcomer,
    example: dict[str, Any],
    web: dict[str, Any],
) -> None:
    """The default app trusts the directory's word for ldap_recheck_seconds (60 s)."""
    _, credential, _ = ldap_human_with_credential(api, admin_token, example["id"], web, newcomer)
    credential_token(api, credential)
    slapd_up.delete(newcomer.dn)
    credential_token(api, credential)  # within the recheck window: last known state


# -- 7. slapd stopped and restarted mid-test ----------------------------------------------


def test_directory_down_and_back(
    api: Api,
    admin_token: str,
    tuned: Callable[..., Api],
    slapd_up: Slapd,
    newcomer: Newcomer,
    web: dict[str, Any],
    outage: None,
) -> None:
    example = create_domain(
        api, admin_token, "example", example_options(slapd_up, connection_timeout=1)
    )
    _, ldap_credential, _ = ldap_human_with_credential(
        api, admin_token, example["id"], web, newcomer
    )
    # An application account of a sql domain, with its own credential.
    bot = api.ok(
        "POST",
        "/v1/users",
        admin_token,
        {"name": "ci-bot", "kind": "application", "owner_project_id": web["id"]},
    )
    grant_user(api, admin_token, web["id"], bot["id"], "member")
    bot_credential = create_credential(api, admin_token, bot["id"], web["id"])
    credential_token(api, bot_credential)

    graceful = tuned(ldap_recheck_seconds=0, ldap_outage_grace_seconds=300)
    strict = tuned(ldap_recheck_seconds=0, ldap_outage_grace_seconds=0)
    for other in (graceful, strict):
        other.client.allow_5xx = True  # type: ignore[attr-defined]
    credential_token(graceful, ldap_credential)  # a successful check just now

    ready = api.call("GET", "/readyz")
    assert ready.status_code == 200
    assert ready.get_json()["checks"]["ldap"]["example"]["status"] == "ok"

    with slapd_up.stopped():
        started = time.monotonic()
        body = refused(
            login(api, seed.ALICE.uid, seed.ALICE.password, example["id"]), 503, "ldap_unavailable"
        )
        assert body["domain"] == "example"
        assert seed.ALICE.password not in json.dumps(body)
        # The sql domain's application account does not depend on the directory.
        credential_token(api, bot_credential)
        token_of(api, "admin", "admin-password-for-tests", "default")
        # The LDAP human's credential: last known state within the grace period ...
        assert validity(graceful, admin_token, credential_token(graceful, ldap_credential)) == 200
        # ... refused with 503 (not 401: nothing is known to be wrong) past it.
        body = refused(credential_login(strict, ldap_credential), 503, "ldap_unavailable")
        assert body["domain"] == "example"
        readyz = api.call("GET", "/readyz")
        assert readyz.status_code == 200, readyz.get_json()
        checks = readyz.get_json()["checks"]
        assert checks["database"]["status"] == "ok"
        assert checks["ldap"]["example"]["status"] == "unavailable"
        # Listing the domain's users needs the directory too.
        refused(
            api.call("GET", f"/v1/users?domain_id={example['id']}", admin_token),
            503,
            "ldap_unavailable",
        )
        assert time.monotonic() - started < 5, "an outage must be answered quickly"

    def logs_in() -> bool:
        return login(api, seed.ALICE.uid, seed.ALICE.password, example["id"]).status_code == 201

    eventually(logs_in)
    eventually(lambda: credential_login(strict, ldap_credential).status_code == 201)
    readyz = api.call("GET", "/readyz").get_json()
    assert readyz["checks"]["ldap"]["example"]["status"] == "ok"


def test_restart_while_connections_are_pooled(
    api: Api, admin_token: str, slapd_up: Slapd, example: dict[str, Any], outage: None
) -> None:
    """Pooled binds and the service connection die with slapd; new ones replace them."""
    for _ in range(3):
        token_of(api, seed.ALICE.uid, seed.ALICE.password, example["id"])
    slapd_up.restart()
    eventually(
        lambda: login(api, seed.ALICE.uid, seed.ALICE.password, example["id"]).status_code == 201
    )
    token_of(api, seed.BOB.uid, seed.BOB.password, example["id"])
    login_fails(api, seed.ALICE.uid, "wrong", example["id"])


def test_a_name_given_to_another_directory_entry(
    api: Api, admin_token: str, slapd_up: Slapd, newcomer: Newcomer
) -> None:
    """The directory decides who holds a name: a shadow row still carrying it (its
    entry renamed or deleted) steps aside instead of the login failing."""
    options = example_options(slapd_up, user_id_attribute="cn", user_name_attribute="uid")
    domain = create_domain(api, admin_token, "example", options)
    first = login(api, newcomer.uid, newcomer.password, domain["id"])
    assert first.status_code == 201, first.get_json()
    old_id = claims_of(first.get_json()["token"])["sub"]
    slapd_up.replace(newcomer.dn, "cn", "Zoe Again")  # a new directory id, the same name
    second = login(api, newcomer.uid, newcomer.password, domain["id"])
    assert second.status_code == 201, second.get_json()
    new_id = claims_of(second.get_json()["token"])["sub"]
    assert new_id != old_id
    listed = api.ok("GET", f"/v1/users?domain_id={domain['id']}&name=zoe", admin_token)
    assert [u["id"] for u in listed["users"]] == [new_id]
