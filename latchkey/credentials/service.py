"""Application credentials: id + secret, scoped to one project, a subset of roles.

Secrets are generated here (256 bits, URL-safe), shown once, and stored as
HMAC-SHA-256 under a pepper kept in the secret store (so a copy of the
database alone cannot test guesses). Pepper versions are named in each hash
(``<version>$<hex>``): the Foundation's were derived from the master key (their
version is the master key's, "1", "2", ...) and were moved into the store by
``latchkey secrets migrate-internal``; new ones are random bytes. High-entropy
secrets need no slow KDF: checking one costs one HMAC, not Keystone's ~250 ms of
bcrypt.

A credential has one or more live secrets (rotation without downtime), each
with its own optional expiry.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import logging
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NoReturn

from sqlalchemy import (
    Engine,
    Select,
    and_,
    bindparam,
    select,
    update,
)
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import aliased, defer

from latchkey.audit import AUTHENTICATION, AuditTarget
from latchkey.credentials.models import ApplicationCredential, CredentialSecret, UserAccessRule
from latchkey.credentials.records import (
    AccessRuleRecord,
    CreatedCredential,
    CredentialRecord,
    SecretRecord,
)
from latchkey.db import DbSession, utcnow
from latchkey.errors import (
    AuthenticationFailed,
    Conflict,
    Forbidden,
    InvalidRequest,
    LatchkeyError,
    NotFound,
    ServiceUnavailable,
)
from latchkey.identity.accounts import APPLICATION, Accounts
from latchkey.identity.backends import IdentityBackends
from latchkey.identity.common import IdentityServiceBase, ServiceDeps
from latchkey.identity.directory import Directory
from latchkey.identity.models import Domain, Project, User
from latchkey.identity.roles import Roles, held_role_names_json, parse_held_roles
from latchkey.policy.context import CallContext
from latchkey.policy.enforcer import Target
from latchkey.secrets.backends import SecretStoreUnavailable
from latchkey.secrets.backends.master_key import KeyProtector
from latchkey.secrets.system import SystemSecrets
from latchkey.tokens.revocations import APPLICATION_CREDENTIAL, CREDENTIAL_SECRET, USER
from latchkey.wire.access_rules import MAX_RULES, AccessRuleError, validate_rule, within
from latchkey.wire.jws import TokenInvalid

log = logging.getLogger(__name__)

SECRET_PREFIX = "lkac_"  # makes leaked secrets easy for scanners to spot
SECRET_BYTES = 32  # 256 bits
PEPPER_PURPOSE = "application-credential-pepper"  # the Foundation's HKDF info
PEPPER_PREFIX = "credential-pepper-"  # + version: its name in the secret store
PEPPER_BYTES = 32
UNKNOWN_PEPPER_RELOAD_INTERVAL = 1.0  # seconds; bounds reloads forced by odd hashes
MAX_SECRETS = 10
MAX_CIDRS = 50
USAGE_WRITE_INTERVAL = 60.0  # seconds between last_used_at writes per credential and process
FLUSH_SECONDS = 1.0  # noted last_used_at times are written at most this often …
USAGE_FLUSH_ROWS = 500  # … or once this many are waiting


def access_rule_id(rule: Mapping[str, str]) -> str:
    """A rule's id: the same rule (service, method, path) has the same id everywhere,
    in tokens and in listings, before and after it was first stored."""
    digest = hashlib.sha256("\x1f".join((rule["service"], rule["method"], rule["path"])).encode())
    return digest.hexdigest()[:32]


@dataclass(frozen=True)
class VerifiedCredential:
    credential: ApplicationCredential
    secret: CredentialSecret
    owner: User
    owner_domain: Domain
    directory_group_ids: list[str] = field(default_factory=list)
    # Loaded with the credential (a login needs them): None only if gone meanwhile.
    project: Project | None = None
    project_domain: Domain | None = None
    # The roles the owner holds on the credential's project, read with the credential
    # (no directory groups counted: ``held_roles`` says when they are usable).
    roles_read_with_credential: frozenset[str] = frozenset()

    @property
    def held_roles(self) -> frozenset[str] | None:
        """The owner's roles on the project, when the credential's query could tell
        them: not when a directory adds groups (their grants need the full query)."""
        return None if self.directory_group_ids else self.roles_read_with_credential


@dataclass(frozen=True)
class ParentLimits:
    """What the credential behind a token holds, for what that token mints (issue 13,
    class 4): a credential never creates more than it holds.

    What a request leaves open is inherited (capped); what it asks beyond the parent
    is refused (403, a code naming what was too wide). ``expires_at`` is the earlier of
    the credential's and the token's secret's expiry: holding that secret lets one in
    until then, never longer (docs/credentials.md, docs/decisions.md).
    """

    credential_id: str
    project_id: str | None
    roles: frozenset[str]
    expires_at: datetime | None
    access_rules: list[dict[str, str]]
    allowed_cidrs: list[str]

    def check_scope(self, project_id: str, roles: set[str]) -> None:
        if project_id != self.project_id or not roles <= self.roles:
            raise Forbidden(
                "a credential cannot create one with more than it holds", code="role_not_held"
            )

    def cap_expiry(self, requested: datetime | None) -> datetime | None:
        if self.expires_at is None:
            return requested
        if requested is None:
            return self.expires_at
        if requested > self.expires_at:
            raise Forbidden(
                "expires_at is later than the expiry of the credential (or secret) behind"
                f" this token ({self.expires_at.isoformat()})",
                code="expires_at_beyond_parent",
                extra={"pointer": "/expires_at"},
            )
        return requested

    def narrow_rules(
        self, requested: list[dict[str, str]], inherit: bool = True
    ) -> list[dict[str, str]]:
        """None asked: the parent's rules. Each one asked must fit within one of them."""
        if not self.access_rules:
            return requested
        if not requested and inherit:
            return list(self.access_rules)
        if not requested:
            raise Forbidden(
                "the credential behind this token has access rules; this one has none",
                code="access_rules_beyond_parent",
                extra={"pointer": "/access_rules"},
            )
        for index, rule in enumerate(requested):
            if not within(self.access_rules, rule):
                raise Forbidden(
                    f"access_rules[{index}] allows calls the credential behind this token"
                    " may not make",
                    code="access_rules_beyond_parent",
                    extra={"pointer": f"/access_rules/{index}"},
                )
        return requested

    def narrow_cidrs(self, requested: list[str], inherit: bool = True) -> list[str]:
        """None asked: the parent's networks. Each one asked must lie inside one of them."""
        if not self.allowed_cidrs:
            return requested
        if not requested and inherit:
            return list(self.allowed_cidrs)
        if not requested:
            raise Forbidden(
                "the credential behind this token is limited to allowed_cidrs; this one is not",
                code="allowed_cidrs_beyond_parent",
                extra={"pointer": "/allowed_cidrs"},
            )
        parents = [ipaddress.ip_network(cidr) for cidr in self.allowed_cidrs]
        for index, cidr in enumerate(requested):
            network = ipaddress.ip_network(cidr)
            if not any(_subnet_of(network, parent) for parent in parents):
                raise Forbidden(
                    f"allowed_cidrs[{index}] reaches beyond the networks of the credential"
                    " behind this token",
                    code="allowed_cidrs_beyond_parent",
                    extra={"pointer": f"/allowed_cidrs/{index}"},
                )
        return requested


