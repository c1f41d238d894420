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
