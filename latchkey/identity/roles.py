"""Roles, role implications and role assignments (direct and effective)."""

from __future__ import annotations

import functools
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, String, bindparam, or_, select

from latchkey.audit import AuditTarget
from latchkey.errors import Conflict, InvalidRequest, NotFound
from latchkey.identity.accounts import Accounts
from latchkey.identity.common import IdentityServiceBase, ServiceDeps
from latchkey.identity.directory import Directory
from latchkey.identity.models import (
    Group,
    GroupMembership,
    Role,
    RoleAssignment,
    RoleImplication,
    User,
)
from latchkey.identity.revocations import USER
from latchkey.policy.context import CallContext
from latchkey.policy.enforcer import UNKNOWN, Target

PROJECT, DOMAIN = "project", "domain"
USER_ACTOR, GROUP_ACTOR = "user", "group"


@dataclass(frozen=True)
class Assignment:
    role_id: str
    role_name: str
    scope_type: str  # project | domain
    scope_id: str
    user_id: str | None = None
    group_id: str | None = None
    via_group_id: str | None = None  # effective listings: granted through this group
    implied_by: str | None = None  # effective listings: implied by this role name

    def as_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "role": {"id": self.role_id, "name": self.role_name},
            "scope": {self.scope_type: {"id": self.scope_id}},
        }
        if self.user_id:
            result["user"] = {"id": self.user_id}
        if self.group_id:
            result["group"] = {"id": self.group_id}
        if self.via_group_id:
            result["via_group"] = {"id": self.via_group_id}
        if self.implied_by:
            result["implied_by"] = self.implied_by
        return result


ROLE_IDS_SECONDS = 60.0


