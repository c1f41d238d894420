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
import time
from typing import Any

from sqlalchemy import func, select

from latchkey.audit import CHANGE, AuditLog, AuditTarget
from latchkey.changes.generation import ChangeGeneration, still_fresh
from latchkey.credentials.models import ApplicationCredential
from latchkey.db import DbSession, utcnow
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
    parse_or_refuse,
    to_json,
)
from latchkey.policy.enforcer import Enforcer, Target
from latchkey.policy.models import DomainPolicy, DomainPolicyVersion

DOMAIN_RULE_PREFIX = "domain/"
ACTIVE_CACHE_SECONDS = 2.0  # without a change signal, as for projects


class DomainPolicies:
    def __init__(
        self,
        session: DbSession,
        enforcer: Enforcer,
        audit: AuditLog,
        catalog: Catalog,
        changes: ChangeGeneration | None = None,
        limits: PolicyLimits | None = None,
    ) -> None:
        self._limits = limits or PolicyLimits()
        self._session = session
        self._enforcer = enforcer
        self._audit = audit
        self._catalog = catalog
        # domain id -> (checked at, generation, active version, rules as merged into projects)
        self._active: dict[str, tuple[float, int | None, int | None, tuple[Rule, ...]]] = {}
        self._changes = changes or ChangeGeneration(None)  # domain_policy rows changed
        self._lock = threading.Lock()

    # -- documents ------------------------------------------------------------------

    def get(self, ctx: CallContext, domain_id: str) -> tuple[int | None, dict[str, Any]]:
        self._enforce(ctx, "policy:domain_policy:get", domain_id)
        version = self.active_version(domain_id)
        if version is None:
            return None, {"rules": []}
        return version, self._version_row(domain_id, version).document

    def validate(self, ctx: CallContext, domain_id: str, document: Any) -> PolicyDocument:
        self._enforce(ctx, "policy:domain_policy:validate", domain_id)
        return self._parse(domain_id, document)

    def put(self, ctx: CallContext, domain_id: str, document: Any) -> int:
        self._enforce(ctx, "policy:domain_policy:update", domain_id)
        parsed = self._parse(domain_id, document)
        latest = self._session.scalar(
            select(func.max(DomainPolicyVersion.version)).where(
                DomainPolicyVersion.domain_id == domain_id
            )
        )
        version = (latest or 0) + 1
        self._session.add(
            DomainPolicyVersion(
                domain_id=domain_id,
                version=version,
                document=to_json(parsed),
                author_id=ctx.actor_id,
            )
        )
        self._activate_row(domain_id, version)
        self._record(ctx, "policy:domain_policy:update", domain_id, version=version)
        self._session.commit()
        self.forget(domain_id)
        return version

    def versions(self, ctx: CallContext, domain_id: str) -> list[DomainPolicyVersion]:
        self._enforce(ctx, "policy:domain_policy:get", domain_id)
        return list(
            self._session.scalars(
                select(DomainPolicyVersion)
                .where(DomainPolicyVersion.domain_id == domain_id)
                .order_by(DomainPolicyVersion.version)
            )
        )

    def active_version(self, domain_id: str) -> int | None:
        row = self._session.get(DomainPolicy, domain_id)
        return row.active_version if row else None

    def activate(self, ctx: CallContext, domain_id: str, version: int) -> None:
        self._enforce(ctx, "policy:domain_policy:update", domain_id)
        row = self._version_row(domain_id, version)
        self._parse(domain_id, row.document)  # an old version must still validate
        self._activate_row(domain_id, version)
        self._record(ctx, "policy:domain_policy:activate", domain_id, version=version)
        self._session.commit()
        self.forget(domain_id)

    # -- what projects see ----------------------------------------------------------

    def active_rules(self, domain_id: str | None) -> tuple[int | None, tuple[Rule, ...]]:
        """(version, rules renamed ``domain/<id>``) in force for a domain; cached briefly."""
        if not domain_id:
            return None, ()
        generation = self._changes.current()
        cached = self._active.get(domain_id)
        if cached is not None and still_fresh(
            cached[0], cached[1], generation, ACTIVE_CACHE_SECONDS
        ):
            return cached[2], cached[3]
        now = time.monotonic()
        version = self.active_version(domain_id)
        rules: tuple[Rule, ...] = ()
        if cached is not None and cached[2] == version:
            rules = cached[3]
        elif version is not None:
            stored = from_stored(self._version_row(domain_id, version).document)
            rules = tuple(
                dataclasses.replace(rule, id=DOMAIN_RULE_PREFIX + rule.id) for rule in stored.rules
            )
        with self._lock:
            self._active[domain_id] = (now, generation, version, rules)
        return version, rules

    def forget(self, domain_id: str) -> None:
        with self._lock:
            self._active.pop(domain_id, None)

    # -- helpers --------------------------------------------------------------------

    def _parse(self, domain_id: str, document: Any) -> PolicyDocument:
        return parse_or_refuse(
            document, self._catalog.view(), self._checks(domain_id), self._limits
        )

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

    def _version_row(self, domain_id: str, version: int) -> DomainPolicyVersion:
        row = self._session.scalar(
            select(DomainPolicyVersion).where(
                DomainPolicyVersion.domain_id == domain_id, DomainPolicyVersion.version == version
            )
        )
        if row is None:
            raise NotFound(f"no policy version {version}", code="policy_version_not_found")
        return row

    def _activate_row(self, domain_id: str, version: int) -> None:
        active = self._session.get(DomainPolicy, domain_id)
        if active is None:
            self._session.add(DomainPolicy(domain_id=domain_id, active_version=version))
        else:
            active.active_version, active.updated_at = version, utcnow()

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

    def _record(self, ctx: CallContext, action: str, domain_id: str, **details: Any) -> None:
        self._audit.add(
            type=CHANGE,
            action=action,
            outcome="success",
            actor_id=ctx.actor_id,
            target=AuditTarget("domain_policy", domain_id, domain_id=domain_id),
            request_id=ctx.request_id,
            source_ip=ctx.source_ip,
            details=details,
        )
