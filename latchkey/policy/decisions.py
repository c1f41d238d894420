"""Decisions: the decision API, simulation, and the tenant layer of Latchkey's own actions.

Allowed if and only if:
  the token's own limits allow it (an application credential's access rules must
  name the action's service; its roles are already in the token)
  ∧ the operator boundary allows it
  ∧ (no tenant policy, or some allow rule matches and no deny rule matches).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import event, select
from sqlalchemy.orm import Session

from latchkey.db import DbSession, on_commit
from latchkey.errors import Forbidden, InvalidRequest
from latchkey.identity.models import Domain, Group, GroupMembership, User
from latchkey.metrics import count_decisions
from latchkey.policy.catalog import Catalog
from latchkey.policy.context import AuthContext, CallContext
from latchkey.policy.enforcer import Enforcer, Target, TenantRefusal
from latchkey.policy.engine import (
    ActionRef,
    BudgetExceeded,
    PolicyEngine,
    PolicyError,
    Principal,
    ResourceRef,
    deadline,
)
from latchkey.policy.plan import ALWAYS, NEVER, plan
from latchkey.policy.recorder import DecisionRecorder, Sample
from latchkey.policy.records import Decision
from latchkey.policy.versions import TenantPolicies
from latchkey.tokens.service import Tokens

log = logging.getLogger(__name__)
MAX_BATCH = 1000

BUDGET_CODE = "decision_budget_exceeded"


@dataclass(frozen=True)
class DecisionLimits:
    """What a decision request may send and cost (the LATCHKEY_DECISION_* settings of
    issue 13, class 1; docs/policy.md "Limits")."""

    max_attributes: int = 100
    max_attribute_length: int = 1024
    max_attribute_items: int = 100
    max_cost: int = 200_000
    budget_ms: int = 500
    batch_budget_ms: int = 3000


def over_budget(explain: bool) -> Decision:
    """A decision not made in time: a denial (fail closed), never an allow."""
    return Decision(
        False,
        "budget",
        None,
        {"budget": "the decision's time budget was spent"} if explain else None,
        BUDGET_CODE,
    )


@dataclass
class ProjectDecider:
    """What the checks of one batch share for a project: one engine (one policy
    version), and its domain."""

    domain_id: str | None
    engine: PolicyEngine


def decide_with(
    engine: PolicyEngine,
    principal: Principal,
    action: ActionRef,
    resource: ResourceRef,
    explain: bool,
) -> Decision:
    """Boundary, then the tenant's rules (deny wins; no policy: the boundary alone).

    An evaluation that fails (a boundary reaching past what it may read, a query
    past POLAR_TIMEOUT_MS) is a denial, logged: never a 500, never an allow.
    """
    try:
        verdict = engine.evaluate(principal, action, resource)
    except BudgetExceeded:
        log.warning(
            "decision past its budget, denied",
            extra={"action": action.name, "resource_type": resource.type},
        )
        return over_budget(explain)
    except PolicyError as exc:
        log.error(
            "policy evaluation failed, denied: %s",
            exc,
            extra={"action": action.name, "resource_type": resource.type},
        )
        return Decision(
            False, "error", None, {"error": "policy evaluation failed"} if explain else None
        )
    explanation = None
    if explain:
        explanation = {
            "boundary": verdict.boundary,
            "tenant_policy": engine.has_policy,
            "allow_rules": list(verdict.allows),
            "deny_rules": list(verdict.denies),
        }
    if not verdict.boundary:
        return Decision(False, "boundary", None, explanation)
    if verdict.denies:
        return Decision(False, "policy", verdict.denies[0], explanation)
    if not engine.has_policy:
        return Decision(True, "boundary", None, explanation)
    if verdict.allows:
        return Decision(True, "policy", verdict.allows[0], explanation)
    return Decision(False, "policy", None, explanation)


def decide_tenant_only(
    engine: PolicyEngine, principal: Principal, action: ActionRef, resource: ResourceRef
) -> Decision:
    """The tenant's rules alone (deny wins; no allow: refused), for Latchkey's own
    identity actions, whose ceiling is the rule table rather than the boundary."""
    try:
        verdict = engine.evaluate(principal, action, resource, consult_boundary=False)
    except BudgetExceeded:
        log.warning("decision past its budget, denied", extra={"action": action.name})
        return over_budget(False)
    except PolicyError as exc:
        log.error("policy evaluation failed, denied: %s", exc, extra={"action": action.name})
        return Decision(False, "error", None, None)
    if verdict.denies:
        return Decision(False, "policy", verdict.denies[0], None)
    if not engine.has_policy:
        return Decision(True, "table", None, None)
    if verdict.allows:
        return Decision(True, "policy", verdict.allows[0], None)
    return Decision(False, "policy", None, None)


def own_action(action: str) -> bool:
    """Enforced at Latchkey's own endpoints (table + tenant rules), not by the boundary."""
    return action.startswith("identity:")


