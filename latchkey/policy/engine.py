"""Per-project policy engines: the operator's boundary plus the tenant's rules as data.

A tenant document never becomes Polar text. It compiles to frozen ``Rule``
objects held by one ``TenantRules`` object, which each query passes to one
fixed Polar program, written here, that asks it for the rules that match.
Operator boundary files are Polar (trusted), loaded with that program into one
Oso instance per boundary text, shared by every project's engine: the Polar
program is the same for every project, so a per-project instance would only
cost memory (~55 KB each: 1,000 projects' engines took ~90 MB, against a
150 MB budget per worker; docs/decisions.md).

Defence in depth, in case an operator file (or a bug) reaches further than it
should: everything handed to Polar is a ``PolarData`` object that answers only
the names it lists (no ``__class__``, no ``_private``, no unlisted method), and
queries are bounded by ``POLAR_TIMEOUT_MS``.

An engine is immutable once built; a new policy version means a new engine,
swapped in by reference, so a decision is made wholly by one version (and a
new boundary text a new shared program, referenced by the engines built on it).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import polar.query
from oso import Oso, Variable
from polar.exceptions import OsoError as PolarError

from latchkey.policy.documents import Condition, PolicyDocument, Rule, rule_units
from latchkey.policy.globs import GlobError, glob_match

READ_VERBS = ("read", "get", "list", "show", "head", "describe", "validate")
WRITE_VERBS = ("create", "update", "write", "put", "patch", "post", "delete", "rotate")
DEFAULT_BOUNDARY = Path(__file__).with_name("boundary.polar")

TENANT_PROGRAM = """
# Fixed: tenant rules arrive as data (a TenantRules argument), never as Polar text.
# One call asks the data for the rules that match (one Polar-to-Python call per
# decision, not per rule: 1,000 rules cost ~120 ms the other way, past POLAR_TIMEOUT_MS).
tenant_rule(actor: Principal, action: ActionRef, resource: ResourceRef, rules: TenantRules,
            effect, rule_id) if
    match in rules.matching(actor, action, resource) and
    [effect, rule_id] = match;

# One query per decision where a project has rules: the boundary, then (only if it
# allows) the tenant's matching rules as [[effect, rule id], ...].
decision(actor: Principal, action: ActionRef, resource: ResourceRef, rules: TenantRules,
         found) if
    boundary(actor, action, resource) and
    found = rules.matching(actor, action, resource);

