"""Roles, role implications and role assignments (direct and effective)."""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import (
    ColumnElement,
    ScalarSelect,
    Select,
    String,
    and_,
    bindparam,
    false,
    or_,
    select,
    true,
)

from latchkey.audit import AuditTarget
from latchkey.db import json_strings
from latchkey.errors import Conflict, Forbidden, InvalidRequest, NotFound
from latchkey.identity.accounts import Accounts
from latchkey.identity.common import IdentityServiceBase, ServiceDeps
from latchkey.identity.directory import Directory
from latchkey.identity.models import (
    Domain,
    Group,
    GroupMembership,
    Project,
    Role,
    RoleAssignment,
    RoleImplication,
    User,
)
from latchkey.identity.records import RoleRecord
from latchkey.policy.context import CallContext
from latchkey.policy.enforcer import RULES, UNKNOWN, Target
from latchkey.tokens.revocations import USER

PROJECT, DOMAIN, SYSTEM = "project", "domain", "system"
SYSTEM_ALL = "all"  # Keystone's only system target
USER_ACTOR, GROUP_ACTOR = "user", "group"


@dataclass(frozen=True)
class Assignment:
    role_id: str
    role_name: str
    scope_type: str  # project | domain | system
    scope_id: str  # "all" for the system
    user_id: str | None = None
    group_id: str | None = None
    via_group_id: str | None = None  # effective listings: granted through this group
    implied_by: str | None = None  # effective listings: implied by this role name
    inherited: bool = False  # OS-INHERIT: applies to the projects below the target
    prior_role_id: str | None = None  # effective listings: implied by this role id
    # effective listings: the inherited grant (scope type, scope id) this one comes from
    inherited_from: tuple[str, str] | None = None

    def as_dict(self) -> dict[str, Any]:
        scope: dict[str, Any] = (
            {SYSTEM: {SYSTEM_ALL: True}}
            if self.scope_type == SYSTEM
            else {self.scope_type: {"id": self.scope_id}}
        )
        if self.inherited:
            scope["OS-INHERIT:inherited_to"] = "projects"
        result: dict[str, Any] = {
            "role": {"id": self.role_id, "name": self.role_name},
            "scope": scope,
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
# The roles the enforcer's rules name (admin, reader, service): never renamed.
_ENFORCED_ROLES = frozenset(
    name for rule in RULES.values() for name in (rule.role, rule.also_role) if name
)


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

    def list_roles(
        self,
        ctx: CallContext,
        name: str | None = None,
        *,
        domain_id: str | None = None,
        global_only: bool = False,
    ) -> list[RoleRecord]:
        """Every role, or those named ``name``; ``domain_id``: that domain's roles only;
        ``global_only``: no domain-specific role (Keystone's listing without a domain)."""
        self._enforce(ctx, "identity:role:list", Target())
        query = select(Role).order_by(Role.name)
        if name:
            query = query.where(Role.name == name)
        if domain_id:
            query = query.where(Role.domain_id == domain_id)
        elif global_only:
            query = query.where(Role.domain_id.is_(None))
        return [RoleRecord.of(role) for role in self._session.scalars(query)]

    def get_role(self, ctx: CallContext, ref: str) -> RoleRecord:
        self._enforce(ctx, "identity:role:get", Target())
        return RoleRecord.of(self.find_role(ref))

    def create_role(self, ctx: CallContext, data: dict[str, Any]) -> RoleRecord:
        """``data``: name, description, and optionally domain_id (a domain-specific
        role) and extra (attributes echoed back). Names are unique across every
        domain, domain-specific roles included (docs/decisions.md)."""
        self._enforce(ctx, "identity:role:create", Target())
        if data.get("domain_id"):
            self._directory.domain_row(data["domain_id"])
        if self._session.scalar(select(Role.id).where(Role.name == data["name"])):
            raise Conflict(f"a role named {data['name']!r} exists", code="role_name_taken")
        role = Role(**data)
        self._session.add(role)
        self._session.flush()
        self._record_change(
            ctx, "identity:role:create", AuditTarget("role", role.id), name=role.name
        )
        self._commit("role_name_taken", "a role with this name exists")
        return RoleRecord.of(role)

    def update_role(self, ctx: CallContext, ref: str, changes: dict[str, Any]) -> RoleRecord:
        """``changes``: name, description, extra. Tokens carry role names: a rename
        revokes the tokens of everyone holding the role, as a deletion does."""
        self._enforce(ctx, "identity:role:update", Target())
        role = self.find_role(ref)
        new_name = changes.get("name")
        renamed = new_name is not None and new_name != role.name
        if renamed and role.name in _ENFORCED_ROLES:
            # Like Keystone's immutable roles: the rule table names it.
            raise Forbidden(
                f"the role {role.name!r} is named by Latchkey's rules and keeps its name",
                code="role_protected",
            )
        if renamed and self._session.scalar(select(Role.id).where(Role.name == new_name)):
            raise Conflict(f"a role named {new_name!r} exists", code="role_name_taken")
        if renamed:
            for user_id in self._holders_or_implied(role.id):
                self._revocations.add(USER, user_id)
            self._role_ids = {k: v for k, v in self._role_ids.items() if v != role.id}
            role.name = str(new_name)
        if changes.get("description") is not None:
            role.description = changes["description"]
        if "extra" in changes:
            role.extra = {**(role.extra or {}), **changes["extra"]} or None
        self._record_change(
            ctx, "identity:role:update", AuditTarget("role", role.id), name=role.name
        )
        self._commit("role_name_taken", "a role with this name exists")
        return RoleRecord.of(role)

    def delete_role(self, ctx: CallContext, ref: str) -> None:
        self._enforce(ctx, "identity:role:delete", Target())
        role = self.find_role(ref)
        for user_id in self._holders_or_implied(role.id):
            self._revocations.add(USER, user_id)
        self._session.delete(role)
        self._record_change(
            ctx, "identity:role:delete", AuditTarget("role", role.id), name=role.name
        )
        self._commit("role_in_use", "the role is still referenced")
        self._role_ids = {k: v for k, v in self._role_ids.items() if v != role.id}

    def list_implications(self, ctx: CallContext) -> list[tuple[RoleRecord, RoleRecord]]:
        self._enforce(ctx, "identity:role:list", Target())
        roles = {r.id: RoleRecord.of(r) for r in self._session.scalars(select(Role))}
        return [
            (roles[i.prior_role_id], roles[i.implied_role_id])
            for i in self._session.scalars(select(RoleImplication))
        ]

    def get_implication(
        self, ctx: CallContext, prior_ref: str, implied_ref: str
    ) -> tuple[RoleRecord, RoleRecord]:
        self._enforce(ctx, "identity:role:get", Target())
        prior, implied = self.find_role(prior_ref), self.find_role(implied_ref)
        if self._session.get(RoleImplication, (prior.id, implied.id)) is None:
            raise NotFound("no such implication", code="role_implication_not_found")
        return RoleRecord.of(prior), RoleRecord.of(implied)

    def implied_by(self, ctx: CallContext, prior_ref: str) -> tuple[RoleRecord, list[RoleRecord]]:
        """A role and the roles it implies directly."""
        self._enforce(ctx, "identity:role:list", Target())
        prior = self.find_role(prior_ref)
        implied = self._session.scalars(
            select(Role)
            .join(RoleImplication, RoleImplication.implied_role_id == Role.id)
            .where(RoleImplication.prior_role_id == prior.id)
            .order_by(Role.name)
        )
        return RoleRecord.of(prior), [RoleRecord.of(role) for role in implied]

    def imply(
        self, ctx: CallContext, prior_ref: str, implied_ref: str
    ) -> tuple[RoleRecord, RoleRecord]:
        self._enforce(ctx, "identity:role:imply", Target())
        prior, implied = self.find_role(prior_ref), self.find_role(implied_ref)
        if implied.domain_id is not None and prior.domain_id is None:
            # Keystone's rule: a global role would put a domain's role in tokens.
            raise Forbidden(
                "a global role cannot imply a domain-specific role",
                code="role_implication_domain_specific",
            )
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
        return RoleRecord.of(prior), RoleRecord.of(implied)

    def unimply(self, ctx: CallContext, prior_ref: str, implied_ref: str) -> None:
        self._enforce(ctx, "identity:role:imply", Target())
        prior, implied = self.find_role(prior_ref), self.find_role(implied_ref)
        implication = self._session.get(RoleImplication, (prior.id, implied.id))
        if implication is None:
            raise NotFound("no such implication", code="role_implication_not_found")
        for user_id in self._holders_or_implied(prior.id):
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
        *,
        inherited: bool = False,
    ) -> None:
        """Give a role on a project, a domain or the system (``scope_id`` "all").

        ``inherited`` (OS-INHERIT): on a domain, the role applies to every project of
        the domain, not to the domain; on a project, to every project below it."""
        target = self._assignment_target(
            scope_type, scope_id, role_ref, actor_type, actor_id, inherited
        )
        self._enforce(ctx, "identity:role_assignment:grant", target)
        role = self.find_role(role_ref)
        self._check_scope(scope_type, scope_id)
        self._check_actor(actor_type, actor_id)
        self._check_role_fits(role, scope_type, scope_id)
        key = assignment_key(scope_type, scope_id, actor_type, actor_id, role.id, inherited)
        if self._session.scalar(select(RoleAssignment.id).where(RoleAssignment.key == key)):
            return  # PUT is idempotent
        self._session.add(
            RoleAssignment(
                key=key,
                role_id=role.id,
                inherited=inherited,
                **_columns(scope_type, scope_id, actor_type, actor_id),
            )
        )
        self._record_change(
            ctx,
            "identity:role_assignment:grant",
            _scope_audit(target),
            role=role.name,
            **{f"{actor_type}_id": actor_id},
            **({"inherited": True} if inherited else {}),
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
        *,
        inherited: bool = False,
    ) -> None:
        target = self._assignment_target(
            scope_type, scope_id, role_ref, actor_type, actor_id, inherited
        )
        self._enforce(ctx, "identity:role_assignment:revoke", target)
        role = self.find_role(role_ref)
        self._check_scope(scope_type, scope_id)
        key = assignment_key(scope_type, scope_id, actor_type, actor_id, role.id, inherited)
        assignment = self._session.scalar(select(RoleAssignment).where(RoleAssignment.key == key))
        if assignment is None:
            raise NotFound("no such role assignment", code="role_assignment_not_found")
        if actor_type == USER_ACTOR and scope_type == PROJECT and not inherited:
            # Only the user's tokens on this project can carry it (Keystone's
            # revoke_by_grant); an application credential's or a trust's too.
            self._revocations.add_user_project(actor_id, scope_id)
        else:
            # Wider or unclear reach (groups, domains, inheritance, the system): every
            # token of each user it may touch (docs/decisions.md).
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
            **({"inherited": True} if inherited else {}),
        )
        self._session.commit()

    def check_grant(
        self,
        ctx: CallContext,
        scope_type: str,
        scope_id: str,
        actor_type: str,
        actor_id: str,
        role_ref: str,
        *,
        inherited: bool = False,
    ) -> None:
        """Nothing if the grant exists (directly, as given), else NotFound."""
        self._enforce(
            ctx,
            "identity:role_assignment:list",
            self._grants_target(scope_type, scope_id, actor_type, actor_id),
        )
        role = self.find_role(role_ref)
        self._check_scope(scope_type, scope_id)
        key = assignment_key(scope_type, scope_id, actor_type, actor_id, role.id, inherited)
        if self._session.scalar(select(RoleAssignment.id).where(RoleAssignment.key == key)) is None:
            raise NotFound("no such role assignment", code="role_assignment_not_found")

    def list_grants(
        self,
        ctx: CallContext,
        scope_type: str,
        scope_id: str,
        actor_type: str,
        actor_id: str,
        *,
        inherited: bool = False,
    ) -> list[RoleRecord]:
        """The roles granted directly to one actor on one target."""
        self._enforce(
            ctx,
            "identity:role_assignment:list",
            self._grants_target(scope_type, scope_id, actor_type, actor_id),
        )
        self._check_scope(scope_type, scope_id)
        self._check_actor(actor_type, actor_id)
        columns = _columns(scope_type, scope_id, actor_type, actor_id)
        query = (
            select(Role)
            .join(RoleAssignment, RoleAssignment.role_id == Role.id)
            .where(
                *(getattr(RoleAssignment, column) == value for column, value in columns.items()),
                RoleAssignment.inherited == (true() if inherited else false()),
            )
        )
        if scope_type != SYSTEM:
            query = query.where(RoleAssignment.system.is_(None))
        if scope_type != PROJECT:
            query = query.where(RoleAssignment.project_id.is_(None))
        if scope_type != DOMAIN:
            query = query.where(RoleAssignment.domain_id.is_(None))
        return [RoleRecord.of(role) for role in self._session.scalars(query.order_by(Role.name))]

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
        system: bool = False,
        inherited: bool | None = None,
        include_subtree: bool = False,
    ) -> list[Assignment]:
        """Keystone's role assignment listing (and the native one).

        ``effective``: what users actually hold: group grants become their members',
        inherited grants the projects they reach, implied roles are added, and
        domain-specific roles (never in a token) are left out. ``inherited``: only
        OS-INHERIT grants. ``include_subtree``: the project and every project below.
        """
        if sum(bool(x) for x in (project_id, domain_id, system)) > 1:
            raise InvalidRequest("filter on one scope: a project, a domain or the system")
        if user_id and group_id:
            raise InvalidRequest("filter on a user or a group, not both")
        if effective and (group_id or inherited):
            raise InvalidRequest(
                "an effective listing holds neither group nor inherited assignments"
            )
        if include_subtree and not project_id:
            raise InvalidRequest("include_subtree needs scope.project.id")
        target = self._listing_target(user_id, project_id, domain_id)
        if include_subtree:
            # Other projects than the one named: their domain's administrators' to read.
            target = Target(domain_id=target.domain_id, user_id=user_id)
        if system:
            target = Target(user_id=user_id, privileged=True)
        self._enforce(ctx, "identity:role_assignment:list", target)
        role_id = self.find_role(role).id if role else None
        projects = self._project_tree() if (effective or include_subtree) else {}
        project_ids: set[str] | None = None
        if project_id:
            project_ids = {project_id}
            if include_subtree:
                project_ids |= _descendants(projects, project_id)
        query = select(RoleAssignment)
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
        if effective and project_ids is not None:
            # Only the grants that can reach those projects: on them, or inherited
            # from a project above them or from their domains.
            above = set().union(*(_ancestors(projects, p) for p in project_ids))
            domains = {projects[p][0] for p in project_ids if p in projects}
            query = query.where(
                or_(
                    RoleAssignment.project_id.in_(sorted(project_ids)),
                    and_(
                        RoleAssignment.inherited == true(),
                        or_(
                            RoleAssignment.project_id.in_(sorted(above)),
                            RoleAssignment.domain_id.in_(sorted(domains)),
                        ),
                    ),
                )
            )
        elif effective and domain_id:
            query = query.where(RoleAssignment.domain_id == domain_id)
        elif effective and system:
            query = query.where(RoleAssignment.system == SYSTEM_ALL)
        if not effective:
            if project_ids is not None:
                query = query.where(RoleAssignment.project_id.in_(sorted(project_ids)))
            if domain_id:
                query = query.where(RoleAssignment.domain_id == domain_id)
            if system:
                query = query.where(RoleAssignment.system == SYSTEM_ALL)
            if inherited:
                query = query.where(RoleAssignment.inherited == true())
        rows = list(self._session.scalars(query.order_by(RoleAssignment.id)))
        roles = {r.id: r for r in self._session.scalars(select(Role))}
        names = {r.id: r.name for r in roles.values()}
        direct = [_assignment(row, names) for row in rows]
        if not effective:
            result = direct
        else:
            result = [
                a
                for a in self._expand(direct, names, only_user=user_id, projects=projects)
                if roles[a.role_id].domain_id is None
                and (project_ids is None or (a.scope_type == PROJECT and a.scope_id in project_ids))
                and (not domain_id or (a.scope_type == DOMAIN and a.scope_id == domain_id))
                and (not system or a.scope_type == SYSTEM)
            ]
        if role_id:
            result = [a for a in result if a.role_id == role_id]
        return result

    def assignment_names(self, assignments: Iterable[Assignment]) -> dict[str, dict[str, Any]]:
        """Names and domains of everything the assignments refer to (Keystone's
        ``include_names``): kind ("role", "user", "group", "project", "domain") ->
        id -> {"name", "domain_id"}."""
        wanted: dict[str, set[str]] = {
            kind: set() for kind in ("role", "user", "group", PROJECT, DOMAIN)
        }
        for a in assignments:
            wanted["role"].add(a.role_id)
            if a.user_id:
                wanted["user"].add(a.user_id)
            if a.group_id:
                wanted["group"].add(a.group_id)
            if a.scope_type in (PROJECT, DOMAIN):
                wanted[a.scope_type].add(a.scope_id)
        found: dict[str, dict[str, Any]] = {kind: {} for kind in wanted}
        models: dict[str, Any] = {
            "role": Role,
            "user": User,
            "group": Group,
            PROJECT: Project,
            DOMAIN: Domain,
        }
        for kind, ids in wanted.items():
            if not ids:
                continue
            model = models[kind]
            for row in self._session.scalars(select(model).where(model.id.in_(sorted(ids)))):
                found[kind][row.id] = {
                    "name": row.name,
                    "domain_id": getattr(row, "domain_id", None),
                }
        domain_ids = {
            v["domain_id"] for kind in found.values() for v in kind.values() if v["domain_id"]
        } - set(found[DOMAIN])
        for row in self._session.scalars(select(Domain).where(Domain.id.in_(sorted(domain_ids)))):
            found[DOMAIN][row.id] = {"name": row.name, "domain_id": None}
        return found

    def effective_role_names(
        self,
        user_id: str,
        *,
        project_id: str | None = None,
        domain_id: str | None = None,
        directory_group_ids: Sequence[str] = (),
    ) -> set[str]:
        """Roles a user holds on one project or domain: direct, via groups, inherited
        (from the project's domain and the projects above it), implied; never a
        domain-specific role (only the global roles it implies).

        ``directory_group_ids``: the groups an LDAP directory says the user is in.
        """
        query = _effective_role_names("project" if project_id else "domain")
        params = {
            "user_id": user_id,
            "scope_id": project_id if project_id else domain_id,
            "directory_group_ids": list(directory_group_ids),
        }
        return set(self._session.scalars(query, params))

    def effective_system_role_names(
        self, user_id: str, *, directory_group_ids: Sequence[str] = ()
    ) -> set[str]:
        """Roles a user holds on the system (Keystone's system scope): directly or
        through groups, with every role they imply. A stable signature: the token
        service issues system-scoped tokens with it."""
        params = {
            "user_id": user_id,
            "scope_id": SYSTEM_ALL,
            "directory_group_ids": list(directory_group_ids),
        }
        return set(self._session.scalars(_effective_role_names(SYSTEM), params))

    def effective_project_ids(
        self, user_id: str, *, directory_group_ids: Sequence[str] = ()
    ) -> set[str]:
        """Every project on which the user holds a role that would be in a token:
        directly, through groups, inherited from a domain or a project above (for
        Keystone's ``/v3/users/{id}/projects`` and ``/v3/auth/projects``). No
        authorization: the callers authorize."""
        groups = select(GroupMembership.group_id).where(GroupMembership.user_id == user_id)
        rows = self._session.scalars(
            select(RoleAssignment).where(
                or_(
                    RoleAssignment.user_id == user_id,
                    RoleAssignment.group_id.in_(groups),
                    RoleAssignment.group_id.in_(list(directory_group_ids)),
                ),
                RoleAssignment.system.is_(None),
            )
        )
        roles = {r.id: r for r in self._session.scalars(select(Role))}
        names = {r.id: r.name for r in roles.values()}
        direct = [replace(_assignment(row, names), group_id=None) for row in rows]
        return {
            a.scope_id
            for a in self._expand(direct, names, only_user=None)
            if a.scope_type == PROJECT and roles[a.role_id].domain_id is None
        }

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
        self,
        direct: Iterable[Assignment],
        names: dict[str, str],
        only_user: str | None,
        projects: dict[str, tuple[str, str | None]] | None = None,
    ) -> list[Assignment]:
        closure = self._closure()
        users: list[Assignment] = []
        for a in direct:
            if a.group_id:
                members = self._group_member_ids(a.group_id)
                users += [
                    replace(a, user_id=m, group_id=None, via_group_id=a.group_id)
                    for m in members
                    if only_user is None or m == only_user
                ]
            else:
                users.append(a)
        reached: list[Assignment] = []
        for a in users:
            if not a.inherited:
                reached.append(a)
                continue
            if projects is None:
                projects = self._project_tree()
            if a.scope_type == DOMAIN:
                below = {p for p, (domain, _) in projects.items() if domain == a.scope_id}
            else:
                below = _descendants(projects, a.scope_id)
            below -= self._admin_project_ids()
            reached += [
                replace(
                    a,
                    scope_type=PROJECT,
                    scope_id=project,
                    inherited=False,
                    inherited_from=(a.scope_type, a.scope_id),
                )
                for project in sorted(below)
            ]
        result = list(reached)
        for a in reached:
            result += [
                replace(
                    a,
                    role_id=implied,
                    role_name=names[implied],
                    implied_by=a.role_name,
                    prior_role_id=a.role_id,
                )
                for implied in sorted(closure.get(a.role_id, ()))
            ]
        return result

    def _admin_project_ids(self) -> set[str]:
        """Never reached by an inherited grant: who administers the cloud is granted
        there by name (docs/decisions.md)."""
        return set(self._session.scalars(select(Project.id).where(Project.is_admin_project)))

    def _project_tree(self) -> dict[str, tuple[str, str | None]]:
        """Project id -> (domain id, parent id), for inheritance."""
        rows = self._session.execute(select(Project.id, Project.domain_id, Project.parent_id))
        return {project_id: (domain, parent) for project_id, domain, parent in rows}

    def _holders_or_implied(self, role_id: str) -> set[str]:
        """Users whose tokens may name the role: holders of it or of a role implying it."""
        closure = self._closure()
        users: set[str] = set()
        for prior in [role_id, *(p for p, implied in closure.items() if role_id in implied)]:
            users |= self._holders(prior)
        return users

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
        self,
        scope_type: str,
        scope_id: str,
        role_ref: str,
        actor_type: str,
        actor_id: str,
        inherited: bool = False,
    ) -> Target:
        """Built before anything is refused for not existing: an unknown role is named
        as given (no one but a cloud admin holds it: the escalation check refuses
        it), an unknown actor lies in no domain the caller manages (``UNKNOWN``), so
        the unauthorized learn nothing from the answer (docs/decisions.md).

        System grants are the cloud's: ``privileged``. An inherited grant on a project
        gives roles on other projects (those below it): a project admin may not make
        one, its domain's admins may. An inherited grant never reaches the operators'
        admin project (``_expand``, ``_effective_role_names``).
        """
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
        if scope_type == SYSTEM:
            return Target(role=role_name, privileged=True, other_domain_id=actor_domain)
        if scope_type == PROJECT:
            project = self._directory.find_project(project_id=scope_id, name=None, domain_id=None)
            return Target(
                domain_id=project.domain_id if project else None,
                # Inherited: the projects below, not this one: its domain's admins'.
                project_id=None if inherited else scope_id,
                role=role_name,
                privileged=bool(project and project.is_admin_project),
                other_domain_id=actor_domain,
                attributes={"role": role_name, "actor_type": actor_type},
            )
        return Target(domain_id=scope_id, role=role_name, other_domain_id=actor_domain)

    def _grants_target(
        self, scope_type: str, scope_id: str, actor_type: str, actor_id: str
    ) -> Target:
        """Reading one actor's grants on one target: the target's administrators, or
        the user themself."""
        user_id = actor_id if actor_type == USER_ACTOR else None
        if scope_type == SYSTEM:
            return Target(user_id=user_id, privileged=True)
        if scope_type == PROJECT:
            return self._listing_target(user_id, scope_id, None)
        return self._listing_target(user_id, None, scope_id)

    def _check_scope(self, scope_type: str, scope_id: str) -> None:
        """After enforcement, so that only those allowed learn whether the target exists."""
        if scope_type == SYSTEM:
            if scope_id != SYSTEM_ALL:
                raise NotFound("the only system target is 'all'", code="system_not_found")
        elif scope_type == PROJECT:
            self._directory.project_row(scope_id)
        else:
            self._directory.domain_row(scope_id)

    def _check_role_fits(self, role: Role, scope_type: str, scope_id: str) -> None:
        """A domain-specific role is granted only inside its domain (Keystone's rule)."""
        if role.domain_id is None:
            return
        if scope_type == SYSTEM:
            raise InvalidRequest(
                "a domain-specific role cannot be granted on the system",
                code="domain_role_on_system",
            )
        domain = scope_id
        if scope_type == PROJECT:
            domain = self._directory.project_row(scope_id).domain_id
        if domain != role.domain_id:
            raise Forbidden(
                "a domain-specific role is granted only inside its domain",
                code="domain_role_mismatch",
            )

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
            self._accounts.user_row(actor_id)
        else:
            self._accounts.group_row(actor_id)


