"""Keystone v3 domains, and what the resource modules share (names, filters, extras).

Keystone domains are sql domains: a domain created through /v3 keeps its identities in
Latchkey's database; ldap domains are made on the native door.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Response, jsonify, request

from latchkey.errors import Conflict, Forbidden, InvalidRequest, LatchkeyError
from latchkey.frontdoors.http.requests import services
from latchkey.frontdoors.keystone.common import (
    authenticated,
    base_url,
    blp,
    created,
    json_body,
    no_content,
    obj,
)
from latchkey.identity.common import MAX_PAGE_SIZE, Page
from latchkey.identity.records import DomainRecord

T = TypeVar("T")

POLICY_NAMES: dict[str, str] = {
    "identity:list_domains": "identity:domain:list",
    "identity:create_domain": "identity:domain:create",
    "identity:get_domain": "identity:domain:get",
    "identity:update_domain": "identity:domain:update",
    "identity:delete_domain": "identity:domain:delete",
}

# Keystone's name limits: domains and projects 64 characters, users and groups 255.
SHORT_NAME, LONG_NAME = 64, 255
MAX_DESCRIPTION = 10_000
MAX_EXTRA_BYTES = 16_384  # every extra attribute together, as JSON
MAX_LISTED = 10_000  # a Keystone list has no pages: it stops here and says `truncated`
FALSE_WORDS = frozenset({"0", "f", "false", "n", "no", "off"})


# -- request reading ---------------------------------------------------------------------


def name_field(value: Any, where: str, max_length: int) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > max_length:
        raise InvalidRequest(f"{where} must be a string of 1 to {max_length} characters")
    return value


def text_field(value: Any, where: str, *, nullable: bool = True) -> str:
    if value is None and nullable:
        return ""
    if not isinstance(value, str) or len(value) > MAX_DESCRIPTION:
        raise InvalidRequest(f"{where} must be a string of at most {MAX_DESCRIPTION} characters")
    return value


def bool_field(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidRequest(f"{where} must be a boolean")
    return value


def id_field(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value or len(value) > 64:
        raise InvalidRequest(f"{where} must be an id")
    return value


def no_options(data: dict[str, Any], where: str) -> None:
    options = data.get("options")
    if options not in (None, {}):
        raise InvalidRequest(f"{where}.options: Latchkey supports no resource options")


def split_extra(data: dict[str, Any], known: set[str], where: str) -> dict[str, Any]:
    """The attributes Latchkey has no column for: kept in `extra` and echoed, as Keystone
    keeps them. Bounded, and never one of the names the response itself uses."""
    extra = {key: value for key, value in data.items() if key not in known}
    for key in extra:
        if not isinstance(key, str) or not key or len(key) > 255:
            raise InvalidRequest(f"{where}: attribute names are 1 to 255 characters")
    if len(json.dumps(extra)) > MAX_EXTRA_BYTES:
        raise InvalidRequest(f"{where}: the extra attributes exceed {MAX_EXTRA_BYTES} bytes")
    return extra


def merged_extra(current: dict[str, Any] | None, changes: dict[str, Any]) -> dict[str, Any]:
    merged = {**(current or {}), **changes}
    if len(json.dumps(merged)) > MAX_EXTRA_BYTES:
        raise InvalidRequest(f"the extra attributes exceed {MAX_EXTRA_BYTES} bytes")
    return merged


def query_bool(name: str) -> bool | None:
    value = request.args.get(name)
    if value is None:
        return None
    return value.strip().lower() not in FALSE_WORDS


def query_str(name: str) -> str | None:
    value = request.args.get(name)
    if value is None or value == "":
        return None
    if len(value) > 255:
        raise InvalidRequest(f"the {name} filter is too long")
    return value


def query_list(name: str) -> list[str] | None:
    value = request.args.get(name)
    if not value:
        return None
    items = [item for item in value.split(",") if item]
    if len(items) > 80:
        raise InvalidRequest(f"the {name} filter names too many tags")
    return items


def token_domain_id() -> str:
    """Keystone's default domain for a new object: the token's domain, else `default`."""
    auth = authenticated().auth
    assert auth is not None
    return auth.domain_id or auth.project_domain_id or "default"


def every(fetch: Callable[[str | None, int], Page[T]]) -> tuple[list[T], bool]:
    """Every item of a paged service list (Keystone lists have no pages), up to a bound."""
    items: list[T] = []
    marker: str | None = None
    while True:
        page = fetch(marker, MAX_PAGE_SIZE)
        items.extend(page.items)
        marker = page.next_marker
        if marker is None:
            return items, False
        if len(items) >= MAX_LISTED:
            return items[:MAX_LISTED], True


def collection(key: str, items: list[dict[str, Any]], truncated: bool = False) -> Response:
    body: dict[str, Any] = {
        key: items,
        "links": {
            "self": request.url.replace(request.url_root.rstrip("/"), base_url(), 1),
            "previous": None,
            "next": None,
        },
    }
    if truncated:
        body["truncated"] = True
    return jsonify(body)


def reraise(error: LatchkeyError, statuses: dict[str, type[LatchkeyError]]) -> None:
    """Keystone answers some refusals with another status than the native door."""
    kind = statuses.get(error.code)
    if kind is not None:
        raise kind(error.detail, code=error.code) from error
    raise error


# -- domains ---------------------------------------------------------------------------

# Keystone answers these refusals to delete a domain with 403, the native door with 409.
DOMAIN_REFUSALS = ("domain_enabled", "domain_protected")
DOMAIN_FIELDS = {"id", "name", "description", "enabled", "tags", "options", "links"}


def domain_body(domain: DomainRecord) -> dict[str, Any]:
    extra = dict(domain.extra or {})
    tags = extra.pop("tags", [])
    return {
        **extra,
        "id": domain.id,
        "name": domain.name,
        "description": domain.description or "",
        "enabled": domain.enabled,
        "tags": tags,
        "options": {},
        "links": {"self": f"{base_url()}/v3/domains/{domain.id}"},
    }


def domain_fields(data: dict[str, Any], *, creating: bool) -> dict[str, Any]:
    no_options(data, "domain")
    native: dict[str, Any] = {}
    if creating or "name" in data:
        native["name"] = name_field(data.get("name"), "domain.name", SHORT_NAME)
    if "description" in data:
        native["description"] = text_field(data["description"], "domain.description")
    if "enabled" in data:
        native["enabled"] = bool_field(data["enabled"], "domain.enabled")
    extra = split_extra(data, DOMAIN_FIELDS - {"tags"}, "domain")
    if "tags" in extra:
        tags = extra["tags"]
        if not isinstance(tags, list) or len(tags) > 80 or len(set(map(str, tags))) != len(tags):
            raise InvalidRequest("domain.tags must be a list of at most 80 distinct tags")
        for tag in tags:
            if not isinstance(tag, str) or not tag or len(tag) > 255 or "/" in tag or "," in tag:
                raise InvalidRequest("a tag is 1 to 255 characters, without '/' or ','")
    if extra or creating:
        native["extra"] = extra
    return native


@blp.route("/v3/domains", methods=["GET"])
def list_domains() -> Response:
    ctx = authenticated()
    name, enabled = query_str("name"), query_bool("enabled")
    domains, truncated = every(
        lambda marker, limit: services().directory.list_domains(
            ctx, name=name, marker=marker, limit=limit, enabled=enabled
        )
    )
    return collection("domains", [domain_body(d) for d in domains], truncated)


@blp.route("/v3/domains", methods=["POST"])
def create_domain() -> Response:
    ctx = authenticated()
    data = obj(json_body().get("domain"), "domain")
    native = domain_fields(data, creating=True)
    native["identity_backend"] = "sql"
    domain = services().directory.create_domain(ctx, native)
    return created("domain", domain_body(domain))


@blp.route("/v3/domains/<domain_id>", methods=["GET"])
def get_domain(domain_id: str) -> Response:
    domain = services().directory.get_domain(authenticated(), domain_id)
    return jsonify({"domain": domain_body(domain)})


@blp.route("/v3/domains/<domain_id>", methods=["PATCH"])
def update_domain(domain_id: str) -> Response:
    ctx = authenticated()
    data = obj(json_body().get("domain"), "domain")
    if "id" in data and data["id"] != domain_id:
        raise InvalidRequest("a domain's id cannot change")
    native = domain_fields(data, creating=False)
    directory = services().directory
    if "extra" in native:
        current = directory.get_domain(ctx, domain_id)
        native["extra"] = merged_extra(current.extra, native["extra"])
    domain = directory.update_domain(ctx, domain_id, native)
    return jsonify({"domain": domain_body(domain)})


@blp.route("/v3/domains/<domain_id>", methods=["DELETE"])
def delete_domain(domain_id: str) -> Response:
    try:
        services().directory.delete_domain(authenticated(), domain_id)
    except Conflict as error:
        # Keystone: an enabled domain is Forbidden, not in conflict.
        reraise(error, dict.fromkeys(DOMAIN_REFUSALS, Forbidden))
    return no_content()
