"""What project and domain policies share: one versioned rule document per scope.

A scope (a project, or a domain whose rules reach all its projects) has saved
versions of its document and one active version. Reading, validating, saving a new
version (which becomes active), listing versions and activating one (rolling back or
forward) are the same for both; ``TenantPolicies`` (policy/versions.py) and
``DomainPolicies`` (policy/domains.py) say only what differs: how a scope is
authorized, which principals its rules may name, what the audit trail calls it, and
what to rebuild once a version is in force.
"""

from __future__ import annotations

from typing import Any

from latchkey.audit import CHANGE, AuditLog, AuditTarget
from latchkey.changes.generation import ChangeGeneration
from latchkey.db import DbSession
from latchkey.policy.catalog import Catalog
from latchkey.policy.context import CallContext
from latchkey.policy.documents import (
    PolicyDocument,
    PolicyLimits,
    PrincipalChecks,
    parse_or_refuse,
    to_json,
)
from latchkey.policy.enforcer import Enforcer
from latchkey.policy.store import PolicyVersions, Scope, StoredVersion


class ScopedPolicies:
    # Set by each kind of scope.
    ACTIONS = ""  # the actions' prefix: "<prefix>:get", "<prefix>:validate", "<prefix>:update"
    SCOPE: Scope  # the store's scope kind: "project" or "domain"

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
        # The active version is re-read when tenant_policy rows change (another
        # worker's activation moves ``changes``).
        self._versions = PolicyVersions(session, self.SCOPE, changes)

    def get(self, ctx: CallContext, scope_id: str) -> tuple[int | None, dict[str, Any]]:
        self._enforce(ctx, f"{self.ACTIONS}:get", scope_id)
        version = self.active_version(scope_id)
        if version is None:
            return None, {"rules": []}
        return version, self._versions.get(scope_id, version).document

    def validate(self, ctx: CallContext, scope_id: str, document: Any) -> PolicyDocument:
        self._enforce(ctx, f"{self.ACTIONS}:validate", scope_id)
        return self._parse(scope_id, document)

    def put(self, ctx: CallContext, scope_id: str, document: Any) -> int:
        """Save ``document`` as the scope's next version, and make it the active one."""
        action = f"{self.ACTIONS}:update"
        self._enforce(ctx, action, scope_id)
        parsed = self._parse(scope_id, document)
        version = self._versions.add(scope_id, to_json(parsed), ctx.actor_id)
        self._record(ctx, action, scope_id, version=version, rules=len(parsed.rules))
        self._session.commit()
        self._in_force(scope_id, version, parsed)  # after the commit: nothing caches the old
        return version

    def versions(self, ctx: CallContext, scope_id: str) -> list[StoredVersion]:
        self._enforce(ctx, f"{self.ACTIONS}:get", scope_id)
        return self._versions.list(scope_id)

    def active_version(self, scope_id: str) -> int | None:
        return self._versions.active_version(scope_id)

    def activate(self, ctx: CallContext, scope_id: str, version: int) -> None:
        """Make a saved version the active one (rolling back, or forward again)."""
        self._enforce(ctx, f"{self.ACTIONS}:update", scope_id)
        stored = self._versions.get(scope_id, version)
        # The catalog may have changed since: an old version must still validate.
        parsed = self._parse(scope_id, stored.document)
        self._versions.activate(scope_id, version)
        self._record(ctx, f"{self.ACTIONS}:activate", scope_id, version=version)
        self._session.commit()
        self._in_force(scope_id, version, parsed)

    def _parse(self, scope_id: str, document: Any) -> PolicyDocument:
        return parse_or_refuse(document, self._catalog.view(), self._checks(scope_id), self._limits)

    def _record(self, ctx: CallContext, action: str, scope_id: str, **details: Any) -> None:
        self._audit.add(
            type=CHANGE,
            action=action,
            outcome="success",
            actor_id=ctx.actor_id,
            target=self._audit_target(scope_id),
            request_id=ctx.request_id,
            source_ip=ctx.source_ip,
            details=details,
        )

    # -- what each kind of scope says -------------------------------------------------

    def _enforce(self, ctx: CallContext, action: str, scope_id: str) -> None:
        """Authorize ``action`` on the scope, then refuse a scope that does not exist."""
        raise NotImplementedError

    def _checks(self, scope_id: str) -> PrincipalChecks:
        """Which principals the scope's rules may name."""
        raise NotImplementedError

    def _audit_target(self, scope_id: str) -> AuditTarget:
        raise NotImplementedError

    def _in_force(self, scope_id: str, version: int, parsed: PolicyDocument) -> None:
        """``version`` (``parsed``) is now the active one: drop what was kept of the old."""
        raise NotImplementedError
