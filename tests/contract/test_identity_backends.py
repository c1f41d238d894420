"""One IdentityBackend contract for every backend: an sql domain and a real slapd domain.

Both domains hold the same people (``tests/ldap_server.py``'s example.org seed):
alice, bob, carol (disabled) and dave, and one group, developers (alice and dave).
The ldap domain reads them from the real OpenLDAP; the sql domain is its twin,
made through the native API. Each test asks the backend the services would ask
(``Accounts.backend_for(domain)``) and expects the same answer from both, except
where a backend declares a difference: ``writable``, and ``group_ids``/``recheck``,
which name only the groups that are not membership rows (so role resolution's view,
rows plus ``group_ids``, is the same).

The contract, as ``latchkey/identity/backends/__init__.py`` states it: lookup by id
and by name (nothing for an unknown one or another domain's); listing, ordered by
id and paged by marker, filtered by name; groups likewise; membership both ways;
the enabled state; password verification; ``recheck`` never vouches for someone
their backend holds disabled.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, current_app
from sqlalchemy import select

from latchkey.identity.backends import IdentityBackend
from latchkey.identity.models import Domain, GroupMembership, User
from tests import ldap_server as seed
from tests.conftest import Api, build_app, database_of, make_settings, reset_database
from tests.ldap_server import Slapd

BACKENDS = ["sql", "ldap"]
PEOPLE = seed.EXAMPLE_USERS  # alice, bob, carol (disabled), dave
GROUP = seed.DEVELOPERS  # alice and dave; the seed's only groupOfNames group


@dataclass
class World:
    app: Flask
    domain_ids: dict[str, str]  # backend name -> its domain's id
    other_domain_user: str  # the admin, in the default domain


@dataclass
class Side:
    domain: Domain
    backend: IdentityBackend
    other_domain_user: str

    def user(self, name: str) -> User:
        user = self.backend.find_user(self.domain, name)
        assert user is not None, name
        return user

    def rows_groups(self, user: User) -> set[str]:
        """The group ids role resolution reads from membership rows."""
        query = select(GroupMembership.group_id).where(GroupMembership.user_id == user.id)
        return set(database_of(current_app).session.scalars(query))


def example_options(slapd: Slapd) -> dict[str, Any]:
    return {
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


def sql_twin(api: Api, token: str) -> str:
    """The seed's people, group and memberships as rows of an sql domain."""
    domain = api.ok("POST", "/v1/domains", token, {"name": "contract-sql"})
    ids = {}
    for person in PEOPLE:
        user = api.ok(
            "POST",
            "/v1/users",
            token,
            {
                "name": person.uid,
                "domain_id": domain["id"],
                "password": person.password,
                "email": person.mail,
                "enabled": person.enabled,
            },
        )
        ids[person.uid] = user["id"]
    group = api.ok("POST", "/v1/groups", token, {"name": GROUP.cn, "domain_id": domain["id"]})
    for member in GROUP.members:
        api.ok("PUT", f"/v1/groups/{group['id']}/users/{ids[member]}", token)
    return str(domain["id"])


