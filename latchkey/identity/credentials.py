"""Application credentials: id + secret, scoped to one project, a subset of roles.

Secrets are generated here (256 bits, URL-safe), shown once, and stored as
HMAC-SHA-256 under a pepper derived from the master key (so a copy of the
database alone cannot test guesses). High-entropy secrets need no slow KDF:
checking one costs one HMAC, not Keystone's ~250 ms of bcrypt.

A credential has one or more live secrets (rotation without downtime), each
with its own optional expiry.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NoReturn

from sqlalchemy import JSON, Boolean, ForeignKey, String, Text, UniqueConstraint, select, update
from sqlalchemy.orm import Mapped, mapped_column

from latchkey.audit import AUTHENTICATION, AuditTarget
from latchkey.db import Base, UTCDateTime, new_id, utcnow
from latchkey.errors import AuthenticationFailed, Conflict, Forbidden, InvalidRequest, NotFound
from latchkey.identity.access_rules import MAX_RULES, AccessRuleError, validate_rule
from latchkey.identity.accounts import APPLICATION, Accounts
from latchkey.identity.common import IdentityServiceBase, ServiceDeps
from latchkey.identity.directory import Directory
from latchkey.identity.ldap_domains import LdapDomains
from latchkey.identity.models import Domain, User
from latchkey.identity.revocations import APPLICATION_CREDENTIAL, CREDENTIAL_SECRET, USER
from latchkey.identity.roles import Roles
from latchkey.policy.context import CallContext
from latchkey.policy.enforcer import Target
from latchkey.secrets.master_key import KeyProtector

SECRET_PREFIX = "lkac_"  # makes leaked secrets easy for scanners to spot
SECRET_BYTES = 32  # 256 bits
PEPPER_PURPOSE = "application-credential-pepper"
MAX_SECRETS = 10
MAX_CIDRS = 50
USAGE_WRITE_INTERVAL = 60.0  # seconds between last_used_at writes per credential and process


class ApplicationCredential(Base):
    __tablename__ = "application_credential"
    __table_args__ = (UniqueConstraint("user_id", "name"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str] = mapped_column(Text, default="")
    user_id: Mapped[str] = mapped_column(
        ForeignKey("user_account.id", ondelete="CASCADE"), index=True
    )
    project_id: Mapped[str] = mapped_column(
        ForeignKey("project.id", ondelete="CASCADE"), index=True
    )
    roles: Mapped[list[str]] = mapped_column(JSON, default=list)  # names, implied ones expanded
    unrestricted: Mapped[bool] = mapped_column(Boolean, default=False)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    access_rules: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    allowed_cidrs: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class CredentialSecret(Base):
    __tablename__ = "application_credential_secret"

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=new_id)
    credential_id: Mapped[str] = mapped_column(
        ForeignKey("application_credential.id", ondelete="CASCADE"), index=True
    )
    # "<pepper version>$<hex HMAC-SHA-256>"; the version survives master-key rotation.
    secret_hash: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


@dataclass(frozen=True)
class CreatedCredential:
    credential: ApplicationCredential
    secret: CredentialSecret
    secret_value: str  # shown once, never stored


@dataclass(frozen=True)
class VerifiedCredential:
    credential: ApplicationCredential
    secret: CredentialSecret
    owner: User
    owner_domain: Domain
    directory_group_ids: list[str] = field(default_factory=list)


class SecretHasher:
    """HMAC-SHA-256 with a pepper that never touches the database."""

    def __init__(self, protector: KeyProtector) -> None:
        self._protector = protector
        self._peppers: dict[str, bytes] = {}

    def _pepper(self, version: str | None) -> tuple[str, bytes]:
        if version is None:
            version, pepper = self._protector.derive_key(PEPPER_PURPOSE)
            self._peppers.setdefault(version, pepper)
            return version, pepper
        if version not in self._peppers:
            self._peppers[version] = self._protector.derive_key(PEPPER_PURPOSE, version)[1]
        return version, self._peppers[version]

    def hash(self, secret: str) -> str:
        version, pepper = self._pepper(None)
        return f"{version}${self._mac(pepper, secret)}"

    def matches(self, secret: str, stored: str) -> bool:
        version, _, expected = stored.partition("$")
        _, pepper = self._pepper(version)
        return hmac.compare_digest(self._mac(pepper, secret), expected)

    def burn(self, secret: str) -> None:
        """Spend the cost of one check when there is nothing to check against."""
        self._mac(self._pepper(None)[1], secret)

    @staticmethod
    def _mac(pepper: bytes, secret: str) -> str:
        return hmac.new(pepper, secret.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


def generate_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(SECRET_BYTES)


class UsageRecorder:
    """Writes last_used_at at most once a minute per credential in this process."""

    def __init__(self, interval: float = USAGE_WRITE_INTERVAL) -> None:
        self._interval = interval
        self._last_write: dict[str, float] = {}
        self._lock = threading.Lock()

    def due(self, key: str) -> bool:
        now = time.monotonic()
        with self._lock:
            if now - self._last_write.get(key, float("-inf")) < self._interval:
                return False
            self._last_write[key] = now
            return True


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
        ldap: LdapDomains,
    ) -> None:
        super().__init__(deps)
        self._ldap = ldap
        self._directory = directory
        self._accounts = accounts
        self._roles = roles
        self._hasher = hasher
        self._usage = usage

    # -- management ---------------------------------------------------------------

    def create(self, ctx: CallContext, owner_id: str, data: dict[str, Any]) -> CreatedCredential:
        owner = self._enforced_owner(ctx, "identity:application_credential:create", owner_id)
        project = self._directory.get_project_record(data["project_id"])
        held = self._roles.effective_role_names(
            owner.id, project_id=project.id, directory_group_ids=self._directory_groups(owner)
        )
        if not held:
            raise Forbidden("the owner holds no role on that project", code="no_roles_on_project")
        roles = self._requested_roles(data.get("roles"), held)
        auth = ctx.auth
        # An unrestricted credential may mint credentials, never with more than it holds.
        minted_by_credential = auth is not None and auth.application_credential_id is not None
        if (
            minted_by_credential
            and auth is not None
            and (project.id != auth.project_id or not roles <= auth.roles)
        ):
            raise Forbidden(
                "a credential cannot create one with more than it holds", code="role_not_held"
            )
        expires_at = _future(data.get("expires_at"), "expires_at")
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
            access_rules=_access_rules(data.get("access_rules") or []),
            allowed_cidrs=_cidrs(data.get("allowed_cidrs") or []),
        )
        self._session.add(credential)
        self._session.flush()
        secret, value = self._new_secret(credential, expires_at)
        self._record_change(
            ctx,
            "identity:application_credential:create",
            _target(credential),
            name=credential.name,
            roles=credential.roles,
            unrestricted=credential.unrestricted,
        )
        self._commit(
            "application_credential_name_taken", "a credential with this name exists for this user"
        )
        return CreatedCredential(credential, secret, value)

    def list_credentials(
        self, ctx: CallContext, owner_id: str, name: str | None = None
    ) -> list[ApplicationCredential]:
        owner = self._enforced_owner(ctx, "identity:application_credential:list", owner_id)
        query = select(ApplicationCredential).where(ApplicationCredential.user_id == owner.id)
        if name:
            query = query.where(ApplicationCredential.name == name)
        return list(self._session.scalars(query.order_by(ApplicationCredential.name)))

    def get(self, ctx: CallContext, owner_id: str, credential_id: str) -> ApplicationCredential:
        self._enforced_owner(ctx, "identity:application_credential:get", owner_id)
        return self._owned(owner_id, credential_id)

    def secrets_of(self, credential_id: str) -> list[CredentialSecret]:
        query = select(CredentialSecret).where(CredentialSecret.credential_id == credential_id)
        return list(self._session.scalars(query.order_by(CredentialSecret.created_at)))

    def delete(self, ctx: CallContext, owner_id: str, credential_id: str) -> None:
        self._enforced_owner(ctx, "identity:application_credential:delete", owner_id)
        credential = self._owned(owner_id, credential_id, lock=True)
        self._revocations.add(APPLICATION_CREDENTIAL, credential.id)
        self._session.delete(credential)
        self._record_change(
            ctx, "identity:application_credential:delete", _target(credential), name=credential.name
        )
        self._session.commit()

    def add_secret(
        self, ctx: CallContext, owner_id: str, credential_id: str, expires_at: datetime | None
    ) -> tuple[CredentialSecret, str]:
        self._enforced_owner(ctx, "identity:application_credential:rotate", owner_id)
        credential = self._owned(owner_id, credential_id, lock=True)
        if len(self.secrets_of(credential.id)) >= MAX_SECRETS:
            raise Conflict(
                f"a credential holds at most {MAX_SECRETS} secrets; delete one",
                code="too_many_secrets",
            )
        secret, value = self._new_secret(credential, _future(expires_at, "expires_at"))
        self._record_change(
            ctx,
            "identity:application_credential:add_secret",
            _target(credential),
            secret_id=secret.id,
        )
        self._session.commit()
        return secret, value

    def delete_secret(
        self, ctx: CallContext, owner_id: str, credential_id: str, secret_id: str
    ) -> None:
        self._enforced_owner(ctx, "identity:application_credential:rotate", owner_id)
        credential = self._owned(owner_id, credential_id, lock=True)
        existing = self.secrets_of(credential.id)
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
        credential = self._find(ref)
        if credential is None:
            self._hasher.burn(secret)
            self._fail(ctx, None, "unknown_credential")
        now = utcnow()
        owner = self._session.get(User, credential.user_id)
        domain = self._session.get(Domain, owner.domain_id) if owner else None
        matched = self._matching_secret(credential, secret, now)
        if matched is None:
            self._fail(ctx, credential, "wrong_secret")
        if credential.expires_at is not None and credential.expires_at <= now:
            self._fail(ctx, credential, "credential_expired")
        if owner is None or domain is None:
            self._fail(ctx, credential, "owner_disabled")
        group_ids: list[str] = []
        if domain.identity_backend == "ldap":
            # The directory changes behind our back: ask it again (cached, with a grace
            # period during outages) whether this human still exists and is enabled.
            was_enabled = owner.enabled
            state = self._ldap.recheck(domain, owner)
            if not state.exists or not state.enabled:
                if was_enabled or not state.from_cache:
                    self._revocations.add(USER, owner.id)
                self._fail(
                    ctx,
                    credential,
                    "owner_gone_from_directory"
                    if not state.exists
                    else "owner_disabled_in_directory",
                )
            group_ids = state.group_ids
        if not owner.enabled or not domain.enabled:
            self._fail(ctx, credential, "owner_disabled")
        if credential.allowed_cidrs and not _address_in(ctx.source_ip, credential.allowed_cidrs):
            self._fail(ctx, credential, "source_not_allowed")
        return VerifiedCredential(credential, matched, owner, domain, group_ids)

    def verify_and_record(
        self, ctx: CallContext, ref: dict[str, Any], secret: str
    ) -> VerifiedCredential:
        """verify(), then last_used_at, committed: a client authenticating without
        asking for a token (OAuth introspection and revocation)."""
        verified = self.verify(ctx, ref, secret)
        self.record_use(verified)
        self._session.commit()
        return verified

    def record_use(self, verified: VerifiedCredential) -> None:
        """Add last_used_at updates to the current transaction, at most once a minute."""
        now = utcnow()
        if self._usage.due(verified.credential.id):
            self._session.execute(
                update(ApplicationCredential)
                .where(ApplicationCredential.id == verified.credential.id)
                .values(last_used_at=now)
            )
        if self._usage.due("secret:" + verified.secret.id):
            self._session.execute(
                update(CredentialSecret)
                .where(CredentialSecret.id == verified.secret.id)
                .values(last_used_at=now)
            )

    def _matching_secret(
        self, credential: ApplicationCredential, secret: str, now: datetime
    ) -> CredentialSecret | None:
        found = None
        # Check every live secret, without stopping early: the time taken does not
        # depend on which secret (if any) matched.
        for candidate in self.secrets_of(credential.id):
            live = candidate.expires_at is None or candidate.expires_at > now
            if self._hasher.matches(secret, candidate.secret_hash) and live:
                found = candidate
        return found

    def _find(self, ref: dict[str, Any]) -> ApplicationCredential | None:
        if ref.get("id"):
            return self._session.get(ApplicationCredential, ref["id"])
        user_ref = ref.get("user") or {}
        name = ref.get("name")
        if not name or not user_ref:
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
        if not user_id:
            return None
        return self._session.scalar(
            select(ApplicationCredential).where(
                ApplicationCredential.user_id == user_id, ApplicationCredential.name == name
            )
        )

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

    def _directory_groups(self, owner: User) -> list[str]:
        """An LDAP human's directory groups grant roles here too (as at credential use)."""
        domain = self._session.get(Domain, owner.domain_id)
        if domain is None or domain.identity_backend != "ldap":
            return []
        state = self._ldap.recheck(domain, owner)
        return state.group_ids if state.exists and state.enabled else []

    def _enforced_owner(self, ctx: CallContext, action: str, owner_id: str) -> User:
        """Humans' credentials are their own business; application accounts' are also
        their owning project's admins'. Enforced before revealing whether the owner exists."""
        owner = self._session.get(User, owner_id)
        application = owner is not None and owner.kind == APPLICATION
        target = Target(
            user_id=owner_id,
            domain_id=owner.domain_id if application and owner else None,
            project_id=owner.owner_project_id if application and owner else None,
            self_only=not application,
            privileged=owner is not None and self._is_cloud_operator(owner.id),
        )
        self._enforce(ctx, action, target)
        return self._accounts.get_user_record(owner_id)

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