# Latchkey asks `boundary`, `decision` and `tenant_rule`, never oso's `allow`; this silences
# oso's warning about a policy without one.
allow(_actor, _action, _resource) if false;
"""


class PolicyError(Exception):
    """A boundary that does not load, or a query that failed."""


class BudgetExceeded(Exception):
    """A decision ran past its wall-clock budget: the caller denies (fail closed)."""


@dataclass
class Deadline:
    """When the decision under way must be over (``time.monotonic()``)."""

    at: float
    exceeded: bool = False

    def passed(self) -> bool:
        if not self.exceeded and time.monotonic() >= self.at:
            self.exceeded = True
        return self.exceeded


# The deadline of the decision this thread (or task) is making: set by the decision
# layer (latchkey/policy/decisions.py), read in the rule loops below, which Polar may
# call back into (the host runs the query in the caller's thread).
_DEADLINE: ContextVar[Deadline | None] = ContextVar("latchkey_decision_deadline", default=None)


@contextmanager
def deadline(at: float | None) -> Iterator[Deadline | None]:
    """Evaluations inside the block stop with ``BudgetExceeded`` once ``at`` has passed."""
    current = Deadline(at) if at is not None else None
    token = _DEADLINE.set(current)
    try:
        yield current
    finally:
        _DEADLINE.reset(token)


def _check_deadline() -> None:
    current = _DEADLINE.get()
    if current is not None and current.passed():
        raise BudgetExceeded("the decision's budget is spent")


class PolarData:
    """Plain data for Polar: only the names in POLAR_NAMES can be read from a rule."""

    __slots__ = ()
    POLAR_NAMES: ClassVar[frozenset[str]] = frozenset()

    def __getattribute__(self, name: str) -> Any:
        # __class__ stays readable for Python and the Polar host itself; a Polar
        # rule never reaches it (see _guarded_external_call).
        if name != "__class__" and name not in type(self).POLAR_NAMES:
            raise AttributeError(f"{name!r} is not readable from a policy")
        return object.__getattribute__(self, name)


_original_external_call = polar.query.Query.handle_external_call


def _guarded_external_call(query: Any, data: dict[str, Any]) -> Any:
    """Every attribute read or method call a Polar rule makes goes through here: only
    names a PolarData class lists are reachable (no __class__, no _private, nothing
    on objects that are not ours)."""
    instance = query.host.to_python(data["instance"])
    attribute = data.get("attribute") or ""
    if not isinstance(instance, PolarData) or attribute not in type(instance).POLAR_NAMES:
        query.ffi_query.application_error(f"{attribute!r} is not readable from a policy")
        query.ffi_query.call_result(data["call_id"], None)
        return None
    return _original_external_call(query, data)


# The Polar host has no hook for this; wrapping its handler is the one interception point.
polar.query.Query.handle_external_call = _guarded_external_call  # type: ignore[method-assign]


class Principal(PolarData):
    __slots__ = (
        "application_credential_id",
        "attributes",
        "cache_key",
        "domain_id",
        "domain_scoped",
        "groups",
        "id",
        "kind",
        "name",
        "project_id",
        "roles",
    )
    POLAR_NAMES = frozenset(
        {
            "application_credential_id",
            "domain_id",
            "domain_scoped",
            "groups",
            "id",
            "kind",
            "name",
            "project_id",
            "roles",
            "attr",
        }
    )

    def __init__(
        self,
        *,
        id: str,
        name: str,
        kind: str,
        domain_id: str | None,
        project_id: str | None,
        roles: Iterable[str],
        groups: Iterable[str] = (),
        application_credential_id: str | None = None,
        domain_scoped: bool = False,
        attributes: Mapping[str, Any] | None = None,
    ) -> None:
        for key, value in (
            ("id", id),
            ("name", name),
            ("kind", kind),
            ("domain_id", domain_id),
            ("project_id", project_id),
            ("roles", tuple(sorted(roles))),
            ("groups", tuple(sorted(groups))),
            ("application_credential_id", application_credential_id),
            ("domain_scoped", domain_scoped),
            ("attributes", dict(attributes or {})),
        ):
            object.__setattr__(self, key, value)
        # Everything a boundary can read of the principal, for BoundaryVerdicts (not
        # in POLAR_NAMES: Python code reads it with object.__getattribute__).
        object.__setattr__(
            self,
            "cache_key",
            (
                id,
                name,
                kind,
                domain_id,
                project_id,
                object.__getattribute__(self, "roles"),
                object.__getattribute__(self, "groups"),
                application_credential_id,
                domain_scoped,
                json.dumps(attributes or {}, sort_keys=True, default=str),
            ),
        )

    def attr(self, name: str) -> Any:
        if name in ("id", "name", "kind", "domain_id", "project_id"):
            return object.__getattribute__(self, name)
        return object.__getattribute__(self, "attributes").get(name)


def principal_attributes(principal: Principal) -> dict[str, Any]:
    """A principal's free attributes, for Python code (Polar sees them only via attr)."""
    return dict(object.__getattribute__(principal, "attributes"))


class ActionRef(PolarData):
    __slots__ = ("name", "resource", "service", "verb")
    POLAR_NAMES = frozenset({"name", "resource", "service", "verb"})

    def __init__(self, name: str) -> None:
        service, resource, verb = ([*name.split(":"), "", "", ""])[:3]
        for key, value in (
            ("name", name),
            ("service", service),
            ("resource", resource),
            ("verb", verb),
        ):
            object.__setattr__(self, key, value)


