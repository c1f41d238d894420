"""Shared fixtures: an isolated app per database backend, a client that fails on 5xx.

Each backend gets one application per test session (schema built with the
real Alembic migrations); every test starts from empty tables plus
``latchkey bootstrap``. PostgreSQL runs against a fresh database that is
dropped at the end (``make test`` makes sure the server is running).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from flask_migrate import upgrade
from sqlalchemy import create_engine, text
from werkzeug.test import TestResponse

from latchkey.app import create_app
from latchkey.db import Database
from latchkey.frontdoors.http.attack_audit import ATTACK_TRAIL
from latchkey.frontdoors.http.throttling import reset_throttling
from latchkey.settings import Settings

pytest_plugins = ["tests.ldap_fixtures"]  # the real slapd: `slapd`, `slapd_up`

ADMIN_PASSWORD = "admin-password-for-tests"
PG_ADMIN_URL = os.environ.get(
    "LATCHKEY_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
BACKENDS = ["sqlite", "postgres"]


class ServerErrorSeen(AssertionError):
    pass


class CheckedClient(FlaskClient):
    """The suite fails on any 5xx: no input may ever produce a server error."""

    def open(self, *args: Any, **kwargs: Any) -> TestResponse:
        response = super().open(*args, **kwargs)
        if response.status_code >= 500 and not getattr(self, "allow_5xx", False):
            raise ServerErrorSeen(
                f"{response.status_code} from {args[0] if args else kwargs.get('path')}: "
                f"{response.get_data(as_text=True)[:500]}"
            )
        return response


def make_settings(home: Path, database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "home": str(home),
        "database_url": database_url,
        "admin_password": ADMIN_PASSWORD,
        "password_hash_time_cost": 1,
        "password_hash_memory_kib": 1024,
        "log_json": True,
        "log_level": "WARNING",
        "decision_record_percent": 100,
        # Throttling stays on, with room for the suite's many deliberate failures;
        # tests/attacks/test_throttling.py sets tight limits of its own.
        "ratelimit_auth_per_source": "100000 per minute",
        "ratelimit_auth_per_account": "100000 per minute",
    }
    values.update(overrides)
    return Settings.from_mapping(values)


def database_of(app: Flask) -> Database:
    """The app's Database: its engine, and the session of the current app context."""
    database: Database = app.extensions["latchkey"].database
    return database


def build_app(settings: Settings) -> Flask:
    app = create_app(settings)
    app.test_client_class = CheckedClient
    with app.app_context():
        upgrade()
    return app


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    name = "latchkey_test_" + secrets.token_hex(4)
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        pytest.fail(f"PostgreSQL is needed at {PG_ADMIN_URL} (run `make test`): {exc}")
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    yield url
    engine_url = url
    # Close the app's pooled connections before dropping the database.
    create_engine(engine_url).dispose()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def apps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Flask]:
    return {}


def _app_for(
    backend: str,
    apps: dict[str, Flask],
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
) -> Flask:
    if backend not in apps:
        home = tmp_path_factory.mktemp(f"home-{backend}")
        if backend == "sqlite":
            url = f"sqlite:///{home / 'latchkey.db'}"
        else:
            url = request.getfixturevalue("postgres_database")
        apps[backend] = build_app(make_settings(home, url))
    return apps[backend]


def reset_database(app: Flask) -> None:
    db = database_of(app)
    with app.app_context():
        db.session.remove()
        # The previous test's buffered decision samples, written now, then emptied.
        app.extensions["latchkey"].decision_recorder.flush(db.engine)
        with db.engine.begin() as conn:
            for table in reversed(db.metadata.sorted_tables):
                conn.execute(table.delete())
        services = app.extensions["latchkey"]
        services.bootstrap.run(ADMIN_PASSWORD)
        services.revocation_index.reset()  # the table was emptied: SQLite reuses its ids
        # Store the default boundary now, not lazily from a second connection while a
        # test request holds SQLite's write lock.
        services.boundaries.forget()
        services.boundaries.current()
        db.session.remove()
    reset_throttling(app)  # counts and the attack trail's windows start afresh
    app.extensions[ATTACK_TRAIL].reset()


@pytest.fixture(params=BACKENDS)
def app(
    request: pytest.FixtureRequest, apps: dict[str, Flask], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Flask]:
    application = _app_for(request.param, apps, request, tmp_path_factory)
    reset_database(application)
    yield application
    with application.app_context():
        database_of(application).session.remove()


@pytest.fixture
def sqlite_app(
    request: pytest.FixtureRequest, apps: dict[str, Flask], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Flask]:
    application = _app_for("sqlite", apps, request, tmp_path_factory)
    reset_database(application)
    yield application


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


class Api:
    """Tiny helper over the test client: tokens and JSON calls."""

    def __init__(self, client: FlaskClient) -> None:
        self.client = client

    def login(
        self,
        name: str,
        password: str,
        *,
        project: str | None = None,
        domain_scope: str | None = None,
        user_domain: str = "default",
        project_domain: str = "default",
    ) -> str:
        response = self.client.post(
            "/v1/auth/tokens",
            json=password_auth(
                name,
                password,
                project=project,
                domain_scope=domain_scope,
                user_domain=user_domain,
                project_domain=project_domain,
            ),
        )
        assert response.status_code == 201, response.get_json()
        return str(response.get_json()["token"])

    def admin_token(self) -> str:
        return self.login("admin", ADMIN_PASSWORD, project="admin")

    def call(
        self, method: str, path: str, token: str | None = None, json: Any = None, **kwargs: Any
    ) -> TestResponse:
        headers = dict(kwargs.pop("headers", {}))
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return self.client.open(path, method=method, json=json, headers=headers, **kwargs)

    def ok(
        self,
        method: str,
        path: str,
        token: str | None = None,
        json: Any = None,
        status: int | None = None,
    ) -> Any:
        response = self.call(method, path, token, json)
        expected = status or {"POST": 201, "DELETE": 204, "PUT": 204}.get(method, 200)
        assert response.status_code == expected, (method, path, response.get_json())
        return response.get_json(silent=True)


def password_auth(
    name: str,
    password: str,
    *,
    project: str | None = None,
    domain_scope: str | None = None,
    user_domain: str = "default",
    project_domain: str = "default",
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "auth": {
            "password": {
                "user": {"name": name, "domain": {"id": user_domain}},
                "password": password,
            }
        }
    }
    if project:
        body["scope"] = {"project": {"name": project, "domain": {"id": project_domain}}}
    elif domain_scope:
        body["scope"] = {"domain": {"id": domain_scope}}
    return body


@pytest.fixture
def api(client: FlaskClient) -> Api:
    return Api(client)


@pytest.fixture
def admin_token(api: Api) -> str:
    return api.admin_token()
