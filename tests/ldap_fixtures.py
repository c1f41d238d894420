"""Pytest plugin: a real OpenLDAP for the session (see ``tests/ldap_server.py``).

Register with ``pytest_plugins = ["tests.ldap_fixtures"]``. ``slapd`` is one
server for the whole session, started lazily by the first test that asks for it.
``slapd_up`` is the same server, guaranteed running before the test and started
again afterwards if the test stopped it (so a failing stop/restart test does not
take the directory away from the tests that follow). Tests that change the
directory should add and delete their own entries, or call ``slapd.reseed()``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.ldap_server import Slapd


@pytest.fixture(scope="session")
def slapd() -> Iterator[Slapd]:
    server = Slapd()
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def slapd_up(slapd: Slapd) -> Iterator[Slapd]:
    slapd.start()
    yield slapd
    slapd.start()  # a no-op unless the test left it stopped
