"""create_app: the Flask application over the services latchkey.wiring builds."""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

from flask import Flask, Response
from flask.globals import app_ctx
from flask_migrate import Migrate
from flask_smorest.spec.plugins import integerconverter2paramschema
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

import latchkey.migrations
from latchkey.audit import AttackTrail
from latchkey.db import Database
from latchkey.errors import LatchkeyError
from latchkey.frontdoors import keystone
from latchkey.frontdoors.http import credentials as credential_api
from latchkey.frontdoors.http import identity as identity_api
from latchkey.frontdoors.http import policy as policy_api
from latchkey.frontdoors.http import secrets as secrets_api
from latchkey.frontdoors.http import tokens as token_api
from latchkey.frontdoors.http.attack_audit import ATTACK_TRAIL
from latchkey.frontdoors.http.context import PROXIES_EXTENSION
from latchkey.frontdoors.http.fields import BoundedIntegerConverter
from latchkey.frontdoors.http.flask_app import LatchkeyFlask
from latchkey.frontdoors.http.headers import SecurityHeaders
from latchkey.frontdoors.http.openapi import make_api
from latchkey.frontdoors.http.problems import register_problem_handlers
from latchkey.frontdoors.http.proxies import TrustedProxies
from latchkey.frontdoors.http.requests import register_request_hooks
from latchkey.frontdoors.http.throttling import install_throttling
from latchkey.frontdoors.http.validation_lane import (
    VALIDATION_LANE,
    AfterResponseWriter,
    ValidationLane,
)
from latchkey.frontdoors.oauth import api as oauth_api
from latchkey.frontdoors.ops import api as ops_api
from latchkey.logs import configure_logging
from latchkey.settings import Settings
from latchkey.wiring import Services, build_services, open_database

MIGRATIONS_DIR = Path(latchkey.migrations.__file__).parent
log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings.load()
    configure_logging(settings.log_level, settings.log_json)
    # Read by oso's core when a query starts; Polar checks it between steps.
    os.environ["POLAR_TIMEOUT_MS"] = str(settings.policy_timeout_ms)
    settings.home_path.mkdir(parents=True, exist_ok=True)

    app = LatchkeyFlask("latchkey", instance_path=str(settings.home_path))
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_request_bytes,
        API_TITLE="Latchkey",
        API_VERSION="v1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/v1",
        OPENAPI_JSON_PATH="openapi.json",
    )
    database = _bind_database(app, settings)
    # render_as_batch: SQLite can only ALTER tables by copying them.
    Migrate(app, database, directory=str(MIGRATIONS_DIR), render_as_batch=True)

    register_request_hooks(app)
    ops_api.register_metrics_hooks(app)
    # Every <int:...> path parameter fits the database's integer columns (issue 13).
    app.url_map.converters["int"] = BoundedIntegerConverter
    api = make_api(app)  # the document's errors, security and headers (issue 15, point 3)
    api.register_converter(BoundedIntegerConverter, integerconverter2paramschema)
    register_problem_handlers(app)  # after Api(): ours replace flask-smorest's JSON errors
    for blueprint in (
        identity_api.blp,
        credential_api.blp,
        token_api.blp,
        policy_api.blp,
        secrets_api.blp,
        ops_api.blp,
        oauth_api.blp,
    ):
        api.register_blueprint(blueprint)

    # Keystone v3 subset: plain Flask views, outside the native OpenAPI document.
    app.register_blueprint(keystone.blp)
    services = app.extensions["latchkey"] = build_services(settings, database)
    writers: list[AfterResponseWriter] = [services.decision_recorder, services.usage_recorder]
    _write_after_responses(app, database.engine, writers)
    # Online validation's successes skip Flask (issue 17); inside the security headers.
    lane = app.extensions[VALIDATION_LANE] = ValidationLane(app, app.wsgi_app, writers)
    app.wsgi_app = lane  # type: ignore[method-assign]
    _defend(app, settings, database)
    _load_own_secrets(app)
    return app


def _bind_database(app: Flask, settings: Settings) -> Database:
    """One session per application context, removed when the context ends: the
    scoping Flask-SQLAlchemy gave, which views and tests rely on."""
    database = open_database(settings, scopefunc=_app_context_id)

    @app.teardown_appcontext
    def _remove_session(_exc: BaseException | None) -> None:
        database.remove()

    return database


def _app_context_id() -> int:
    return id(app_ctx._get_current_object())  # type: ignore[attr-defined]


def _defend(app: Flask, settings: Settings, database: Database) -> None:
    """Issue 13, classes 6, 7 and 10: whose X-Forwarded-For is believed, throttling of
    the password and secret doors, the audit trail of attacks, browser-facing headers."""
    proxies = TrustedProxies(settings.trusted_proxies)
    app.extensions[PROXIES_EXTENSION] = proxies
    install_throttling(app, settings)
    app.extensions[ATTACK_TRAIL] = AttackTrail(
        lambda: database.engine,
        window_seconds=settings.audit_attack_window_seconds,
        max_events=settings.audit_attack_max_events,
    )
    app.wsgi_app = SecurityHeaders(  # type: ignore[method-assign]
        app.wsgi_app, proxies, settings.hsts_max_age_seconds
    )


def _write_after_responses(app: Flask, engine: Engine, writers: list[AfterResponseWriter]) -> None:
    """Writes that need not delay an answer — decision samples (DecisionRecorder),
    last_used_at (UsageRecorder) — happen once the response has been sent: the
    WSGI server closes the response after writing it, and Flask then calls these."""

    @app.after_request
    def _schedule(response: Response) -> Response:
        for writer in writers:
            if writer.flush_due():
                response.call_on_close(functools.partial(writer.flush, engine))
        return response


def _load_own_secrets(app: Flask) -> None:
    """Signing keys, pepper and bind passwords into memory now: a secret store outage
    after start then leaves token issuance, validation and LDAP logins working."""
    services: Services = app.extensions["latchkey"]
    with app.app_context():
        try:
            services.keys.reload()
            services.peppers.load()
            services.ldap.preload()
        except SQLAlchemyError:
            # A database not migrated yet (first start): everything loads on first use.
            log.info("Latchkey's own secrets will be loaded on first use")
        except LatchkeyError as exc:
            log.warning("cannot load Latchkey's own secrets at start", extra={"error": exc.code})
        finally:
            services.database.remove()