class ResourceRef(PolarData):
    __slots__ = ("attributes", "domain_id", "id", "project_id", "type")
    POLAR_NAMES = frozenset({"domain_id", "id", "project_id", "type", "attr"})

    def __init__(
        self,
        *,
        type: str,
        project_id: str | None,
        domain_id: str | None = None,
        id: str | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> None:
        for key, value in (
            ("type", type),
            ("project_id", project_id),
            ("domain_id", domain_id),
            ("id", id),
            ("attributes", dict(attributes or {})),
        ):
            object.__setattr__(self, key, value)

    def attr(self, name: str) -> Any:
        return object.__getattribute__(self, "attributes").get(name)


_MISSING = object()
INDEXED_ACTIONS = 4096  # action names whose candidate rules an engine keeps


class TenantRules(PolarData):
    """A compiled tenant document: the rules as data, indexed by action on first use.

    ``in`` / ``not in`` values are also kept as sets (a lookup, not a scan of up to
    1,000 values), and each action's candidate rules with their cost in units
    (``documents.rule_units``), which the decision layer adds up before a batch."""

    __slots__ = ("by_action", "rules", "value_sets")
    POLAR_NAMES = frozenset({"matching"})

    def __init__(self, rules: tuple[Rule, ...]) -> None:
        object.__setattr__(self, "rules", rules)
        object.__setattr__(self, "by_action", {})
        sets: dict[int, frozenset[Any]] = {}
        for rule in rules:
            for c in rule.conditions:
                if c.op in ("in", "not in") and isinstance(c.value, tuple):
                    try:
                        sets[id(c)] = frozenset(c.value)
                    except TypeError:  # not hashable: compared one by one
                        continue
        object.__setattr__(self, "value_sets", sets)

    def candidates(self, name: str) -> tuple[tuple[Rule, ...], int]:
        """The rules one of whose actions matches ``name``, in document order, and
        what evaluating all of them costs."""
        index: dict[str, tuple[tuple[Rule, ...], int]] = object.__getattribute__(self, "by_action")
        found = index.get(name)
        if found is None:
            # Up to 2,000 rules of 50 globs: within the deadline too (nothing is kept
            # of an index left unfinished).
            current = _DEADLINE.get()
            rules: tuple[Rule, ...] = object.__getattribute__(self, "rules")
            chosen = []
            for rule in rules:
                if current is not None and current.passed():
                    raise BudgetExceeded("the decision's budget is spent")
                if any(glob_match(p, name) for p in rule.actions):
                    chosen.append(rule)
            found = (tuple(chosen), sum(rule_units(r) for r in chosen))
            if len(index) < INDEXED_ACTIONS:  # names come from requests: bounded
                index[name] = found
        return found

    def matching(
        self, actor: Principal, action: ActionRef, resource: ResourceRef
    ) -> list[list[str]]:
        """[[effect, rule id], ...] of the rules that match, in document order.

        Stops with ``BudgetExceeded`` once the decision's deadline has passed (checked
        before each rule: one rule costs at most ~1 + 20 conditions)."""
        current = _DEADLINE.get()
        candidates, _ = TenantRules.candidates(self, action.name)
        sets: dict[int, frozenset[Any]] = object.__getattribute__(self, "value_sets")
        # What the rules read of the principal and the resource, read once per decision
        # (each read through PolarData's guard costs ~0.5 µs).
        credential = actor.application_credential_id
        have = (
            (actor.id,),
            actor.groups,
            actor.roles,
            (actor.kind,),
            (credential,) if credential else (),
        )
        resource_type = resource.type
        attributes: dict[str, Any] = object.__getattribute__(resource, "attributes")
        found = []
        for rule in candidates:
            if current is not None and current.passed():
                raise BudgetExceeded("the decision's budget is spent")
            if _candidate_matches(rule, actor, have, resource_type, attributes, sets):
                found.append([rule.effect, rule.id])
        return found


def _candidate_matches(
    rule: Rule,
    actor: Principal,
    have: tuple[tuple[Any, ...], ...],
    resource_type: str,
    attributes: dict[str, Any],
    sets: dict[int, frozenset[Any]],
) -> bool:
    """``rule_matches`` for a rule already known to name the action, with what it reads
    of the principal (``have``, in PRINCIPAL_FIELDS order) and the resource read once."""
    for wanted, held in zip(
        (rule.users, rule.groups, rule.roles, rule.kinds, rule.application_credentials),
        have,
        strict=True,
    ):
        if wanted is not None and wanted.isdisjoint(held):
            return False
    if rule.resource_type is not None and resource_type != rule.resource_type:
        return False
    fail_closed = rule.effect == "deny"
    for c in rule.conditions:
        left = attributes.get(c.attribute)
        if c.principal_attribute is not None:
            right = actor.attr(c.principal_attribute)
            if right is None:
                if fail_closed:
                    continue
                return False
        else:
            right = c.value
            values = sets.get(id(c))
            # A scalar of the request is looked up in the set; anything else as
            # compare() does.
            if values is not None and isinstance(left, str | int | float):
                if (left in values) != (c.op == "in"):
                    return False
                continue
        if left is None:
            if fail_closed:
                continue
            return False
        if not compare(c.op, left, right, fail_closed):
            return False
    return True


def rule_matches(rule: Rule, actor: Principal, action: str, resource: ResourceRef) -> bool:
    if not any(glob_match(pattern, action) for pattern in rule.actions):
        return False
    if not principal_matches(rule, actor):
        return False
    if rule.resource_type is not None and resource.type != rule.resource_type:
        return False
    # A deny rule fails closed: an attribute the caller did not send makes it match.
    fail_closed = rule.effect == "deny"
    return all(condition_holds(c, actor, resource, fail_closed) for c in rule.conditions)


def principal_matches(rule: Rule, actor: Principal) -> bool:
    checks = (
        (rule.users, (actor.id,)),
        (rule.groups, actor.groups),
        (rule.roles, actor.roles),
        (rule.kinds, (actor.kind,)),
        (
            rule.application_credentials,
            (actor.application_credential_id,) if actor.application_credential_id else (),
        ),
    )
    return all(wanted is None or not wanted.isdisjoint(have) for wanted, have in checks)


def condition_holds(
    condition: Condition, actor: Principal, resource: ResourceRef, fail_closed: bool
) -> bool:
    left = resource.attr(condition.attribute)
    if condition.principal_attribute is not None:
        right = actor.attr(condition.principal_attribute)
        if right is None:
            return fail_closed
    else:
        right = condition.value
    if left is None:
        return fail_closed
    return compare(condition.op, left, right, fail_closed)


def compare(op: str, left: Any, right: Any, fail_closed: bool = False) -> bool:
    try:
        if op == "=":
            return bool(left == right)
        if op == "!=":
            return bool(left != right)
        if op == "<":
            return bool(left < right)
        if op == "<=":
            return bool(left <= right)
        if op == ">":
            return bool(left > right)
        if op == ">=":
            return bool(left >= right)
        if op in ("in", "not in"):
            # A list attribute asks whether the value is one of its items; a scalar
            # attribute whether it is one of the values.
            found = right in left if isinstance(left, list | tuple) else left in right
            return found if op == "in" else not found
        if op == "glob":
            # One language everywhere (latchkey/policy/globs.py). A value that is not a
            # string cannot be compared, and a stored pattern from before the language
            # was enforced that it refuses (`[a]`) never allows and always denies.
            if not isinstance(left, str):
                return fail_closed
            return glob_match(right, left)
    except (TypeError, GlobError):
        return fail_closed  # a value of the wrong type from the caller
    return False


@dataclass(frozen=True)
class Verdict:
    boundary: bool
    allows: tuple[str, ...]
    denies: tuple[str, ...]


# A boundary that never reads a resource's id or attributes decides the same for every
# resource of one type and project: its verdicts may be shared by the checks of a batch.
# Conservative, on the text: any `attr`, `attributes` or `id` token disables it.
READS_RESOURCE_DETAILS = re.compile(r"\b(attr|attributes|id)\b")
DEFINES_TENANT_RULE = re.compile(r"\btenant_rule\b")

BoundaryKey = tuple[tuple[Any, ...], str, str, str | None, str | None]
BOUNDARY_VERDICTS_KEPT = 20_000  # (principal, action, type, project, domain) answers


class BoundaryVerdicts:
    """The answers of one boundary text, shared by every engine built on it.

    A boundary is a pure function of what it can read: the principal, the action,
    and (when ``READS_RESOURCE_DETAILS`` does not match its text) only the type,
    project and domain of a resource. Its answer for those inputs is kept, so
    repeated questions (a service asking about its caller, a batch, /actions)
    make no Polar query. A new boundary text gets a new, empty set of answers.
    Bounded: the oldest answers go first.
    """

    def __init__(self, size: int = BOUNDARY_VERDICTS_KEPT) -> None:
        self._size = size
        self._answers: dict[BoundaryKey, bool] = {}
        self._lock = threading.Lock()

    def get(self, key: BoundaryKey) -> bool | None:
        return self._answers.get(key)

    def put(self, key: BoundaryKey, allowed: bool) -> None:
        with self._lock:
            while len(self._answers) >= self._size:
                del self._answers[next(iter(self._answers))]
            self._answers[key] = allowed

    def __len__(self) -> int:
        return len(self._answers)


_PROGRAMS: dict[str, Oso] = {}
_VERDICTS: dict[str, BoundaryVerdicts] = {}
_PROGRAMS_LOCK = threading.Lock()
KEPT_PROGRAMS = 4  # boundary texts kept compiled (a reload keeps the previous one a while)


def compiled_program(boundary: str) -> Oso:
    """The Oso instance for a boundary text plus the fixed tenant program, built once."""
    key = fingerprint(boundary)
    found = _PROGRAMS.get(key)
    if found is not None:
        return found
    oso = Oso()
    for cls in (Principal, ActionRef, ResourceRef, TenantRules):
        oso.register_class(cls)
    oso.register_constant(list(READ_VERBS), "READ_VERBS")
    oso.register_constant(list(WRITE_VERBS), "WRITE_VERBS")
    try:
        oso.load_str(boundary + "\n" + TENANT_PROGRAM)
    except PolarError as exc:
        raise PolicyError(f"the boundary does not load: {exc}") from exc
    with _PROGRAMS_LOCK:
        oso = _PROGRAMS.setdefault(key, oso)
        while len(_PROGRAMS) > KEPT_PROGRAMS:  # engines still holding one keep it alive
            del _PROGRAMS[next(iter(_PROGRAMS))]
    return oso


def boundary_verdicts(boundary: str) -> BoundaryVerdicts:
    """The shared answers of a boundary text (kept as long as its program is)."""
    key = fingerprint(boundary)
    with _PROGRAMS_LOCK:
        found = _VERDICTS.get(key)
        if found is None:
            found = _VERDICTS[key] = BoundaryVerdicts()
        for stale in [k for k in _VERDICTS if k not in _PROGRAMS and k != key]:
            del _VERDICTS[stale]
    return found


class PolicyEngine:
    """A boundary's shared program and (optionally) one tenant document version."""

    def __init__(self, boundary: str, document: PolicyDocument | None) -> None:
        # has_policy: an allow rule must match. has_rules: tenant rules are evaluated
        # (deny-only domain rules in a project without a document of its own).
        self.has_policy = document is not None and not document.denies_only
        self.has_rules = document is not None
        self.rules: tuple[Rule, ...] = document.rules if document else ()
        self._tenant = TenantRules(self.rules)
        self._oso = compiled_program(boundary)
        self.boundary_memoizable = READS_RESOURCE_DETAILS.search(boundary) is None
        self._verdicts = boundary_verdicts(boundary) if self.boundary_memoizable else None
        # A boundary file that adds tenant_rule clauses of its own keeps the Polar route.
        self.tenant_rules_direct = DEFINES_TENANT_RULE.search(boundary) is None

    def cost(self, action: str) -> int:
        """Units evaluating the tenant rules for ``action`` may cost (0: no rules)."""
        return TenantRules.candidates(self._tenant, action)[1] if self.has_rules else 0

    def candidates(self, action: str) -> tuple[Rule, ...]:
        """The rules (project's and domain's) that name ``action``, in document order."""
        return TenantRules.candidates(self._tenant, action)[0]

    def evaluate(
        self,
        actor: Principal,
        action: ActionRef,
        resource: ResourceRef,
        *,
        consult_boundary: bool = True,
    ) -> Verdict:
        """``consult_boundary=False``: the tenant's rules alone, for Latchkey's own
        identity actions, whose ceiling is the built-in rule table (enforcer.py).

        A boundary that cannot read a resource's id or attributes answers from
        ``BoundaryVerdicts`` when it was asked the same question before.
        """
        if consult_boundary and self._verdicts is not None:
            key: BoundaryKey = (
                object.__getattribute__(actor, "cache_key"),
                action.name,
                resource.type,
                resource.project_id,
                resource.domain_id,
            )
            known = self._verdicts.get(key)
            if known is None:
                verdict = self._evaluate(actor, action, resource, consult_boundary=True)
                self._verdicts.put(key, verdict.boundary)
                return verdict
            if not known:
                return Verdict(False, (), ())
            consult_boundary = False  # the boundary allows: the tenant's rules decide
        return self._evaluate(actor, action, resource, consult_boundary=consult_boundary)

    def _evaluate(
        self, actor: Principal, action: ActionRef, resource: ResourceRef, *, consult_boundary: bool
    ) -> Verdict:
        allows: list[str] = []
        denies: list[str] = []
        try:
            if not self.has_rules:
                boundary = consult_boundary is False or self._oso.query_rule_once(
                    "boundary", actor, action, resource
                )
            elif consult_boundary:
                # Past a refusing boundary nothing a tenant writes can matter: no answer.
                boundary = False
                for result in self._oso.query_rule(
                    "decision", actor, action, resource, self._tenant, Variable("found")
                ):
                    boundary = True
                    for effect, rule_id in result["bindings"]["found"]:
                        (allows if effect == "allow" else denies).append(str(rule_id))
                    break  # one proof of the boundary is enough
            elif self.tenant_rules_direct:
                # The boundary is decided (or not asked): all that is left is what
                # TENANT_PROGRAM's tenant_rule would relay, TenantRules.matching, so it
                # is called without a Polar query (~0.2 ms each; a batch of 100 made 100).
                boundary = True
                for effect, rule_id in self._tenant.matching(actor, action, resource):
                    (allows if effect == "allow" else denies).append(rule_id)
            else:
                boundary = True
                for result in self._oso.query_rule(
                    "tenant_rule",
                    actor,
                    action,
                    resource,
                    self._tenant,
                    Variable("effect"),
                    Variable("rule_id"),
                ):
                    bindings = result["bindings"]
                    (allows if bindings["effect"] == "allow" else denies).append(
                        str(bindings["rule_id"])
                    )
        except PolarError as exc:
            current = _DEADLINE.get()
            if current is not None and current.exceeded:  # raised by matching, inside Polar
                raise BudgetExceeded("the decision's budget is spent") from exc
            # The first line names the cause (a timeout, a refused name); no values follow.
            first_line = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            raise PolicyError(
                f"policy evaluation failed: {type(exc).__name__}: {first_line}"
            ) from exc
        _check_deadline()  # a slow boundary counts too
        # Document order: `rule` in an answer names the first matching rule as written.
        return Verdict(boundary, tuple(dict.fromkeys(allows)), tuple(dict.fromkeys(denies)))


FORBIDDEN_IN_BOUNDARY = re.compile(r"\bdebug\s*\(|__")


def load_boundary(text: str) -> str:
    """Check that a boundary text loads and defines ``boundary``; return it unchanged.

    ``debug()`` (it blocks on standard input) and dunder names (the route to Python
    internals; the host guard refuses them anyway) are refused outright.
    """
    found = FORBIDDEN_IN_BOUNDARY.search(text)
    if found:
        raise PolicyError(f"the boundary may not use {found.group(0)!r}")
    engine = PolicyEngine(text, None)
    probe = Principal(
        id="probe", name="probe", kind="human", domain_id="d", project_id="p", roles=()
    )
    try:
        engine.evaluate(
            probe, ActionRef("probe:probe:read"), ResourceRef(type="probe:probe", project_id="p")
        )
    except PolicyError as exc:
        raise PolicyError(
            f"the boundary must define boundary(actor, action, resource): {exc}"
        ) from exc
    return text


def fingerprint(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]
