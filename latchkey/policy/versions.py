"""Tenant policy versions per project, and the engines in force for them."""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy import or_, select

from latchkey.audit import AuditLog, AuditTarget
from latchkey.changes.generation import ChangeGeneration
from latchkey.credentials.models import ApplicationCredential
from latchkey.db import DbSession
from latchkey.errors import NotFound
from latchkey.identity.models import GroupMembership, Project, Role, RoleAssignment, User
from latchkey.policy.catalog import Catalog
from latchkey.policy.context import CallContext
from latchkey.policy.documents import (
    PolicyDocument,
    PolicyLimits,
    PrincipalChecks,
    from_stored,
)
from latchkey.policy.domains import DomainPolicies
from latchkey.policy.enforcer import Enforcer, Target
from latchkey.policy.engine import PolicyEngine
from latchkey.policy.scoped import ScopedPolicies
from latchkey.policy.store import Boundaries, Scope


class TenantPolicies(ScopedPolicies):
    """A project's own tenant policy versions, and the engines in force for them (its
    document merged with its domain's rules, under the boundary)."""

    ACTIONS = "policy:policy"
    SCOPE: Scope = "project"

    def __init__(
        self,
        session: DbSession,
        enforcer: Enforcer,
        audit: AuditLog,
        catalog: Catalog,
        boundaries: Boundaries,
        domains: DomainPolicies,
        changes: ChangeGeneration | None = None,
        limits: PolicyLimits | None = None,
    ) -> None:
        super().__init__(session, enforcer, audit, catalog, changes, limits)
        self._boundaries = boundaries
        self._domains = domains
        # project id -> ((project version, domain version), boundary fingerprint, engine)
        self._engines: dict[str, tuple[tuple[int | None, int | None], str, PolicyEngine]] = {}
        self._project_domains: dict[str, str | None] = {}
        self._lock = threading.Lock()

    def _in_force(self, project_id: str, version: int, parsed: PolicyDocument) -> None:
        self._versions.forget(project_id)  # after the commit: no decision caches the old
        self._build(project_id, version, parsed)  # off the decision path: now, once

    def _enforce(self, ctx: CallContext, action: str, project_id: str) -> None:
        project = self._session.get(Project, project_id)
        target = Target(
            domain_id=project.domain_id if project else None,
            project_id=project_id,
            privileged=bool(project and project.is_admin_project),
        )
        self._enforcer.enforce(ctx.auth, action, target)
        if project is None:
            raise NotFound(f"no project {project_id!r}", code="project_not_found")

    def _audit_target(self, project_id: str) -> AuditTarget:
        return AuditTarget("policy", project_id, project_id=project_id)

    def user_in_project(self, project_id: str, user_id: str) -> bool:
        """Holds a role on the project (directly or through a group), or is owned by it."""
        return self._checks(project_id).user_in_project(user_id)

    def _checks(self, project_id: str) -> PrincipalChecks:
        session = self._session

        def user_in_project(user_id: str) -> bool:
            groups = select(GroupMembership.group_id).where(GroupMembership.user_id == user_id)
            assigned = select(RoleAssignment.id).where(
                RoleAssignment.project_id == project_id,
                or_(RoleAssignment.user_id == user_id, RoleAssignment.group_id.in_(groups)),
            )
            owned = select(User.id).where(User.id == user_id, User.owner_project_id == project_id)
            return (
                session.scalar(assigned.limit(1)) is not None or session.scalar(owned) is not None
            )

        def group_in_project(group_id: str) -> bool:
            return (
                session.scalar(
                    select(RoleAssignment.id)
                    .where(
                        RoleAssignment.project_id == project_id, RoleAssignment.group_id == group_id
                    )
                    .limit(1)
                )
                is not None
            )

        def credential_in_project(credential_id: str) -> bool:
            return (
                session.scalar(
                    select(ApplicationCredential.id).where(
                        ApplicationCredential.id == credential_id,
                        ApplicationCredential.project_id == project_id,
                    )
                )
                is not None
            )

        def role_exists(name: str) -> bool:
            return session.scalar(select(Role.id).where(Role.name == name)) is not None

        return PrincipalChecks(
            user_in_project, group_in_project, credential_in_project, role_exists
        )

    # -- engines --------------------------------------------------------------------

    def engine(self, project_id: str | None) -> PolicyEngine:
        """The engine in force for a project: cached per (versions, boundary)."""
        version = self._versions.cached_active(project_id) if project_id else None
        domain_version, _ = self._domains.active_rules(self.domain_of(project_id))
        _, boundary_fp = self._boundaries.current()
        key = project_id or ""
        cached = self._engines.get(key)
        if (
            cached is not None
            and cached[0] == (version, domain_version)
            and (cached[1] == boundary_fp)
        ):
            return cached[2]
        document = None
        if version is not None and project_id:
            document = self._parse_stored(self._versions.get(project_id, version).document)
        return self._build(key, version, document)

    def with_domain_rules(
        self, project_id: str | None, document: PolicyDocument | None
    ) -> tuple[int | None, PolicyDocument | None]:
        """The project's document with its domain's rules ahead of its own.

        Only-deny domain rules leave a project without a document of its own
        "without a policy": they take away, the boundary still decides the rest.
        """
        domain_version, domain_rules = self._domains.active_rules(self.domain_of(project_id))
        if not domain_rules:
            return domain_version, document
        own = document.rules if document is not None else ()
        if document is None and all(rule.effect == "deny" for rule in domain_rules):
            return domain_version, PolicyDocument(domain_rules, denies_only=True)
        return domain_version, PolicyDocument(domain_rules + own)

    def domain_of(self, project_id: str | None) -> str | None:
        if not project_id:
            return None
        if project_id not in self._project_domains:  # a project never changes domain
            domain_id = self._session.scalar(
                select(Project.domain_id).where(Project.id == project_id)
            )
            if domain_id is None:
                return None  # unknown (yet): not cached
            self._project_domains[project_id] = domain_id
        return self._project_domains[project_id]

    def _parse_stored(self, stored: dict[str, Any]) -> PolicyDocument:
        # Validated when saved; not re-checked against today's catalog or principals
        # (a rule about something that is gone simply never matches).
        return from_stored(stored)

    def boundary_text(self) -> str:
        return self._boundaries.current()[0]

    def _build(
        self, key: str, version: int | None, document: PolicyDocument | None
    ) -> PolicyEngine:
        text, boundary_fp = self._boundaries.current()
        domain_version, merged = self.with_domain_rules(key or None, document)
        engine = PolicyEngine(text, merged)
        with self._lock:
            # Swapped by reference: a decision holds one engine, old or new, throughout.
            self._engines[key] = ((version, domain_version), boundary_fp, engine)
        return engine
