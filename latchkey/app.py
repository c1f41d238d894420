"""create_app: the one place where Latchkey's services are built and wired."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from flask import Flask
from flask_migrate import Migrate
from flask_smorest import Api
from sqlalchemy.orm import Session

import latchkey.migrations
from latchkey.audit import AuditLog, AuditReader
from latchkey.compat import keystone as keystone_compat
from latchkey.db import db
from latchkey.identity import api as identity_api
from latchkey.identity import credential_api, token_api
from latchkey.identity.accounts import Accounts
from latchkey.identity.authentication import Authentication
from latchkey.identity.backends import IdentityBackend
from latchkey.identity.backends.sql import SqlIdentity
from latchkey.identity.bootstrap import Bootstrap
from latchkey.identity.common import ServiceDeps
from latchkey.identity.credentials import ApplicationCredentials, SecretHasher, UsageRecorder
from latchkey.identity.directory import Directory
from latchkey.identity.keys import KeyRing
from latchkey.identity.ldap_domains import LdapDomains
from latchkey.identity.passwords import PasswordHasher
from latchkey.identity.revocations import RevocationList
from latchkey.identity.roles import Roles
from latchkey.identity.tokens import Tokens
from latchkey.logs import configure_logging
from latchkey.oauth import api as oauth_api
from latchkey.ops import api as ops_api
from latchkey.ops.health import Health
from latchkey.policy import api as policy_api
from latchkey.policy.catalog import Catalog
from latchkey.policy.enforcer import Enforcer
from latchkey.policy.service import DecisionRecorder, Decisions, TenantPolicies
from latchkey.policy.store import Boundaries
from latchkey.secrets import api as secrets_api
from latchkey.secrets.local import LocalSecretStore
from latchkey.secrets.master_key import MasterKeyFile
from latchkey.secrets.service import TenantSecrets
from latchkey.secrets.store import SecretStore
from latchkey.settings import Settings, SettingsError
from latchkey.web.problems import register_problem_handlers
from latchkey.web.requests import register_request_hooks

MIGRATIONS_DIR = Path(latchkey.migrations.__file__).parent


@dataclass(frozen=True)
class Services:
    settings: Settings
    enforcer: Enforcer
    audit: AuditLog
    audit_reader: AuditReader
    keys: KeyRing
    directory: Directory
    accounts: Accounts
    roles: Roles
    credentials: ApplicationCredentials
    tokens: Tokens
    authentication: Authentication
    bootstrap: Bootstrap
    health: Health
    catalog: Catalog
    boundaries: Boundaries
    policies: TenantPolicies
    decisions: Decisions
    secret_store: SecretStore
    secrets: TenantSecrets


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings.load()
    configure_logging(settings.log_level, settings.log_json)
    # Read by oso's core when a query starts; Polar checks it between steps.
    os.environ["POLAR_TIMEOUT_MS"] = str(settings.policy_timeout_ms)
    settings.home_path.mkdir(parents=True, exist_ok=True)

    app = Flask("latchkey", instance_path=str(settings.home_path))
    app.config.update(
        SQLALCHEMY_DATABASE_URI=settings.effective_database_url,
        SQLALCHEMY_ENGINE_OPTIONS={"pool_pre_ping": True},
        MAX_CONTENT_LENGTH=settings.max_request_bytes,
        API_TITLE="Latchkey",
        API_VERSION="v1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/v1",
        OPENAPI_JSON_PATH="openapi.json",
    )
    db.init_app(app)
    # render_as_batch: SQLite can only ALTER tables by copying them.
    Migrate(app, db, directory=str(MIGRATIONS_DIR), render_as_batch=True)

    register_request_hooks(app)
    ops_api.register_metrics_hooks(app)
    api = Api(app)
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
    app.register_blueprint(keystone_compat.blp)
    app.extensions["latchkey"] = build_services(settings)
    return app


def build_services(settings: Settings) -> Services:
    session = db.session
    token_ttl = timedelta(seconds=settings.token_ttl_seconds)
    enforcer = Enforcer()
    audit = AuditLog(session)
    revocations = RevocationList(session, token_ttl)
    hasher = PasswordHasher(
        settings.password_hash_time_cost,
        settings.password_hash_memory_kib,
        settings.password_min_length,
    )
    # The master key seals the signing keys and LDAP bind passwords and derives the
    # credential pepper; the secret-store issue replaces it behind KeyProtector.
    protector = MasterKeyFile(settings.home_path / "master.key")
    ldap = LdapDomains(
        session,
        protector,
        recheck=timedelta(seconds=settings.ldap_recheck_seconds),
        outage_grace=timedelta(seconds=settings.ldap_outage_grace_seconds),
    )
    backends: dict[str, IdentityBackend] = {"sql": SqlIdentity(hasher), "ldap": ldap}
    keys = KeyRing(
        lambda: Session(db.engine),
        protector,
        token_ttl,
        settings.key_refresh_seconds,
    )
    deps = ServiceDeps(session, enforcer, audit, revocations)
    directory = Directory(deps, ldap=ldap)
    accounts = Accounts(deps, directory=directory, hasher=hasher, backends=backends, ldap=ldap)
    roles = Roles(deps, directory=directory, accounts=accounts)
    tokens = Tokens(
        keys,
        revocations,
        audit,
        enforcer,
        issuer=settings.effective_issuer,
        audience=settings.token_audience,
        ttl=token_ttl,
    )
    credentials = ApplicationCredentials(
        deps,
        directory=directory,
        accounts=accounts,
        roles=roles,
        hasher=SecretHasher(protector),
        usage=UsageRecorder(),
        ldap=ldap,
    )
    authentication = Authentication(
        session,
        directory,
        accounts,
        roles,
        tokens,
        audit,
        credentials,
        ldap,
        lockout_attempts=settings.lockout_failure_attempts,
        lockout_duration=timedelta(minutes=settings.lockout_duration_minutes),
    )
    catalog = Catalog(session, enforcer, audit)
    boundaries = Boundaries(lambda: Session(db.engine), settings.policy_boundary_file)
    policies = TenantPolicies(session, enforcer, audit, catalog, boundaries)
    decisions = Decisions(
        session,
        enforcer,
        policies,
        catalog,
        tokens,
        DecisionRecorder(session, catalog, settings.decision_record_percent),
        lambda user_id, project_id: roles.effective_role_names(user_id, project_id=project_id),
    )
    secret_store: SecretStore
    if settings.secret_store == "local":
        secret_store = LocalSecretStore(session, protector)
    elif settings.secret_store == "vault":
        secret_store = _vault_store(settings)
    else:
        raise SettingsError(
            f"secret_store {settings.secret_store!r} is not available yet; use 'local' or 'vault'"
        )
    return Services(
        settings=settings,
        enforcer=enforcer,
        audit=audit,
        audit_reader=AuditReader(audit, enforcer, directory.project_domain_id),
        keys=keys,
        directory=directory,
        accounts=accounts,
        roles=roles,
        credentials=credentials,
        tokens=tokens,
        authentication=authentication,
        bootstrap=Bootstrap(session, hasher, keys, audit, catalog),
        catalog=catalog,
        boundaries=boundaries,
        policies=policies,
        decisions=decisions,
        secret_store=secret_store,
        secrets=TenantSecrets(session, secret_store, decisions, audit),
        health=Health(session, ldap, secret_store),
    )


def _vault_store(settings: Settings) -> SecretStore:
    from latchkey.secrets.vault import VaultSecretStore  # hvac: the optional `vault` extra

    try:
        return VaultSecretStore(
            settings.vault_addr,
            token=settings.vault_token,
            role_id=settings.vault_role_id,
            secret_id=settings.vault_secret_id,
            approle_mount=settings.vault_approle_mount,
            mount=settings.vault_mount,
            prefix=settings.vault_prefix,
            timeout=settings.vault_timeout_seconds,
        )
    except ValueError as exc:
        raise SettingsError(str(exc)) from exc
