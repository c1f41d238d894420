"""Tenant rule documents: parsed, checked against the catalog, turned into plain data.

Tenants never write Polar. They send the JSON document API.md describes; this
module checks every field (unknown actions, types, attributes, wrongly typed
values are errors naming the rule and field) and produces frozen ``Rule``
objects, which ``latchkey.policy.engine`` hands to Polar as data.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from latchkey.errors import InvalidRequest
from latchkey.policy.catalog import ATTRIBUTE_NAME, CatalogView
from latchkey.policy.globs import check as glob_problem
from latchkey.policy.globs import glob_match

# The defaults of PolicyLimits (the LATCHKEY_POLICY_MAX_* settings).
MAX_RULES = 1000
MAX_ACTIONS_PER_RULE = 50
MAX_CONDITIONS = 20
MAX_LIST = 1000
MAX_STRING = 1024
MAX_GLOB_STARS = 5
MAX_GLOB_LENGTH = 128
MAX_GLOB_WILDCARDS = 16
MAX_DOCUMENT_BYTES = 524_288
MAX_COST = 50_000
MAX_PRINCIPALS = 1000
RULE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# Action globs: the glob language (globs.py) over the characters of action names.
ACTION_GLOB = re.compile(r"^[a-z0-9_:*?-]{1,128}$")
EFFECTS = ("allow", "deny")
KINDS = ("human", "application")
PRINCIPAL_FIELDS = ("users", "groups", "roles", "kinds", "application_credentials")
# What a condition may compare with, on the principal's side.
PRINCIPAL_BUILTINS = ("id", "name", "kind", "domain_id", "project_id")
OPS_BY_TYPE = {
    "string": ("=", "!=", "in", "not in", "glob"),
    "integer": ("=", "!=", "<", "<=", ">", ">=", "in", "not in"),
    "number": ("=", "!=", "<", "<=", ">", ">=", "in", "not in"),
    "boolean": ("=", "!="),
    # For a list attribute, `in` / `not in` ask whether the value is one of its items.
    "list of string": ("in", "not in"),
}


@dataclass(frozen=True)
class PolicyLimits:
    """How big and how costly a document may be (the LATCHKEY_POLICY_MAX_* settings).

    Checked when a document is put, validated or activated: together with the
    decision budget (service.py) they bound what one tenant's rules can cost a
    worker, whatever the document."""

    max_rules: int = MAX_RULES
    max_actions: int = MAX_ACTIONS_PER_RULE
    max_conditions: int = MAX_CONDITIONS
    max_list: int = MAX_LIST
    max_string: int = MAX_STRING
    max_glob_length: int = MAX_GLOB_LENGTH
    max_glob_stars: int = MAX_GLOB_STARS
    max_glob_wildcards: int = MAX_GLOB_WILDCARDS
    max_document_bytes: int = MAX_DOCUMENT_BYTES
    max_cost: int = MAX_COST
    max_principals: int = MAX_PRINCIPALS


# The setting behind each limit, named in the problem that reports it.
LIMIT_SETTINGS = {
    "max_rules": "LATCHKEY_POLICY_MAX_RULES",
    "max_actions": "LATCHKEY_POLICY_MAX_ACTIONS",
    "max_conditions": "LATCHKEY_POLICY_MAX_CONDITIONS",
    "max_list": "LATCHKEY_POLICY_MAX_LIST",
    "max_string": "LATCHKEY_POLICY_MAX_STRING",
    "max_glob_length": "LATCHKEY_POLICY_MAX_GLOB_LENGTH",
    "max_glob_stars": "LATCHKEY_POLICY_MAX_GLOB_STARS",
    "max_glob_wildcards": "LATCHKEY_POLICY_MAX_GLOB_WILDCARDS",
    "max_document_bytes": "LATCHKEY_POLICY_MAX_DOCUMENT_BYTES",
    "max_cost": "LATCHKEY_POLICY_MAX_COST",
    "max_principals": "LATCHKEY_POLICY_MAX_PRINCIPALS",
}


def glob_wildcards(pattern: str) -> int:
    """Single-character wildcards of a glob: each `?` (an escaped one counted too:
    conservative)."""
    return pattern.count("?")


# Calibrated on a 2-core machine with the slowest documents the limits allow
# (tests/attacks/worst_policy.py, bench/worst_direct.py): a unit is ~0.5-1 µs at worst.
GLOB_UNITS = 40
GLOB_UNITS_PER_CHARACTER = 3
IN_UNITS = 10


def condition_units(condition: Condition) -> int:
    """What one condition may cost to evaluate, in units of a plain comparison. A
    glob may cost the value's length times (a constant + its pattern's length): the
    regex engine backtracks over the value at each position of the pattern, and
    values are at most 1,024 characters: 40 + 3 per character of the pattern.
    ``in`` / ``not in`` may scan a list (a list attribute's items, a principal's
    list): 10."""
    if condition.op == "glob" and isinstance(condition.value, str):
        return GLOB_UNITS + GLOB_UNITS_PER_CHARACTER * len(condition.value)
    if condition.op in ("in", "not in"):
        return IN_UNITS
    return 1


def rule_units(rule: Rule) -> int:
    """What evaluating one rule may cost: 1, plus each of its conditions."""
    return 1 + sum(condition_units(c) for c in rule.conditions)


@dataclass(frozen=True)
class Problem:
    rule: str | None
    pointer: str
    detail: str
    # A limit the document goes past: the setting's name and its value.
    limit: str | None = None
    maximum: int | None = None

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"rule": self.rule, "pointer": self.pointer, "detail": self.detail}
        if self.limit is not None:
            body["limit"] = self.limit
            body["max"] = self.maximum
        return body


class PolicyInvalid(ValueError):
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(problems[0].detail if problems else "invalid policy")
        self.problems = problems


@dataclass(frozen=True)
class Condition:
    attribute: str
    op: str
    value: Any = None
    principal_attribute: str | None = None


@dataclass(frozen=True)
class Rule:
    id: str
    effect: str
    actions: tuple[str, ...]
    resource_type: str | None = None
    conditions: tuple[Condition, ...] = ()
    # None: the rule does not constrain that principal field.
    users: frozenset[str] | None = None
    groups: frozenset[str] | None = None
    roles: frozenset[str] | None = None
    kinds: frozenset[str] | None = None
    application_credentials: frozenset[str] | None = None
    description: str = ""


@dataclass(frozen=True)
class PolicyDocument:
    rules: tuple[Rule, ...] = field(default_factory=tuple)
    # Only a domain's deny rules, for a project without a document of its own: they
    # take away, and no allow rule is required (latchkey/policy/domains.py).
    denies_only: bool = False


@dataclass(frozen=True)
class PrincipalChecks:
    """Callbacks into identity: a rule never names principals of another project."""

    user_in_project: Callable[[str], bool]
    group_in_project: Callable[[str], bool]
    credential_in_project: Callable[[str], bool]
    role_exists: Callable[[str], bool]


def parse_or_refuse(
    document: Any,
    catalog: CatalogView,
    checks: PrincipalChecks,
    limits: PolicyLimits | None = None,
) -> PolicyDocument:
    """``parse``, its problems answered as one 422 listing them all: ``invalid_policy``,
    or ``policy_limit_exceeded`` when one of them is a limit (each such problem names
    its setting, ``limit``, and value, ``max``)."""
    try:
        return parse(document, catalog, checks, limits)
    except PolicyInvalid as exc:
        over = [p for p in exc.problems if p.limit is not None]
        first = over[0] if over else exc.problems[0]
        where = f" (rule {first.rule!r})" if first.rule else ""
        raise InvalidRequest(
            f"the policy has {len(exc.problems)} problem(s); the first"
            f"{' past a limit' if over else ''}: {first.pointer}{where}: {first.detail}",
            code="policy_limit_exceeded" if over else "invalid_policy",
            extra={"errors": [p.as_dict() for p in exc.problems]},
        ) from exc


def parse(
    document: Any,
    catalog: CatalogView,
    checks: PrincipalChecks,
    limits: PolicyLimits | None = None,
) -> PolicyDocument:
    limits = limits or PolicyLimits()
    problems: list[Problem] = []
    if not isinstance(document, dict) or set(document) - {"rules"}:
        raise PolicyInvalid([Problem(None, "", 'a document is {"rules": [...]}')])
    raw_rules = document.get("rules", [])
    if not isinstance(raw_rules, list):
        raise PolicyInvalid([Problem(None, "/rules", "rules must be a list")])
    if len(raw_rules) > limits.max_rules:
        raise PolicyInvalid(
            [_over(None, "/rules", f"at most {limits.max_rules} rules", limits, "max_rules")]
        )
    size = _json_size(document)
    if size > limits.max_document_bytes:
        detail = f"{size} bytes as compact JSON, at most {limits.max_document_bytes}"
        raise PolicyInvalid([_over(None, "", detail, limits, "max_document_bytes")])
    rules: list[Rule] = []
    seen: set[str] = set()
    cost = 0
    # (field, value) -> known: each principal named is looked up once per document, and
    # at most LATCHKEY_POLICY_MAX_PRINCIPALS of them (each is a database query).
    looked_up: dict[tuple[str, str], bool] = {}
    for index, raw in enumerate(raw_rules):
        parser = _RuleParser(index, raw, catalog, checks, limits, looked_up)
        rule = parser.parse()
        problems.extend(parser.problems)
        if rule is not None:
            if rule.id in seen:
                problems.append(Problem(rule.id, f"/rules/{index}/id", "duplicate rule id"))
            seen.add(rule.id)
            rules.append(rule)
            before, cost = cost, cost + rule_units(rule)
            if before <= limits.max_cost < cost:  # the rule that goes past it
                detail = (
                    f"the document costs more than {limits.max_cost} units from this rule on "
                    "(a rule 1, a condition 1, `in` 10, a glob 40 + 3 per character of its pattern)"
                )
                problems.append(_over(rule.id, f"/rules/{index}", detail, limits, "max_cost"))
    if problems:
        raise PolicyInvalid(problems)
    return PolicyDocument(tuple(rules))


def _over(rule: str | None, pointer: str, detail: str, limits: PolicyLimits, name: str) -> Problem:
    return Problem(rule, pointer, detail, LIMIT_SETTINGS[name], getattr(limits, name))


def _json_size(document: Any) -> int:
    try:
        return len(json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode())
    except (TypeError, ValueError, RecursionError):
        return 0  # not JSON data: the rule checks say what is wrong with it


class _RuleParser:
    def __init__(
        self,
        index: int,
        raw: Any,
        catalog: CatalogView,
        checks: PrincipalChecks,
        limits: PolicyLimits,
        looked_up: dict[tuple[str, str], bool] | None = None,
    ) -> None:
        self.looked_up = {} if looked_up is None else looked_up
        self.index = index
        self.raw = raw
        self.catalog = catalog
        self.checks = checks
        self.limits = limits
        self.problems: list[Problem] = []
        self.rule_id: str | None = None

    def fail(self, pointer: str, detail: str, limit: str | None = None) -> None:
        """``limit``: the PolicyLimits field the problem goes past, if it is one."""
        self.problems.append(
            Problem(
                self.rule_id,
                f"/rules/{self.index}{pointer}",
                detail,
                LIMIT_SETTINGS[limit] if limit else None,
                getattr(self.limits, limit) if limit else None,
            )
        )

    def parse(self) -> Rule | None:
        raw = self.raw
        if not isinstance(raw, dict):
            self.fail("", "a rule is an object")
            return None
        rule_id = raw.get("id")
        if isinstance(rule_id, str) and RULE_ID.match(rule_id):
            self.rule_id = rule_id  # known first, so every problem names its rule
        unknown = set(raw) - {"id", "effect", "description", "actions", "principals", "resource"}
        for key in sorted(unknown, key=str):
            self.fail(f"/{_safe(key)}", "unknown field")
        if self.rule_id is None:
            self.fail("/id", "an id of letters, digits, '.', '_' or '-' (at most 64)")
            return None
        rule_id = self.rule_id
        effect = raw.get("effect")
        if effect not in EFFECTS:
            self.fail("/effect", "allow or deny")
        description = raw.get("description", "")
        if not isinstance(description, str):
            self.fail("/description", "a string")
        elif len(description) > self.limits.max_string:
            self.fail(
                "/description",
                f"a string of at most {self.limits.max_string} characters",
                "max_string",
            )
        resource_type, conditions = self.resource(raw.get("resource"))
        actions = self.actions(raw.get("actions"), resource_type)
        principals = self.principals(raw.get("principals"))
        if self.problems:
            return None
        return Rule(
            id=rule_id,
            effect=str(effect),
            actions=actions,
            resource_type=resource_type,
            conditions=conditions,
            description=str(description),
            **principals,
        )

    def actions(self, raw: Any, resource_type: str | None) -> tuple[str, ...]:
        most = self.limits.max_actions
        if isinstance(raw, list) and len(raw) > most:
            self.fail("/actions", f"a list of 1 to {most} actions", "max_actions")
            return ()
        if not isinstance(raw, list) or not raw:
            self.fail("/actions", f"a list of 1 to {most} actions")
            return ()
        stars = self.limits.max_glob_stars
        known = sorted(
            self.catalog.actions_for(resource_type) if resource_type else self.catalog.actions
        )
        actions = []
        for i, pattern in enumerate(raw):
            if not isinstance(pattern, str) or not ACTION_GLOB.match(pattern):
                self.fail(
                    f"/actions/{i}",
                    "an action such as 'objects:container:read'; "
                    f"'*' (at most {stars} times) and '?' are wildcards",
                )
                continue
            if pattern.count("*") > stars:
                self.fail(f"/actions/{i}", f"at most {stars} '*' in a pattern", "max_glob_stars")
                continue
            if not any(glob_match(pattern, action) for action in known):
                where = f" on {resource_type}" if resource_type else ""
                self.fail(f"/actions/{i}", f"matches no action of the catalog{where}")
                continue
            actions.append(pattern)
        return tuple(actions)

    def principals(self, raw: Any) -> dict[str, frozenset[str] | None]:
        result: dict[str, frozenset[str] | None] = dict.fromkeys(PRINCIPAL_FIELDS)
        if raw is None:
            return result
        if not isinstance(raw, dict):
            self.fail("/principals", "an object")
            return result
        for key in sorted(set(raw) - set(PRINCIPAL_FIELDS), key=str):
            self.fail(f"/principals/{_safe(key)}", "unknown field")
        checks = {
            "users": (self.checks.user_in_project, "is not a user of this project (or domain)"),
            "groups": (self.checks.group_in_project, "is not a group of this project (or domain)"),
            "application_credentials": (
                self.checks.credential_in_project,
                "is not an application credential of this project (or domain)",
            ),
            "roles": (self.checks.role_exists, "is not a role"),
            "kinds": (lambda k: k in KINDS, "is not human or application"),
        }
        most = self.limits.max_list
        for key in PRINCIPAL_FIELDS:
            values = raw.get(key)
            if values is None:
                continue
            if isinstance(values, list) and len(values) > most:
                self.fail(
                    f"/principals/{key}", f"a list of at most {most} ids or names", "max_list"
                )
                continue
            if not isinstance(values, list) or not all(
                isinstance(v, str) and 0 < len(v) <= 255 for v in values
            ):
                self.fail(f"/principals/{key}", f"a list of at most {most} ids or names")
                continue
            check, message = checks[key]
            for i, value in enumerate(values):
                known = self.looked_up.get((key, value))
                if known is None:
                    if len(self.looked_up) >= self.limits.max_principals:
                        self.fail(
                            f"/principals/{key}/{i}",
                            f"at most {self.limits.max_principals} distinct principals "
                            "(users, groups, roles, kinds, credentials) in a document",
                            "max_principals",
                        )
                        break
                    known = self.looked_up[(key, value)] = bool(check(value))
                if not known:
                    self.fail(f"/principals/{key}/{i}", f"{value!r} {message}")
            result[key] = frozenset(values)
        return result

    def resource(self, raw: Any) -> tuple[str | None, tuple[Condition, ...]]:
        if raw is None:
            return None, ()
        if not isinstance(raw, dict) or set(raw) - {"type", "conditions"}:
            self.fail("/resource", "an object with type and conditions")
            return None, ()
        resource_type = raw.get("type")
        if not isinstance(resource_type, str) or resource_type not in self.catalog.resource_types:
            self.fail("/resource/type", "a resource type of the catalog")
            return None, ()
        attributes = self.catalog.resource_types[resource_type]
        raw_conditions = raw.get("conditions") or []
        most = self.limits.max_conditions
        if not isinstance(raw_conditions, list) or len(raw_conditions) > most:
            self.fail(
                "/resource/conditions",
                f"a list of at most {most} conditions",
                "max_conditions" if isinstance(raw_conditions, list) else None,
            )
            return resource_type, ()
        conditions = []
        for i, item in enumerate(raw_conditions):
            condition = self.condition(f"/resource/conditions/{i}", item, attributes)
            if condition is not None:
                conditions.append(condition)
        return resource_type, tuple(conditions)

    def condition(self, pointer: str, raw: Any, attributes: dict[str, Any]) -> Condition | None:
        if not isinstance(raw, dict) or set(raw) - {
            "attribute",
            "op",
            "value",
            "principal_attribute",
        }:
            self.fail(pointer, "an object with attribute, op and value or principal_attribute")
            return None
        name, op = raw.get("attribute"), raw.get("op")
        if not isinstance(name, str) or name not in attributes:
            self.fail(f"{pointer}/attribute", "an attribute the catalog declares for this type")
            return None
        kind = attributes[name].type
        if op not in OPS_BY_TYPE[kind]:
            self.fail(f"{pointer}/op", f"one of {', '.join(OPS_BY_TYPE[kind])} for a {kind}")
            return None
        if "principal_attribute" in raw:
            other = raw["principal_attribute"]
            if "value" in raw or not isinstance(other, str) or not ATTRIBUTE_NAME.match(other):
                self.fail(
                    f"{pointer}/principal_attribute",
                    "a principal attribute name, and no value beside it",
                )
                return None
            if op not in ("=", "!=", "in", "not in"):
                self.fail(f"{pointer}/op", "principal attributes compare with =, !=, in, not in")
                return None
            return Condition(name, op, None, other)
        if "value" not in raw:
            self.fail(pointer, "give value or principal_attribute")
            return None
        value = raw["value"]
        if not self.value_fits(kind, op, value):
            self.fail(f"{pointer}/value", f"does not fit a {kind} compared with {op}")
            return None
        if op == "glob" and (why := glob_problem(value)) is not None:
            self.fail(f"{pointer}/value", f"not a pattern of the glob language: {why}")
            return None
        if past := self.past_limit(op, value):
            limit, detail = past
            self.fail(f"{pointer}/value", detail, limit)
            return None
        if isinstance(value, list):
            value = tuple(value)
        return Condition(name, op, value)

    def past_limit(self, op: str, value: Any) -> tuple[str, str] | None:
        """(limit, detail) when a value of the right type is too big or too complex."""
        limits = self.limits
        strings = value if isinstance(value, list) else [value]
        if isinstance(value, list) and len(value) > limits.max_list:
            return "max_list", f"a list of at most {limits.max_list} values"
        if any(isinstance(v, str) and len(v) > limits.max_string for v in strings):
            return "max_string", f"strings of at most {limits.max_string} characters"
        if op == "glob":
            if len(value) > limits.max_glob_length:
                return (
                    "max_glob_length",
                    f"a pattern of at most {limits.max_glob_length} characters",
                )
            if value.count("*") > limits.max_glob_stars:
                return "max_glob_stars", f"at most {limits.max_glob_stars} '*' in a pattern"
            if glob_wildcards(value) > limits.max_glob_wildcards:
                return (
                    "max_glob_wildcards",
                    f"at most {limits.max_glob_wildcards} '?' in a pattern",
                )
        return None

    @staticmethod
    def value_fits(kind: str, op: str, value: Any) -> bool:
        """Of the type the operator needs (sizes: ``past_limit``)."""

        def scalar(v: Any) -> bool:
            if kind in ("string", "list of string"):
                return isinstance(v, str)
            if kind == "integer":
                return isinstance(v, int) and not isinstance(v, bool)
            if kind == "number":
                return isinstance(v, int | float) and not isinstance(v, bool)
            return isinstance(v, bool)

        if kind == "list of string":
            return scalar(value)
        if op in ("in", "not in"):
            return isinstance(value, list) and all(scalar(v) for v in value)
        if op == "glob":
            return isinstance(value, str)
        return scalar(value)


def _safe(key: Any) -> str:
    text = str(key)
    return text if len(text) <= 64 else text[:64] + "…"


def to_json(document: PolicyDocument) -> dict[str, Any]:
    """The stored (canonical) form of a parsed document."""
    rules = []
    for rule in document.rules:
        item: dict[str, Any] = {"id": rule.id, "effect": rule.effect, "actions": list(rule.actions)}
        if rule.description:
            item["description"] = rule.description
        principals = {
            key: sorted(getattr(rule, key))
            for key in PRINCIPAL_FIELDS
            if getattr(rule, key) is not None
        }
        if principals:
            item["principals"] = principals
        if rule.resource_type:
            conditions = []
            for c in rule.conditions:
                entry: dict[str, Any] = {"attribute": c.attribute, "op": c.op}
                if c.principal_attribute:
                    entry["principal_attribute"] = c.principal_attribute
                else:
                    entry["value"] = list(c.value) if isinstance(c.value, tuple) else c.value
                conditions.append(entry)
            item["resource"] = {"type": rule.resource_type, "conditions": conditions}
        rules.append(item)
    return {"rules": rules}


def from_stored(stored: dict[str, Any]) -> PolicyDocument:
    """Rebuild a document saved by ``to_json``: it was validated when saved.

    Not re-validated against today's catalog: a service that later drops an action
    or attribute must not break the project's decisions (a rule about something
    that no longer exists simply never matches).
    """
    rules = []
    for item in stored.get("rules", []):
        principals = item.get("principals") or {}
        resource = item.get("resource") or {}
        conditions = tuple(
            Condition(
                c["attribute"],
                c["op"],
                tuple(c["value"]) if isinstance(c.get("value"), list) else c.get("value"),
                c.get("principal_attribute"),
            )
            for c in resource.get("conditions", [])
        )
        rules.append(
            Rule(
                id=item["id"],
                effect=item["effect"],
                actions=tuple(item["actions"]),
                resource_type=resource.get("type"),
                conditions=conditions,
                description=item.get("description", ""),
                **{
                    key: frozenset(principals[key]) if key in principals else None
                    for key in PRINCIPAL_FIELDS
                },
            )
        )
    return PolicyDocument(tuple(rules))