@pytest.fixture(scope="module")
def world(slapd: Slapd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    slapd.start()  # a no-op unless an earlier test left it stopped
    home: Path = tmp_path_factory.mktemp("identity-contract")
    # The seed's passwords are the directory's: some are shorter than the default policy.
    app = build_app(make_settings(home, f"sqlite:///{home / 'latchkey.db'}", password_min_length=8))
    reset_database(app)
    api = Api(app.test_client())
    token = api.admin_token()
    ldap = api.ok(
        "POST",
        "/v1/domains",
        token,
        {"name": "contract-ldap", "identity_backend": "ldap", "ldap": example_options(slapd)},
    )
    admin = api.ok("GET", "/v1/users?domain_id=default&name=admin", token)["users"][0]
    yield World(app, {"sql": sql_twin(api, token), "ldap": ldap["id"]}, admin["id"])
    with app.app_context():
        database_of(app).session.remove()
        database_of(app).engine.dispose()


@pytest.fixture(params=BACKENDS)
def side(request: pytest.FixtureRequest, world: World, slapd: Slapd) -> Iterator[Side]:
    slapd.start()
    with world.app.app_context():
        domain = database_of(world.app).session.get(Domain, world.domain_ids[request.param])
        assert domain is not None
        backend = world.app.extensions["latchkey"].accounts.backend_for(domain)
        yield Side(domain, backend, world.other_domain_user)
        database_of(world.app).session.rollback()
        database_of(world.app).session.remove()


def test_the_backend_is_the_domains_and_says_whether_it_is_writable(side: Side) -> None:
    assert side.backend.name == side.domain.identity_backend
    assert side.backend.writable is {"sql": True, "ldap": False}[side.backend.name]


def test_lookup_by_name(side: Side) -> None:
    for person in PEOPLE:
        user = side.user(person.uid)
        assert (user.name, user.email, user.enabled) == (person.uid, person.mail, person.enabled)
        assert user.domain_id == side.domain.id
    for unknown in ["nobody", "*", "al*", ")(uid=*", "admin"]:
        assert side.backend.find_user(side.domain, unknown) is None, unknown


def test_lookup_by_id(side: Side) -> None:
    alice = side.user(seed.ALICE.uid)
    found = side.backend.get_user(side.domain, alice.id)
    assert found is not None
    assert (found.id, found.name, found.enabled) == (alice.id, alice.name, True)
    assert side.backend.get_user(side.domain, "0" * 32) is None
    # Another domain's user is not this backend's to answer for.
    assert side.backend.get_user(side.domain, side.other_domain_user) is None


def test_enabled_state(side: Side) -> None:
    assert side.user(seed.CAROL.uid).enabled is False
    assert side.user(seed.DAVE.uid).enabled is True  # no shadowFlag: the default, enabled
    listed = {u.name: u.enabled for u in side.backend.list_users(side.domain, **every())[0]}
    assert listed == {p.uid: p.enabled for p in PEOPLE}


def every(**overrides: Any) -> dict[str, Any]:
    filters: dict[str, Any] = {
        "name": None,
        "kind": None,
        "enabled": None,
        "marker": None,
        "limit": 100,
    }
    filters.update(overrides)
    return filters


def test_listing_users_by_id_in_pages(side: Side) -> None:
    users, marker = side.backend.list_users(side.domain, **every())
    assert sorted(u.name for u in users) == sorted(p.uid for p in PEOPLE)
    assert [u.id for u in users] == sorted(u.id for u in users)
    assert marker is None
    assert users == [side.user(u.name) for u in users]  # the same rows lookups return

    first, marker = side.backend.list_users(side.domain, **every(limit=3))
    assert marker == first[-1].id
    rest, end = side.backend.list_users(side.domain, **every(limit=3, marker=marker))
    assert [u.id for u in first + rest] == [u.id for u in users]
    assert end is None


def test_listing_users_by_name(side: Side) -> None:
    users, marker = side.backend.list_users(side.domain, **every(name=seed.BOB.uid))
    assert [u.name for u in users] == [seed.BOB.uid]
    assert marker is None
    assert side.backend.list_users(side.domain, **every(name="nobody")) == ([], None)


def test_groups_lookup_and_listing(side: Side) -> None:
    group = side.backend.find_group(side.domain, GROUP.cn)
    assert group is not None
    assert (group.name, group.domain_id) == (GROUP.cn, side.domain.id)
    again = side.backend.get_group(side.domain, group.id)
    assert again is not None and again.id == group.id
    assert side.backend.find_group(side.domain, "nobody") is None
    assert side.backend.find_group(side.domain, "develop*") is None
    assert side.backend.get_group(side.domain, "0" * 32) is None

    assert side.backend.list_groups(side.domain, name=None, marker=None, limit=100) == (
        [group],
        None,
    )
    by_name = side.backend.list_groups(side.domain, name=GROUP.cn, marker=None, limit=100)
    assert by_name == ([group], None)
    assert side.backend.list_groups(side.domain, name="nobody", marker=None, limit=100) == (
        [],
        None,
    )


def test_membership_both_ways(side: Side) -> None:
    group = side.backend.find_group(side.domain, GROUP.cn)
    assert group is not None
    members = side.backend.members_of(side.domain, group)
    assert [u.name for u in members] == sorted(GROUP.members)
    for person in PEOPLE:
        user = side.user(person.uid)
        groups = side.backend.groups_of(side.domain, user)
        assert [g.name for g in groups] == ([GROUP.cn] if person.uid in GROUP.members else [])
        # What role resolution sees: membership rows plus the backend's group_ids.
        resolved = side.rows_groups(user) | set(side.backend.group_ids(side.domain, user))
        assert resolved == {g.id for g in groups}


def test_password_verification(side: Side) -> None:
    for person in PEOPLE:
        user = side.user(person.uid)
        assert side.backend.verify_password(user, person.password) is True, person.uid
        assert side.backend.verify_password(user, person.password + "x") is False
        assert side.backend.verify_password(user, "") is False
    alice, bob = side.user(seed.ALICE.uid), side.user(seed.BOB.uid)
    assert side.backend.verify_password(alice, seed.BOB.password) is False
    assert side.backend.verify_password(bob, seed.ALICE.password) is False


def test_recheck_vouches_for_the_enabled_and_never_for_the_disabled(side: Side) -> None:
    alice = side.user(seed.ALICE.uid)
    state = side.backend.recheck(side.domain, alice)
    assert state.exists and state.enabled and alice.enabled
    groups = side.backend.groups_of(side.domain, alice)
    assert side.rows_groups(alice) | set(state.group_ids) == {g.id for g in groups}

    carol = side.user(seed.CAROL.uid)
    state = side.backend.recheck(side.domain, carol)
    # Callers admit a user only when the backend vouches and the row is enabled.
    assert not (state.exists and state.enabled and carol.enabled)