@dataclass(frozen=True)
class StoredPrincipal:
    """What decisions read of a user from the database."""

    name: str
    kind: str
    domain_id: str
    groups: frozenset[str]
    attributes: dict[str, Any]


class ChangeSignal(Protocol):
    def changed(self) -> bool: ...


PRINCIPALS_KEPT = 10_000
# Rows whose change (or cascade) changes what decisions read of a user.
PRINCIPAL_ROWS = (User, GroupMembership, Group, Domain)


class PrincipalCache:
    """Users as decisions see them, kept until the database says users or group
    memberships changed.

    The signal is ``RevocationListener`` on the ``latchkey_principal`` channel on
    PostgreSQL (a trigger on users and memberships, migration 0010), and
    ``SqliteChanges`` on SQLite (any commit at all). It is asked before every
    lookup, so an answer read after a change is never older than the change:
    "attributes are read at decision time" still holds, without a query per
    decision (a user row and its memberships were a quarter of `/v1/authorize`
    on PostgreSQL). Without a signal nothing is kept. Bounded: the oldest first.
    """

    def __init__(
        self,
        signal: ChangeSignal | None,
        sessions: DbSession | None = None,
        size: int = PRINCIPALS_KEPT,
    ) -> None:
        self._signal = signal
        self._size = size
        self._entries: dict[str, StoredPrincipal] = {}
        self._lock = threading.Lock()
        if signal is not None and sessions is not None:
            # This worker's own changes count at once, not when the database's
            # notification arrives (PostgreSQL sends it just after the commit). Latchkey's
            # own sessions only: a host process's sessions are not ours to watch.
            event.listen(sessions, "after_flush", self._note_own_changes)

    def _note_own_changes(self, session: Session, _context: Any) -> None:
        changed = itertools.chain(session.new, session.dirty, session.deleted)
        if any(isinstance(row, PRINCIPAL_ROWS) for row in changed):
            on_commit(session, f"principals-{id(self)}", self.forget)

    def forget(self) -> None:
        self._entries = {}

    def get(self, user_id: str) -> StoredPrincipal | None:
        if self._signal is None:
            return None
        if self._signal.changed():
            self._entries = {}
            return None
        return self._entries.get(user_id)

    def put(self, user_id: str, principal: StoredPrincipal) -> None:
        if self._signal is None:
            return
        with self._lock:
            while len(self._entries) >= self._size:
                del self._entries[next(iter(self._entries))]
            self._entries[user_id] = principal


