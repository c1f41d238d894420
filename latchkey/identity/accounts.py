"""Users (humans and application accounts) and groups."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select

from latchkey.audit import AuditTarget
from latchkey.db import utcnow
from latchkey.errors import Conflict, Forbidden, InvalidRequest, NotFound
from latchkey.identity.backends import IdentityBackend, IdentityBackends
from latchkey.identity.common import IdentityServiceBase, Page, ServiceDeps, page_size
from latchkey.identity.directory import Directory
from latchkey.identity.models import Domain, Group, GroupMembership, Project, RoleAssignment, User
from latchkey.identity.passwords import PasswordHasher
from latchkey.identity.records import GroupRecord, ProjectRecord, UserRecord
from latchkey.policy.context import CallContext
from latchkey.policy.enforcer import UNKNOWN, Target
from latchkey.tokens.models import LoginLockout
from latchkey.tokens.revocations import USER

HUMAN, APPLICATION = "human", "application"


class Accounts(IdentityServiceBase):
    def __init__(
        self,
        deps: ServiceDeps,
        *,
        directory: Directory,
        hasher: PasswordHasher,
        backends: IdentityBackends,
    ) -> None:
        super().__init__(deps)
        self._directory = directory
        self._hasher = hasher
        self._backends = backends

    def backend_for(self, domain: Domain) -> IdentityBackend:
        return self._backends.of(domain)

    def _writable_domain(self, domain_id: str) -> Domain:
        domain = self._directory.domain_row(domain_id)
        if not self.backend_for(domain).writable:
            raise Forbidden(
                f"domain {domain.name!r} is read-only ({domain.identity_backend})",
                code="domain_read_only",
            )
        return domain

    # -- users --------------------------------------------------------------------

    def user_row(self, user_id: str) -> User:
        user = self._session.get(User, user_id)
        if user is None:
            raise NotFound(f"no user {user_id!r}", code="user_not_found")
        return user

    def find_user(self, domain_id: str, name: str) -> User | None:
        """By name in a domain; in an ldap domain the directory answers (503 when down)."""
        domain = self._session.get(Domain, domain_id)
        return self.backend_for(domain).find_user(domain, name) if domain else None

    def _check_default_project(self, data: dict[str, Any]) -> None:
        """Keystone's default project: any existing project (checked after enforcement,
        so that the answer tells only those allowed which project ids exist)."""
        project_id = data.get("default_project_id")
        if project_id is not None and self._session.get(Project, project_id) is None:
            raise InvalidRequest(
                "default_project_id names no project", code="default_project_not_found"
            )

    @staticmethod
    def _check_attributes(data: dict[str, Any]) -> None:
        for key, value in (data.get("attributes") or {}).items():
            ok = (isinstance(value, str | int | float | bool) and len(str(value)) <= 1024) or (
                isinstance(value, list)
                and len(value) <= 100
                and all(isinstance(v, str) and len(v) <= 1024 for v in value)
            )
            if not ok:
                raise InvalidRequest(
                    f"attributes.{key}: a string, number, boolean or list of strings",
                    code="invalid_attribute",
                )

    def create_user(self, ctx: CallContext, data: dict[str, Any]) -> UserRecord:
        domain_id = data["domain_id"]
        # A project's admins may create the application accounts that project owns.
        owner_project = data.get("owner_project_id") if data.get("kind") == APPLICATION else None
        # An owner project in another domain (or none) is a second domain: cloud scope
        # only, so no one else learns from the answer which project ids exist.
        owner_domain = None
        if owner_project:
            owner_domain = self._directory.project_domain_id(owner_project) or UNKNOWN
        self._enforce(
            ctx,
            "identity:user:create",
            Target(
                domain_id=domain_id,
                project_id=owner_project,
                other_domain_id=owner_domain,
                attributes={"kind": data.get("kind", "human"), "name": data.get("name")},
            ),
        )
        self._writable_domain(domain_id)
        self._check_attributes(data)
        self._check_default_project(data)
        data = dict(data)
        password = data.pop("password", None)
        kind = data.setdefault("kind", HUMAN)
        if kind == APPLICATION:
            if password is not None:
                raise InvalidRequest(
                    "application accounts have no password; they "
                    "authenticate with application credentials",
                    code="application_account_password",
                )
            owner = data.get("owner_project_id")
            if not owner:
                raise InvalidRequest(
                    "application accounts need owner_project_id", code="owner_project_required"
                )
            if self._directory.project_row(owner).domain_id != domain_id:
                raise InvalidRequest(
                    "an application account lives in its owner project's domain",
                    code="owner_project_other_domain",
                )
        elif data.get("owner_project_id"):
            raise InvalidRequest(
                "only application accounts have an owner project", code="owner_project_not_allowed"
            )
        if self.find_user(domain_id, data["name"]):
            raise Conflict(
                f"a user named {data['name']!r} exists in this domain", code="user_name_taken"
            )
        user = User(**data)
        if password is not None:
            self._set_password(user, password)
        self._session.add(user)
        self._session.flush()
        self._record_change(
            ctx, "identity:user:create", _user_target(user), name=user.name, kind=user.kind
        )
        self._commit("user_name_taken", "a user with this name exists in this domain")
        return UserRecord.of(user)

    def get_user(self, ctx: CallContext, user_id: str) -> UserRecord:
        return UserRecord.of(self._enforced_user(ctx, "identity:user:get", user_id))

    def _enforced_user(self, ctx: CallContext, action: str, user_id: str) -> User:
        """Enforce, then 404: unknown and forbidden look the same to the unauthorized."""
        user = self._session.get(User, user_id)
        domain_id = user.domain_id if user else None
        privileged = user is not None and self._is_cloud_operator(user.id)
        # Application accounts are also their owning project's to manage.
        owner_project = user.owner_project_id if user and user.kind == APPLICATION else None
        target = Target(
            domain_id=domain_id,
            project_id=owner_project,
            user_id=user_id,
            privileged=privileged,
            attributes={"kind": user.kind, "name": user.name} if user else None,
        )
        self._enforce(ctx, action, target)
        return self.user_row(user_id)

    def list_users(
        self,
        ctx: CallContext,
        *,
        domain_id: str | None,
        name: str | None,
        kind: str | None,
        marker: str | None,
        limit: int | None,
        owner_project_id: str | None = None,
        enabled: bool | None = None,
    ) -> Page[UserRecord]:
        if owner_project_id:
            # A project's members list the application accounts it owns.
            domain_id = self._directory.project_domain_id(owner_project_id)
            target = Target(domain_id=domain_id, project_id=owner_project_id)
            self._enforce(ctx, "identity:user:list", target)
            query = select(User).where(User.owner_project_id == owner_project_id)
            return self._page(query, User.id, marker, limit).map(UserRecord.of)
        if domain_id is None and ctx.auth is not None and ctx.auth.domain_id:
            domain_id = ctx.auth.domain_id
        self._enforce(ctx, "identity:user:list", Target(domain_id=domain_id))
        domain = self._session.get(Domain, domain_id) if domain_id else None
        if domain_id and domain is None:
            return Page([], None)
        size = page_size(limit)
        if domain is None:  # no domain named: the rows of every domain, shadow rows too
            users, next_marker = self._backends.sql.list_users(
                None, name=name, kind=kind, enabled=enabled, marker=marker, limit=size
            )
        else:
            users, next_marker = self.backend_for(domain).list_users(
                domain, name=name, kind=kind, enabled=enabled, marker=marker, limit=size
            )
        self._session.commit()  # shadow rows the backend refreshed
        return Page([UserRecord.of(user) for user in users], next_marker)

    def update_user(self, ctx: CallContext, user_id: str, data: dict[str, Any]) -> UserRecord:
        user = self._enforced_user(ctx, "identity:user:update", user_id)
        self._writable_domain(user.domain_id)
        self._check_attributes(data)
        self._check_default_project(data)
        data = dict(data)
        password = data.pop("password", None)
        if password is not None:
            if user.kind == APPLICATION:
                raise InvalidRequest(
                    "application accounts have no password", code="application_account_password"
                )
            self._set_password(user, password)
            user.failed_logins, user.locked_until = 0, None  # an admin reset unlocks
            self._session.execute(delete(LoginLockout).where(LoginLockout.user_id == user.id))
        was_enabled = user.enabled
        for key, value in data.items():
            setattr(user, key, value)
        if (was_enabled and not user.enabled) or password is not None:
            self._revocations.add(USER, user.id)
        self._record_change(
            ctx,
            "identity:user:update",
            _user_target(user),
            fields=sorted([*data, *(["password"] if password else [])]),
        )
        self._commit("user_name_taken", "a user with this name exists in this domain")
        return UserRecord.of(user)

    def delete_user(self, ctx: CallContext, user_id: str) -> None:
        user = self._enforced_user(ctx, "identity:user:delete", user_id)
        self._writable_domain(user.domain_id)
        if self._owns_last_cloud_admin(user):
            raise Conflict(
                "the last cloud administrator cannot be deleted", code="last_cloud_admin"
            )
        self._revocations.add(USER, user.id)
        self._session.delete(user)
        self._record_change(ctx, "identity:user:delete", _user_target(user))
        self._commit("user_in_use", "the user is still referenced")

    def change_password(self, ctx: CallContext, user_id: str, original: str, new: str) -> None:
        """Self-service change: needs the current password, revokes existing tokens."""
        user = self._enforced_user(ctx, "identity:user:change_password", user_id)
        self._writable_domain(user.domain_id)
        if user.kind == APPLICATION:
            raise InvalidRequest(
                "application accounts have no password", code="application_account_password"
            )
        if not self._hasher.verify(user.password_hash, original):
            raise Forbidden("the original password is wrong", code="original_password_wrong")
        self._set_password(user, new)
        self._revocations.add(USER, user.id)
        self._record_change(ctx, "identity:user:change_password", _user_target(user))
        self._session.commit()

    def list_user_projects(self, ctx: CallContext, user_id: str) -> list[ProjectRecord]:
        user = self._enforced_user(ctx, "identity:user:list_projects", user_id)
        group_ids = select(GroupMembership.group_id).where(GroupMembership.user_id == user.id)
        directory_groups = list(user.directory_group_ids or [])  # LDAP, as last known
        project_ids = select(RoleAssignment.project_id).where(
            RoleAssignment.project_id.is_not(None),
            (RoleAssignment.user_id == user.id)
            | RoleAssignment.group_id.in_(group_ids)
            | RoleAssignment.group_id.in_(directory_groups),
        )
        query = select(Project).where(Project.id.in_(project_ids)).order_by(Project.name)
        return [ProjectRecord.of(project) for project in self._session.scalars(query)]

    def list_user_groups(self, ctx: CallContext, user_id: str) -> list[GroupRecord]:
        """The groups the user is a member of (LDAP users: as the directory last said)."""
        user = self._enforced_user(ctx, "identity:user:list_groups", user_id)
        group_ids = select(GroupMembership.group_id).where(GroupMembership.user_id == user.id)
        directory_groups = list(user.directory_group_ids or [])
        query = (
            select(Group)
            .where(Group.id.in_(group_ids) | Group.id.in_(directory_groups))
            .order_by(Group.name)
        )
        return [GroupRecord.of(group) for group in self._session.scalars(query)]

    def is_member(self, ctx: CallContext, group_id: str, user_id: str) -> bool:
        group = self._enforced_group(ctx, "identity:group:list_members", group_id)
        if self._session.get(GroupMembership, (group.id, user_id)) is not None:
            return True
        user = self._session.get(User, user_id)
        return user is not None and group.id in (user.directory_group_ids or [])

    def _set_password(self, user: User, password: str) -> None:
        self._hasher.check_policy(password)
        user.password_hash = self._hasher.hash(password)
        user.password_changed_at = utcnow()

    def _owns_last_cloud_admin(self, user: User) -> bool:
        admin_projects = select(Project.id).where(Project.is_admin_project)
        holders = set(
            self._session.scalars(
                select(RoleAssignment.user_id).where(
                    RoleAssignment.project_id.in_(admin_projects),
                    RoleAssignment.user_id.is_not(None),
                )
            )
        )
        return holders == {user.id}

    # -- groups -------------------------------------------------------------------

    def group_row(self, group_id: str) -> Group:
        group = self._session.get(Group, group_id)
        if group is None:
            raise NotFound(f"no group {group_id!r}", code="group_not_found")
        return group

    def create_group(self, ctx: CallContext, data: dict[str, Any]) -> GroupRecord:
        self._enforce(ctx, "identity:group:create", Target(domain_id=data["domain_id"]))
        self._writable_domain(data["domain_id"])
        if self._session.scalar(
            select(Group.id).where(Group.domain_id == data["domain_id"], Group.name == data["name"])
        ):
            raise Conflict(
                f"a group named {data['name']!r} exists in this domain", code="group_name_taken"
            )
        group = Group(**data)
        self._session.add(group)
        self._session.flush()
        self._record_change(ctx, "identity:group:create", _group_target(group), name=group.name)
        self._commit("group_name_taken", "a group with this name exists in this domain")
        return GroupRecord.of(group)

    def get_group(self, ctx: CallContext, group_id: str) -> GroupRecord:
        return GroupRecord.of(self._enforced_group(ctx, "identity:group:get", group_id))

    def _enforced_group(self, ctx: CallContext, action: str, group_id: str) -> Group:
        group = self._session.get(Group, group_id)
        domain_id = group.domain_id if group else None
        privileged = group is not None and self._is_cloud_group(group.id)
        self._enforce(ctx, action, Target(domain_id=domain_id, privileged=privileged))
        return self.group_row(group_id)

    def list_groups(
        self,
        ctx: CallContext,
        *,
        domain_id: str | None,
        name: str | None,
        marker: str | None,
        limit: int | None,
    ) -> Page[GroupRecord]:
        if domain_id is None and ctx.auth is not None and ctx.auth.domain_id:
            domain_id = ctx.auth.domain_id
        self._enforce(ctx, "identity:group:list", Target(domain_id=domain_id))
        domain = self._session.get(Domain, domain_id) if domain_id else None
        if domain_id and domain is None:
            return Page([], None)
        size = page_size(limit)
        if domain is None:  # no domain named: the groups of every domain
            groups, next_marker = self._backends.sql.list_groups(
                None, name=name, marker=marker, limit=size
            )
        else:
            groups, next_marker = self.backend_for(domain).list_groups(
                domain, name=name, marker=marker, limit=size
            )
        self._session.commit()  # shadow rows the backend refreshed
        return Page([GroupRecord.of(group) for group in groups], next_marker)

    def update_group(self, ctx: CallContext, group_id: str, data: dict[str, Any]) -> GroupRecord:
        group = self._enforced_group(ctx, "identity:group:update", group_id)
        self._writable_domain(group.domain_id)
        for key, value in data.items():
            setattr(group, key, value)
        self._record_change(ctx, "identity:group:update", _group_target(group), fields=sorted(data))
        self._commit("group_name_taken", "a group with this name exists in this domain")
        return GroupRecord.of(group)

    def delete_group(self, ctx: CallContext, group_id: str) -> None:
        group = self._enforced_group(ctx, "identity:group:delete", group_id)
        self._writable_domain(group.domain_id)
        for user_id in self._member_ids(group.id):
            self._revocations.add(USER, user_id)  # roles held through the group are gone
        self._session.delete(group)
        self._record_change(ctx, "identity:group:delete", _group_target(group))
        self._commit("group_in_use", "the group is still referenced")

    def list_members(self, ctx: CallContext, group_id: str) -> list[UserRecord]:
        group = self._enforced_group(ctx, "identity:group:list_members", group_id)
        query = (
            select(User)
            .join(GroupMembership, GroupMembership.user_id == User.id)
            .where(GroupMembership.group_id == group.id)
            .order_by(User.name)
        )
        return [UserRecord.of(user) for user in self._session.scalars(query)]

    def add_member(self, ctx: CallContext, group_id: str, user_id: str) -> None:
        group = self._enforced_group(ctx, "identity:group:add_member", group_id)
        user = self._session.get(User, user_id)
        # A second check now that the member is known: no reaching into another domain.
        self._enforce(
            ctx,
            "identity:group:add_member",
            Target(
                domain_id=group.domain_id,
                other_domain_id=user.domain_id if user else UNKNOWN,
                privileged=self._is_cloud_group(group.id),
            ),
        )
        self._writable_domain(group.domain_id)
        user = self.user_row(user_id)
        if self._session.get(GroupMembership, (group.id, user.id)) is None:
            self._session.add(GroupMembership(group_id=group.id, user_id=user.id))
            self._record_change(
                ctx, "identity:group:add_member", _group_target(group), user_id=user.id
            )
        self._commit("membership_exists", "the user is already a member")

    def remove_member(self, ctx: CallContext, group_id: str, user_id: str) -> None:
        group = self._enforced_group(ctx, "identity:group:remove_member", group_id)
        self._writable_domain(group.domain_id)
        membership = self._session.get(GroupMembership, (group.id, user_id))
        if membership is None:
            raise NotFound("the user is not a member of this group", code="membership_not_found")
        self._session.delete(membership)
        self._revocations.add(USER, user_id)
        self._record_change(
            ctx, "identity:group:remove_member", _group_target(group), user_id=user_id
        )
        self._session.commit()

    def _member_ids(self, group_id: str) -> list[str]:
        return list(
            self._session.scalars(
                select(GroupMembership.user_id).where(GroupMembership.group_id == group_id)
            )
        )


def _user_target(user: User) -> AuditTarget:
    return AuditTarget("user", user.id, project_id=user.owner_project_id, domain_id=user.domain_id)


def _group_target(group: Group) -> AuditTarget:
    return AuditTarget("group", group.id, domain_id=group.domain_id)