def _subnet_of(
    network: ipaddress.IPv4Network | ipaddress.IPv6Network,
    parent: ipaddress.IPv4Network | ipaddress.IPv6Network,
) -> bool:
    if network.version != parent.version:
        return False
    return network.subnet_of(parent)  # type: ignore[arg-type]


@dataclass(frozen=True)
class _Found:
    """A credential and what verifying it and issuing its token read, loaded at once."""

    credential: ApplicationCredential
    secrets: list[CredentialSecret]  # oldest first
    owner: User | None
    owner_domain: Domain | None
    project: Project | None
    project_domain: Domain | None
    held_roles: frozenset[str]


class PepperRing:
    """Every pepper version, read from the secret store once and held in memory.

    The newest registered version hashes new secrets; every version verifies. The
    registry (database) is re-read every ``refresh_seconds`` and when a hash names
    an unknown version (another worker rotated); the store is asked only for
    versions not yet in memory, so an outage after start changes nothing.
    """

    legacy_label = "credential pepper versions"

    def __init__(self, system: SystemSecrets, refresh_seconds: float) -> None:
        self._system = system
        self._refresh = refresh_seconds
        self._peppers: dict[str, bytes] = {}
        self._unreadable: set[str] = set()  # registered, but the store did not answer
        self._current: str | None = None
        self._loaded_at = float("-inf")
        self._forced_at = float("-inf")
        self._lock = threading.Lock()

    def load(self) -> None:
        with self._lock:
            entries = self._system.entries(PEPPER_PREFIX)
            unreadable = set()
            for entry in entries:
                version = entry.name.removeprefix(PEPPER_PREFIX)
                if version in self._peppers:
                    continue
                try:
                    self._peppers[version] = self._system.get(entry.name)
                except LatchkeyError as exc:
                    unreadable.add(version)
                    log.warning(
                        "cannot read a credential pepper version from the secret store",
                        extra={"version": version, "error": exc.code},
                    )
            readable = [
                e.name.removeprefix(PEPPER_PREFIX)
                for e in entries
                if e.name.removeprefix(PEPPER_PREFIX) in self._peppers
            ]
            # The newest one this process can use; an unreadable newer one waits.
            self._current = readable[-1] if readable else None
            self._unreadable = unreadable
            self._loaded_at = time.monotonic()

    def current(self) -> tuple[str, bytes]:
        if self._current is None or time.monotonic() - self._loaded_at > self._refresh:
            self.load()
        version = self._current
        if version is None:
            if self._unreadable:
                # Registered, but the store refused: retried on the next call (issue 15).
                raise SecretStoreUnavailable(
                    "the credential pepper cannot be read from the secret store yet;"
                    " check the secret store, Latchkey retries by itself",
                    code="credential_pepper_unavailable",
                )
            raise ServiceUnavailable(
                "the database holds no credential pepper; run `latchkey bootstrap`",
                code="no_credential_pepper",
            )
        return version, self._peppers[version]

    def get(self, version: str) -> bytes | None:
        """The pepper of ``version``; None if no such version exists."""
        pepper = self._peppers.get(version)
        if pepper is not None:
            return pepper
        now = time.monotonic()
        if now - self._forced_at >= UNKNOWN_PEPPER_RELOAD_INTERVAL or version in self._unreadable:
            self._forced_at = now
            self.load()
        if version in self._unreadable:
            raise SecretStoreUnavailable(
                "the credential pepper cannot be read from the secret store"
            )
        return self._peppers.get(version)

    def ensure(self) -> bool:
        """Create a first pepper if none is registered (bootstrap). True if created."""
        if self._system.entries(PEPPER_PREFIX):
            self.load()
            return False
        self.rotate()
        return True

    def rotate(self) -> str:
        """A new random pepper version, used for new secrets from now on; old ones stay."""
        version = secrets.token_hex(6)  # never a master key version ("1", "2", ...)
        session = self._system.session
        try:
            self._system.put(PEPPER_PREFIX + version, secrets.token_bytes(PEPPER_BYTES))
            session.commit()
        except BaseException:
            session.rollback()
            raise
        self.load()
        return version

    # -- the Foundation's derived peppers --------------------------------------------

    def _legacy_versions(self) -> set[str]:
        hashes = self._system.session.scalars(select(CredentialSecret.secret_hash))
        used = {stored.partition("$")[0] for stored in hashes}
        registered = {
            e.name.removeprefix(PEPPER_PREFIX) for e in self._system.entries(PEPPER_PREFIX)
        }
        return used - registered

    def legacy_count(self) -> int:
        return len(self._legacy_versions())

    def migrate_legacy(self, legacy: KeyProtector) -> int:
        """Store the derived pepper of every version existing hashes name, then make a
        random version current: old hashes verify, new ones no longer depend on the
        master key."""
        versions = sorted(self._legacy_versions())
        session = self._system.session
        try:
            for version in versions:
                self._system.put(
                    PEPPER_PREFIX + version, legacy.derive_key(PEPPER_PURPOSE, version)[1]
                )
            session.commit()
        except BaseException:
            session.rollback()
            raise
        if versions:
            self.rotate()
        return len(versions)


