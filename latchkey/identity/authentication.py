"""Authentication: who is this (password for now), and a token for the asked scope.

Every attempt, successful or not, is audited. A failed attempt always gets
the same 401, whether the user is unknown, disabled, locked or the password
is wrong, and costs the same password-hash verification in each case.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, NoReturn, cast

from sqlalchemy import Table, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from latchkey.audit import AUTHENTICATION, AuditLog, AuditTarget
from latchkey.db import DbSession, utcnow
from latchkey.errors import AuthenticationFailed, Forbidden, InvalidRequest
from latchkey.identity.accounts import APPLICATION, Accounts
from latchkey.identity.credentials import ApplicationCredentials, VerifiedCredential
from latchkey.identity.directory import Directory
from latchkey.identity.ldap_domains import LdapDomains
from latchkey.identity.models import Domain, LoginLockout, Project, User
from latchkey.identity.roles import Roles
from latchkey.identity.tokens import IssuedToken, Scope, Tokens
from latchkey.ops.metrics import count_issuance
from latchkey.policy.context import CallContext


class Authentication:
    def __init__(
        self,
        session: DbSession,
        directory: Directory,
        accounts: Accounts,
        roles: Roles,
        tokens: Tokens,
        audit: AuditLog,
        credentials: ApplicationCredentials,
        ldap: LdapDomains,
        *,
        lockout_attempts: int,
        lockout_duration: timedelta,
    ) -> None:
        self._session = session
        self._directory = directory
        self._accounts = accounts
        self._roles = roles
        self._tokens = tokens
        self._credentials = credentials
        self._ldap = ldap
        self._audit = audit
        self._lockout_attempts = lockout_attempts
        self._lockout_duration = lockout_duration

    @count_issuance("password")
    def password(
        self,
        ctx: CallContext,
        user_ref: dict[str, Any],
        password: str,
        scope_ref: dict[str, Any] | None,
    ) -> IssuedToken:
        user, domain = self._check_password(ctx, user_ref, password)
        group_ids = self._ldap.group_ids(domain, user) if domain.identity_backend == "ldap" else []
        scope, roles = self._resolve_scope(ctx, user, scope_ref, group_ids)
        issued = self._tokens.issue(user, domain, scope, roles, ["password"])
        self._record(ctx, "success", user.id, scope, jti=issued.claims["jti"])
        self._session.commit()
        return issued

    @count_issuance("application_credential")
    def application_credential(
        self, ctx: CallContext, ref: dict[str, Any], secret: str, scope_ref: dict[str, Any] | None
    ) -> IssuedToken:
        """A token for the credential's own project, with its roles that the owner
        still holds, never outliving the credential or the secret."""
        verified = self._credentials.verify(ctx, ref, secret)
        credential, owner = verified.credential, verified.owner
        if scope_ref and not self._same_project(scope_ref, credential.project_id):
            self._record(
                ctx,
                "failure",
                owner.id,
                Scope(),
                method="application_credential",
                reason="scope_mismatch",
            )
            self._session.commit()
            raise Forbidden(
                "an application credential is scoped to its own project", code="scope_mismatch"
            )
        usable = self._usable(verified.project, verified.project_domain)
        if usable is None:
            self._deny_scope(ctx, owner, "project_unavailable", generic=True)
        project, project_domain = usable
        held = self._roles.effective_role_names(
            owner.id, project_id=project.id, directory_group_ids=verified.directory_group_ids
        )
        roles = set(credential.roles) & held
        if not roles:
            self._deny_scope(ctx, owner, "no_roles_left", generic=True)
        expiries = [e for e in (credential.expires_at, verified.secret.expires_at) if e]
        issued = self._tokens.issue(
            owner,
            verified.owner_domain,
            Scope(project=project, project_domain=project_domain),
            roles,
            ["application_credential"],
            client_id=credential.id,
            extra_claims={
                "application_credential": {
                    "id": credential.id,
                    "name": credential.name,
                    "secret_id": verified.secret.id,
                    "restricted": not credential.unrestricted,
                    "access_rules": credential.access_rules,
                }
            },
            not_after=min(expiries) if expiries else None,
        )
        self._record(
            ctx,
            "success",
            owner.id,
            Scope(project=project),
            method="application_credential",
            application_credential_id=credential.id,
            jti=issued.claims["jti"],
        )
        self._credentials.record_use(verified)
        self._session.commit()
        return issued

    def current_roles(self, verified: VerifiedCredential) -> set[str]:
        """The roles a token from this credential would carry now (none if its project
        is gone or disabled)."""
        usable = self._usable(verified.project, verified.project_domain)
        if usable is None:
            return set()
        held = self._roles.effective_role_names(
            verified.owner.id,
            project_id=usable[0].id,
            directory_group_ids=verified.directory_group_ids,
        )
        return set(verified.credential.roles) & held

    def _usable_project(self, project: Project | None) -> tuple[Project, Domain] | None:
        """The project and its domain, when both exist and are enabled."""
        if project is None or not project.enabled:
            return None
        return self._usable(project, self._session.get(Domain, project.domain_id))

    @staticmethod
    def _usable(project: Project | None, domain: Domain | None) -> tuple[Project, Domain] | None:
        if project is None or domain is None or not project.enabled or not domain.enabled:
            return None
        return project, domain

    def _same_project(self, scope_ref: dict[str, Any], project_id: str) -> bool:
        ref = scope_ref.get("project")
        if not ref:
            return False
        if ref.get("id"):
            return bool(ref["id"] == project_id)
        domain_ref = ref.get("domain") or {}
        domain = self._directory.find_domain(
            domain_id=domain_ref.get("id"), name=domain_ref.get("name")
        )
        found = self._directory.find_project(
            project_id=None, name=ref.get("name"), domain_id=domain.id if domain else None
        )
        return found is not None and found.id == project_id

    # -- password ---------------------------------------------------------------

    def _check_password(
        self, ctx: CallContext, user_ref: dict[str, Any], password: str
    ) -> tuple[User, Domain]:
        user, domain = self._find_user(user_ref)
        if user is None or domain is None:
            self._accounts.backend_for(_SQL_DOMAIN).verify_password(_NOBODY, password)
            self._fail(ctx, None, "unknown_user", user_ref)
        assert user is not None and domain is not None
        now = utcnow()
        # Lockout is per (user, source address): a stranger's failures lock the
        # stranger's address out, not the user from their own (issue 13, class 6).
        source = _lockout_source(ctx)
        lockout = self._session.get(LoginLockout, (user.id, source))
        locked = (
            lockout is not None and lockout.locked_until is not None and lockout.locked_until > now
        )
        verified = self._accounts.backend_for(domain).verify_password(user, password)
        if locked:
            self._fail(ctx, user, "locked")
        if not verified:
            failures = self._note_failure(user.id, source, now)
            if self._lockout_attempts and failures >= self._lockout_attempts:
                self._session.execute(
                    update(_LOCKOUT)
                    .where(_LOCKOUT.c.user_id == user.id, _LOCKOUT.c.source == source)
                    .values(locked_until=now + self._lockout_duration, failed_logins=0)
                )
                self._fail(ctx, user, "wrong_password_locked")
            self._fail(ctx, user, "wrong_password")
        if not user.enabled or not domain.enabled or user.kind == APPLICATION:
            self._fail(ctx, user, "disabled")
        if lockout is not None:
            self._session.delete(lockout)
        return user, domain

    def _note_failure(self, user_id: str, source: str, now: datetime) -> int:
        """One more consecutive failure of this user from this source, counted in the
        database in one statement (concurrent failures all count); the new count."""
        dialect = self._session.get_bind().dialect.name
        upsert = postgresql_insert if dialect == "postgresql" else sqlite_insert
        statement = (
            upsert(_LOCKOUT)
            .values(user_id=user_id, source=source, failed_logins=1, updated_at=now)
            .on_conflict_do_update(
                index_elements=[_LOCKOUT.c.user_id, _LOCKOUT.c.source],
                set_={"failed_logins": _LOCKOUT.c.failed_logins + 1, "updated_at": now},
            )
            .returning(_LOCKOUT.c.failed_logins)
        )
        with self._session.no_autoflush:
            return int(self._session.execute(statement).scalar_one())

    def _find_user(self, ref: dict[str, Any]) -> tuple[User | None, Domain | None]:
        if ref.get("id"):
            user = self._session.get(User, ref["id"])
            return user, self._session.get(Domain, user.domain_id) if user else None
        domain_ref = ref.get("domain") or {}
        if not ref.get("name") or not (domain_ref.get("id") or domain_ref.get("name")):
            raise InvalidRequest(
                "identify the user by id, or by name and domain", code="user_reference_incomplete"
            )
        domain = self._directory.find_domain(
            domain_id=domain_ref.get("id"), name=domain_ref.get("name")
        )
        if domain is None:
            return None, None
        return self._accounts.find_user(domain.id, ref["name"]), domain

    def _fail(
        self,
        ctx: CallContext,
        user: User | None,
        reason: str,
        user_ref: dict[str, Any] | None = None,
    ) -> NoReturn:
        """Audit the failure (the reason stays in the audit trail) and answer a generic 401."""
        details: dict[str, Any] = {"reason": reason, "method": "password"}
        if user_ref is not None:
            details["user_name"] = str(user_ref.get("name") or user_ref.get("id"))[:255]
        self._audit.add(
            type=AUTHENTICATION,
            action="identity:auth:password",
            outcome="failure",
            actor_id=user.id if user else None,
            target=AuditTarget(
                "user", user.id if user else None, domain_id=user.domain_id if user else None
            ),
            request_id=ctx.request_id,
            source_ip=ctx.source_ip,
            details=details,
        )
        self._session.commit()
        raise AuthenticationFailed()

    # -- scope ------------------------------------------------------------------

    def _resolve_scope(
        self,
        ctx: CallContext,
        user: User,
        scope_ref: dict[str, Any] | None,
        group_ids: list[str],
    ) -> tuple[Scope, set[str]]:
        if not scope_ref:
            return Scope(), set()
        if "project" in scope_ref:
            ref = scope_ref["project"]
            domain_ref = ref.get("domain") or {}
            domain_id = domain_ref.get("id")
            if not domain_id and domain_ref.get("name"):
                found = self._directory.find_domain(domain_id=None, name=domain_ref["name"])
                domain_id = found.id if found else None
            project = self._directory.find_project(
                project_id=ref.get("id"), name=ref.get("name"), domain_id=domain_id
            )
            usable = self._usable_project(project)
            if usable is None:
                self._deny_scope(ctx, user, "project_unavailable")
            project, project_domain = usable
            roles = self._roles.effective_role_names(
                user.id, project_id=project.id, directory_group_ids=group_ids
            )
            if not roles:
                self._deny_scope(ctx, user, "no_roles_on_project")
            return Scope(project=project, project_domain=project_domain), roles
        ref = scope_ref["domain"]
        domain = self._directory.find_domain(domain_id=ref.get("id"), name=ref.get("name"))
        if domain is None or not domain.enabled:
            self._deny_scope(ctx, user, "domain_unavailable")
        assert domain is not None
        roles = self._roles.effective_role_names(
            user.id, domain_id=domain.id, directory_group_ids=group_ids
        )
        if not roles:
            self._deny_scope(ctx, user, "no_roles_on_domain")
        return Scope(domain=domain), roles

    def _deny_scope(
        self, ctx: CallContext, user: User, reason: str, generic: bool = False
    ) -> NoReturn:
        self._audit.add(
            type=AUTHENTICATION,
            action="identity:auth:scope",
            outcome="failure",
            actor_id=user.id,
            target=AuditTarget("user", user.id, domain_id=user.domain_id),
            request_id=ctx.request_id,
            source_ip=ctx.source_ip,
            details={"reason": reason},
        )
        self._session.commit()
        if generic:
            # A credential's secret is a bearer secret: whoever holds one must not learn
            # whether it is right from the answer. The reason stays in the audit trail.
            raise AuthenticationFailed()
        # Like Keystone: the password was right, but it gives no access to that scope.
        raise AuthenticationFailed(
            "the user has no access to the requested scope", code="scope_not_allowed"
        )

    def _record(
        self, ctx: CallContext, outcome: str, user_id: str, scope: Scope, **details: Any
    ) -> None:
        project_id = scope.project.id if scope.project else None
        domain_id = scope.domain.id if scope.domain else None
        method = details.pop("method", "password")
        self._audit.add(
            type=AUTHENTICATION,
            action=f"identity:auth:{method}",
            outcome=outcome,
            actor_id=user_id,
            target=AuditTarget("user", user_id, project_id=project_id, domain_id=domain_id),
            request_id=ctx.request_id,
            source_ip=ctx.source_ip,
            details={"method": method, **details},
        )


_LOCKOUT = cast(Table, LoginLockout.__table__)


def _lockout_source(ctx: CallContext) -> str:
    """Where the attempt came from, as the lockout counts it (the client address as
    trusted proxies tell it; latchkey/web/proxies.py)."""
    return (ctx.source_ip or "unknown")[:64]


# Stand-ins for the unknown-user path: verifying against them costs a real hash check.
_SQL_DOMAIN = Domain(id="", name="", identity_backend="sql")
_NOBODY = User(id="", name="", domain_id="", password_hash=None)
