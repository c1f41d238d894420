"""Domains and projects."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, delete, func, not_, select

from latchkey.audit import AuditTarget
from latchkey.db import new_id
from latchkey.errors import Conflict, Forbidden, InvalidRequest, NotFound
from latchkey.identity.backends import IdentityBackends
from latchkey.identity.common import IdentityServiceBase, Page, ServiceDeps
from latchkey.identity.models import Domain, Project, ProjectTag, User
from latchkey.identity.records import DomainRecord, ProjectRecord
from latchkey.policy.context import CallContext
from latchkey.policy.enforcer import UNKNOWN, Target
from latchkey.tokens.revocations import PROJECT, USER

MAX_PROJECT_TAGS = 80  # Keystone's limit
MAX_TAG_LENGTH = 255
MAX_PROJECT_DEPTH = 32  # bounds every walk up the hierarchy


class Directory(IdentityServiceBase):
    def __init__(self, deps: ServiceDeps, *, backends: IdentityBackends) -> None:
        super().__init__(deps)
        self._backends = backends

    # -- domains ----------------------------------------------------------------

    def domain_row(self, domain_id: str) -> Domain:
        domain = self._session.get(Domain, domain_id)
        if domain is None:
            raise NotFound(f"no domain {domain_id!r}", code="domain_not_found")
        return domain

    def find_domain(self, *, domain_id: str | None, name: str | None) -> Domain | None:
        if domain_id:
            return self._session.get(Domain, domain_id)
        if name:
            return self._session.scalar(select(Domain).where(Domain.name == name))
        return None

    def lookup_domain(self, *, domain_id: str | None, name: str | None) -> DomainRecord | None:
        """``find_domain`` for front doors: a record, not the row."""
        domain = self.find_domain(domain_id=domain_id, name=name)
        return DomainRecord.of(domain) if domain is not None else None

    def create_domain(self, ctx: CallContext, data: dict[str, Any]) -> DomainRecord:
        self._enforce(ctx, "identity:domain:create", Target())
        backend_name = data.get("identity_backend", "sql")
        backend = self._backends.named(backend_name)
        if backend is None:
            raise InvalidRequest(
                f"identity_backend {backend_name!r} is not available", code="unsupported_backend"
            )
        if self._session.scalar(select(Domain.id).where(Domain.name == data["name"])):
            raise Conflict(f"a domain named {data['name']!r} exists", code="domain_name_taken")
        data = dict(data)
        options = data.pop("ldap", None)
        domain = Domain(id=new_id(), **data)
        backend.configure(domain, options)
        self._session.add(domain)
        self._session.flush()
        self._record_change(
            ctx,
            "identity:domain:create",
            AuditTarget("domain", domain.id, domain_id=domain.id),
            name=domain.name,
        )
        self._commit("domain_name_taken", "a domain with this name exists")
        return DomainRecord.of(domain)

    def get_domain(self, ctx: CallContext, domain_id: str) -> DomainRecord:
        auth = ctx.auth
        if auth is not None and auth.project_id and auth.project_domain_id == domain_id:
            # The domain of the token's own project (Keystone's identity:get_domain allows
            # it; the token names that domain already): reading it is reading the project.
            self._enforced_project(ctx, "identity:project:get", auth.project_id)
        else:
            self._enforce(ctx, "identity:domain:get", Target(domain_id=domain_id))
        return DomainRecord.of(self.domain_row(domain_id))

    def list_domains(
        self,
        ctx: CallContext,
        *,
        name: str | None,
        marker: str | None,
        limit: int | None,
        enabled: bool | None = None,
    ) -> Page[DomainRecord]:
        self._enforce(ctx, "identity:domain:list", Target())
        query = select(Domain)
        if name:
            query = query.where(Domain.name == name)
        if enabled is not None:
            query = query.where(Domain.enabled == enabled)
        return self._page(query, Domain.id, marker, limit).map(DomainRecord.of)

    def update_domain(self, ctx: CallContext, domain_id: str, data: dict[str, Any]) -> DomainRecord:
        self._enforce(ctx, "identity:domain:update", Target(domain_id=domain_id))
        domain = self.domain_row(domain_id)
        was_enabled = domain.enabled
        data = dict(data)
        options = data.pop("ldap", None)
        if options is not None:
            self._backends.of(domain).reconfigure(
                domain, options, name=data.get("name", domain.name)
            )
            data["ldap"] = "changed"
        for key, value in data.items():
            if key != "ldap":
                setattr(domain, key, value)
        if was_enabled and not domain.enabled:
            self._revoke_domain_users(domain.id)
        self._record_change(
            ctx,
            "identity:domain:update",
            AuditTarget("domain", domain.id, domain_id=domain.id),
            fields=sorted(data),
        )
        self._commit("domain_name_taken", "a domain with this name exists")
        return DomainRecord.of(domain)

    def delete_domain(self, ctx: CallContext, domain_id: str) -> None:
        self._enforce(ctx, "identity:domain:delete", Target(domain_id=domain_id))
        domain = self.domain_row(domain_id)
        if domain.enabled:
            raise Conflict("disable the domain before deleting it", code="domain_enabled")
        if self._session.scalar(
            select(Project.id).where(Project.domain_id == domain_id, Project.is_admin_project)
        ):
            raise Conflict("the domain holds the admin project", code="domain_protected")
        self._revoke_domain_users(domain_id)
        for project_id in self._session.scalars(
            select(Project.id).where(Project.domain_id == domain_id)
        ):
            self._revocations.add(PROJECT, project_id)
        self._session.delete(domain)
        self._record_change(
            ctx, "identity:domain:delete", AuditTarget("domain", domain_id, domain_id=domain_id)
        )
        self._commit("domain_in_use", "the domain is still referenced")
        self._backends.of(domain).discard(domain_id)

    def _revoke_domain_users(self, domain_id: str) -> None:
        for user_id in self._session.scalars(select(User.id).where(User.domain_id == domain_id)):
            self._revocations.add(USER, user_id)

    # -- projects -----------------------------------------------------------------

    def project_row(self, project_id: str) -> Project:
        project = self._session.get(Project, project_id)
        if project is None:
            raise NotFound(f"no project {project_id!r}", code="project_not_found")
        return project

    def project_domain_id(self, project_id: str) -> str | None:
        return self._session.scalar(select(Project.domain_id).where(Project.id == project_id))

    def find_project(
        self, *, project_id: str | None, name: str | None, domain_id: str | None
    ) -> Project | None:
        if project_id:
            return self._session.get(Project, project_id)
        if name and domain_id:
            return self._session.scalar(
                select(Project).where(Project.name == name, Project.domain_id == domain_id)
            )
        return None

    def lookup_project(
        self, *, project_id: str | None, name: str | None, domain_id: str | None
    ) -> ProjectRecord | None:
        """``find_project`` for front doors: a record, not the row."""
        project = self.find_project(project_id=project_id, name=name, domain_id=domain_id)
        return ProjectRecord.of(project) if project is not None else None

    def create_project(self, ctx: CallContext, data: dict[str, Any]) -> ProjectRecord:
        data = dict(data)
        if data.get("domain_id") is None and data.get("parent_id"):
            # Keystone: the parent's domain. An unknown parent is an unknown domain, so
            # only cloud callers learn (from the 400 below) that no such project exists.
            parent = self._session.get(Project, data["parent_id"])
            if parent is None:
                self._enforce(ctx, "identity:project:create", Target(domain_id=UNKNOWN))
            data["domain_id"] = parent.domain_id if parent else None
        domain_id = data["domain_id"]
        self._enforce(ctx, "identity:project:create", Target(domain_id=domain_id))
        if domain_id is None:
            raise InvalidRequest(
                f"parent_id: no project {data['parent_id']!r}", code="parent_not_in_domain"
            )
        self.domain_row(domain_id)
        if self.find_project(project_id=None, name=data["name"], domain_id=domain_id):
            raise Conflict(
                f"a project named {data['name']!r} exists in this domain", code="project_name_taken"
            )
        tags = data.pop("tags", None)
        parent_id = data.get("parent_id")
        if parent_id:
            parent = self._session.get(Project, parent_id)
            # One answer for an unknown parent and another domain's: no probing for ids.
            if parent is None or parent.domain_id != domain_id:
                raise InvalidRequest(
                    f"parent_id: no project {parent_id!r} in the project's domain",
                    code="parent_not_in_domain",
                )
            if len(self._ancestors(parent)) + 1 >= MAX_PROJECT_DEPTH:
                raise Forbidden("the project hierarchy is too deep", code="project_too_deep")
        project = Project(**data)
        self._session.add(project)
        self._session.flush()
        if tags:
            self._put_tags(project.id, tags)
        self._record_change(
            ctx, "identity:project:create", _project_target(project), name=project.name
        )
        self._commit("project_name_taken", "a project with this name exists in this domain")
        return ProjectRecord.of(project)

    def get_project(self, ctx: CallContext, project_id: str) -> ProjectRecord:
        return ProjectRecord.of(self._enforced_project(ctx, "identity:project:get", project_id))

    def _enforced_project(self, ctx: CallContext, action: str, project_id: str) -> Project:
        """Enforce, then 404: unknown and forbidden look the same to the unauthorized."""
        project = self._session.get(Project, project_id)
        domain_id = project.domain_id if project else None
        privileged = bool(project and project.is_admin_project)
        target = Target(
            domain_id=domain_id,
            project_id=project_id,
            privileged=privileged,
            attributes={"name": project.name} if project else None,
        )
        self._enforce(ctx, action, target)
        return self.project_row(project_id)

    def list_projects(
        self,
        ctx: CallContext,
        *,
        domain_id: str | None,
        name: str | None,
        marker: str | None,
        limit: int | None,
        enabled: bool | None = None,
        parent_id: str | None = None,
        tags: list[str] | None = None,
        tags_any: list[str] | None = None,
        not_tags: list[str] | None = None,
        not_tags_any: list[str] | None = None,
    ) -> Page[ProjectRecord]:
        auth = ctx.auth
        if domain_id is None and auth is not None and auth.domain_id:
            domain_id = auth.domain_id  # a domain-scoped token lists its own domain
        self._enforce(ctx, "identity:project:list", Target(domain_id=domain_id))
        query = select(Project)
        if domain_id:
            query = query.where(Project.domain_id == domain_id)
        if name:
            query = query.where(Project.name == name)
        if enabled is not None:
            query = query.where(Project.enabled == enabled)
        if parent_id:
            parent_domain = self._session.get(Domain, parent_id)
            if parent_domain is not None:  # Keystone: a domain is its top projects' parent
                query = query.where(
                    Project.domain_id == parent_domain.id, Project.parent_id.is_(None)
                )
            else:
                query = query.where(Project.parent_id == parent_id)
        query = _tag_filters(query, tags, tags_any, not_tags, not_tags_any)
        return self._page(query, Project.id, marker, limit).map(ProjectRecord.of)

    def update_project(
        self, ctx: CallContext, project_id: str, data: dict[str, Any]
    ) -> ProjectRecord:
        project = self._enforced_project(ctx, "identity:project:update", project_id)
        data = dict(data)
        # Keystone reports a top-level project's domain as its parent: that may come back.
        unchanged_parents = (project.parent_id or project.domain_id, project.parent_id)
        if "parent_id" in data and data.pop("parent_id") not in unchanged_parents:
            raise Forbidden(
                "a project cannot be moved to another parent", code="project_parent_fixed"
            )
        if "domain_id" in data and data.pop("domain_id") != project.domain_id:
            raise InvalidRequest(
                "a project cannot move to another domain", code="project_domain_fixed"
            )
        tags = data.pop("tags", None)
        if tags is not None:
            self._session.execute(delete(ProjectTag).where(ProjectTag.project_id == project.id))
            self._session.flush()
            self._put_tags(project.id, tags)
            data["tags"] = "changed"
        was_enabled = project.enabled
        for key, value in data.items():
            if key != "tags":
                setattr(project, key, value)
        if was_enabled and not project.enabled:
            self._revocations.add(PROJECT, project.id)
        self._record_change(
            ctx, "identity:project:update", _project_target(project), fields=sorted(data)
        )
        self._commit("project_name_taken", "a project with this name exists in this domain")
        return ProjectRecord.of(project)

    def delete_project(self, ctx: CallContext, project_id: str) -> None:
        project = self._enforced_project(ctx, "identity:project:delete", project_id)
        if project.is_admin_project:
            raise Conflict("the admin project cannot be deleted", code="project_protected")
        if self._session.scalar(select(Project.id).where(Project.parent_id == project.id)):
            raise Forbidden(
                "delete the project's children before the project", code="project_has_children"
            )
        self._revocations.add(PROJECT, project.id)
        # Application accounts owned by the project go with it (database cascade).
        for user_id in self._session.scalars(
            select(User.id).where(User.owner_project_id == project.id)
        ):
            self._revocations.add(USER, user_id)
        self._session.delete(project)
        self._record_change(ctx, "identity:project:delete", _project_target(project))
        self._commit("project_in_use", "the project is still referenced")

    # -- project hierarchy and tags ---------------------------------------------------

    def _ancestors(self, project: Project) -> list[Project]:
        """The project's parents, nearest first (bounded: a hierarchy is never deeper)."""
        found: list[Project] = []
        current = project
        while current.parent_id and len(found) < MAX_PROJECT_DEPTH:
            parent = self._session.get(Project, current.parent_id)
            if parent is None:
                break
            found.append(parent)
            current = parent
        return found

    def project_parents(self, ctx: CallContext, project_id: str) -> list[ProjectRecord]:
        """The ancestors the caller may see (Keystone's ``parents_as_list``)."""
        project = self.project_row(project_id)
        return [ProjectRecord.of(p) for p in self._ancestors(project) if self._may_get(ctx, p)]

    def project_subtree(self, ctx: CallContext, project_id: str) -> list[ProjectRecord]:
        """The descendants the caller may see (Keystone's ``subtree_as_list``)."""
        found: list[Project] = []
        level = [project_id]
        for _ in range(MAX_PROJECT_DEPTH):
            children = list(
                self._session.scalars(
                    select(Project).where(Project.parent_id.in_(level)).order_by(Project.name)
                )
            )
            if not children:
                break
            found.extend(children)
            level = [c.id for c in children]
        return [ProjectRecord.of(p) for p in found if self._may_get(ctx, p)]

    def _may_get(self, ctx: CallContext, project: Project) -> bool:
        try:
            self._enforced_project(ctx, "identity:project:get", project.id)
        except (Forbidden, NotFound):
            return False
        return True

    def tags_of(self, project_ids: list[str]) -> dict[str, list[str]]:
        tags: dict[str, list[str]] = {pid: [] for pid in project_ids}
        if not project_ids:
            return tags
        rows = self._session.execute(
            select(ProjectTag.project_id, ProjectTag.name)
            .where(ProjectTag.project_id.in_(project_ids))
            .order_by(ProjectTag.name)
        )
        for project_id, name in rows:
            tags[project_id].append(name)
        return tags

    def list_tags(self, ctx: CallContext, project_id: str) -> list[str]:
        project = self._enforced_project(ctx, "identity:project:get", project_id)
        return self.tags_of([project.id])[project.id]

    def has_tag(self, ctx: CallContext, project_id: str, tag: str) -> bool:
        project = self._enforced_project(ctx, "identity:project:get", project_id)
        return self._session.get(ProjectTag, (project.id, tag)) is not None

    def set_tags(self, ctx: CallContext, project_id: str, tags: list[str]) -> list[str]:
        project = self._enforced_project(ctx, "identity:project:update", project_id)
        self._session.execute(delete(ProjectTag).where(ProjectTag.project_id == project.id))
        self._session.flush()
        self._put_tags(project.id, tags)
        self._record_change(
            ctx, "identity:project:update", _project_target(project), fields=["tags"]
        )
        self._commit("project_tag_exists", "the tag is already on the project")
        return self.tags_of([project.id])[project.id]

    def add_tag(self, ctx: CallContext, project_id: str, tag: str) -> list[str]:
        project = self._enforced_project(ctx, "identity:project:update", project_id)
        _check_tag(tag)
        if self._session.get(ProjectTag, (project.id, tag)) is None:
            count = self._session.scalar(
                select(func.count())
                .select_from(ProjectTag)
                .where(ProjectTag.project_id == project.id)
            )
            if (count or 0) >= MAX_PROJECT_TAGS:
                raise InvalidRequest(
                    f"a project has at most {MAX_PROJECT_TAGS} tags", code="too_many_tags"
                )
            self._session.add(ProjectTag(project_id=project.id, name=tag))
            self._record_change(
                ctx, "identity:project:update", _project_target(project), fields=["tags"]
            )
        self._commit("project_tag_exists", "the tag is already on the project")
        return self.tags_of([project.id])[project.id]

    def remove_tag(self, ctx: CallContext, project_id: str, tag: str | None) -> None:
        """One tag, or every tag when ``tag`` is None."""
        project = self._enforced_project(ctx, "identity:project:update", project_id)
        query = delete(ProjectTag).where(ProjectTag.project_id == project.id)
        if tag is not None:
            if self._session.get(ProjectTag, (project.id, tag)) is None:
                raise NotFound(f"no tag {tag!r} on the project", code="project_tag_not_found")
            query = query.where(ProjectTag.name == tag)
        self._session.execute(query)
        self._record_change(
            ctx, "identity:project:update", _project_target(project), fields=["tags"]
        )
        self._session.commit()

    def _put_tags(self, project_id: str, tags: list[str]) -> None:
        if len(tags) > MAX_PROJECT_TAGS:
            raise InvalidRequest(
                f"a project has at most {MAX_PROJECT_TAGS} tags", code="too_many_tags"
            )
        if len(set(tags)) != len(tags):
            raise InvalidRequest("the tags must be unique", code="duplicate_tags")
        for tag in tags:
            _check_tag(tag)
            self._session.add(ProjectTag(project_id=project_id, name=tag))
        self._session.flush()