@functools.cache
def _effective_role_names(scope_type: str) -> Select[str]:
    """The query behind ``effective_role_names``, built once per scope type."""
    return held_role_names(
        scope_type,
        bindparam("user_id", type_=String),
        bindparam("scope_id", type_=String),
        bindparam("directory_group_ids", expanding=True),
    )


def held_role_names(
    scope_type: str,
    user_id: ColumnElement[str],
    scope_id: ColumnElement[str],
    directory_group_ids: ColumnElement[Any] | None = None,
) -> Select[str]:
    """The names of the roles ``user_id`` holds on ``scope_id`` (bind parameters, or
    uncorrelated scalar subqueries when another query carries this one).

    One query, exact on every worker: the roles assigned (directly, through a group,
    or through a directory group) on the target, and for a project the inherited
    grants of its domain and of every project above it (a recursive walk up the
    parents); then, recursively, every role they imply; then the names of the
    global ones. UNION (not UNION ALL) visits each role once, so the recursions
    end even if the tables ever held a cycle. Without ``directory_group_ids`` the
    directory's groups are left out: the caller knows the user has none.
    """
    groups = select(GroupMembership.group_id).where(GroupMembership.user_id == user_id)
    actors = [RoleAssignment.user_id == user_id, RoleAssignment.group_id.in_(groups)]
    if directory_group_ids is not None:
        actors.append(RoleAssignment.group_id.in_(directory_group_ids))
    actor = or_(*actors)
    direct = RoleAssignment.inherited == false()
    if scope_type == SYSTEM:
        on_target = and_(RoleAssignment.system == scope_id, direct)
    elif scope_type == DOMAIN:
        on_target = and_(RoleAssignment.domain_id == scope_id, direct)
    else:
        above = (
            select(Project.parent_id.label("id"))
            .where(Project.id == scope_id)
            .cte("project_above", recursive=True)
        )
        above = above.union(select(Project.parent_id).where(Project.id == above.c.id))
        project_domain = select(Project.domain_id).where(Project.id == scope_id).scalar_subquery()
        # Inherited grants never reach the operators' admin project.
        not_admin = (
            select(Project.is_admin_project).where(Project.id == scope_id).scalar_subquery()
            == false()
        )
        inherited = and_(RoleAssignment.inherited == true(), not_admin)
        on_target = or_(
            and_(RoleAssignment.project_id == scope_id, direct),
            and_(RoleAssignment.domain_id == project_domain, inherited),
            and_(RoleAssignment.project_id.in_(select(above.c.id)), inherited),
        )
    assigned = select(RoleAssignment.role_id).where(actor, on_target)
    held = assigned.cte("held_role", recursive=True)
    implied = select(RoleImplication.implied_role_id).join(
        held, RoleImplication.prior_role_id == held.c.role_id
    )
    held = held.union(implied)
    return select(Role.name).join(held, Role.id == held.c.role_id).where(Role.domain_id.is_(None))