class Roles(IdentityServiceBase):
    def __init__(self, deps: ServiceDeps, *, directory: Directory, accounts: Accounts) -> None:
        super().__init__(deps)
        self._directory = directory
        self._accounts = accounts
        self._role_ids: dict[str, str] = {}  # name -> id, ids_by_name's memory
        self._role_ids_since = time.monotonic()

    # -- roles ------------------------------------------------------------------

    def find_role(self, ref: str) -> Role:
        role = self._session.get(Role, ref) or self._session.scalar(
            select(Role).where(Role.name == ref)
        )
        if role is None:
            raise NotFound(f"no role {ref!r}", code="role_not_found")
        return role

    def ids_by_name(self, names: Iterable[str]) -> dict[str, str]:
        """Role name -> id, for answers that name roles both ways (Keystone tokens).

        Remembered in the process (a query per `/v3` validation was its only one):
        a role is never renamed, deleting one revokes every token naming it, and
        the memory is dropped every ``ROLE_IDS_SECONDS`` in case a name was
        deleted and created again elsewhere."""
        wanted = list(names)
        if time.monotonic() - self._role_ids_since > ROLE_IDS_SECONDS:
            self._role_ids, self._role_ids_since = {}, time.monotonic()
        known = self._role_ids
        missing = [name for name in wanted if name not in known]
        if missing:
            found = self._session.scalars(select(Role).where(Role.name.in_(missing)))
            known = self._role_ids = {**known, **{role.name: role.id for role in found}}
        return {name: known[name] for name in wanted if name in known}

    def list_roles(self, ctx: CallContext, name: str | None = None) -> list[Role]:
        self._enforce(ctx, "identity:role:list", Target())
        query = select(Role).order_by(Role.name)
        if name:
            query = query.where(Role.name == name)
        return list(self._session.scalars(query))

    def get_role(self, ctx: CallContext, ref: str) -> Role:
        self._enforce(ctx, "identity:role:get", Target())
        return self.find_role(ref)

    def create_role(self, ctx: CallContext, data: dict[str, Any]) -> Role:
        self._enforce(ctx, "identity:role:create", Target())
        if self._session.scalar(select(Role.id).where(Role.name == data["name"])):
            raise Conflict(f"a role named {data['name']!r} exists", code="role_name_taken")
        role = Role(**data)
        self._session.add(role)
        self._session.flush()
        self._record_change(
            ctx, "identity:role:create", AuditTarget("role", role.id), name=role.name
        )
        self._commit("role_name_taken", "a role with this name exists")
        return role

    def delete_role(self, ctx: CallContext, ref: str) -> None:
        self._enforce(ctx, "identity:role:delete", Target())
        role = self.find_role(ref)
        for user_id in self._holders(role.id):
            self._revocations.add(USER, user_id)
        self._session.delete(role)
        self._record_change(
            ctx, "identity:role:delete", AuditTarget("role", role.id), name=role.name
        )
        self._commit("role_in_use", "the role is still referenced")
        self._role_ids = {k: v for k, v in self._role_ids.items() if v != role.id}

    def list_implications(self, ctx: CallContext) -> list[tuple[Role, Role]]:
        self._enforce(ctx, "identity:role:list", Target())
        roles = {r.id: r for r in self._session.scalars(select(Role))}
        return [
            (roles[i.prior_role_id], roles[i.implied_role_id])
            for i in self._session.scalars(select(RoleImplication))
        ]

    def imply(self, ctx: CallContext, prior_ref: str, implied_ref: str) -> None:
        self._enforce(ctx, "identity:role:imply", Target())
        prior, implied = self.find_role(prior_ref), self.find_role(implied_ref)
        closure = self._closure()
        if prior.id == implied.id or prior.id in closure.get(implied.id, set()):
            raise InvalidRequest(
                "role implications must not form a cycle", code="role_implication_cycle"
            )
        if self._session.get(RoleImplication, (prior.id, implied.id)) is None:
            self._session.add(RoleImplication(prior_role_id=prior.id, implied_role_id=implied.id))
            self._record_change(
                ctx, "identity:role:imply", AuditTarget("role", prior.id), implied=implied.name
            )
        self._commit("role_implication_exists", "the implication exists")

    def unimply(self, ctx: CallContext, prior_ref: str, implied_ref: str) -> None:
        self._enforce(ctx, "identity:role:imply", Target())
        prior, implied = self.find_role(prior_ref), self.find_role(implied_ref)
        implication = self._session.get(RoleImplication, (prior.id, implied.id))
        if implication is None:
            raise NotFound("no such implication", code="role_implication_not_found")
        for user_id in self._holders(prior.id):
            self._revocations.add(USER, user_id)
        self._session.delete(implication)
        self._record_change(
            ctx, "identity:role:unimply", AuditTarget("role", prior.id), implied=implied.name
        )
        self._session.commit()

    # -- assignments ------------------------------------------------------------

    def grant(
        self,
        ctx: CallContext,
        scope_type: str,
        scope_id: str,
        actor_type: str,
        actor_id: str,
        role_ref: str,
    ) -> None:
        target = self._assignment_target(scope_type, scope_id, role_ref, actor_type, actor_id)
        self._enforce(ctx, "identity:role_assignment:grant", target)
        role = self.find_role(role_ref)
        self._check_scope(scope_type, scope_id)
        self._check_actor(actor_type, actor_id)
        key = assignment_key(scope_type, scope_id, actor_type, actor_id, role.id)
        if self._session.scalar(select(RoleAssignment.id).where(RoleAssignment.key == key)):
            return  # PUT is idempotent
        self._session.add(
            RoleAssignment(
                key=key, role_id=role.id, **_columns(scope_type, scope_id, actor_type, actor_id)
            )
        )
        self._record_change(
            ctx,
            "identity:role_assignment:grant",
            _scope_audit(target),
            role=role.name,
            **{f"{actor_type}_id": actor_id},
        )
        self._commit("role_assignment_exists", "the assignment exists")

    def revoke(
        self,
        ctx: CallContext,
        scope_type: str,
        scope_id: str,
        actor_type: str,
        actor_id: str,
        role_ref: str,
    ) -> None:
        target = self._assignment_target(scope_type, scope_id, role_ref, actor_type, actor_id)
        self._enforce(ctx, "identity:role_assignment:revoke", target)
        role = self.find_role(role_ref)
        self._check_scope(scope_type, scope_id)
        key = assignment_key(scope_type, scope_id, actor_type, actor_id, role.id)
        assignment = self._session.scalar(select(RoleAssignment).where(RoleAssignment.key == key))
        if assignment is None:
            raise NotFound("no such role assignment", code="role_assignment_not_found")
        affected = [actor_id] if actor_type == USER_ACTOR else self._group_member_ids(actor_id)
        for user_id in affected:
            self._revocations.add(USER, user_id)  # live tokens may carry the role
        self._session.delete(assignment)
        self._record_change(
            ctx,
            "identity:role_assignment:revoke",
            _scope_audit(target),
            role=role.name,
            **{f"{actor_type}_id": actor_id},
        )
        self._session.commit()

    def list_assignments(
        self,
        ctx: CallContext,
        *,
        user_id: str | None,
        group_id: str | None,
        project_id: str | None,
        domain_id: str | None,
        role: str | None,
        effective: bool,
    ) -> list[Assignment]:
        self._enforce(
            ctx,
            "identity:role_assignment:list",
            self._listing_target(user_id, project_id, domain_id),
        )
        role_id = self.find_role(role).id if role else None
        query = select(RoleAssignment)
        if project_id:
            query = query.where(RoleAssignment.project_id == project_id)
        if domain_id:
            query = query.where(RoleAssignment.domain_id == domain_id)
        if group_id:
            query = query.where(RoleAssignment.group_id == group_id)
        if user_id and not effective:
            query = query.where(RoleAssignment.user_id == user_id)
        elif user_id:
            groups = select(GroupMembership.group_id).where(GroupMembership.user_id == user_id)
            user = self._session.get(User, user_id)
            directory_groups = list((user.directory_group_ids or []) if user else [])
            query = query.where(
                or_(
                    RoleAssignment.user_id == user_id,
                    RoleAssignment.group_id.in_(groups),
                    RoleAssignment.group_id.in_(directory_groups),
                )
            )
        rows = list(self._session.scalars(query.order_by(RoleAssignment.id)))
        names = {r.id: r.name for r in self._session.scalars(select(Role))}
        direct = [_assignment(row, names) for row in rows]
        result = direct if not effective else self._expand(direct, names, only_user=user_id)
        if role_id:
            result = [a for a in result if a.role_id == role_id]
        return result

    def effective_role_names(
        self,
        user_id: str,
        *,
        project_id: str | None = None,
        domain_id: str | None = None,
        directory_group_ids: Sequence[str] = (),
    ) -> set[str]:
        """Roles a user holds on one project or domain: direct, via groups, implied.

        ``directory_group_ids``: the groups an LDAP directory says the user is in.
        """
        query = _effective_role_names("project" if project_id else "domain")
        params = {
            "user_id": user_id,
            "scope_id": project_id if project_id else domain_id,
            "directory_group_ids": list(directory_group_ids),
        }
        return set(self._session.scalars(query, params))

    def expand_names(self, names: set[str]) -> set[str]:
        """The given role names plus every role they imply."""
        by_name = {r.name: r.id for r in self._session.scalars(select(Role))}
        by_id = {v: k for k, v in by_name.items()}
        closure = self._closure()
        expanded = set(names)
        for name in names:
            expanded |= {by_id[i] for i in closure.get(by_name[name], set())}
        return expanded

    # -- helpers ----------------------------------------------------------------

    def _closure(self) -> dict[str, set[str]]:
        """Role id -> every role id it implies, transitively."""
        edges: dict[str, set[str]] = {}
        for imp in self._session.scalars(select(RoleImplication)):
            edges.setdefault(imp.prior_role_id, set()).add(imp.implied_role_id)
        closure: dict[str, set[str]] = {}
        for start in edges:
            seen: set[str] = set()
            stack = list(edges[start])
            while stack:
                node = stack.pop()
                if node not in seen:
                    seen.add(node)
                    stack.extend(edges.get(node, ()))
            closure[start] = seen
        return closure

    def _expand(
        self, direct: Iterable[Assignment], names: dict[str, str], only_user: str | None
    ) -> list[Assignment]:
        closure = self._closure()
        users: list[Assignment] = []
        for a in direct:
            if a.group_id:
                members = self._group_member_ids(a.group_id)
                users += [
                    Assignment(
                        a.role_id,
                        a.role_name,
                        a.scope_type,
                        a.scope_id,
                        user_id=m,
                        via_group_id=a.group_id,
                    )
                    for m in members
                    if only_user is None or m == only_user
                ]
            else:
                users.append(a)
        result = list(users)
        for a in users:
            result += [
                Assignment(
                    implied,
                    names[implied],
                    a.scope_type,
                    a.scope_id,
                    user_id=a.user_id,
                    via_group_id=a.via_group_id,
                    implied_by=a.role_name,
                )
                for implied in sorted(closure.get(a.role_id, ()))
            ]
        return result

    def _holders(self, role_id: str) -> set[str]:
        users: set[str] = set()
        for row in self._session.scalars(
            select(RoleAssignment).where(RoleAssignment.role_id == role_id)
        ):
            if row.user_id:
                users.add(row.user_id)
            elif row.group_id:
                users.update(self._group_member_ids(row.group_id))
        return users

    def _group_member_ids(self, group_id: str) -> list[str]:
        members = list(
            self._session.scalars(
                select(GroupMembership.user_id).where(GroupMembership.group_id == group_id)
            )
        )
        group = self._session.get(Group, group_id)
        if group is not None and group.external_id is not None:
            # An LDAP group: the directory holds the membership; Latchkey knows the
            # groups each user was in at their last login or credential re-check.
            rows = self._session.execute(
                select(User.id, User.directory_group_ids).where(User.domain_id == group.domain_id)
            )
            members += [user_id for user_id, ids in rows if ids and group_id in ids]
        return members

    def _assignment_target(
        self, scope_type: str, scope_id: str, role_ref: str, actor_type: str, actor_id: str
    ) -> Target:
        """Built before anything is refused for not existing: an unknown role is named
        as given (no one but a cloud admin holds it: the escalation check refuses
        it), an unknown actor lies in no domain the caller manages (``UNKNOWN``), so
        the unauthorized learn nothing from the answer (docs/decisions.md)."""
        role = self._session.get(Role, role_ref) or self._session.scalar(
            select(Role).where(Role.name == role_ref)
        )
        role_name = role.name if role else role_ref
        actor: User | Group | None = (
            self._session.get(User, actor_id)
            if actor_type == USER_ACTOR
            else self._session.get(Group, actor_id)
        )
        actor_domain = actor.domain_id if actor else UNKNOWN
        if scope_type == PROJECT:
            project = self._directory.find_project(project_id=scope_id, name=None, domain_id=None)
            return Target(
                domain_id=project.domain_id if project else None,
                project_id=scope_id,
                role=role_name,
                privileged=bool(project and project.is_admin_project),
                other_domain_id=actor_domain,
                attributes={"role": role_name, "actor_type": actor_type},
            )
        return Target(domain_id=scope_id, role=role_name, other_domain_id=actor_domain)

    def _check_scope(self, scope_type: str, scope_id: str) -> None:
        """After enforcement, so that only those allowed learn whether the target exists."""
        if scope_type == PROJECT:
            self._directory.get_project_record(scope_id)
        else:
            self._directory.get_domain_record(scope_id)

    def _listing_target(
        self, user_id: str | None, project_id: str | None, domain_id: str | None
    ) -> Target:
        if project_id:
            project = self._directory.find_project(project_id=project_id, name=None, domain_id=None)
            project_domain = project.domain_id if project else None
            return Target(domain_id=project_domain, project_id=project_id, user_id=user_id)
        if domain_id:
            return Target(domain_id=domain_id, user_id=user_id)
        if user_id:
            user = self._session.get(User, user_id)
            return Target(domain_id=user.domain_id if user else None, user_id=user_id)
        return Target()

    def _check_actor(self, actor_type: str, actor_id: str) -> None:
        if actor_type == USER_ACTOR:
            self._accounts.get_user_record(actor_id)
        else:
            self._accounts.get_group_record(actor_id)


