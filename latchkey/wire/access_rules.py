"""Application-credential access rules: which (service, method, path) a token may call.

Path templates follow Keystone: ``*`` and ``{name}`` match exactly one path
segment, ``**`` any number of segments (including none). A token without
access rules may call anything its roles allow; a token with rules may call
only what one of them matches. Pure functions: the service and
``latchkey.middleware`` share them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"})
SERVICE_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
MAX_RULES = 100
MAX_PATH_LENGTH = 512
_PLACEHOLDER = re.compile(r"^\{[A-Za-z0-9_]{1,64}\}$")


class AccessRuleError(ValueError):
    """A rule is malformed; the message says which field."""


def validate_rule(rule: Mapping[str, Any]) -> dict[str, str]:
    service, method, path = rule.get("service"), rule.get("method"), rule.get("path")
    if not isinstance(service, str) or not SERVICE_PATTERN.match(service):
        raise AccessRuleError("service must be a service type such as 'compute'")
    if not isinstance(method, str) or method.upper() not in METHODS:
        raise AccessRuleError(f"method must be one of {', '.join(sorted(METHODS))}")
    if not isinstance(path, str) or not path.startswith("/") or len(path) > MAX_PATH_LENGTH:
        raise AccessRuleError(f"path must start with / and be at most {MAX_PATH_LENGTH} long")
    for segment in path.strip("/").split("/"):
        if segment in ("*", "**") or _PLACEHOLDER.match(segment):
            continue
        if "*" in segment or "{" in segment or "}" in segment:
            raise AccessRuleError(
                "wildcards are whole segments: *, ** or {name}, not part of a segment"
            )
    return {"service": service, "method": method.upper(), "path": path}


@lru_cache(maxsize=4096)
def _compile(path: str) -> re.Pattern[str]:
    parts: list[str] = []
    for segment in path.strip("/").split("/"):
        if segment == "**":
            parts.append(r"(?:/[^/]+)*")
        elif segment == "*" or _PLACEHOLDER.match(segment):
            parts.append(r"/[^/]+")
        elif segment:
            parts.append("/" + re.escape(segment))
    return re.compile("^" + "".join(parts) + "/?$")


def path_matches(template: str, path: str) -> bool:
    return _compile(template).match(path) is not None


def allows(rules: Iterable[Mapping[str, str]], service: str, method: str, path: str) -> bool:
    """True when one rule matches this service type, method and request path."""
    method = method.upper()
    return any(
        rule["service"] == service and rule["method"] == method and path_matches(rule["path"], path)
        for rule in rules
    )


# -- one rule within another (a credential minted by a credential) ----------------------

_ONE, _ANY = "*", "**"  # a template's segments: literals, one segment, any number
MAX_COVER_STATES = 20_000  # beyond this, "not covered" (refused, never wrongly allowed)


def covers(parent: Mapping[str, str], child: Mapping[str, str]) -> bool:
    """Does ``parent`` allow every call ``child`` allows: same service type and method,
    and every path the child's template matches matched by the parent's?"""
    return (
        parent["service"] == child["service"]
        and parent["method"] == child["method"]
        and path_covers(parent["path"], child["path"])
    )


def within(parents: Iterable[Mapping[str, str]], child: Mapping[str, str]) -> bool:
    """Is ``child`` covered by one of ``parents``? (Two rules that only together cover
    a child, e.g. ``/a/x`` and ``/a/y`` for ``/a/*``, do not: the child matches more.)"""
    return any(covers(parent, child) for parent in parents)


def _segments(template: str) -> tuple[str, ...]:
    """A template as ``_compile`` reads it: literal segments, ``*`` (one segment, also
    ``{name}``) and ``**`` (any number); empty segments are skipped."""
    parts = []
    for segment in template.strip("/").split("/"):
        if segment == "**":
            parts.append(_ANY)
        elif segment == "*" or _PLACEHOLDER.match(segment):
            parts.append(_ONE)
        elif segment:
            parts.append(segment)
    return tuple(parts)


def path_covers(parent: str, child: str) -> bool:
    """Every path ``child`` matches is matched by ``parent`` (language inclusion).

    Paths are sequences of non-empty segments (the optional trailing ``/`` is the same
    on both sides). Segments that are no literal of either template behave alike, so
    one stand-in (``None``) represents them all; the child is walked as an automaton
    against the parent's subset construction. Exact, and bounded: past
    ``MAX_COVER_STATES`` the answer is "not covered".
    """
    p, c = _segments(parent), _segments(child)
    if p == c:
        return True
    literals = {s for s in p + c if s not in (_ONE, _ANY)}
    alphabet: list[str | None] = [*sorted(literals), None]

    def closure(template: tuple[str, ...], states: Iterable[int]) -> frozenset[int]:
        found = set()
        for state in states:
            found.add(state)
            while state < len(template) and template[state] == _ANY:
                state += 1
                found.add(state)
        return frozenset(found)

    def step(template: tuple[str, ...], states: frozenset[int], symbol: str | None) -> set[int]:
        moved = set()
        for state in states:
            if state == len(template):
                continue
            segment = template[state]
            if segment == _ANY:
                moved.add(state)
            elif segment in (_ONE, symbol):
                moved.add(state + 1)
        return moved

    start = (closure(c, [0]), closure(p, [0]))
    seen = {start}
    pending = [start]
    while pending:
        child_states, parent_states = pending.pop()
        if len(c) in child_states and len(p) not in parent_states:
            return False  # a path the child matches and the parent does not
        for symbol in alphabet:
            child_next = step(c, child_states, symbol)
            if not child_next:
                continue
            pair = (closure(c, child_next), closure(p, step(p, parent_states, symbol)))
            if pair not in seen:
                if len(seen) >= MAX_COVER_STATES:
                    return False
                seen.add(pair)
                pending.append(pair)
    return True
