"""What the identity services share: the session, enforcement, audit, paging."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Select, or_, select
from sqlalchemy.exc import IntegrityError

from latchkey.audit import CHANGE, AuditLog, AuditTarget
from latchkey.db import DbSession
from latchkey.errors import Conflict
from latchkey.identity.backends.sql import page_of
from latchkey.identity.models import GroupMembership, Project, RoleAssignment, User
from latchkey.policy.context import CallContext
from latchkey.policy.enforcer import Enforcer, Target
from latchkey.tokens.revocations import RevocationList

T = TypeVar("T")
U = TypeVar("U")
_ADMIN_PROJECTS = select(Project.id).where(Project.is_admin_project).scalar_subquery()
# A cloud operator's grant: on the admin project, or on the system (a system-scoped
# token acts as the cloud, issue 14), so only cloud callers manage its holders.
_OPERATORS_GRANT = or_(
    RoleAssignment.project_id.in_(_ADMIN_PROJECTS), RoleAssignment.system.is_not(None)
)
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_marker: str | None

    def map(self, convert: Callable[[T], U]) -> Page[U]:
        """The same page with each item converted (rows to records)."""
        return Page([convert(item) for item in self.items], self.next_marker)


@dataclass(frozen=True)
class ServiceDeps:
    """What every identity service is built with (see ``create_app``)."""

    session: DbSession
    enforcer: Enforcer
    audit: AuditLog
    revocations: RevocationList


class IdentityServiceBase:
    def __init__(self, deps: ServiceDeps) -> None:
        self._session = deps.session
        self._enforcer = deps.enforcer
        self._audit = deps.audit
        self._revocations = deps.revocations

    def _enforce(self, ctx: CallContext, action: str, target: Target) -> None:
        self._enforcer.enforce(ctx.auth, action, target)

    def _is_cloud_operator(self, user_id: str) -> bool:
        """Holds a role on the admin project, directly or through a group."""
        groups = select(GroupMembership.group_id).where(GroupMembership.user_id == user_id)
        user = self._session.get(User, user_id)
        directory_groups = list(user.directory_group_ids or []) if user else []
        query = select(RoleAssignment.id).where(
            _OPERATORS_GRANT,
            or_(
                RoleAssignment.user_id == user_id,
                RoleAssignment.group_id.in_(groups),
                RoleAssignment.group_id.in_(directory_groups),  # LDAP groups, last known
            ),
        )
        return self._session.scalar(query.limit(1)) is not None

    def _is_cloud_group(self, group_id: str) -> bool:
        query = select(RoleAssignment.id).where(
            _OPERATORS_GRANT, RoleAssignment.group_id == group_id
        )
        return self._session.scalar(query.limit(1)) is not None

    def _record_change(
        self, ctx: CallContext, action: str, target: AuditTarget, **details: Any
    ) -> None:
        self._audit.add(
            type=CHANGE,
            action=action,
            outcome="success",
            actor_id=ctx.actor_id,
            target=target,
            request_id=ctx.request_id,
            source_ip=ctx.source_ip,
            details=details,
        )

    def _commit(self, conflict_code: str, conflict_detail: str) -> None:
        """Commit, turning a uniqueness race into a 409 and leaving nothing half-written."""
        try:
            self._session.commit()
        except IntegrityError as exc:
            self._session.rollback()
            raise Conflict(conflict_detail, code=conflict_code) from exc

    def _page(
        self, query: Select[Any], id_column: Any, marker: str | None, limit: int | None
    ) -> Page[Any]:
        rows, next_marker = page_of(self._session, query, id_column, marker, page_size(limit))
        return Page(rows, next_marker)


def page_size(limit: int | None) -> int:
    return min(limit or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
