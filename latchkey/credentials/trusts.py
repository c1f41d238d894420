"""OS-TRUST trusts: a trustor delegates some of its roles on one project to a trustee.

Keystone's delegation (issue 14). The trustee authenticates as usual and asks for a
token scoped to the trust: it gets the trust's project and the trust's roles that the
trustor still holds there, as the trustor when the trust impersonates, else as itself.
A trust can be used ``remaining_uses`` times (unlimited when null) until
``expires_at``; deleting it revokes every token it gave (revocation kind ``trust``).
Deleting the trustor, the trustee or the project deletes the trust (the database
cascades) and, through the user's or project's revocation event, its tokens.

Keystone's security rules kept: only the caller can be the trustor; a token from an
application credential can neither create nor use a trust; a trust-scoped token
cannot create another (Latchkey refuses redelegation altogether).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import or_, select, update

from latchkey.audit import AuditTarget
from latchkey.credentials.models import Trust
from latchkey.credentials.records import TrustRecord
from latchkey.db import new_id, utcnow
from latchkey.errors import Forbidden, InvalidRequest, NotFound
from latchkey.identity.common import IdentityServiceBase, ServiceDeps
from latchkey.identity.directory import Directory
from latchkey.identity.models import Project, Role, User
from latchkey.identity.records import RoleRecord
from latchkey.identity.roles import Roles
from latchkey.policy.context import AuthContext, CallContext
from latchkey.policy.enforcer import UNKNOWN, Target
from latchkey.tokens.revocations import TRUST

# Keystone's trust policies, by the Latchkey action that decides each.
POLICY_NAMES: dict[str, str] = {
    "identity:create_trust": "identity:trust:create",
    "identity:list_trusts": "identity:trust:list",
    "identity:list_trusts_for_trustor": "identity:trust:list",
    "identity:list_trusts_for_trustee": "identity:trust:list",
    "identity:get_trust": "identity:trust:get",
    "identity:delete_trust": "identity:trust:delete",
    "identity:list_roles_for_trust": "identity:trust:get",
    "identity:get_role_for_trust": "identity:trust:get",
}


@dataclass(frozen=True)
class TrustGrant:
    """What a usable trust gives: the project, the user the token names, the roles."""

    trust: Trust
    project: Project
    user: User
    roles: set[str]


class Trusts(IdentityServiceBase):
    def __init__(self, deps: ServiceDeps, *, directory: Directory, roles: Roles) -> None:
        super().__init__(deps)
        self._directory = directory
        self._roles = roles

    # -- the API ------------------------------------------------------------------

    def create(self, ctx: CallContext, data: dict[str, Any]) -> TrustRecord:
        auth = ctx.auth
        if auth is not None and auth.application_credential_id:
            raise Forbidden(
                "a token from an application credential cannot create a trust",
                code="application_credential_trust",
            )
        if auth is not None and auth.trust_id:
            raise Forbidden(
                "a trust-scoped token cannot create a trust (no redelegation)",
                code="trust_redelegation",
            )
        trustor_id = _string(data, "trustor_user_id", required=True) or ""
        self._enforce(ctx, "identity:trust:create", Target(user_id=trustor_id, self_only=True))
        assert auth is not None
        if data.get("allow_redelegation") or data.get("redelegation_count"):
            raise Forbidden("Latchkey does not redelegate trusts", code="trust_redelegation")
        impersonation = data.get("impersonation")
        if not isinstance(impersonation, bool):
            raise InvalidRequest("impersonation must be true or false")
        trustee_id = _string(data, "trustee_user_id", required=True) or ""
        trustee = self._session.get(User, trustee_id)
        if trustee is None:
            raise NotFound(f"Could not find user: {trustee_id}.", code="user_not_found")
        project_id = _string(data, "project_id", required=False)
        role_refs = data.get("roles") or []
        if not isinstance(role_refs, list):
            raise InvalidRequest("roles must be a list")
        role_ids = self._role_ids(role_refs)
        if project_id is not None:
            project = self._session.get(Project, project_id)
            if project is None:
                raise NotFound(f"Could not find project: {project_id}.", code="project_not_found")
            if not role_ids:
                raise InvalidRequest("a trust on a project names at least one role")
            held = self._roles.effective_role_names(auth.user_id, project_id=project_id)
            names = self._names(role_ids)
            if not set(names.values()) <= held:
                raise Forbidden(
                    "a trust delegates only roles the trustor holds on the project",
                    code="trust_role_not_held",
                )
        elif role_ids:
            raise InvalidRequest("roles are delegated on a project: give project_id")
        expires_at = _expiry(data.get("expires_at"))
        remaining = data.get("remaining_uses")
        if remaining is not None and (
            isinstance(remaining, bool) or not isinstance(remaining, int) or remaining < 1
        ):
            raise InvalidRequest("remaining_uses must be a positive integer or null")
        trust = Trust(
            id=new_id(),
            trustor_user_id=trustor_id,
            trustee_user_id=trustee_id,
            project_id=project_id,
            impersonation=impersonation,
            role_ids=sorted(role_ids),
            expires_at=expires_at,
            remaining_uses=remaining,
        )
        self._session.add(trust)
        self._record_change(
            ctx,
            "identity:trust:create",
            AuditTarget("trust", trust.id, project_id=project_id),
            trustee_user_id=trustee_id,
            impersonation=impersonation,
        )
        self._session.commit()
        return TrustRecord.of(trust)

    def list_trusts(
        self,
        ctx: CallContext,
        trustor_user_id: str | None = None,
        trustee_user_id: str | None = None,
    ) -> list[TrustRecord]:
        auth = ctx.auth
        query = select(Trust).order_by(Trust.created_at, Trust.id)
        if trustor_user_id:
            query = query.where(Trust.trustor_user_id == trustor_user_id)
        if trustee_user_id:
            query = query.where(Trust.trustee_user_id == trustee_user_id)
        if auth is None:
            self._enforce(ctx, "identity:trust:list", Target())
        assert auth is not None
        if auth.user_id in (trustor_user_id, trustee_user_id):
            self._enforce(ctx, "identity:trust:list", Target(user_id=auth.user_id))
        elif self._enforcer_allows(auth, "identity:trust:list"):
            pass
        elif trustor_user_id or trustee_user_id:
            self._enforce(ctx, "identity:trust:list", Target(user_id=trustor_user_id))
        else:
            # Everyone else sees only the trusts they are part of.
            self._enforce(ctx, "identity:trust:list", Target(user_id=auth.user_id))
            query = query.where(
                or_(Trust.trustor_user_id == auth.user_id, Trust.trustee_user_id == auth.user_id)
            )
        now = utcnow()
        return [TrustRecord.of(t) for t in self._session.scalars(query) if _alive(t, now)]

    def get(self, ctx: CallContext, trust_id: str) -> TrustRecord:
        trust = self._find(ctx, "identity:trust:get", trust_id)
        self._enforce(ctx, "identity:trust:get", _participant_target(ctx.auth, trust))
        return TrustRecord.of(trust)

    def delete(self, ctx: CallContext, trust_id: str) -> None:
        trust = self._find(ctx, "identity:trust:delete", trust_id, include_expired=True)
        self._enforce(ctx, "identity:trust:delete", Target(user_id=trust.trustor_user_id))
        self._session.delete(trust)
        self._revocations.add(TRUST, trust.id)
        self._record_change(
            ctx,
            "identity:trust:delete",
            AuditTarget("trust", trust.id, project_id=trust.project_id),
        )
        self._session.commit()

    def roles(self, ctx: CallContext, trust_id: str) -> list[RoleRecord]:
        return self.role_records(self.get(ctx, trust_id))

    def role_records(self, trust: TrustRecord) -> list[RoleRecord]:
        """The trust's roles (for an answer about a trust already authorized)."""
        if not trust.role_ids:
            return []
        found = self._session.scalars(select(Role).where(Role.id.in_(trust.role_ids)))
        return [RoleRecord.of(role) for role in sorted(found, key=lambda r: r.name)]

    def role_names(self, trust: Trust) -> dict[str, str]:
        return self._names(trust.role_ids)

    # -- authentication -----------------------------------------------------------

    def consume(self, trust_id: str, trustee_id: str) -> TrustGrant | None:
        """The trustee's use of a trust: what the token gets, or None (refused).

        Counts one use down in one statement (concurrent uses cannot overspend).
        The caller commits with the token's audit event.
        """
        trust = self._session.get(Trust, trust_id) if trust_id else None
        if trust is None or trust.trustee_user_id != trustee_id or not _alive(trust, utcnow()):
            return None
        if trust.project_id is None:
            return None
        project = self._session.get(Project, trust.project_id)
        trustor = self._session.get(User, trust.trustor_user_id)
        if project is None or not project.enabled or trustor is None or not trustor.enabled:
            return None
        held = self._roles.effective_role_names(trustor.id, project_id=project.id)
        delegated = set(self._names(trust.role_ids).values())
        roles = self._roles.expand_names(delegated & held) if delegated & held else set()
        if not roles:
            return None
        if trust.remaining_uses is not None:
            spent = self._session.execute(
                update(Trust)
                .where(Trust.id == trust.id, Trust.remaining_uses > 0)
                .values(remaining_uses=Trust.remaining_uses - 1)
                .execution_options(synchronize_session=False)
            )
            if getattr(spent, "rowcount", 0) != 1:
                return None
        user = trustor if trust.impersonation else self._session.get(User, trustee_id)
        if user is None:
            return None
        return TrustGrant(trust, project, user, roles)

    # -- helpers ------------------------------------------------------------------

    def _find(
        self, ctx: CallContext, action: str, trust_id: str, include_expired: bool = False
    ) -> Trust:
        """The trust, when the caller is its trustor, its trustee or may act on anyone's;
        for everyone else a foreign trust is as missing as an unknown one (404): no
        existence oracle."""
        trust = self._session.get(Trust, trust_id)
        missing = trust is None or (not include_expired and not _alive(trust, utcnow()))
        auth = ctx.auth
        if not missing and auth is not None:
            assert trust is not None
            if auth.user_id in (trust.trustor_user_id, trust.trustee_user_id):
                return trust
            if self._enforcer.allowed(auth, action, Target(user_id=trust.trustor_user_id)):
                return trust
        if auth is None:
            self._enforce(ctx, action, Target(user_id=UNKNOWN))
        raise NotFound(f"Could not find trust: {trust_id}.", code="trust_not_found")

    def _enforcer_allows(self, auth: AuthContext | None, action: str) -> bool:
        return auth is not None and self._enforcer.allowed(auth, action, Target())

    def _role_ids(self, refs: list[Any]) -> set[str]:
        ids: set[str] = set()
        for ref in refs:
            if not isinstance(ref, dict) or not (ref.get("id") or ref.get("name")):
                raise InvalidRequest("each role is {'id': …} or {'name': …}")
            if ref.get("id"):
                role = self._session.get(Role, str(ref["id"]))
            else:
                role = self._session.scalar(select(Role).where(Role.name == str(ref["name"])))
            if role is None:
                raise NotFound(
                    f"Could not find role: {ref.get('id') or ref.get('name')}.",
                    code="role_not_found",
                )
            ids.add(role.id)
        return ids

    def _names(self, role_ids: list[str] | set[str]) -> dict[str, str]:
        if not role_ids:
            return {}
        rows = self._session.execute(select(Role.id, Role.name).where(Role.id.in_(role_ids)))
        return {row.id: row.name for row in rows}


def _alive(trust: Trust, now: datetime) -> bool:
    if trust.expires_at is not None and trust.expires_at <= now:
        return False
    return trust.remaining_uses is None or trust.remaining_uses > 0


def _participant_target(auth: AuthContext | None, trust: Trust) -> Target:
    """The trustor and the trustee may read a trust (Keystone); others need cloud scope."""
    if auth is not None and auth.user_id in (trust.trustor_user_id, trust.trustee_user_id):
        return Target(user_id=auth.user_id)
    return Target(user_id=trust.trustor_user_id)


def _string(data: dict[str, Any], key: str, *, required: bool) -> str | None:
    value = data.get(key)
    if value is None:
        if required:
            raise InvalidRequest(f"{key} is required")
        return None
    if not isinstance(value, str) or not value or len(value) > 64:
        raise InvalidRequest(f"{key} must be an id")
    return value


def _expiry(value: Any) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRequest("expires_at must be an ISO 8601 time")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidRequest("expires_at must be an ISO 8601 time") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    if moment <= utcnow():
        raise InvalidRequest("expires_at is in the past")
    return moment
