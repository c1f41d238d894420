"""Domain-wide tenant rules: one document per domain, in force in every project of it.

A domain's rules are merged into each of its projects' documents, ahead of the
project's own, with their ids prefixed ``domain/`` (a prefix a project's rule id
cannot take), so decisions say which document matched. Deny wins as everywhere.

A domain document with allow rules makes every project of the domain "have a
policy" (an allow must match); one made only of deny rules only takes away: in a
project without a document of its own the boundary still decides what the denies
leave. See docs/policy.md "Domain-wide rules".
"""

from __future__ import annotations

import dataclasses
import threading

from sqlalchemy import select

from latchkey.audit import AuditLog, AuditTarget
from latchkey.changes.generation import ChangeGeneration
from latchkey.credentials.models import ApplicationCredential
from latchkey.db import DbSession
from latchkey.errors import NotFound
from latchkey.identity.models import Domain, Group, Project, Role, User
from latchkey.policy.catalog import Catalog
from latchkey.policy.context import CallContext
from latchkey.policy.documents import (
    PolicyDocument,
    PolicyLimits,
    PrincipalChecks,
    Rule,
    from_stored,
)
from latchkey.policy.enforcer import Enforcer, Target
from latchkey.policy.scoped import ScopedPolicies
from latchkey.policy.store import Scope

DOMAIN_RULE_PREFIX = "domain/"


class DomainPolicies(ScopedPolicies):
    ACTIONS = "policy:domain_policy"
    SCOPE: Scope = "domain"

    def __init__(
        self,
        session: DbSession,
        enforcer: Enforcer,
        audit: AuditLog,
        catalog: Catalog,
        changes: ChangeGeneration | None = None,
        limits: PolicyLimits | None = None,
    ) -> None:
        super().__init__(session, enforcer, audit, catalog, changes, limits)
        # domain id -> (version, its rules as merged into projects)
        self._rules: dict[str, tuple[int | None, tuple[Rule, ...]]] = {}
        self._lock = threading.Lock()

    # -- what projects see ----------------------------------------------------------

    def active_rules(self, domain_id: str | None) -> tuple[int | None, tuple[Rule, ...]]:
        """(version, rules renamed ``domain/<id>``) in force for a domain: the active
        version as the store caches it, its rules kept while it stays active."""
        if not domain_id:
            return None, ()
        version = self._versions.cached_active(domain_id)
        cached = self._rules.get(domain_id)
        if cached is not None and cached[0] == version:
            return cached
        rules: tuple[Rule, ...] = ()
        if version is not None:
            stored = from_stored(self._versions.get(domain_id, version).document)
            rules = tuple(
                dataclasses.replace(rule, id=DOMAIN_RULE_PREFIX + rule.id) for rule in stored.rules
            )
        with self._lock:
            self._rules[domain_id] = (version, rules)
        return version, rules

    def forget(self, domain_id: str) -> None:
        self._versions.forget(domain_id)
        with self._lock:
            self._rules.pop(domain_id, None)

    # -- helpers --------------------------------------------------------------------

    def _checks(self, domain_id: str) -> PrincipalChecks:
        """A domain's rules name only the domain's own principals."""
        session = self._session

        def user_in_domain(user_id: str) -> bool:
            query = select(User.id).where(User.id == user_id, User.domain_id == domain_id)
            return session.scalar(query) is not None

        def group_in_domain(group_id: str) -> bool:
            query = select(Group.id).where(Group.id == group_id, Group.domain_id == domain_id)
            return session.scalar(query) is not None

        def credential_in_domain(credential_id: str) -> bool:
            query = (
                select(ApplicationCredential.id)
                .join(Project, Project.id == ApplicationCredential.project_id)
                .where(ApplicationCredential.id == credential_id, Project.domain_id == domain_id)
            )
            return session.scalar(query) is not None

        def role_exists(name: str) -> bool:
            return session.scalar(select(Role.id).where(Role.name == name)) is not None

        return PrincipalChecks(user_in_domain, group_in_domain, credential_in_domain, role_exists)

    def _enforce(self, ctx: CallContext, action: str, domain_id: str) -> None:
        domain = self._session.get(Domain, domain_id)
        # The admin project's domain: its rules would reach the operators' project.
        holds_admin_project = (
            self._session.scalar(
                select(Project.id).where(Project.domain_id == domain_id, Project.is_admin_project)
            )
            is not None
        )
        self._enforcer.enforce(
            ctx.auth, action, Target(domain_id=domain_id, privileged=holds_admin_project)
        )
        if domain is None:
            raise NotFound(f"no domain {domain_id!r}", code="domain_not_found")

    def _audit_target(self, domain_id: str) -> AuditTarget:
        return AuditTarget("domain_policy", domain_id, domain_id=domain_id)

    def _in_force(self, domain_id: str, version: int, parsed: PolicyDocument) -> None:
        self.forget(domain_id)
