"""build_services: every Latchkey service built once, from settings and the database.

No Flask here: the HTTP front door (latchkey/app.py), the CLI and any other host get
the same services from the same Database they hand in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import URL, make_url
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool

from latchkey.audit import AuditLog, AuditReader
from latchkey.changes.generation import ChangeGeneration
from latchkey.changes.postgres import CHANNEL as REVOCATION_CHANNEL
from latchkey.changes.postgres import (
    POLICY_CHANNEL,
    PRINCIPAL_CHANNEL,
    ChangeListener,
    RevocationListener,
)
from latchkey.changes.sqlite import SqliteChanges
from latchkey.credentials.keystone import KeystoneCredentials, OAuth1Consumers
from latchkey.credentials.service import (
    ApplicationCredentials,
    PepperRing,
    SecretHasher,
    UsageRecorder,
)
from latchkey.credentials.trusts import Trusts
from latchkey.db import CONNECT_TIMEOUT_SECONDS, Database
from latchkey.health import Health
from latchkey.identity.accounts import Accounts
from latchkey.identity.backends import IdentityBackends
from latchkey.identity.backends.ldap.domains import LdapDomains
from latchkey.identity.backends.sql import SqlIdentity
from latchkey.identity.bootstrap import Bootstrap
from latchkey.identity.common import ServiceDeps
from latchkey.identity.directory import Directory
from latchkey.identity.domain_configs import DomainConfigs
from latchkey.identity.passwords import PasswordHasher
from latchkey.identity.roles import Roles
from latchkey.metrics import instrument_store
from latchkey.policy.catalog import Catalog
from latchkey.policy.decisions import DecisionLimits, Decisions, PrincipalCache
from latchkey.policy.documents import PolicyLimits
from latchkey.policy.domains import DomainPolicies
from latchkey.policy.enforcer import Enforcer
from latchkey.policy.recorder import DecisionRecorder
from latchkey.policy.store import Boundaries
from latchkey.policy.versions import TenantPolicies
from latchkey.secrets.backends import SecretStore
from latchkey.secrets.backends.local import LocalSecretStore
from latchkey.secrets.backends.master_key import MasterKeyFile
from latchkey.secrets.service import TenantSecrets
from latchkey.secrets.system import SystemSecrets
from latchkey.settings import Settings, SettingsError
from latchkey.tokens.authentication import Authentication
from latchkey.tokens.keys import KeyRing
from latchkey.tokens.revocations import RevocationIndex, RevocationList
from latchkey.tokens.service import Tokens


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
    domain_policies: DomainPolicies
    revocation_index: RevocationIndex
    decisions: Decisions
    decision_recorder: DecisionRecorder
    usage_recorder: UsageRecorder
    secret_store: SecretStore
    secrets: TenantSecrets
    system_secrets: SystemSecrets
    peppers: PepperRing
    ldap: LdapDomains
    keystone_credentials: KeystoneCredentials
    oauth1_consumers: OAuth1Consumers
    domain_configs: DomainConfigs
    database: Database


def open_database(settings: Settings, scopefunc: Callable[[], Any] | None = None) -> Database:
    """Latchkey's Database for ``settings``; ``scopefunc``: see ``Database``."""
    url, options = _sqlite_defaults(
        make_url(settings.effective_database_url), engine_options(settings), settings.home_path
    )
    return Database(url, scopefunc=scopefunc, **options)


def _sqlite_defaults(url: URL, options: dict[str, Any], home: Path) -> tuple[URL, dict[str, Any]]:
    """What Flask-SQLAlchemy did for SQLite, kept: a relative file is in the home
    directory; an in-memory database is one connection shared by every thread."""
    if url.get_backend_name() != "sqlite":
        return url, options
    if url.database in (None, "", ":memory:"):
        connect_args = {**options.get("connect_args", {}), "check_same_thread": False}
        return url, {**options, "poolclass": StaticPool, "connect_args": connect_args}
    is_uri = bool(url.query.get("uri"))
    path = url.database[len("file:") :] if is_uri else url.database
    if Path(path).is_absolute():
        return url, options
    home.mkdir(parents=True, exist_ok=True)
    path = str(home / path)
    return url.set(database=f"file:{path}" if is_uri else path), options


def policy_limits_of(settings: Settings) -> PolicyLimits:
    """What a tenant document may hold (issue 13, class 1)."""
    return PolicyLimits(
        max_rules=settings.policy_max_rules,
        max_actions=settings.policy_max_actions,
        max_conditions=settings.policy_max_conditions,
        max_list=settings.policy_max_list,
        max_string=settings.policy_max_string,
        max_glob_length=settings.policy_max_glob_length,
        max_glob_stars=settings.policy_max_glob_stars,
        max_glob_wildcards=settings.policy_max_glob_wildcards,
        max_document_bytes=settings.policy_max_document_bytes,
        max_cost=settings.policy_max_cost,
        max_principals=settings.policy_max_principals,
    )