def held_role_names_json(
    user_id: ColumnElement[str], project_id: ColumnElement[str]
) -> ScalarSelect[str]:
    """``held_role_names`` on a project as one JSON array (a column of another
    query: an application-credential login reads its credential and the owner's
    roles in one round trip). No directory groups: see ``held_role_names``."""
    names = held_role_names(PROJECT, user_id, project_id).subquery("held_role_name")
    return select(json_strings(names.c.name)).scalar_subquery()


def parse_held_roles(value: str | None) -> set[str]:
    """What ``held_role_names_json`` gave: None (PostgreSQL, no row) is no role."""
    return set(json.loads(value)) if value else set()


def assignment_key(
    scope_type: str,
    scope_id: str,
    actor_type: str,
    actor_id: str,
    role_id: str,
    inherited: bool = False,
) -> str:
    key = f"{actor_type}:{actor_id}:{scope_type}:{scope_id}:{role_id}"
    return key + ":inherited" if inherited else key


def _columns(scope_type: str, scope_id: str, actor_type: str, actor_id: str) -> dict[str, str]:
    if scope_type == SYSTEM:
        return {"system": scope_id, f"{actor_type}_id": actor_id}
    return {f"{scope_type}_id": scope_id, f"{actor_type}_id": actor_id}


def _ancestors(projects: dict[str, tuple[str, str | None]], project_id: str) -> set[str]:
    """Every project above ``project_id`` (not itself)."""
    found: set[str] = set()
    parent = projects[project_id][1] if project_id in projects else None
    while parent and parent not in found:
        found.add(parent)
        parent = projects[parent][1] if parent in projects else None
    return found


