"""Simultaneous first logins of LDAP users, against the real slapd, on both backends.

A first login creates the user's shadow row (and those of their directory groups).
Two workers doing it at once both find no row and both insert: the second insert
must not turn into a 500. The race is forced, not hoped for: a statement hook holds
each thread just before its INSERT until the other one gets there too, so both have
already looked and found nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import event, func, select

from latchkey.identity.backends.ldap.domains import public_id
from latchkey.identity.models import Group, User
from tests import ldap_server as seed
from tests.conftest import Api, database_of
from tests.integration.test_ldap import create_domain, example_options, login
from tests.ldap_server import SeedUser, Slapd

RACE_TIMEOUT = 10.0  # seconds a thread waits at the INSERT for the other one


class InsertRace:
    """Holds the first two INSERTs into ``table`` (from different threads) until both
    are about to run. ``met`` says whether they really did meet."""

    def __init__(self, table: str) -> None:
        self._prefix = f"INSERT INTO {table} "
        self._barrier = threading.Barrier(2, timeout=RACE_TIMEOUT)
        self._seen: set[int] = set()
        self._lock = threading.Lock()
        self.met = False

    def before_execute(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if not statement.startswith(self._prefix):
            return
        thread = threading.get_ident()
        with self._lock:
            if thread in self._seen or len(self._seen) >= 2:
                return
            self._seen.add(thread)
        try:
            self._barrier.wait()
            self.met = True
        except threading.BrokenBarrierError:
            pass  # the other thread never got there: let this one go on


@pytest.fixture
def race(app: Flask) -> Iterator[Any]:
    hooked: list[InsertRace] = []
    with app.app_context():
        engine = database_of(app).engine

    def make(table: str) -> InsertRace:
        hook = InsertRace(table)
        event.listen(engine, "before_cursor_execute", hook.before_execute)
        hooked.append(hook)
        return hook

    yield make
    for hook in hooked:
        event.remove(engine, "before_cursor_execute", hook.before_execute)


def logins_at_once(app: Flask, domain_id: str, people: list[SeedUser]) -> list[tuple[int, Any]]:
    """Each person logs in from their own thread (their own client and session)."""
    results: list[tuple[int, Any]] = [(0, None)] * len(people)

    def run(index: int, person: SeedUser) -> None:
        client = app.test_client()
        client.allow_5xx = True  # type: ignore[attr-defined]
        response = login(Api(client), person.uid, person.password, domain_id)
        results[index] = (response.status_code, response.get_json())

    threads = [threading.Thread(target=run, args=(i, person)) for i, person in enumerate(people)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def shadow_rows(app: Flask, model: Any, domain_id: str, name: str) -> int:
    with app.app_context():
        count = database_of(app).session.scalar(
            select(func.count()).select_from(model).filter_by(domain_id=domain_id, name=name)
        )
        database_of(app).session.remove()
    return int(count or 0)


def test_two_first_logins_of_one_ldap_user_at_once(
    app: Flask, api: Api, admin_token: str, slapd_up: Slapd, race: Any
) -> None:
    domain = create_domain(api, admin_token, "example", example_options(slapd_up))
    users = race("user_account")
    results = logins_at_once(app, domain["id"], [seed.ALICE, seed.ALICE])
    assert users.met, "the two logins did not race for the shadow row"
    for status, body in results:
        assert status == 201, body
        assert body["user"]["id"] == public_id(domain["id"], "user", seed.ALICE.uid)
    assert shadow_rows(app, User, domain["id"], seed.ALICE.uid) == 1
    assert shadow_rows(app, Group, domain["id"], seed.DEVELOPERS.cn) == 1
    # Both tokens are good, and so is a later login.
    for _, body in results:
        status = api.call(
            "GET", "/v1/auth/tokens", admin_token, headers={"X-Subject-Token": body["token"]}
        ).status_code
        assert status == 200
    assert login(api, seed.ALICE.uid, seed.ALICE.password, domain["id"]).status_code == 201


def test_two_first_logins_racing_for_their_group_at_once(
    app: Flask, api: Api, admin_token: str, slapd_up: Slapd, race: Any
) -> None:
    domain = create_domain(api, admin_token, "example", example_options(slapd_up))
    # Listing creates the people's shadow rows, not their groups': the race is the group's.
    api.ok("GET", f"/v1/users?domain_id={domain['id']}&limit=1000", admin_token)
    groups = race("user_group")
    results = logins_at_once(app, domain["id"], [seed.ALICE, seed.DAVE])
    assert groups.met, "the two logins did not race for the group's shadow row"
    for status, body in results:
        assert status == 201, body
    assert shadow_rows(app, Group, domain["id"], seed.DEVELOPERS.cn) == 1
    developers = public_id(domain["id"], "group", seed.DEVELOPERS.cn)
    with app.app_context():
        for person in (seed.ALICE, seed.DAVE):
            user = database_of(app).session.get(User, public_id(domain["id"], "user", person.uid))
            assert user is not None and user.directory_group_ids == [developers]
        database_of(app).session.remove()