def decision_limits_of(settings: Settings) -> DecisionLimits:
    """What a decision request may send and cost (issue 13, class 1)."""
    return DecisionLimits(
        max_attributes=settings.decision_max_attributes,
        max_attribute_length=settings.decision_max_attribute_length,
        max_attribute_items=settings.decision_max_attribute_items,
        max_cost=settings.decision_max_cost,
        budget_ms=settings.decision_budget_ms,
        batch_budget_ms=settings.decision_batch_budget_ms,
    )


def engine_options(settings: Settings) -> dict[str, Any]:
    """The SQLAlchemy engine's options: every one in this one place."""
    postgresql = _is_postgresql(settings)
    options: dict[str, Any] = {
        # PostgreSQL's connections are checked in one round trip by latchkey.db's
        # _ping_postgresql instead (pool_pre_ping costs three there).
        "pool_pre_ping": not postgresql,
        # A database error's message (logged with its traceback) never carries the
        # statement's parameters: password hashes, secrets, tokens (issue 13).
        "hide_parameters": True,
        # A database that is gone costs a request its 503 within seconds, not
        # libpq's unbounded wait (issue 15).
        **_connect_timeout(settings),
    }
    for name, least in (
        ("db_pool_size", 1),
        ("db_max_overflow", 0),
        ("db_pool_timeout_seconds", 1),
    ):
        if getattr(settings, name) < least:
            raise SettingsError(f"setting {name!r} must be at least {least}")
    if postgresql:
        # Issue 15, point 5: the pool per worker (docs/operations.md "Sizing"). SQLite
        # keeps the pool SQLAlchemy gives it (its connections are files).
        options.update(
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            pool_timeout=settings.db_pool_timeout_seconds,
        )
    return options


def _connect_timeout(settings: Settings) -> dict[str, Any]:
    """libpq's connect_timeout for the pool, unless the database URL sets one (issue 15)."""
    url = make_url(settings.effective_database_url)
    if url.get_backend_name() != "postgresql" or "connect_timeout" in url.query:
        return {}
    return {"connect_args": {"connect_timeout": CONNECT_TIMEOUT_SECONDS}}


def _is_postgresql(settings: Settings) -> bool:
    return make_url(settings.effective_database_url).get_backend_name() == "postgresql"