class Decisions:
    def __init__(
        self,
        session: DbSession,
        enforcer: Enforcer,
        policies: TenantPolicies,
        catalog: Catalog,
        tokens: Tokens,
        recorder: DecisionRecorder,
        effective_roles: Callable[[str, str], set[str]],
        principals: PrincipalCache | None = None,
        limits: DecisionLimits | None = None,
    ) -> None:
        self._limits = limits or DecisionLimits()
        self._principals = principals or PrincipalCache(None)
        self._session = session
        self._enforcer = enforcer
        self._policies = policies
        self._catalog = catalog
        self._tokens = tokens
        self._recorder = recorder
        self._effective_roles = effective_roles

    def authorize(
        self, ctx: CallContext, check: dict[str, Any], subject_token: str | None, explain: bool
    ) -> Decision:
        started = time.perf_counter()
        principal, auth = self._principal(ctx, subject_token)
        self._check_attributes(check["resource"], "/resource")
        decision = self._decide(principal, auth, check["action"], check["resource"], explain)
        count_decisions("check", started, [(decision.allowed, decision.decided_by)])
        return decision

    def decide(self, ctx: CallContext, action: str, resource: dict[str, Any]) -> Decision:
        """One decision for the caller's own token (Latchkey's own policy-governed APIs)."""
        principal, auth = self._principal(ctx, None)
        return self._decide(principal, auth, action, resource, False)

    def batch(
        self,
        ctx: CallContext,
        checks: list[dict[str, Any]],
        subject_token: str | None,
        explain: bool,
    ) -> list[Decision]:
        if len(checks) > MAX_BATCH:
            raise InvalidRequest(f"at most {MAX_BATCH} checks", code="batch_too_large")
        started = time.perf_counter()
        principal, auth = self._principal(ctx, subject_token)
        for i, check in enumerate(checks):
            self._check_attributes(check["resource"], f"/checks/{i}/resource")
        per_project: dict[str | None, ProjectDecider] = {}
        until = self._batch_deadline()
        # Each project's engine and each action's candidate rules, before any decision
        # (both kept for later requests): within the batch's budget too, since a batch
        # may name up to 1,000 projects. Out of time here, every check is a budget denial.
        known = self._catalog.view().actions  # an unknown action is a 422 when decided
        cost: int | None = 0
        with deadline(until):
            try:
                for c in checks:
                    if time.monotonic() >= until:
                        raise BudgetExceeded("the batch's budget is spent")
                    if c["action"] in known and cost is not None:
                        engine = self._decider(c["resource"].get("project_id"), per_project).engine
                        cost += engine.cost(c["action"])
            except BudgetExceeded:
                cost = None
        if cost is not None:
            self._check_cost(cost, f"{len(checks)} checks")
        decided: list[Sample] = []
        decisions = [
            self._decide(
                principal, auth, c["action"], c["resource"], explain, per_project, decided, until
            )
            for c in checks
        ]
        self._recorder.maybe_record_one(principal, decided)
        count_decisions("batch", started, [(d.allowed, d.decided_by) for d in decisions])
        return decisions

    # -- what a request may send and cost (issue 13, class 1) -----------------------

    def _check_attributes(self, resource: dict[str, Any], pointer: str) -> None:
        """Resource attributes within LATCHKEY_DECISION_MAX_ATTRIBUTES / _LENGTH / _ITEMS:
        a 422 ``attribute_limit_exceeded`` naming the limit and the attribute."""
        limits = self._limits
        attributes = resource.get("attributes") or {}
        pointer += "/attributes"

        def refuse(where: str, detail: str, setting: str, maximum: int) -> None:
            raise InvalidRequest(
                f"{where}: {detail}",
                code="attribute_limit_exceeded",
                extra={"pointer": where, "limit": setting, "max": maximum},
            )

        if len(attributes) > limits.max_attributes:
            refuse(
                pointer,
                f"at most {limits.max_attributes} attributes",
                "LATCHKEY_DECISION_MAX_ATTRIBUTES",
                limits.max_attributes,
            )
        length = limits.max_attribute_length
        for name, value in attributes.items():
            where = f"{pointer}/{str(name)[:64]}"
            if isinstance(value, list):
                if len(value) > limits.max_attribute_items:
                    refuse(
                        where,
                        f"a list of at most {limits.max_attribute_items} items",
                        "LATCHKEY_DECISION_MAX_ATTRIBUTE_ITEMS",
                        limits.max_attribute_items,
                    )
                value_strings = [v for v in value if isinstance(v, str)]
            else:
                value_strings = [value] if isinstance(value, str) else []
            if any(len(v) > length for v in value_strings):
                refuse(
                    where,
                    f"strings of at most {length} characters",
                    "LATCHKEY_DECISION_MAX_ATTRIBUTE_LENGTH",
                    length,
                )

    def _check_cost(self, cost: int, what: str) -> None:
        """A request whose checks could cost more than LATCHKEY_DECISION_MAX_COST units
        (the rules naming each check's action, counted as if all were evaluated) is
        refused before any is: 422 ``decision_cost_exceeded``."""
        most = self._limits.max_cost
        if cost > most:
            raise InvalidRequest(
                f"{what} against the tenant rules in force could cost {cost} units, "
                f"at most {most} (LATCHKEY_DECISION_MAX_COST): send fewer checks at a time",
                code="decision_cost_exceeded",
                extra={"limit": "LATCHKEY_DECISION_MAX_COST", "max": most, "cost": cost},
            )

    @staticmethod
    def _cost_within(until: float, count: Callable[[], int]) -> int | None:
        """``count()`` (which may index each action's candidate rules: ~2,000 rules of
        50 globs each) within the request's deadline; None once it has passed."""
        with deadline(until):
            try:
                return count()
            except BudgetExceeded:
                return None

    def _batch_deadline(self) -> float:
        return time.monotonic() + self._limits.batch_budget_ms / 1000

    def _decider(
        self, project_id: str | None, per_project: dict[str | None, ProjectDecider] | None
    ) -> ProjectDecider:
        known = per_project.get(project_id) if per_project is not None else None
        if known is None:
            known = ProjectDecider(
                self._project_domain(project_id), self._policies.engine(project_id)
            )
            if per_project is not None:
                per_project[project_id] = known
        return known

    def _deadline(self, until: float | None) -> float:
        """One decision's deadline: its own budget, within the request's (``until``)."""
        at = time.monotonic() + self._limits.budget_ms / 1000
        return at if until is None else min(at, until)

    def actions(
        self, ctx: CallContext, resource: dict[str, Any], subject_token: str | None
    ) -> list[str]:
        started = time.perf_counter()
        principal, auth = self._principal(ctx, subject_token)
        self._check_attributes(resource, "/resource")
        view = self._catalog.view()
        per_project: dict[str | None, ProjectDecider] = {}
        actions = view.actions_for(resource["type"])
        engine = self._decider(resource.get("project_id"), per_project).engine
        until = self._batch_deadline()
        cost = self._cost_within(until, lambda: sum(engine.cost(a) for a in actions))
        if cost is not None:
            self._check_cost(cost, f"{len(actions)} actions")
        decided: list[Sample] = []
        answers = [
            (
                action,
                self._decide(principal, auth, action, resource, False, per_project, decided, until),
            )
            for action in actions
        ]
        self._recorder.maybe_record_one(principal, decided)
        count_decisions("actions", started, [(d.allowed, d.decided_by) for _, d in answers])
        return [action for action, decision in answers if decision.allowed]

    def plan(
        self,
        ctx: CallContext,
        action: str,
        resource_type: str,
        project_id: str,
        subject_token: str | None,
    ) -> tuple[str, dict[str, Any] | None]:
        """always / never / conditional (with a condition tree) for listing resources."""
        principal, auth = self._principal(ctx, subject_token)
        action_ref = self._checked_action(action, resource_type)
        if not self._token_allows(auth, action_ref):
            return NEVER, None
        engine = self._policies.engine(project_id)
        probe = ResourceRef(
            type=resource_type, project_id=project_id, domain_id=self._project_domain(project_id)
        )
        if not engine.evaluate(principal, action_ref, probe).boundary:
            return NEVER, None
        if not engine.has_rules:
            return ALWAYS, None
        # Only the rules naming the action (the engine's index): a document of 1,000 rules
        # of 50 action globs each is not matched again on every call.
        return plan(
            engine.candidates(action),
            principal,
            action,
            resource_type,
            allow_required=engine.has_policy,
        )

    def _checked_action(self, action: str, resource_type: str) -> ActionRef:
        """Questions about what the catalog does not know are errors, not denials."""
        view = self._catalog.view()
        if action not in view.actions:
            raise InvalidRequest(
                f"{action!r} is not an action of the catalog", code="unknown_action"
            )
        if resource_type not in view.resource_types:
            raise InvalidRequest(
                f"{resource_type!r} is not a resource type of the catalog",
                code="unknown_resource_type",
            )
        return ActionRef(action)

    def _typed(self, resource_type: str, attributes: dict[str, Any] | None) -> dict[str, Any]:
        """Only attributes the catalog declares, with a value of its type: anything else
        counts as missing, so deny rules fail closed on it (a list sent for a string
        must not slip past `env = prod`)."""
        declared = self._catalog.view().resource_types.get(resource_type, {})
        return {
            name: value
            for name, value in (attributes or {}).items()
            if name in declared and fits(declared[name].type, value)
        }

    @staticmethod
    def _token_allows(auth: AuthContext, action: ActionRef) -> bool:
        """An application credential's access rules must name the action's service."""
        return not auth.access_rules or action.service in {
            r.get("service") for r in auth.access_rules
        }

    def _decide(
        self,
        principal: Principal,
        auth: AuthContext,
        action: str,
        resource: dict[str, Any],
        explain: bool,
        per_project: dict[str | None, ProjectDecider] | None = None,
        decided: list[Sample] | None = None,
        until: float | None = None,
    ) -> Decision:
        """``per_project``: shared by the checks of one batch, so the whole batch is
        decided by one policy version per project and looks each project up once.
        ``decided``: collects the batch's decisions, of which at most one is sampled
        (``DecisionRecorder.maybe_record_one``). ``until``: the request's deadline
        (``time.monotonic()``); each decision also has a budget of its own."""
        action_ref = self._checked_action(action, resource["type"])
        if not self._token_allows(auth, action_ref):
            return Decision(
                False,
                "token",
                None,
                {"token": "the credential's access rules do not name this service"}
                if explain
                else None,
            )
        project_id = resource.get("project_id")
        if until is not None and time.monotonic() >= until:
            # The request's budget is spent: not evaluated (nor an engine built for it).
            decision = over_budget(explain)
            if decided is not None:
                decided.append((action, resource, decision))
            return decision
        known = self._decider(project_id, per_project)
        resource_ref = ResourceRef(
            type=resource["type"],
            project_id=project_id,
            domain_id=known.domain_id,
            id=resource.get("id"),
            attributes=self._typed(resource["type"], resource.get("attributes")),
        )
        with deadline(self._deadline(until)):
            decision = decide_with(known.engine, principal, action_ref, resource_ref, explain)
        if decided is not None:
            decided.append((action, resource, decision))
        else:
            self._recorder.maybe_record(principal, action, resource, decision, buffered=True)
        return decision

    def refuses(
        self,
        auth: AuthContext,
        action: str,
        project_id: str,
        attributes: Mapping[str, Any] | None,
    ) -> TenantRefusal | None:
        """The tenant layer of Latchkey's own actions (``Enforcer.enforce_tenant_policy``).

        The rule table has allowed the action; the project's rules, if it has any,
        must allow it too, deny winning. The boundary is not consulted: for these
        actions the table is the ceiling, and it also knows cloud scope, `self`,
        privileged targets and escalation, which the boundary does not. Actions the
        catalog does not declare (``audit:*``) stay with the table alone.
        """
        engine = self._policies.engine(project_id)
        if not engine.has_rules:
            return None
        view = self._catalog.view()
        if action not in view.actions:
            return None
        resource_type = action.rsplit(":", 1)[0]
        given = dict(attributes or {})
        resource = {"type": resource_type, "project_id": project_id, "attributes": given}
        principal = self.principal_of(auth)
        resource_ref = ResourceRef(
            type=resource_type,
            project_id=project_id,
            domain_id=self._project_domain(project_id),
            attributes=self._typed(resource_type, given),
        )
        with deadline(self._deadline(None)):
            decision = decide_tenant_only(engine, principal, ActionRef(action), resource_ref)
        self._record_own(principal, action, resource, decision)
        return None if decision.allowed else TenantRefusal(decision.rule, decision.decided_by)

    def _record_own(
        self, principal: Principal, action: str, resource: dict[str, Any], decision: Decision
    ) -> None:
        """Sampled like every decision, so drafts are replayed against identity traffic
        too; committed at once only when the request has nothing else pending (the
        check runs before the operation's own writes, and must never commit them)."""
        session = self._session
        if session.new or session.dirty or session.deleted:
            if decision.allowed:  # committed, or rolled back, with the operation
                self._recorder.maybe_record(principal, action, resource, decision)
            return
        self._recorder.maybe_record(principal, action, resource, decision)
        self._recorder.commit()

    def simulate(
        self,
        ctx: CallContext,
        project_id: str,
        document: Any,
        cases: list[dict[str, Any]],
        recent: int,
    ) -> dict[str, Any]:
        """A draft against given cases and the project's recent recorded decisions."""
        validated = self._policies.validate(ctx, project_id, document)
        draft = PolicyEngine(
            self._policies.boundary_text(),
            self._policies.with_domain_rules(project_id, validated)[1],
        )
        current = self._policies.engine(project_id)
        for index, case in enumerate(cases):
            self._check_attributes(case["resource"], f"/cases/{index}/resource")
        records = self._recorder.recent(project_id, recent)
        until = self._batch_deadline()
        cost = self._cost_within(
            until,
            lambda: (
                sum(current.cost(c["action"]) + draft.cost(c["action"]) for c in cases)
                + sum(draft.cost(r.action) for r in records)
            ),
        )
        if cost is not None:
            self._check_cost(cost, f"{len(cases)} cases and {len(records)} recent decisions")

        def timed(
            engine: PolicyEngine,
            principal: Principal,
            action: ActionRef,
            resource: ResourceRef,
            explain: bool,
            tenant_only: bool = False,
        ) -> Decision:
            if time.monotonic() >= until:
                return over_budget(explain)
            with deadline(self._deadline(until)):
                if tenant_only:
                    return decide_tenant_only(engine, principal, action, resource)
                return decide_with(engine, principal, action, resource, explain)

        case_results = []
        for index, case in enumerate(cases):
            principal = self._case_principal(case["principal"], project_id)
            action, resource_ref = ActionRef(case["action"]), self._resource(case["resource"])
            before = timed(current, principal, action, resource_ref, True)
            after = timed(draft, principal, action, resource_ref, True)
            case_results.append(
                {
                    "index": index,
                    "current": before.as_dict(),
                    "draft": after.as_dict(),
                    "flips": before.allowed != after.allowed,
                }
            )
        flips = []
        for record in records:
            principal = Principal(**record.principal)
            action, resource_ref = ActionRef(record.action), self._resource(record.resource)
            after = timed(draft, principal, action, resource_ref, False, own_action(record.action))
            if after.allowed != record.allowed:
                flips.append(
                    {
                        "record_id": record.id,
                        "time": record.time.isoformat(),
                        "action": record.action,
                        "principal_id": principal.id,
                        "recorded": record.allowed,
                        "draft": after.as_dict(),
                    }
                )
        return {"cases": case_results, "recent": {"checked": len(records), "flips": flips}}

    def _case_principal(self, spec: dict[str, Any], project_id: str) -> Principal:
        user = self._session.get(User, spec["user_id"])
        # A user of another domain with nothing on the project is "not found" too: a
        # project's admins learn nothing of user ids beyond their domain and project.
        if user is None or (
            user.domain_id != self._project_domain(project_id)
            and not self._policies.user_in_project(project_id, user.id)
        ):
            raise InvalidRequest(f"no user {spec['user_id']!r}", code="user_not_found")
        roles = spec.get("roles")
        if roles is None:
            roles = self._effective_roles(user.id, project_id)
        groups = set(
            self._session.scalars(
                select(GroupMembership.group_id).where(GroupMembership.user_id == user.id)
            )
        )
        groups.update(user.directory_group_ids or [])
        return Principal(
            id=user.id,
            name=user.name,
            kind=user.kind,
            domain_id=user.domain_id,
            project_id=project_id,
            roles=roles,
            groups=groups,
            application_credential_id=spec.get("application_credential_id"),
            attributes=user.attributes or {},
        )

    def _resource(self, resource: dict[str, Any]) -> ResourceRef:
        project_id = resource.get("project_id")
        return ResourceRef(
            type=resource["type"],
            project_id=project_id,
            domain_id=self._project_domain(project_id),
            id=resource.get("id"),
            attributes=resource.get("attributes"),
        )

    def _principal(
        self, ctx: CallContext, subject_token: str | None
    ) -> tuple[Principal, AuthContext]:
        auth = ctx.auth
        if auth is None:
            self._enforcer.enforce(None, "policy:decision:authorize", Target())
        assert auth is not None
        if subject_token:
            # A relying service asking on a user's behalf must be one (the `service` role).
            self._enforcer.enforce(auth, "policy:decision:on_behalf", Target())
            auth = self._tokens.authenticate_bearer(subject_token)
        return self.principal_of(auth), auth

    def principal_of(self, auth: AuthContext) -> Principal:
        """The token's principal as policies see it (groups and attributes looked up)."""
        stored = self._principals.get(auth.user_id)
        if stored is None:
            stored = self._stored_principal(auth.user_id)
            self._principals.put(auth.user_id, stored)
        return Principal(
            id=auth.user_id,
            name=stored.name,
            kind=stored.kind,
            domain_id=auth.domain_id or auth.project_domain_id or stored.domain_id,
            project_id=auth.project_id,
            roles=auth.roles,
            groups=stored.groups,
            application_credential_id=auth.application_credential_id,
            domain_scoped=auth.domain_id is not None,
            attributes=stored.attributes,
        )

    def _stored_principal(self, user_id: str) -> StoredPrincipal:
        # One round trip: the user row with each of its group memberships (or none).
        rows = self._session.execute(
            select(User, GroupMembership.group_id)
            .outerjoin(GroupMembership, GroupMembership.user_id == User.id)
            .where(User.id == user_id)
        ).all()
        if not rows:
            raise Forbidden("the principal no longer exists", code="principal_gone")
        user = rows[0][0]
        groups = {group_id for _, group_id in rows if group_id is not None}
        groups.update(user.directory_group_ids or [])
        return StoredPrincipal(
            user.name, user.kind, user.domain_id, frozenset(groups), dict(user.attributes or {})
        )

    def _project_domain(self, project_id: str | None) -> str | None:
        return self._policies.domain_of(project_id)


def fits(kind: str, value: Any) -> bool:
    if kind == "string":
        return isinstance(value, str)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "boolean":
        return isinstance(value, bool)
    return isinstance(value, list) and all(isinstance(v, str) for v in value)
