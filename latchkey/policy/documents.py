"""Tenant rule documents: parsed, checked against the catalog, turned into plain data.

Tenants never write Polar. They send the JSON document API.md describes; this
module checks every field (unknown actions, types, attributes, wrongly typed
values are errors naming the rule and field) and produces frozen ``Rule``
objects, which ``latchkey.policy.engine`` hands to Polar as data.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from latchkey.errors import InvalidRequest
from latchkey.policy.catalog import ATTRIBUTE_NAME, CatalogView
from latchkey.policy.globs import check as glob_problem
from latchkey.policy.globs import glob_match

MAX_RULES = 1000
MAX_ACTIONS_PER_RULE = 50
MAX_CONDITIONS = 20
MAX_LIST = 1000
MAX_STRING = 1024
MAX_GLOB_STARS = 5
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
class Problem:
    rule: str | None
    pointer: str
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "pointer": self.pointer, "detail": self.detail}


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


def parse_or_refuse(document: Any, catalog: CatalogView, checks: PrincipalChecks) -> PolicyDocument:
    """``parse``, its problems answered as one 422 ``invalid_policy`` listing them all."""
    try:
        return parse(document, catalog, checks)
    except PolicyInvalid as exc:
        raise InvalidRequest(
            f"the policy has {len(exc.problems)} problem(s); the first: "
            f"{exc.problems[0].pointer}: {exc.problems[0].detail}",
            code="invalid_policy",
            extra={"errors": [p.as_dict() for p in exc.problems]},
        ) from exc


def parse(document: Any, catalog: CatalogView, checks: PrincipalChecks) -> PolicyDocument:
    problems: list[Problem] = []
    if not isinstance(document, dict) or set(document) - {"rules"}:
        raise PolicyInvalid([Problem(None, "", 'a document is {"rules": [...]}')])
    raw_rules = document.get("rules", [])
    if not isinstance(raw_rules, list):
        raise PolicyInvalid([Problem(None, "/rules", "rules must be a list")])
    if len(raw_rules) > MAX_RULES:
        raise PolicyInvalid([Problem(None, "/rules", f"at most {MAX_RULES} rules")])
    rules: list[Rule] = []
    seen: set[str] = set()
    for index, raw in enumerate(raw_rules):
        parser = _RuleParser(index, raw, catalog, checks)
        rule = parser.parse()
        problems.extend(parser.problems)
        if rule is not None:
            if rule.id in seen:
                problems.append(Problem(rule.id, f"/rules/{index}/id", "duplicate rule id"))
            seen.add(rule.id)
            rules.append(rule)
    if problems:
        raise PolicyInvalid(problems)
    return PolicyDocument(tuple(rules))


class _RuleParser:
    def __init__(self, index: int, raw: Any, catalog: CatalogView, checks: PrincipalChecks) -> None:
        self.index = index
        self.raw = raw
        self.catalog = catalog
        self.checks = checks
        self.problems: list[Problem] = []
        self.rule_id: str | None = None

    def fail(self, pointer: str, detail: str) -> None:
        self.problems.append(Problem(self.rule_id, f"/rules/{self.index}{pointer}", detail))

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
        if not isinstance(description, str) or len(description) > MAX_STRING:
            self.fail("/description", f"a string of at most {MAX_STRING} characters")
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
        if not isinstance(raw, list) or not raw or len(raw) > MAX_ACTIONS_PER_RULE:
            self.fail("/actions", f"a list of 1 to {MAX_ACTIONS_PER_RULE} actions")
            return ()
        known = sorted(
            self.catalog.actions_for(resource_type) if resource_type else self.catalog.actions
        )
        actions = []
        for i, pattern in enumerate(raw):
            if (
                not isinstance(pattern, str)
                or not ACTION_GLOB.match(pattern)
                or pattern.count("*") > MAX_GLOB_STARS
            ):
                self.fail(
                    f"/actions/{i}",
                    "an action such as 'objects:container:read'; "
                    f"'*' (at most {MAX_GLOB_STARS} times) and '?' are wildcards",
                )
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
        for key in PRINCIPAL_FIELDS:
            values = raw.get(key)
            if values is None:
                continue
            if (
                not isinstance(values, list)
                or len(values) > MAX_LIST
                or not all(isinstance(v, str) and 0 < len(v) <= 255 for v in values)
            ):
                self.fail(f"/principals/{key}", f"a list of at most {MAX_LIST} ids or names")
                continue
            check, message = checks[key]
            for i, value in enumerate(values):
                if not check(value):
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
        if not isinstance(raw_conditions, list) or len(raw_conditions) > MAX_CONDITIONS:
            self.fail("/resource/conditions", f"a list of at most {MAX_CONDITIONS} conditions")
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
        if isinstance(value, list):
            value = tuple(value)
        return Condition(name, op, value)

    @staticmethod
    def value_fits(kind: str, op: str, value: Any) -> bool:
        def scalar(v: Any) -> bool:
            if kind in ("string", "list of string"):
                return isinstance(v, str) and len(v) <= MAX_STRING
            if kind == "integer":
                return isinstance(v, int) and not isinstance(v, bool)
            if kind == "number":
                return isinstance(v, int | float) and not isinstance(v, bool)
            return isinstance(v, bool)

        if kind == "list of string":
            return scalar(value)
        if op in ("in", "not in"):
            return (
                isinstance(value, list) and len(value) <= MAX_LIST and all(scalar(v) for v in value)
            )
        if op == "glob":
            return (
                isinstance(value, str) and len(value) <= 256 and value.count("*") <= MAX_GLOB_STARS
            )
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