def build_services(settings: Settings, database: Database) -> Services:
    session = database.session
    token_ttl = timedelta(seconds=settings.token_ttl_seconds)
    enforcer = Enforcer()
    audit = AuditLog(session)
    # This process's mirror of the revocation events; it queries only when the
    # database says something changed (PostgreSQL: LISTEN/NOTIFY on the events;
    # SQLite: PRAGMA data_version, any commit).
    url = settings.effective_database_url
    # One LISTENing connection per worker on PostgreSQL, for every channel.
    listener = ChangeListener.for_database(url)
    revocation_index = RevocationIndex(
        RevocationListener.for_database(url, REVOCATION_CHANNEL, listener)
        or SqliteChanges.for_database(url)
    )
    revocations = RevocationList(session, token_ttl, revocation_index)
    hasher = PasswordHasher(
        settings.password_hash_time_cost,
        settings.password_hash_memory_kib,
        settings.password_min_length,
    )
    # The master key is the local store's KEK only. Signing keys, the credential pepper
    # and LDAP bind passwords live in the configured store, chosen further down.
    protector = MasterKeyFile(settings.home_path / "master.key")
    system = SystemSecrets(session, lambda: secret_store)
    ldap = LdapDomains(
        session,
        system,
        recheck=timedelta(seconds=settings.ldap_recheck_seconds),
        outage_grace=timedelta(seconds=settings.ldap_outage_grace_seconds),
    )
    backends = IdentityBackends(SqlIdentity(session, hasher), ldap)
    keys = KeyRing(
        lambda: Session(database.engine),
        system,
        token_ttl,
        settings.key_refresh_seconds,
    )
    peppers = PepperRing(system, settings.key_refresh_seconds)
    deps = ServiceDeps(session, enforcer, audit, revocations)
    directory = Directory(deps, backends=backends)
    accounts = Accounts(deps, directory=directory, hasher=hasher, backends=backends)
    roles = Roles(deps, directory=directory, accounts=accounts)
    tokens = Tokens(
        keys,
        revocations,
        audit,
        enforcer,
        issuer=settings.effective_issuer,
        audience=settings.token_audience,
        ttl=token_ttl,
        verified_cache_size=settings.verified_token_cache_size,
        every_admin_is_cloud_admin=settings.keystone_every_admin_is_cloud_admin,
    )
    usage_recorder = UsageRecorder()
    credentials = ApplicationCredentials(
        deps,
        directory=directory,
        accounts=accounts,
        roles=roles,
        hasher=SecretHasher(peppers),
        usage=usage_recorder,
        backends=backends,
    )
    authentication = Authentication(
        session,
        directory,
        accounts,
        roles,
        tokens,
        audit,
        credentials,
        backends,
        lockout_attempts=settings.lockout_failure_attempts,
        lockout_duration=timedelta(minutes=settings.lockout_duration_minutes),
        trusts=Trusts(deps, directory=directory, roles=roles),  # OS-TRUST (issue 14)
    )
    catalog = Catalog(session, enforcer, audit, region=settings.region)
    # Policy versions and the boundary are kept until the database says they changed
    # (PostgreSQL: NOTIFY on latchkey_policy; SQLite: any commit), not re-read every 2 s.
    policy_changes = ChangeGeneration(
        RevocationListener.for_database(url, POLICY_CHANNEL, listener)
        or SqliteChanges.for_database(url)
    )
    boundaries = Boundaries(
        lambda: Session(database.engine), settings.policy_boundary_file, policy_changes
    )
    policy_limits = policy_limits_of(settings)
    domain_policies = DomainPolicies(
        session, enforcer, audit, catalog, policy_changes, policy_limits
    )
    policies = TenantPolicies(
        session,
        enforcer,
        audit,
        catalog,
        boundaries,
        domain_policies,
        policy_changes,
        policy_limits,
    )
    decision_recorder = DecisionRecorder(session, catalog, settings.decision_record_percent)
    decisions = Decisions(
        session,
        enforcer,
        policies,
        catalog,
        tokens,
        decision_recorder,
        lambda user_id, project_id: roles.effective_role_names(user_id, project_id=project_id),
        # Users kept until the database says users or memberships changed.
        PrincipalCache(
            RevocationListener.for_database(url, PRINCIPAL_CHANNEL, listener)
            or SqliteChanges.for_database(url),
            session,
        ),
        decision_limits_of(settings),
    )
    # Latchkey's own actions on a project's resources answer to its tenant policy too.
    enforcer.use_tenant_layer(decisions)
    secret_store: SecretStore
    if settings.secret_store == "local":
        secret_store = LocalSecretStore(session, protector)
    elif settings.secret_store == "vault":
        secret_store = _vault_store(settings)
    elif settings.secret_store == "barbican":
        secret_store = _barbican_store(settings)
    else:
        raise SettingsError(
            f"unknown secret_store {settings.secret_store!r}; use local, vault or barbican"
        )
    instrument_store(secret_store)  # latency and errors per call (issue 15, point 6)
    keystone_credentials = KeystoneCredentials(
        deps, system=system, roles=roles, tokens=tokens, backends=backends
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
        bootstrap=Bootstrap(session, hasher, keys, audit, catalog, peppers),
        catalog=catalog,
        boundaries=boundaries,
        policies=policies,
        domain_policies=domain_policies,
        revocation_index=revocation_index,
        decisions=decisions,
        decision_recorder=decision_recorder,
        usage_recorder=usage_recorder,
        secret_store=secret_store,
        secrets=TenantSecrets(session, secret_store, decisions, audit),
        health=Health(session, ldap, secret_store, listener, keys),
        system_secrets=system,
        peppers=peppers,
        ldap=ldap,
        keystone_credentials=keystone_credentials,
        oauth1_consumers=OAuth1Consumers(deps, sealer=keystone_credentials.sealer),
        domain_configs=DomainConfigs(deps),
        database=database,
    )


def _vault_store(settings: Settings) -> SecretStore:
    from latchkey.secrets.backends.vault import VaultSecretStore  # hvac: the optional `vault` extra

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


def _barbican_store(settings: Settings) -> SecretStore:
    from latchkey.secrets.backends.barbican import (
        BarbicanSecretStore,  # requests: the `barbican` extra
    )

    try:
        return BarbicanSecretStore(
            settings.barbican_url,
            auth=settings.barbican_auth,
            project_id=settings.barbican_project_id,
            user_id=settings.barbican_user_id,
            roles=settings.barbican_roles,
            keystone_url=settings.barbican_keystone_url,
            application_credential_id=settings.barbican_application_credential_id,
            application_credential_secret=settings.barbican_application_credential_secret,
            timeout=settings.barbican_timeout_seconds,
        )
    except ValueError as exc:
        raise SettingsError(str(exc)) from exc
