"""Issue 13, class 6: authentication under attack.

Every door that checks a password or a secret is throttled per source address
and per account BEFORE any hash is computed (a spy counts the hash checks), with
``429 too_many_requests`` and ``Retry-After``; lockout is per (user, source), so
a stranger cannot lock a user out from the user's own address; only a trusted
proxy's X-Forwarded-For is believed.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from latchkey.credentials.service import SecretHasher
from latchkey.frontdoors.http.proxies import TrustedProxies
from latchkey.identity.passwords import PasswordHasher
from tests.conftest import ADMIN_PASSWORD, Api, build_app, make_settings, reset_database

PASSWORD = "alice-password-123"
PER_SOURCE = 4
PER_ACCOUNT = 6
LOCKOUT = 3
REDIS_URL = "redis://127.0.0.1:6379/0"


def throttled_settings(home: Path, url: str, **overrides: Any) -> Any:
    values: dict[str, Any] = {
        "ratelimit_auth_per_source": f"{PER_SOURCE} per minute",
        "ratelimit_auth_per_account": f"{PER_ACCOUNT} per minute",
        "lockout_failure_attempts": LOCKOUT,
        "trusted_proxies": "127.0.0.1/32",
        **overrides,
    }
    return make_settings(home, url, **values)


@pytest.fixture(scope="module")
def throttled_apps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Flask]:
    return {}


@pytest.fixture(params=["sqlite", "postgres"])
def tapp(
    request: pytest.FixtureRequest,
    throttled_apps: dict[str, Flask],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Flask]:
    backend = request.param
    if backend not in throttled_apps:
        home = tmp_path_factory.mktemp(f"throttled-{backend}")
        if backend == "sqlite":
            url = f"sqlite:///{home / 'latchkey.db'}"
        else:
            url = request.getfixturevalue("postgres_database")
        throttled_apps[backend] = build_app(throttled_settings(home, url))
    app = throttled_apps[backend]
    reset_database(app)
    yield app


@pytest.fixture
def tapi(tapp: Flask) -> Api:
    return Api(tapp.test_client())


@pytest.fixture
def hashes(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """A spy on every password and secret check: the real ones, counted."""
    counts = {"password": 0, "secret": 0}
    real_verify = PasswordHasher.verify
    real_matches, real_burn = SecretHasher.matches, SecretHasher.burn

    def verify(self: PasswordHasher, password_hash: str | None, password: str) -> bool:
        counts["password"] += 1
        return real_verify(self, password_hash, password)

    def matches(self: SecretHasher, secret: str, stored: str) -> bool:
        counts["secret"] += 1
        return real_matches(self, secret, stored)

    def burn(self: SecretHasher, secret: str) -> None:
        counts["secret"] += 1
        real_burn(self, secret)

    monkeypatch.setattr(PasswordHasher, "verify", verify)
    monkeypatch.setattr(SecretHasher, "matches", matches)
    monkeypatch.setattr(SecretHasher, "burn", burn)
    return counts


def from_(address: str) -> dict[str, str]:
    """Headers of a request relayed by the trusted proxy (the test client is 127.0.0.1)."""
    return {"X-Forwarded-For": address}


def login(
    client: FlaskClient, name: str, password: str, address: str, domain: str = "default"
) -> TestResponse:
    body = {
        "auth": {
            "password": {"user": {"name": name, "domain": {"id": domain}}, "password": password}
        }
    }
    return client.post("/v1/auth/tokens", json=body, headers=from_(address))


def assert_throttled(response: TestResponse) -> None:
    assert response.status_code == 429, response.get_data(as_text=True)
    assert response.headers["Content-Type"] == "application/problem+json"
    body = response.get_json()
    assert body["code"] == "too_many_requests"
    assert body["status"] == 429
    assert 1 <= int(response.headers["Retry-After"]) <= 61


def make_alice(api: Api) -> dict[str, Any]:
    admin = api.login("admin", ADMIN_PASSWORD, project="admin")
    user: dict[str, Any] = api.ok(
        "POST", "/v1/users", admin, {"name": "alice", "password": PASSWORD}
    )
    return user


def without_request_id(response: TestResponse) -> dict[str, Any]:
    body = dict(response.get_json())
    body.pop("request_id", None)
    return body


# -- per source ----------------------------------------------------------------------


def test_a_source_is_throttled_before_any_hash(tapi: Api, hashes: dict[str, int]) -> None:
    make_alice(tapi)
    client = tapi.client
    hashes["password"] = 0
    for i in range(PER_SOURCE):
        name = "alice" if i % 2 else "nobody"  # known and unknown accounts count alike
        assert login(client, name, f"wrong-{i}", "10.0.0.1").status_code == 401
    assert hashes["password"] == PER_SOURCE

    # Past the limit: 429 at once, and no hash computed, even for the right password.
    for name, password in (("alice", "wrong"), ("nobody", "wrong"), ("alice", PASSWORD)):
        assert_throttled(login(client, name, password, "10.0.0.1"))
    assert hashes["password"] == PER_SOURCE

    # The throttled source alone: alice logs in from her own address.
    assert login(client, "alice", PASSWORD, "10.0.0.2").status_code == 201


def test_successes_do_not_count(tapi: Api) -> None:
    make_alice(tapi)
    for _ in range(PER_SOURCE * 3):
        assert login(tapi.client, "alice", PASSWORD, "10.0.0.3").status_code == 201


# -- per account ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["alice", "nobody"])
def test_an_account_is_throttled_from_all_sources(
    tapi: Api, hashes: dict[str, int], name: str
) -> None:
    make_alice(tapi)
    hashes["password"] = 0
    # A distributed guesser: each address stays under the per-source limit.
    for i in range(PER_ACCOUNT):
        assert login(tapi.client, name, f"guess-{i}", f"10.1.0.{i}").status_code == 401
    assert hashes["password"] == PER_ACCOUNT
    throttled = login(tapi.client, name, "guess", "10.1.1.1")
    assert_throttled(throttled)
    assert hashes["password"] == PER_ACCOUNT
    # Another account, from that same new address, is not throttled.
    assert login(tapi.client, "admin", ADMIN_PASSWORD, "10.1.1.1").status_code == 201


def test_strangers_cannot_throttle_a_user_at_her_usual_address(
    tapi: Api, hashes: dict[str, int]
) -> None:
    make_alice(tapi)
    home = "10.1.5.5"
    assert login(tapi.client, "alice", PASSWORD, home).status_code == 201
    for i in range(PER_ACCOUNT + 2):  # strangers, each under the per-source limit
        login(tapi.client, "alice", f"guess-{i}", f"10.1.6.{i}")
    assert_throttled(login(tapi.client, "alice", PASSWORD, "10.1.7.7"))  # a new address
    assert login(tapi.client, "alice", PASSWORD, home).status_code == 201
    # Her own failures at home still count there (per source, and the lockout).
    for i in range(PER_SOURCE):
        login(tapi.client, "alice", f"typo-{i}", home)
    hashes["password"] = 0
    assert_throttled(login(tapi.client, "alice", PASSWORD, home))
    assert hashes["password"] == 0


def test_throttled_answers_do_not_tell_accounts_apart(tapi: Api) -> None:
    make_alice(tapi)
    answers = []
    for name in ("alice", "nobody"):
        for i in range(PER_ACCOUNT):
            login(tapi.client, name, f"guess-{i}", f"10.2.{i}.1")
        answers.append(login(tapi.client, name, "guess", "10.2.9.9"))
    known, unknown = answers
    assert_throttled(known)
    assert_throttled(unknown)
    assert without_request_id(known) == without_request_id(unknown)


# -- every door ----------------------------------------------------------------------


def exhaust(send: Any, count: int = PER_SOURCE) -> None:
    for _ in range(count):
        response = send()
        assert response.status_code in (400, 401, 403), response.get_data(as_text=True)


def test_every_door_is_throttled_before_its_hash(tapi: Api, hashes: dict[str, int]) -> None:
    user = make_alice(tapi)
    client = tapi.client
    alice_token = tapi.login("alice", PASSWORD)

    keystone_body = {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {"name": "alice", "domain": {"id": "default"}, "password": "wrong"}
                },
            }
        }
    }

    def basic(client_id: str) -> str:
        return "Basic " + base64.b64encode(f"{client_id}:wrong-secret".encode()).decode()

    doors = {
        "v3": lambda a: client.post("/v3/auth/tokens", json=keystone_body, headers=from_(a)),
        "credential": lambda a: client.post(
            "/v1/auth/tokens",
            json={"auth": {"application_credential": {"id": "no-such", "secret": "wrong"}}},
            headers=from_(a),
        ),
        "oauth_token": lambda a: client.post(
            "/oauth2/token",
            data={"grant_type": "client_credentials"},
            headers={**from_(a), "Authorization": basic("client-a")},
        ),
        "oauth_post": lambda a: client.post(
            "/oauth2/token",
            data={
                "grant_type": "client_credentials",
                "client_id": "client-b",
                "client_secret": "wrong",
            },
            headers=from_(a),
        ),
        "introspect": lambda a: client.post(
            "/oauth2/introspect",
            data={"token": "x"},
            headers={**from_(a), "Authorization": basic("client-c")},
        ),
        "revoke": lambda a: client.post(
            "/oauth2/revoke",
            data={"token": "x"},
            headers={**from_(a), "Authorization": basic("client-d")},
        ),
        "password_change": lambda a: client.post(
            f"/v1/users/{user['id']}/password",
            json={"original_password": "wrong-original", "password": "new-password-456"},
            headers={**from_(a), "Authorization": f"Bearer {alice_token}"},
        ),
    }
    for i, (door, send) in enumerate(doors.items()):
        address = f"10.3.{i}.1"
        exhaust(lambda send=send, address=address: send(address))
        before = dict(hashes)
        throttled = send(address)
        assert throttled.status_code == 429, door
        assert int(throttled.headers["Retry-After"]) >= 1, door
        assert hashes == before, f"{door}: a hash was computed while throttled"
        if door == "v3":  # Keystone's shape, like every answer under /v3
            assert throttled.get_json()["error"]["code"] == 429
        else:
            assert throttled.get_json()["code"] == "too_many_requests", door


def test_doors_share_the_source_budget(tapi: Api, hashes: dict[str, int]) -> None:
    """Failures on one door count on the others: an attacker cannot spread them."""
    make_alice(tapi)
    address = "10.4.0.1"
    for _ in range(PER_SOURCE):
        tapi.client.post(
            "/oauth2/token",
            data={"grant_type": "client_credentials", "client_id": "x", "client_secret": "y"},
            headers=from_(address),
        )
    hashes["password"] = 0
    assert_throttled(login(tapi.client, "alice", PASSWORD, address))
    assert hashes["password"] == 0


# -- lockout per (user, source) ------------------------------------------------------


def test_a_stranger_cannot_lock_a_user_out_of_her_own_address(tapi: Api) -> None:
    make_alice(tapi)
    stranger, home = "10.5.0.66", "10.5.0.7"
    wrong = login(tapi.client, "alice", "wrong-0", stranger)
    for i in range(1, LOCKOUT):
        login(tapi.client, "alice", f"wrong-{i}", stranger)
    # Locked from the stranger's address: even the right password fails there, with
    # the very answer of a wrong password.
    locked = login(tapi.client, "alice", PASSWORD, stranger)
    assert locked.status_code == 401
    assert without_request_id(locked) == without_request_id(wrong)
    # From her own address alice logs in at once.
    assert login(tapi.client, "alice", PASSWORD, home).status_code == 201


def test_lockout_still_locks_the_guessing_address(tapi: Api) -> None:
    make_alice(tapi)
    for i in range(LOCKOUT):
        assert login(tapi.client, "alice", f"wrong-{i}", "10.6.0.1").status_code == 401
    assert login(tapi.client, "alice", PASSWORD, "10.6.0.1").status_code == 401
    admin = tapi.login("admin", ADMIN_PASSWORD, project="admin")
    events = tapi.ok("GET", "/v1/audit/events?type=authentication&limit=1000", admin)["events"]
    reasons = [(e["source_ip"], e["details"].get("reason")) for e in events]
    assert ("10.6.0.1", "wrong_password_locked") in reasons
    assert ("10.6.0.1", "locked") in reasons


# -- trusted proxies ------------------------------------------------------------------


def test_x_forwarded_for_from_an_untrusted_peer_is_ignored(
    tmp_path: Path, hashes: dict[str, int]
) -> None:
    app = build_app(
        throttled_settings(tmp_path, f"sqlite:///{tmp_path / 'l.db'}", trusted_proxies="")
    )
    reset_database(app)
    api = Api(app.test_client())
    make_alice(api)
    # Every request claims another address; nobody vouches for it: one source.
    for i in range(PER_SOURCE):
        assert login(api.client, "alice", "wrong", f"10.7.0.{i}").status_code == 401
    assert_throttled(login(api.client, "nobody", "wrong", "10.7.1.1"))
    admin_view = api.client.post(
        "/v1/auth/tokens",
        json={
            "auth": {
                "password": {
                    "user": {"name": "admin", "domain": {"id": "default"}},
                    "password": ADMIN_PASSWORD,
                }
            }
        },
        environ_base={"REMOTE_ADDR": "192.0.2.10"},
    )
    assert admin_view.status_code == 201  # another peer is another source


def test_the_client_is_the_right_most_untrusted_address() -> None:
    proxies = TrustedProxies("127.0.0.1/32, 10.9.0.0/16")

    def client(peer: str, forwarded: str) -> str | None:
        return proxies.client_address({"REMOTE_ADDR": peer, "HTTP_X_FORWARDED_FOR": forwarded})

    # A spoofed left-most entry is ignored: the last proxy appended the real peer.
    assert client("127.0.0.1", "6.6.6.6, 198.51.100.7") == "198.51.100.7"
    assert client("127.0.0.1", "6.6.6.6, 198.51.100.7, 10.9.3.4") == "198.51.100.7"
    assert client("127.0.0.1", "") == "127.0.0.1"
    assert client("127.0.0.1", "not-an-address") == "127.0.0.1"
    assert client("127.0.0.1", "[2001:db8::1]:443") == "2001:db8::1"
    # An untrusted peer's header is not believed at all.
    assert client("203.0.113.5", "198.51.100.7") == "203.0.113.5"
    assert TrustedProxies("").client_address(
        {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "1.2.3.4"}
    ) == ("127.0.0.1")


def test_allowed_cidrs_and_audit_see_the_trusted_client_address(tapi: Api) -> None:
    admin = tapi.login("admin", ADMIN_PASSWORD, project="admin")
    project = tapi.ok("POST", "/v1/projects", admin, {"name": "web"})
    user = make_alice(tapi)
    tapi.ok("PUT", f"/v1/projects/{project['id']}/users/{user['id']}/roles/member", admin)
    alice = tapi.login("alice", PASSWORD, project="web")
    credential = tapi.ok(
        "POST",
        f"/v1/users/{user['id']}/application-credentials",
        alice,
        {"name": "ci", "project_id": project["id"], "allowed_cidrs": ["198.51.100.0/24"]},
    )
    body = {
        "auth": {"application_credential": {"id": credential["id"], "secret": credential["secret"]}}
    }
    inside = tapi.client.post("/v1/auth/tokens", json=body, headers=from_("198.51.100.9"))
    assert inside.status_code == 201
    outside = tapi.client.post(
        "/v1/auth/tokens", json=body, headers=from_("198.51.100.9, 203.0.113.1")
    )
    assert outside.status_code == 401
    events = tapi.ok("GET", "/v1/audit/events?type=authentication&limit=1000", admin)["events"]
    sources = {(e["source_ip"], e["outcome"]) for e in events if e["actor_id"] == user["id"]}
    assert ("198.51.100.9", "success") in sources
    assert ("203.0.113.1", "failure") in sources


# -- several nodes: Redis --------------------------------------------------------------


def test_redis_storage_shares_counts_between_instances(tmp_path: Path) -> None:
    try:
        redis.Redis.from_url(REDIS_URL).ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis is needed at {REDIS_URL} (scripts/ensure-services.sh): {exc}")
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    settings = throttled_settings(tmp_path, url, ratelimit_storage_url=REDIS_URL)
    first, second = build_app(settings), build_app(settings)
    reset_database(first)
    make_alice(Api(first.test_client()))
    address = f"10.8.{secrets.randbelow(250)}.{secrets.randbelow(250)}"
    one, two = first.test_client(), second.test_client()
    for i in range(PER_SOURCE):
        node = one if i % 2 else two
        assert login(node, "alice", f"wrong-{i}", address).status_code == 401
    # Both nodes now refuse that address: the counts are shared.
    assert_throttled(login(one, "alice", PASSWORD, address))
    assert_throttled(login(two, "alice", PASSWORD, address))


def test_an_unreachable_redis_falls_back_to_memory(tmp_path: Path, hashes: dict[str, int]) -> None:
    """Redis down: each worker throttles on its own counts; never a 500."""
    settings = throttled_settings(
        tmp_path, f"sqlite:///{tmp_path / 'l.db'}", ratelimit_storage_url="redis://127.0.0.1:1/0"
    )
    app = build_app(settings)
    reset_database(app)
    api = Api(app.test_client())
    make_alice(api)
    for i in range(PER_SOURCE):
        assert login(api.client, "alice", f"wrong-{i}", "10.9.0.1").status_code == 401
    hashes["password"] = 0
    assert_throttled(login(api.client, "alice", PASSWORD, "10.9.0.1"))
    assert hashes["password"] == 0
    assert login(api.client, "alice", PASSWORD, "10.9.0.2").status_code == 201
