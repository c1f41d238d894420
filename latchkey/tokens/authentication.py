"""Authentication: who is this (password, a token, an application credential), and a
token for the asked scope (a project, a domain, the system, or an OS-TRUST trust).

Every attempt, successful or not, is audited. A failed attempt always gets
the same 401, whether the user is unknown, disabled, locked or the password
is wrong, and costs the same password-hash verification in each case.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn, cast

from sqlalchemy import Table, or_, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from latchkey.audit import AUTHENTICATION, AuditLog, AuditTarget
from latchkey.credentials.service import ApplicationCredentials, VerifiedCredential
from latchkey.credentials.trusts import TrustGrant, Trusts
from latchkey.db import DbSession, utcnow
from latchkey.errors import AuthenticationFailed, Forbidden, InvalidRequest
from latchkey.identity.accounts import APPLICATION, Accounts
from latchkey.identity.backends import IdentityBackends
from latchkey.identity.directory import Directory
from latchkey.identity.models import Domain, GroupMembership, Project, Role, RoleAssignment, User
from latchkey.identity.records import DomainRecord
from latchkey.identity.roles import Roles
from latchkey.metrics import count_issuance
from latchkey.policy.context import AuthContext, CallContext
from latchkey.tokens.models import LoginLockout
from latchkey.tokens.service import IssuedToken, Scope, TokenInvalid, Tokens


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
        backends: IdentityBackends,
        *,
        lockout_attempts: int,
        lockout_duration: timedelta,
        trusts: Trusts | None = None,
    ) -> None:
        self.trusts = trusts
        self._session = session
        self._directory = directory
        self._accounts = accounts
        self._roles = roles
        self._tokens = tokens
        self._credentials = credentials
        self._backends = backends
        self._audit = audit
        self._lockout_attempts = lockout_attempts
        self._lockout_duration = lockout_duration

    def authenticate(
        self, ctx: CallContext, methods: dict[str, Any], scope_ref: dict[str, Any] | None
    ) -> IssuedToken:
        """One token request, as TokenRequest loaded it (native and Keystone doors):
        ``methods`` holds ``password``, ``token`` (both: the same user) or
        ``application_credential`` (alone)."""
        if "application_credential" in methods:
            if len(methods) > 1:
                raise AuthenticationFailed()
            credential = dict(methods["application_credential"])
            secret = credential.pop("secret")
            return self.application_credential(ctx, credential, secret, scope_ref)
        password = methods.get("password")
        if "token" in methods:
            return self.rescope(
                ctx,
                methods["token"]["id"],
                scope_ref,
                (password["user"], password["password"]) if password else None,
            )
        if password is None:
            raise InvalidRequest("give an authentication method", code="method_missing")
        return self.password(ctx, password["user"], password["password"], scope_ref)

    @count_issuance("password")
    def password(
        self,
        ctx: CallContext,
        user_ref: dict[str, Any],
        password: str,
        scope_ref: dict[str, Any] | None,
    ) -> IssuedToken:
        user, domain = self._check_password(ctx, user_ref, password)
        group_ids = self._backends.of(domain).group_ids(domain, user)
        if not scope_ref and user.default_project_id:
            scope, roles = self._default_project(user, group_ids)
        elif scope_ref and "trust" in scope_ref:
            return self._trust_token(ctx, user, scope_ref, ["password"])
        else:
            scope, roles = self._resolve_scope(ctx, user, scope_ref, group_ids)
        issued = self._tokens.issue(user, domain, scope, roles, ["password"])
        self._record(ctx, "success", user.id, scope, jti=issued.claims["jti"])
        self._session.commit()
        return issued

    @count_issuance("token")
    def rescope(
        self,
        ctx: CallContext,
        subject_token: str,
        scope_ref: dict[str, Any] | None,
        password: tuple[dict[str, Any], str] | None = None,
    ) -> IssuedToken:
        """Keystone's ``token`` method: a new token for another scope, from a valid one
        (with ``password``: both must name the same user). The new token expires no
        later than the old one. A token from an application credential cannot be
        rescoped (401); a trust-scoped one cannot be rescoped at all (403)."""
        try:
            claims = self._tokens.validate(subject_token)
        except TokenInvalid as exc:
            raise AuthenticationFailed() from exc
        if claims.get("application_credential"):
            raise AuthenticationFailed(
                "a token from an application credential cannot be rescoped",
                code="application_credential_rescope",
            )
        if claims.get("trust"):
            raise Forbidden("a trust-scoped token cannot be rescoped", code="trust_token_rescope")
        methods = [m for m in (claims.get("methods") or []) if m != "token"]
        if password is not None:
            user, domain = self._check_password(ctx, password[0], password[1])
            if user.id != claims["sub"]:
                self._fail(ctx, user, "password_token_user_mismatch")
            if "password" not in methods:
                methods.append("password")
        else:
            found = self._session.get(User, claims["sub"])
            found_domain = self._session.get(Domain, found.domain_id) if found else None
            if found is None or found_domain is None:
                raise AuthenticationFailed()
            user, domain = found, found_domain
            if not user.enabled or not domain.enabled or user.kind == APPLICATION:
                raise AuthenticationFailed()
        methods.append("token")
        group_ids = list(user.directory_group_ids or [])
        if scope_ref and "trust" in scope_ref:
            return self._trust_token(ctx, user, scope_ref, methods, not_after=_expiry_of(claims))
        scope, roles = self._resolve_scope(ctx, user, scope_ref, group_ids)
        chain = claims.get("audit_chain_id") or claims["jti"]
        issued = self._tokens.issue(
            user,
            domain,
            scope,
            roles,
            methods,
            extra_claims={"audit_chain_id": chain},
            not_after=_expiry_of(claims),
        )
        self._record(ctx, "success", user.id, scope, method="token", jti=issued.claims["jti"])
        self._session.commit()
        return issued

    def _trust_token(
        self,
        ctx: CallContext,
        trustee: User,
        scope_ref: dict[str, Any],
        methods: list[str],
        not_after: datetime | None = None,
    ) -> IssuedToken:
        """A token scoped to an OS-TRUST trust, for its trustee (counts one use)."""
        trust_id = str((scope_ref.get("trust") or {}).get("id") or "")
        grant: TrustGrant | None = (
            self.trusts.consume(trust_id, trustee.id) if self.trusts is not None else None
        )
        if grant is None:
            self._deny_scope(ctx, trustee, "trust_unusable")
        assert grant is not None
        user_domain = self._session.get(Domain, grant.user.domain_id)
        project_domain = self._session.get(Domain, grant.project.domain_id)
        if user_domain is None or project_domain is None or not project_domain.enabled:
            self._deny_scope(ctx, trustee, "trust_unusable")
        assert user_domain is not None and project_domain is not None
        trust = grant.trust
        expiries = [e for e in (trust.expires_at, not_after) if e is not None]
        scope = Scope(project=grant.project, project_domain=project_domain)
        issued = self._tokens.issue(
            grant.user,
            user_domain,
            scope,
            grant.roles,
            methods,
            extra_claims={
                "trust": {
                    "id": trust.id,
                    "trustor_user_id": trust.trustor_user_id,
                    "trustee_user_id": trust.trustee_user_id,
                    "impersonation": trust.impersonation,
                }
            },
            not_after=min(expiries) if expiries else None,
        )
        self._record(ctx, "success", trustee.id, scope, trust_id=trust.id, jti=issued.claims["jti"])
        self._session.commit()
        return issued

    def _default_project(self, user: User, group_ids: list[str]) -> tuple[Scope, set[str]]:
        """Keystone: an unscoped login lands on the user's default project when the
        user holds a role there; otherwise the token stays unscoped."""
        usable = self._usable_project(self._session.get(Project, user.default_project_id))
        if usable is None:
            return Scope(), set()
        project, project_domain = usable
        roles = self._roles.effective_role_names(
            user.id, project_id=project.id, directory_group_ids=group_ids
        )
        if not roles:
            return Scope(), set()
        return Scope(project=project, project_domain=project_domain), roles

    # -- what a user may scope to (GET /v3/auth/domains, /v3/auth/system) ----------

    def scopable_domains(self, ctx: CallContext) -> list[DomainRecord]:
        """The enabled domains on which the caller holds a role, directly or through a
        group (inherited grants reach the projects below, not the domain itself)."""
        auth = ctx.auth
        if auth is None:
            raise AuthenticationFailed()
        user = self._session.get(User, auth.user_id)
        directory_groups = list(user.directory_group_ids or []) if user else []
        groups = select(GroupMembership.group_id).where(GroupMembership.user_id == auth.user_id)
        domain_ids = select(RoleAssignment.domain_id).where(
            RoleAssignment.domain_id.is_not(None),
            RoleAssignment.inherited.is_not(True),
            or_(
                RoleAssignment.user_id == auth.user_id,
                RoleAssignment.group_id.in_(groups),
                RoleAssignment.group_id.in_(directory_groups),
            ),
        )
        query = (
            select(Domain).where(Domain.id.in_(domain_ids), Domain.enabled).order_by(Domain.name)
        )
        return [DomainRecord.of(domain) for domain in self._session.scalars(query)]

    def has_system_role(self, ctx: CallContext) -> bool:
        auth = ctx.auth
        if auth is None:
            raise AuthenticationFailed()
        user = self._session.get(User, auth.user_id)
        directory_groups = list(user.directory_group_ids or []) if user else []
        return bool(self._system_role_names(auth.user_id, directory_groups))

    def _system_role_names(self, user_id: str, group_ids: list[str]) -> set[str]:
        """The roles a user holds on the system. The roles service's own
        ``effective_system_role_names`` when it has one; until then this private
        fallback: system grants to the user or its groups, plus what they imply."""
        effective = getattr(self._roles, "effective_system_role_names", None)
        if effective is not None:
            return set(effective(user_id))
        groups = select(GroupMembership.group_id).where(GroupMembership.user_id == user_id)
        names = set(
            self._session.scalars(
                select(Role.name)
                .join(RoleAssignment, RoleAssignment.role_id == Role.id)
                .where(
                    RoleAssignment.system == "all",
                    or_(
                        RoleAssignment.user_id == user_id,
                        RoleAssignment.group_id.in_(groups),
                        RoleAssignment.group_id.in_(group_ids),
                    ),
                )
            )
        )
        return self._roles.expand_names(names) if names else set()

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
        held = verified.held_roles
        if held is None:  # a directory's groups count too: the full query
            held = frozenset(
                self._roles.effective_role_names(
                    owner.id,
                    project_id=project.id,
                    directory_group_ids=verified.directory_group_ids,
                )
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

    def credential_caller(self, ctx: CallContext, credential_id: str, secret: str) -> AuthContext:
        """Check an application credential's secret (its use is recorded) and answer the
        caller a token from it would be now, without issuing one: the credential's roles
        its owner still holds on its live project. What an OAuth client acts as when it
        introspects or revokes (RFC 7662, RFC 7009)."""
        verified = self._credentials.verify_and_record(ctx, {"id": credential_id}, secret)
        credential, owner, project = verified.credential, verified.owner, verified.project
        return AuthContext(
            user_id=owner.id,
            user_domain_id=owner.domain_id,
            token_id="",  # no token is issued
            roles=frozenset(self.current_roles(verified)),
            project_id=credential.project_id,
            project_domain_id=project.domain_id if project else None,
            is_admin_project=bool(project and project.is_admin_project),
            kind=owner.kind,
            application_credential_id=credential.id,
            restricted=not credential.unrestricted,
            access_rules=tuple(credential.access_rules or ()),
        )

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
            self._backends.sql.verify_password(_NOBODY, password)
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
        verified = self._backends.of(domain).verify_password(user, password)
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
        if not scope_ref or "unscoped" in scope_ref:
            return Scope(), set()
        if "system" in scope_ref:
            if not (scope_ref["system"] or {}).get("all"):
                raise InvalidRequest('the system scope is {"all": true}', code="scope_invalid")
            roles = self._system_role_names(user.id, group_ids)
            if not roles:
                self._deny_scope(ctx, user, "no_roles_on_system")
            return Scope(system=True), roles
        if "trust" in scope_ref:
            raise InvalidRequest("a trust scope is asked alone", code="scope_invalid")
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
        if scope.system:
            details["system"] = "all"
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


def _expiry_of(claims: dict[str, Any]) -> datetime:
    return datetime.fromtimestamp(claims["exp"], UTC)


def _lockout_source(ctx: CallContext) -> str:
    """Where the attempt came from, as the lockout counts it (the client address as
    trusted proxies tell it; latchkey/frontdoors/http/proxies.py)."""
    return (ctx.source_ip or "unknown")[:64]


# A stand-in for the unknown-user path: verifying against it costs a real hash check.
_NOBODY = User(id="", name="", domain_id="", password_hash=None)