class SecretHasher:
    """HMAC-SHA-256 with a pepper that never touches the database."""

    def __init__(self, peppers: PepperRing) -> None:
        self._peppers = peppers

    def hash(self, secret: str) -> str:
        version, pepper = self._peppers.current()
        return f"{version}${self._mac(pepper, secret)}"

    def matches(self, secret: str, stored: str) -> bool:
        version, _, expected = stored.partition("$")
        pepper = self._peppers.get(version)
        if pepper is None:
            self._mac(b"\0" * PEPPER_BYTES, secret)  # the same cost as a real check
            return False
        return hmac.compare_digest(self._mac(pepper, secret), expected)

    def burn(self, secret: str) -> None:
        """Spend the cost of one check when there is nothing to check against."""
        self._mac(b"\0" * PEPPER_BYTES, secret)

    @staticmethod
    def _mac(pepper: bytes, secret: str) -> str:
        return hmac.new(pepper, secret.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


def generate_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(SECRET_BYTES)


class UsageRecorder:
    """last_used_at of credentials and their secrets, at most once a minute per row in
    this process, written after a response has been sent.

    A login only notes the time; ``flush`` writes what is noted in one transaction
    (two statements), called after the response (``flush_due``, wired in app.py)
    and before anything shows the times (``flush_into``). With 5,000 credentials
    in use nearly every login is a first use in its minute: two UPDATEs in the
    login's own transaction were a quarter of its time. Informational times may
    thus reach other workers' readers up to ``FLUSH_SECONDS`` late, and a worker
    that dies loses its last second of them.
    """

    def __init__(self, interval: float = USAGE_WRITE_INTERVAL) -> None:
        self._interval = interval
        self._last_write: dict[str, float] = {}
        self._lock = threading.Lock()
        self._credentials: dict[str, datetime] = {}
        self._secrets: dict[str, datetime] = {}
        self._last_flush = time.monotonic()

    def due(self, key: str) -> bool:
        now = time.monotonic()
        with self._lock:
            if now - self._last_write.get(key, float("-inf")) < self._interval:
                return False
            self._last_write[key] = now
            return True

    def note(self, credential_id: str, secret_id: str, when: datetime) -> None:
        if self.due(credential_id):
            with self._lock:
                self._credentials[credential_id] = when
        if self.due("secret:" + secret_id):
            with self._lock:
                self._secrets[secret_id] = when

    def flush_due(self) -> bool:
        waiting = len(self._credentials) + len(self._secrets)
        return waiting > 0 and (
            waiting >= USAGE_FLUSH_ROWS or time.monotonic() - self._last_flush >= FLUSH_SECONDS
        )

    def flush(self, engine: Engine) -> None:
        with self._lock:
            credentials, self._credentials = self._credentials, {}
            secrets_, self._secrets = self._secrets, {}
            self._last_flush = time.monotonic()
        if not credentials and not secrets_:
            return
        try:
            with engine.begin() as connection:
                for statement, rows in ((_USED_CREDENTIAL, credentials), (_USED_SECRET, secrets_)):
                    if rows:
                        connection.execute(
                            statement,
                            [{"row_id": k, "last_used_at": v} for k, v in sorted(rows.items())],
                        )
        except SQLAlchemyError as exc:  # informational: never an error for anyone
            log.warning(
                "last_used_at of %d rows not written: %s",
                len(credentials) + len(secrets_),
                type(exc).__name__,
            )

    def flush_into(self, session: DbSession) -> None:
        """Before reading the times in a request: this process's noted ones first (on
        their own connection; rows the session already holds are reloaded)."""
        if self._credentials or self._secrets:
            bind = session.get_bind()
            self.flush(bind if isinstance(bind, Engine) else bind.engine)
            session.expire_all()


class ApplicationCredentials(IdentityServiceBase):
    def __init__(
        self,
        deps: ServiceDeps,
        *,
        directory: Directory,
        accounts: Accounts,
        roles: Roles,
        hasher: SecretHasher,
        usage: UsageRecorder,
        backends: IdentityBackends,
    ) -> None:
        super().__init__(deps)
        self._backends = backends
        self._directory = directory
        self._accounts = accounts
        self._roles = roles
        self._hasher = hasher
        self._usage = usage

    # -- management ---------------------------------------------------------------

    def create(self, ctx: CallContext, owner_id: str, data: dict[str, Any]) -> CreatedCredential:
        action = "identity:application_credential:create"
        attributes = {"name": data["name"], "unrestricted": bool(data.get("unrestricted"))}
        owner = self._enforced_owner(ctx, action, owner_id, attributes=attributes)
        # An unknown project is one where the owner holds nothing: the same answer as
        # for someone else's, so the endpoint reveals no project ids. Only then does
        # the project's own policy decide (it would otherwise tell a stranger that the
        # project exists and has one).
        project = self._directory.find_project(
            project_id=data["project_id"], name=None, domain_id=None
        )
        held = (
            self._roles.effective_role_names(
                owner.id, project_id=project.id, directory_group_ids=self._directory_groups(owner)
            )
            if project is not None
            else set()
        )
        if project is None or not held:
            raise Forbidden("the owner holds no role on that project", code="no_roles_on_project")
        decided = owner.owner_project_id if owner.kind == APPLICATION else None
        if project.id != decided and ctx.auth is not None:
            self._enforcer.enforce_tenant_policy(ctx.auth, action, project.id, attributes)
        roles = self._requested_roles(data.get("roles"), held)
        expires_at = _future(data.get("expires_at"), "expires_at")
        access_rules = _access_rules(data.get("access_rules") or [])
        allowed_cidrs = _cidrs(data.get("allowed_cidrs") or [])
        # An unrestricted credential may mint credentials, never with more than it holds.
        parent = self._parent_limits(ctx)
        if parent is not None:
            parent.check_scope(project.id, roles)
            expires_at = parent.cap_expiry(expires_at)
            access_rules = parent.narrow_rules(access_rules)
            allowed_cidrs = parent.narrow_cidrs(allowed_cidrs)
        if self._session.scalar(
            select(ApplicationCredential.id).where(
                ApplicationCredential.user_id == owner.id,
                ApplicationCredential.name == data["name"],
            )
        ):
            raise Conflict(
                f"a credential named {data['name']!r} exists for this user",
                code="application_credential_name_taken",
            )
        credential = ApplicationCredential(
            name=data["name"],
            description=data.get("description", ""),
            user_id=owner.id,
            project_id=project.id,
            roles=sorted(roles),
            unrestricted=bool(data.get("unrestricted", False)),
            expires_at=expires_at,
            access_rules=access_rules,
            allowed_cidrs=allowed_cidrs,
        )
        self._session.add(credential)
        self._keep_access_rules(owner.id, access_rules)
        self._session.flush()
        secret, value = self._new_secret(credential, expires_at)
        self._record_change(
            ctx,
            "identity:application_credential:create",
            _target(credential),
            name=credential.name,
            roles=credential.roles,
            unrestricted=credential.unrestricted,
            **({"parent_credential_id": parent.credential_id} if parent else {}),
        )
        self._commit(
            "application_credential_name_taken", "a credential with this name exists for this user"
        )
        return CreatedCredential(
            CredentialRecord.of(credential, [secret]), SecretRecord.of(secret), value
        )

    def list_credentials(
        self, ctx: CallContext, owner_id: str, name: str | None = None
    ) -> list[CredentialRecord]:
        self._usage.flush_into(self._session)
        owner = self._enforced_owner(ctx, "identity:application_credential:list", owner_id)
        query = select(ApplicationCredential).where(ApplicationCredential.user_id == owner.id)
        if name:
            query = query.where(ApplicationCredential.name == name)
        found = list(self._session.scalars(query.order_by(ApplicationCredential.name)))
        return self._with_secrets(found)

    def get(self, ctx: CallContext, owner_id: str, credential_id: str) -> CredentialRecord:
        self._usage.flush_into(self._session)
        self._enforced_owner(ctx, "identity:application_credential:get", owner_id, credential_id)
        credential = self._owned(owner_id, credential_id)
        return CredentialRecord.of(credential, self._secrets_of(credential.id))

    def _with_secrets(self, credentials: list[ApplicationCredential]) -> list[CredentialRecord]:
        """The credentials with their secrets, read in one query for all of them."""
        if not credentials:
            return []
        query = select(CredentialSecret).where(
            CredentialSecret.credential_id.in_([c.id for c in credentials])
        )
        secrets_by_credential: dict[str, list[CredentialSecret]] = {}
        for secret in self._session.scalars(query.order_by(CredentialSecret.created_at)):
            secrets_by_credential.setdefault(secret.credential_id, []).append(secret)
        return [CredentialRecord.of(c, secrets_by_credential.get(c.id, [])) for c in credentials]

    # -- access rules (Keystone's /v3/users/{id}/access_rules) ---------------------

    def list_access_rules(self, ctx: CallContext, owner_id: str) -> list[AccessRuleRecord]:
        owner = self._enforced_owner(ctx, "identity:application_credential:list", owner_id)
        query = select(UserAccessRule).where(UserAccessRule.user_id == owner.id)
        rules = self._session.scalars(query.order_by(UserAccessRule.id))
        return [AccessRuleRecord.of(rule) for rule in rules]

    def get_access_rule(self, ctx: CallContext, owner_id: str, rule_id: str) -> AccessRuleRecord:
        self._enforced_owner(ctx, "identity:application_credential:get", owner_id)
        rule = self._session.get(UserAccessRule, (owner_id, rule_id))
        if rule is None:
            raise NotFound(f"Could not find access rule: {rule_id}.", code="access_rule_not_found")
        return AccessRuleRecord.of(rule)

    def delete_access_rule(self, ctx: CallContext, owner_id: str, rule_id: str) -> None:
        """Keystone refuses to delete a rule a credential still uses (403)."""
        self._enforced_owner(ctx, "identity:application_credential:delete", owner_id)
        rule = self._session.get(UserAccessRule, (owner_id, rule_id), with_for_update=True)
        if rule is None:
            raise NotFound(f"Could not find access rule: {rule_id}.", code="access_rule_not_found")
        used = self._session.scalars(
            select(ApplicationCredential.access_rules).where(
                ApplicationCredential.user_id == owner_id
            )
        )
        if any(access_rule_id(r) == rule_id for rules in used for r in rules or ()):
            raise Forbidden(
                "the access rule is used by an application credential; delete that first",
                code="access_rule_in_use",
            )
        self._session.delete(rule)
        self._record_change(
            ctx,
            "identity:application_credential:delete",
            AuditTarget("user", owner_id),
            access_rule_id=rule_id,
        )
        self._session.commit()

    def _keep_access_rules(self, owner_id: str, rules: list[dict[str, str]]) -> None:
        for rule in rules:
            rule_id = access_rule_id(rule)
            if self._session.get(UserAccessRule, (owner_id, rule_id)) is None:
                self._session.add(
                    UserAccessRule(
                        user_id=owner_id,
                        id=rule_id,
                        service=rule["service"],
                        method=rule["method"],
                        path=rule["path"],
                    )
                )

    def _secrets_of(self, credential_id: str) -> list[CredentialSecret]:
        query = select(CredentialSecret).where(CredentialSecret.credential_id == credential_id)
        return list(self._session.scalars(query.order_by(CredentialSecret.created_at)))

    def delete(self, ctx: CallContext, owner_id: str, credential_id: str) -> None:
        self._enforced_owner(ctx, "identity:application_credential:delete", owner_id, credential_id)
        credential = self._owned(owner_id, credential_id, lock=True)
        self._revocations.add(APPLICATION_CREDENTIAL, credential.id)
        self._session.delete(credential)
        self._record_change(
            ctx, "identity:application_credential:delete", _target(credential), name=credential.name
        )
        self._session.commit()

    def add_secret(
        self, ctx: CallContext, owner_id: str, credential_id: str, expires_at: datetime | None
    ) -> tuple[SecretRecord, str]:
        self._enforced_owner(ctx, "identity:application_credential:rotate", owner_id, credential_id)
        credential = self._owned(owner_id, credential_id, lock=True)
        if len(self._secrets_of(credential.id)) >= MAX_SECRETS:
            raise Conflict(
                f"a credential holds at most {MAX_SECRETS} secrets; delete one",
                code="too_many_secrets",
            )
        expires_at = _future(expires_at, "expires_at")
        parent = self._parent_limits(ctx)
        if parent is not None:
            # A new secret is a new way in: to the token's own credential, no longer
            # than the token's secret lives; to another one, only within this one.
            if credential.id != parent.credential_id:
                parent.check_scope(credential.project_id, set(credential.roles))
                parent.narrow_rules(credential.access_rules or [], inherit=False)
                parent.narrow_cidrs(credential.allowed_cidrs or [], inherit=False)
            expires_at = parent.cap_expiry(expires_at)
        secret, value = self._new_secret(credential, expires_at)
        self._record_change(
            ctx,
            "identity:application_credential:add_secret",
            _target(credential),
            secret_id=secret.id,
        )
        self._session.commit()
        return SecretRecord.of(secret), value

    def delete_secret(
        self, ctx: CallContext, owner_id: str, credential_id: str, secret_id: str
    ) -> None:
        self._enforced_owner(ctx, "identity:application_credential:rotate", owner_id, credential_id)
        credential = self._owned(owner_id, credential_id, lock=True)
        existing = self._secrets_of(credential.id)
        secret = next((s for s in existing if s.id == secret_id), None)
        if secret is None:
            raise NotFound(
                f"no secret {secret_id!r} on this credential", code="credential_secret_not_found"
            )
        if len(existing) == 1:
            raise Conflict(
                "this is the credential's last secret; delete the credential instead",
                code="last_secret",
            )
        self._revocations.add(CREDENTIAL_SECRET, secret.id)
        self._session.delete(secret)
        self._record_change(
            ctx,
            "identity:application_credential:delete_secret",
            _target(credential),
            secret_id=secret.id,
        )
        self._session.commit()

    # -- authentication ----------------------------------------------------------------

    def verify(self, ctx: CallContext, ref: dict[str, Any], secret: str) -> VerifiedCredential:
        """The credential, its matching live secret and its owner; a generic 401 otherwise."""
        found = self._find(ref)
        if found is None:
            self._hasher.burn(secret)
            self._fail(ctx, None, "unknown_credential")
        credential, owner, domain = found.credential, found.owner, found.owner_domain
        now = utcnow()
        matched = self._matching_secret(found.secrets, secret, now)
        if matched is None:
            self._fail(ctx, credential, "wrong_secret")
        if credential.expires_at is not None and credential.expires_at <= now:
            self._fail(ctx, credential, "credential_expired")
        if owner is None or domain is None:
            self._fail(ctx, credential, "owner_disabled")
        # A directory changes behind our back: the backend is asked again (an ldap one
        # caches, with a grace period during outages) whether this human still exists
        # and is enabled; sql always vouches, its row is checked below.
        was_enabled = owner.enabled
        state = self._backends.of(domain).recheck(domain, owner)
        if not state.exists or not state.enabled:
            if was_enabled or not state.from_cache:
                self._revocations.add(USER, owner.id)
            self._fail(
                ctx,
                credential,
                "owner_gone_from_directory" if not state.exists else "owner_disabled_in_directory",
            )
        group_ids = state.group_ids
        if not owner.enabled or not domain.enabled:
            self._fail(ctx, credential, "owner_disabled")
        if credential.allowed_cidrs and not _address_in(ctx.source_ip, credential.allowed_cidrs):
            self._fail(ctx, credential, "source_not_allowed")
        return VerifiedCredential(
            credential,
            matched,
            owner,
            domain,
            group_ids,
            found.project,
            found.project_domain,
            found.held_roles,
        )

    def verify_and_record(
        self, ctx: CallContext, ref: dict[str, Any], secret: str
    ) -> VerifiedCredential:
        """verify(), then last_used_at, committed: a client authenticating without
        asking for a token (OAuth introspection and revocation)."""
        verified = self.verify(ctx, ref, secret)
        self.record_use(verified)
        # Nothing to keep (no directory re-check noted on the owner): no commit, and the
        # request's later reads stay in the same transaction.
        if self._session.dirty or self._session.new:
            self._session.commit()
        return verified

    def record_use(self, verified: VerifiedCredential) -> None:
        """Note last_used_at (written after the response: UsageRecorder)."""
        self._usage.note(verified.credential.id, verified.secret.id, utcnow())

    def _matching_secret(
        self, candidates: list[CredentialSecret], secret: str, now: datetime
    ) -> CredentialSecret | None:
        found = None
        # Check every live secret, without stopping early: the time taken does not
        # depend on which secret (if any) matched.
        for candidate in candidates:
            live = candidate.expires_at is None or candidate.expires_at > now
            if self._hasher.matches(secret, candidate.secret_hash) and live:
                found = candidate
        return found

    def _find(self, ref: dict[str, Any]) -> _Found | None:
        """The credential with its secrets, owner, owner's domain, project and project's
        domain, in one query (a row per secret; outer joins, so a missing one is None),
        instead of one query each."""
        if ref.get("id"):
            query, params = _login_rows("id"), {"credential_id": ref["id"]}
        else:
            user_id = self._owner_id(ref)
            if not user_id:
                return None
            query, params = _login_rows("name"), {"user_id": user_id, "name": ref.get("name")}
        rows = self._session.execute(query, params).all()
        if not rows:
            return None
        credential, _, owner, owner_domain, project, project_domain, held = rows[0]
        secrets = [row[1] for row in rows if row[1] is not None]
        return _Found(
            credential,
            secrets,
            owner,
            owner_domain,
            project,
            project_domain,
            frozenset(parse_held_roles(held)),
        )

    def _owner_id(self, ref: dict[str, Any]) -> str | None:
        """The owner named by a reference by name and user (id, or name and domain)."""
        user_ref = ref.get("user") or {}
        if not ref.get("name") or not user_ref:
            raise InvalidRequest(
                "identify the credential by id, or by name and user",
                code="credential_reference_incomplete",
            )
        user_id = user_ref.get("id")
        if not user_id:
            domain_ref = user_ref.get("domain") or {}
            domain = self._directory.find_domain(
                domain_id=domain_ref.get("id"), name=domain_ref.get("name")
            )
            user = self._accounts.find_user(domain.id, user_ref.get("name", "")) if domain else None
            user_id = user.id if user else None
        return str(user_id) if user_id else None

    def _fail(
        self, ctx: CallContext, credential: ApplicationCredential | None, reason: str
    ) -> NoReturn:
        self._audit.add(
            type=AUTHENTICATION,
            action="identity:auth:application_credential",
            outcome="failure",
            actor_id=credential.user_id if credential else None,
            target=_target(credential) if credential else AuditTarget("application_credential"),
            request_id=ctx.request_id,
            source_ip=ctx.source_ip,
            details={"reason": reason, "method": "application_credential"},
        )
        self._session.commit()
        raise AuthenticationFailed()

    # -- helpers ----------------------------------------------------------------

    def _parent_limits(self, ctx: CallContext) -> ParentLimits | None:
        """The limits of the credential behind the caller's token; None for a token
        that comes from no credential (a password: a human's own power)."""
        auth = ctx.auth
        if auth is None or auth.application_credential_id is None:
            return None
        credential = self._session.get(ApplicationCredential, auth.application_credential_id)
        claimed = (auth.claims.get("application_credential") or {}).get("secret_id")
        secret = self._session.get(CredentialSecret, claimed) if claimed else None
        if credential is None or secret is None or secret.credential_id != credential.id:
            # Deleting either revoked the token; this request raced the deletion.
            raise TokenInvalid()
        expiries = [e for e in (credential.expires_at, secret.expires_at) if e is not None]
        return ParentLimits(
            credential_id=credential.id,
            project_id=auth.project_id,
            roles=auth.roles,
            expires_at=min(expiries) if expiries else None,
            access_rules=list(credential.access_rules or []),
            allowed_cidrs=list(credential.allowed_cidrs or []),
        )

    def _directory_groups(self, owner: User) -> list[str]:
        """An LDAP human's directory groups grant roles here too (as at credential use)."""
        domain = self._session.get(Domain, owner.domain_id)
        if domain is None:
            return []
        state = self._backends.of(domain).recheck(domain, owner)
        return state.group_ids if state.exists and state.enabled else []

    def _enforced_owner(
        self,
        ctx: CallContext,
        action: str,
        owner_id: str,
        credential_id: str | None = None,
        *,
        project_id: str | None = None,
        attributes: dict[str, Any] | None = None,
    ) -> User:
        """Humans' credentials are their own business; application accounts' are also
        their owning project's admins'. Enforced before revealing whether the owner exists.

        The credential's project (``project_id``, or that of ``credential_id``) is whose
        tenant policy also decides, with the credential's ``name`` and ``unrestricted``.
        """
        owner = self._session.get(User, owner_id)
        application = owner is not None and owner.kind == APPLICATION
        if credential_id is not None:
            existing = self._session.scalar(
                select(ApplicationCredential).where(
                    ApplicationCredential.id == credential_id,
                    ApplicationCredential.user_id == owner_id,
                )
            )
            if existing is not None:
                project_id = existing.project_id
                attributes = {"name": existing.name, "unrestricted": existing.unrestricted}
        target = Target(
            user_id=owner_id,
            domain_id=owner.domain_id if application and owner else None,
            project_id=owner.owner_project_id if application and owner else None,
            self_only=not application,
            privileged=owner is not None and self._is_cloud_operator(owner.id),
            tenant_project_id=project_id,
            attributes=attributes,
        )
        self._enforce(ctx, action, target)
        return self._accounts.user_row(owner_id)

    def _owned(
        self, owner_id: str, credential_id: str, lock: bool = False
    ) -> ApplicationCredential:
        query = select(ApplicationCredential).where(
            ApplicationCredential.id == credential_id, ApplicationCredential.user_id == owner_id
        )
        if lock:
            # Serialises concurrent rotations and deletes of one credential: FOR UPDATE
            # on PostgreSQL. SQLite ignores FOR UPDATE, so there a no-op write takes the
            # database's write lock first (later writers wait, then read the new state).
            if self._session.get_bind().dialect.name == "sqlite":
                self._session.execute(
                    update(ApplicationCredential)
                    .where(ApplicationCredential.id == credential_id)
                    .values(id=ApplicationCredential.id)
                )
            query = query.with_for_update()
        credential = self._session.scalar(query)
        if credential is None:
            raise NotFound(
                f"no application credential {credential_id!r} for this user",
                code="application_credential_not_found",
            )
        return credential

    def _requested_roles(self, requested: list[str] | None, held: set[str]) -> set[str]:
        if requested is None:
            return set(held)
        if not requested:
            # A credential with no role could do nothing; Keystone reads [] as "all
            # roles" (the /v3 layer does so too), a native caller omits the field.
            raise InvalidRequest(
                "roles: name at least one role, or omit the field to delegate every role held",
                code="no_roles_requested",
            )
        names = {self._roles.find_role(ref).name for ref in requested}
        missing = names - held
        if missing:
            raise Forbidden(
                f"the owner does not hold {', '.join(sorted(missing))} there", code="role_not_held"
            )
        return self._roles.expand_names(names) & held

    def _new_secret(
        self, credential: ApplicationCredential, expires_at: datetime | None
    ) -> tuple[CredentialSecret, str]:
        value = generate_secret()
        secret = CredentialSecret(
            credential_id=credential.id, secret_hash=self._hasher.hash(value), expires_at=expires_at
        )
        self._session.add(secret)
        self._session.flush()
        return secret, value


# Built once: a login that is a first use in its minute runs both.
_USED_CREDENTIAL = (
    update(ApplicationCredential)
    .where(ApplicationCredential.id == bindparam("row_id"))
    .values(last_used_at=bindparam("last_used_at"))
)
_USED_SECRET = (
    update(CredentialSecret)
    .where(CredentialSecret.id == bindparam("row_id"))
    .values(last_used_at=bindparam("last_used_at"))
)


@functools.cache
def _login_rows(
    by: str,
) -> Select[ApplicationCredential, CredentialSecret, User, Domain, Project, Domain, str]:
    """The query behind ``_find``, by credential id or by (owner id, name): built once
    (with bind parameters), as building it costs more than running it. It also reads
    the roles the owner holds on the credential's project (``held_role_names_json``):
    one round trip for the whole login's reading, where the roles were a second."""
    owner_domain, project_domain = aliased(Domain), aliased(Domain)
    # The credential again, as a subquery of its own (never correlated with the row).
    same = aliased(ApplicationCredential)
    if by == "id":
        chosen = same.id == bindparam("credential_id")
    else:
        chosen = and_(same.user_id == bindparam("user_id"), same.name == bindparam("name"))
    held = held_role_names_json(
        select(same.user_id).where(chosen).scalar_subquery(),
        select(same.project_id).where(chosen).scalar_subquery(),
    )
    query = (
        select(
            ApplicationCredential,
            CredentialSecret,
            User,
            owner_domain,
            Project,
            project_domain,
            held.label("held_roles"),
        )
        .outerjoin(CredentialSecret, CredentialSecret.credential_id == ApplicationCredential.id)
        .outerjoin(User, User.id == ApplicationCredential.user_id)
        .outerjoin(owner_domain, owner_domain.id == User.domain_id)
        .outerjoin(Project, Project.id == ApplicationCredential.project_id)
        .outerjoin(project_domain, project_domain.id == Project.domain_id)
        .order_by(CredentialSecret.created_at, CredentialSecret.id)
        # Columns a login never reads stay in the database (loaded on first access if
        # some later step wants them): fewer to fetch and decode, and no password
        # hash or sealed bind password travels for nothing.
        .options(
            defer(ApplicationCredential.description),
            defer(User.email),
            defer(User.description),
            defer(User.attributes),
            defer(User.password_hash),
            defer(User.password_changed_at),
            defer(User.failed_logins),
            defer(User.locked_until),
            *(defer(domain.description) for domain in (owner_domain, project_domain)),
            defer(project_domain.ldap_config),
            defer(project_domain.ldap_password_sealed),
            defer(owner_domain.ldap_password_sealed),
            defer(Project.description),
        )
    )
    if by == "id":
        return query.where(ApplicationCredential.id == bindparam("credential_id"))
    return query.where(
        ApplicationCredential.user_id == bindparam("user_id"),
        ApplicationCredential.name == bindparam("name"),
    )


def _target(credential: ApplicationCredential) -> AuditTarget:
    return AuditTarget("application_credential", credential.id, project_id=credential.project_id)


def _future(value: datetime | None, field: str) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise InvalidRequest(f"{field} needs a timezone (e.g. ...Z)", code="invalid_request")
    if value <= utcnow():
        raise InvalidRequest(f"{field} is in the past", code="expires_at_in_past")
    return value


def _access_rules(rules: list[dict[str, Any]]) -> list[dict[str, str]]:
    if len(rules) > MAX_RULES:
        raise InvalidRequest(f"at most {MAX_RULES} access rules", code="invalid_access_rule")
    checked = []
    for index, rule in enumerate(rules):
        try:
            checked.append(validate_rule(rule))
        except AccessRuleError as exc:
            raise InvalidRequest(
                f"access_rules[{index}]: {exc}",
                code="invalid_access_rule",
                extra={"pointer": f"/access_rules/{index}"},
            ) from exc
    return checked


def _cidrs(cidrs: list[str]) -> list[str]:
    if len(cidrs) > MAX_CIDRS:
        raise InvalidRequest(f"at most {MAX_CIDRS} CIDRs", code="invalid_cidr")
    checked = []
    for index, cidr in enumerate(cidrs):
        try:
            checked.append(str(ipaddress.ip_network(cidr, strict=False)))
        except ValueError as exc:
            raise InvalidRequest(
                f"allowed_cidrs[{index}] is not a network",
                code="invalid_cidr",
                extra={"pointer": f"/allowed_cidrs/{index}"},
            ) from exc
    return checked


def _address_in(address: str | None, cidrs: list[str]) -> bool:
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(cidr) for cidr in cidrs)