def _check_tag(tag: Any) -> None:
    if not isinstance(tag, str) or not tag or len(tag) > MAX_TAG_LENGTH or "/" in tag or "," in tag:
        raise InvalidRequest(
            f"a tag is 1 to {MAX_TAG_LENGTH} characters, without '/' or ','", code="invalid_tag"
        )


def _tag_filters(
    query: Any,
    tags: list[str] | None,
    tags_any: list[str] | None,
    not_tags: list[str] | None,
    not_tags_any: list[str] | None,
) -> Any:
    def having(tag: str) -> Any:
        return Project.id.in_(select(ProjectTag.project_id).where(ProjectTag.name == tag))

    def having_any(names: list[str]) -> Any:
        return Project.id.in_(select(ProjectTag.project_id).where(ProjectTag.name.in_(names)))

    for tag in tags or []:
        query = query.where(having(tag))
    if tags_any:
        query = query.where(having_any(tags_any))
    if not_tags:  # not all of them
        clauses = [having(tag) for tag in not_tags]
        query = query.where(not_(and_(*clauses)))
    if not_tags_any:
        query = query.where(~having_any(not_tags_any))
    return query


def _project_target(project: Project) -> AuditTarget:
    return AuditTarget("project", project.id, project_id=project.id, domain_id=project.domain_id)