def _descendants(projects: dict[str, tuple[str, str | None]], project_id: str) -> set[str]:
    """Every project below ``project_id`` (not itself)."""
    children: dict[str, list[str]] = {}
    for child, (_, parent) in projects.items():
        if parent:
            children.setdefault(parent, []).append(child)
    found: set[str] = set()
    stack = list(children.get(project_id, ()))
    while stack:
        node = stack.pop()
        if node not in found:
            found.add(node)
            stack.extend(children.get(node, ()))
    return found


def _assignment(row: RoleAssignment, names: dict[str, str]) -> Assignment:
    if row.system:
        scope_type, scope_id = SYSTEM, row.system
    elif row.project_id:
        scope_type, scope_id = PROJECT, row.project_id
    else:
        scope_type, scope_id = DOMAIN, row.domain_id or ""
    return Assignment(
        row.role_id,
        names[row.role_id],
        scope_type,
        scope_id,
        user_id=row.user_id,
        group_id=row.group_id,
        inherited=bool(row.inherited),
    )


def _scope_audit(target: Target) -> AuditTarget:
    if target.project_id:
        return AuditTarget(
            "project", target.project_id, project_id=target.project_id, domain_id=target.domain_id
        )
    if target.domain_id is None:
        return AuditTarget("system", SYSTEM_ALL)
    return AuditTarget("domain", target.domain_id, domain_id=target.domain_id)