@functools.cache
def _effective_role_names(scope_type: str) -> Select[str]:
    """The query behind ``effective_role_names``, built once per scope type.

    One query, exact on every worker: the roles assigned (directly, through a group,
    or through a directory group), then, recursively, every role they imply, then
    their names. UNION (not UNION ALL) visits each role once, so the recursion ends
    even if the table ever held a cycle.
    """
    user_id = bindparam("user_id", type_=String)
    groups = select(GroupMembership.group_id).where(GroupMembership.user_id == user_id)
    scope = RoleAssignment.project_id if scope_type == PROJECT else RoleAssignment.domain_id
    assigned = select(RoleAssignment.role_id).where(
        or_(
            RoleAssignment.user_id == user_id,
            RoleAssignment.group_id.in_(groups),
            RoleAssignment.group_id.in_(bindparam("directory_group_ids", expanding=True)),
        ),
        scope == bindparam("scope_id"),
    )
    held = assigned.cte("held_role", recursive=True)
    implied = select(RoleImplication.implied_role_id).join(
        held, RoleImplication.prior_role_id == held.c.role_id
    )
    held = held.union(implied)
    return select(Role.name).join(held, Role.id == held.c.role_id)


def assignment_key(
    scope_type: str, scope_id: str, actor_type: str, actor_id: str, role_id: str
) -> str:
    return f"{actor_type}:{actor_id}:{scope_type}:{scope_id}:{role_id}"


def _columns(scope_type: str, scope_id: str, actor_type: str, actor_id: str) -> dict[str, str]:
    return {f"{scope_type}_id": scope_id, f"{actor_type}_id": actor_id}


def _assignment(row: RoleAssignment, names: dict[str, str]) -> Assignment:
    scope_type, scope_id = (PROJECT, row.project_id) if row.project_id else (DOMAIN, row.domain_id)
    return Assignment(
        row.role_id,
        names[row.role_id],
        scope_type,
        scope_id or "",
        user_id=row.user_id,
        group_id=row.group_id,
    )


def _scope_audit(target: Target) -> AuditTarget:
    if target.project_id:
        return AuditTarget(
            "project", target.project_id, project_id=target.project_id, domain_id=target.domain_id
        )
    return AuditTarget("domain", target.domain_id, domain_id=target.domain_id)
