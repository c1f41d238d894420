"""Domains and projects."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from latchkey.audit import AuditTarget
from latchkey.db import new_id
from latchkey.errors import Conflict, InvalidRequest, NotFound
from latchkey.identity.common import IdentityServiceBase, Page, ServiceDeps
from latchkey.identity.ldap_domains import LdapDomains
from latchkey.identity.models import Domain, Project, User
from latchkey.identity.revocations import PROJECT, USER
from latchkey.policy.context import CallContext
from latchkey.policy.enforcer import Target

IDENTITY_BACKENDS = ("sql", "ldap")


class Directory(IdentityServiceBase):
    def __init__(self, deps: ServiceDeps, *, ldap: LdapDomains) -> None:
        super().__init__(deps)
        self._ldap = ldap

    # -- domains ----------------------------------------------------------------

    def get_domain_record(self, domain_id: str) -> Domain:
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

    def create_domain(self, ctx: CallContext, data: dict[str, Any]) -> Domain:
        self._enforce(ctx, "identity:domain:create", Target())
        backend = data.get("identity_backend", "sql")
        if backend not in IDENTITY_BACKENDS:
            raise InvalidRequest(
                f"identity_backend {backend!r} is not available", code="unsupported_backend"
            )
        if self._session.scalar(select(Domain.id).where(Domain.name == data["name"])):
            raise Conflict(f"a domain named {data['name']!r} exists", code="domain_name_taken")
        data = dict(data)
        options = data.pop("ldap", None)
        domain = Domain(id=new_id(), **data)
        if backend == "ldap":
            if not options:
                raise InvalidRequest(
                    "an ldap domain needs its `ldap` options", code="ldap_invalid_config"
                )
            domain.ldap_config, domain.ldap_password_sealed = self._ldap.prepare(
                domain.id, domain.name, options, None
            )
        elif options is not None:
            raise InvalidRequest(
                "`ldap` options belong to ldap domains", code="ldap_invalid_config"
            )
        self._session.add(domain)
        self._session.flush()
        self._record_change(
            ctx,
            "identity:domain:create",
            AuditTarget("domain", domain.id, domain_id=domain.id),
            name=domain.name,
        )
        self._commit("domain_name_taken", "a domain with this name exists")
        return domain

    def get_domain(self, ctx: CallContext, domain_id: str) -> Domain:
        self._enforce(ctx, "identity:domain:get", Target(domain_id=domain_id))
        return self.get_domain_record(domain_id)

    def list_domains(
        self, ctx: CallContext, *, name: str | None, marker: str | None, limit: int | None
    ) -> Page[Domain]:
        self._enforce(ctx, "identity:domain:list", Target())
        query = select(Domain)
        if name:
            query = query.where(Domain.name == name)
        return self._page(query, Domain.id, marker, limit)

    def update_domain(self, ctx: CallContext, domain_id: str, data: dict[str, Any]) -> Domain:
        self._enforce(ctx, "identity:domain:update", Target(domain_id=domain_id))
        domain = self.get_domain_record(domain_id)
        was_enabled = domain.enabled
        data = dict(data)
        options = data.pop("ldap", None)
        if options is not None:
            if domain.identity_backend != "ldap":
                raise InvalidRequest(
                    "`ldap` options belong to ldap domains", code="ldap_invalid_config"
                )
            # Options given replace the stored ones key by key; the password stays unless
            # a new one is given. The result is tested before it is saved.
            merged = {**(domain.ldap_config or {}), **options}
            domain.ldap_config, domain.ldap_password_sealed = self._ldap.prepare(
                domain.id, data.get("name", domain.name), merged, domain.ldap_password_sealed
            )
            self._ldap.forget(domain.id)
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
        return domain

    def delete_domain(self, ctx: CallContext, domain_id: str) -> None:
        self._enforce(ctx, "identity:domain:delete", Target(domain_id=domain_id))
        domain = self.get_domain_record(domain_id)
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
        self._ldap.discard(domain_id)

    def _revoke_domain_users(self, domain_id: str) -> None:
        for user_id in self._session.scalars(select(User.id).where(User.domain_id == domain_id)):
            self._revocations.add(USER, user_id)

    # -- projects -----------------------------------------------------------------

    def get_project_record(self, project_id: str) -> Project:
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

    def create_project(self, ctx: CallContext, data: dict[str, Any]) -> Project:
        domain_id = data["domain_id"]
        self._enforce(ctx, "identity:project:create", Target(domain_id=domain_id))
        self.get_domain_record(domain_id)
        if self.find_project(project_id=None, name=data["name"], domain_id=domain_id):
            raise Conflict(
                f"a project named {data['name']!r} exists in this domain", code="project_name_taken"
            )
        project = Project(**data)
        self._session.add(project)
        self._session.flush()
        self._record_change(
            ctx, "identity:project:create", _project_target(project), name=project.name
        )
        self._commit("project_name_taken", "a project with this name exists in this domain")
        return project

    def get_project(self, ctx: CallContext, project_id: str) -> Project:
        return self._enforced_project(ctx, "identity:project:get", project_id)

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
        return self.get_project_record(project_id)

    def list_projects(
        self,
        ctx: CallContext,
        *,
        domain_id: str | None,
        name: str | None,
        marker: str | None,
        limit: int | None,
    ) -> Page[Project]:
        auth = ctx.auth
        if domain_id is None and auth is not None and auth.domain_id:
            domain_id = auth.domain_id  # a domain-scoped token lists its own domain
        self._enforce(ctx, "identity:project:list", Target(domain_id=domain_id))
        query = select(Project)
        if domain_id:
            query = query.where(Project.domain_id == domain_id)
        if name:
            query = query.where(Project.name == name)
        return self._page(query, Project.id, marker, limit)

    def update_project(self, ctx: CallContext, project_id: str, data: dict[str, Any]) -> Project:
        project = self._enforced_project(ctx, "identity:project:update", project_id)
        was_enabled = project.enabled
        for key, value in data.items():
            setattr(project, key, value)
        if was_enabled and not project.enabled:
            self._revocations.add(PROJECT, project.id)
        self._record_change(
            ctx, "identity:project:update", _project_target(project), fields=sorted(data)
        )
        self._commit("project_name_taken", "a project with this name exists in this domain")
        return project

    def delete_project(self, ctx: CallContext, project_id: str) -> None:
        project = self._enforced_project(ctx, "identity:project:delete", project_id)
        if project.is_admin_project:
            raise Conflict("the admin project cannot be deleted", code="project_protected")
        self._revocations.add(PROJECT, project.id)
        # Application accounts owned by the project go with it (database cascade).
        for user_id in self._session.scalars(
            select(User.id).where(User.owner_project_id == project.id)
        ):
            self._revocations.add(USER, user_id)
        self._session.delete(project)
        self._record_change(ctx, "identity:project:delete", _project_target(project))
        self._commit("project_in_use", "the project is still referenced")


def _project_target(project: Project) -> AuditTarget:
    return AuditTarget("project", project.id, project_id=project.id, domain_id=project.domain_id)
