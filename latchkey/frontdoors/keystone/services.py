"""Keystone v3 regions, services and endpoints over Latchkey's one catalog.

The same rows as the native ``/v1/services`` API (a service's ``endpoints`` there are
the endpoints here). Latchkey's own identity endpoints, while none are stored, are
derived from its base URL and region (``identity_endpoints``): listed and shown like
the others, and stored (same ids) the first time one of them is changed or removed.
"""

from __future__ import annotations

import json
import re
from typing import Any

from flask import Response, jsonify, request

from latchkey.errors import InvalidRequest, NotFound
from latchkey.frontdoors.http.requests import services
from latchkey.frontdoors.keystone.catalog import identity_endpoints
from latchkey.frontdoors.keystone.common import (
    authenticated,
    base_url,
    blp,
    created,
    json_body,
    no_content,
)
from latchkey.policy.catalog import INTERFACES, MAX_EXTRA_BYTES
from latchkey.policy.records import (
    EndpointGroupRecord,
    EndpointRecord,
    PolicyBlobRecord,
    RegionRecord,
    ServiceRecord,
)

# Keystone's policy name of each endpoint -> the Latchkey action that authorizes it.
POLICY_NAMES: dict[str, str] = {
    "identity:list_regions": "identity:region:list",
    "identity:get_region": "identity:region:get",
    "identity:create_region": "identity:region:create",
    "identity:update_region": "identity:region:update",
    "identity:delete_region": "identity:region:delete",
    "identity:list_services": "identity:service:list",
    "identity:get_service": "identity:service:get",
    "identity:create_service": "identity:service:create",
    "identity:update_service": "identity:service:update",
    "identity:delete_service": "identity:service:delete",
    "identity:list_endpoints": "identity:endpoint:list",
    "identity:get_endpoint": "identity:endpoint:get",
    "identity:create_endpoint": "identity:endpoint:create",
    "identity:update_endpoint": "identity:endpoint:update",
    "identity:delete_endpoint": "identity:endpoint:delete",
}

URL_PATTERN = re.compile(r"^[a-zA-Z0-9+.-]+:.+")
MAX_URL = 1024
URL_SUBSTITUTIONS = ("tenant_id", "project_id", "user_id", "compute_host", "public_endpoint")
REGION_FIELDS = ("id", "description", "parent_region_id")
SERVICE_FIELDS = ("type", "name", "description", "enabled")
ENDPOINT_FIELDS = ("service_id", "interface", "url", "region_id", "region", "enabled")


# -- input ------------------------------------------------------------------------------


def _member(key: str) -> dict[str, Any]:
    body = json_body()
    value = body.get(key)
    if not isinstance(value, dict):
        raise InvalidRequest(f"Invalid input for field '{key}': an object is required.")
    return value


def _string(
    data: dict[str, Any], key: str, *, nullable: bool = False, low: int = 0, high: int = 255
) -> None:
    if key not in data:
        return
    value = data[key]
    if value is None and nullable:
        return
    if not isinstance(value, str) or not low <= len(value) <= high:
        raise InvalidRequest(
            f"Invalid input for field '{key}': a string of {low} to {high} characters"
            + (" or null" if nullable else "")
            + " is required."
        )


def _boolean(data: dict[str, Any], key: str) -> None:
    if key in data and not isinstance(data[key], bool):
        raise InvalidRequest(f"Invalid input for field '{key}': {data[key]!r} is not a boolean.")


def _extra(data: dict[str, Any], known: tuple[str, ...]) -> dict[str, Any]:
    """Keystone keeps the properties it does not know and answers them back: bounded here."""
    extra = {k: v for k, v in data.items() if k not in known and k not in ("id", "links")}
    if len(json.dumps(extra)) > MAX_EXTRA_BYTES:
        raise InvalidRequest(f"at most {MAX_EXTRA_BYTES} bytes of additional properties")
    return extra


def _matching_id(data: dict[str, Any], object_id: str) -> None:
    if "id" in data and data["id"] != object_id:
        raise InvalidRequest("Cannot change the ID of an existing object.")


def _not_empty(data: dict[str, Any]) -> None:
    if not data:
        raise InvalidRequest("the object must have at least one property")


def _filter(name: str) -> str | None:
    value = request.args.get(name)
    if value is not None and len(value) > 255:
        raise InvalidRequest(f"Invalid input for query parameter '{name}'.")
    return value


def _collection(key: str, items: list[dict[str, Any]]) -> Response:
    return jsonify(
        {
            key: items,
            "links": {
                "self": base_url() + request.full_path.rstrip("?"),
                "previous": None,
                "next": None,
            },
        }
    )


# -- regions ----------------------------------------------------------------------------


def _region(region: RegionRecord) -> dict[str, Any]:
    return {
        **(region.extra or {}),
        "id": region.id,
        "description": region.description,
        "parent_region_id": region.parent_region_id,
        "links": {"self": f"{base_url()}/v3/regions/{region.id}"},
    }


def _region_input(data: dict[str, Any], *, create: bool) -> dict[str, Any]:
    _string(data, "id", nullable=True, low=0 if create else 1)
    _string(data, "description", nullable=True)
    _string(data, "parent_region_id", nullable=True, low=1)
    values = {k: data[k] for k in REGION_FIELDS if k in data}
    values["extra"] = _extra(data, REGION_FIELDS)
    return values


@blp.route("/v3/regions", methods=["GET"])
def list_regions() -> Response:
    ctx = authenticated()
    regions = services().catalog.list_regions(ctx, _filter("parent_region_id"))
    return _collection("regions", [_region(r) for r in regions])


@blp.route("/v3/regions", methods=["POST"])
def create_region() -> Response:
    ctx = authenticated()
    values = _region_input(_member("region"), create=True)
    return created("region", _region(services().catalog.create_region(ctx, values)))


@blp.route("/v3/regions/<region_id>", methods=["PUT"])
def put_region(region_id: str) -> Response:
    ctx = authenticated()
    values = _region_input(_member("region"), create=True)
    if values.get("id") not in (None, region_id):
        raise InvalidRequest(f'Conflicting region IDs specified: "{region_id}" != "{values["id"]}"')
    values["id"] = region_id
    return created("region", _region(services().catalog.create_region(ctx, values)))


@blp.route("/v3/regions/<region_id>", methods=["GET"])
def get_region(region_id: str) -> Response:
    ctx = authenticated()
    return jsonify({"region": _region(services().catalog.get_region(ctx, region_id))})


@blp.route("/v3/regions/<region_id>", methods=["PATCH"])
def update_region(region_id: str) -> Response:
    ctx = authenticated()
    data = _member("region")
    _not_empty(data)
    _matching_id(data, region_id)
    values = _region_input(data, create=False)
    values.pop("id", None)
    region = services().catalog.update_region(ctx, region_id, values)
    return jsonify({"region": _region(region)})


@blp.route("/v3/regions/<region_id>", methods=["DELETE"])
def delete_region(region_id: str) -> Response:
    services().catalog.delete_region(authenticated(), region_id)
    return no_content()


# -- services ---------------------------------------------------------------------------


def _service(service: ServiceRecord) -> dict[str, Any]:
    return {
        **(service.extra or {}),
        "id": service.id,
        "type": service.type,
        "name": service.name,
        "description": service.description,
        "enabled": service.enabled,
        "links": {"self": f"{base_url()}/v3/services/{service.id}"},
    }


def _service_input(data: dict[str, Any]) -> dict[str, Any]:
    _string(data, "type", low=1)
    _string(data, "name", low=0)
    _string(data, "description", nullable=True, high=10_000)
    _boolean(data, "enabled")
    values = {k: data[k] for k in SERVICE_FIELDS if k in data}
    values["extra"] = _extra(data, SERVICE_FIELDS)
    return values


@blp.route("/v3/services", methods=["GET"])
def list_services() -> Response:
    ctx = authenticated()
    found = services().catalog.list_services(ctx, _filter("type"), _filter("name"))
    return _collection("services", [_service(s) for s in found])


@blp.route("/v3/services", methods=["POST"])
def create_service() -> Response:
    ctx = authenticated()
    data = _member("service")
    if "type" not in data:
        raise InvalidRequest("Invalid input for field 'type': 'type' is a required property.")
    service = services().catalog.create_keystone_service(ctx, _service_input(data))
    return created("service", _service(service))


@blp.route("/v3/services/<service_id>", methods=["GET"])
def get_service(service_id: str) -> Response:
    ctx = authenticated()
    return jsonify({"service": _service(services().catalog.get_service_by_id(ctx, service_id))})


@blp.route("/v3/services/<service_id>", methods=["PATCH"])
def update_service(service_id: str) -> Response:
    ctx = authenticated()
    data = _member("service")
    _not_empty(data)
    _matching_id(data, service_id)
    service = services().catalog.update_keystone_service(ctx, service_id, _service_input(data))
    return jsonify({"service": _service(service)})


@blp.route("/v3/services/<service_id>", methods=["DELETE"])
def delete_service(service_id: str) -> Response:
    services().catalog.delete_service(authenticated(), service_id, by_id=True)
    return no_content()


# -- endpoints --------------------------------------------------------------------------


def _endpoint(endpoint: EndpointRecord) -> dict[str, Any]:
    return {
        **(endpoint.extra or {}),
        "id": endpoint.id,
        "interface": endpoint.interface,
        "region": endpoint.region_id,
        "region_id": endpoint.region_id,
        "service_id": endpoint.service_id,
        "url": endpoint.url,
        "enabled": endpoint.enabled,
        "links": {"self": f"{base_url()}/v3/endpoints/{endpoint.id}"},
    }


def _derived_endpoints() -> list[dict[str, Any]]:
    """Latchkey's own identity endpoints while none are stored (see the module's doc)."""
    catalog = services().catalog
    identity = catalog.builtin_identity()
    if identity is None or identity.endpoints:
        return []
    return [
        {
            **e,
            "service_id": identity.id,
            "enabled": True,
            "links": {"self": f"{base_url()}/v3/endpoints/{e['id']}"},
        }
        for e in identity_endpoints(identity.id, base_url() + "/v3", catalog.region)
    ]


def _store_derived(ctx: Any, endpoint_id: str) -> None:
    """Before changing or removing a derived endpoint: store all three (same ids)."""
    catalog = services().catalog
    if catalog.find_endpoint(endpoint_id) is not None:
        return
    derived = _derived_endpoints()
    if any(e["id"] == endpoint_id for e in derived):
        catalog.store_builtin_identity_endpoints(
            ctx, [(e["id"], e["interface"], e["url"]) for e in derived]
        )


def _endpoint_input(data: dict[str, Any]) -> dict[str, Any]:
    _string(data, "service_id", low=1, high=64)
    if "interface" in data and data["interface"] not in INTERFACES:
        raise InvalidRequest(
            f"Invalid input for field 'interface': {data['interface']!r} is not one of "
            + ", ".join(INTERFACES)
            + "."
        )
    _string(data, "url", high=MAX_URL)
    if "url" in data:
        url = data["url"]
        if not URL_PATTERN.match(url):
            raise InvalidRequest(f"Invalid input for field 'url': {url!r} is not a URL.")
        try:
            url.replace("$(", "%(") % dict.fromkeys(URL_SUBSTITUTIONS, "")
        except (KeyError, TypeError, ValueError):
            raise InvalidRequest(f"Invalid endpoint URL ({url}).") from None
    _string(data, "region_id", nullable=True, low=1)
    _string(data, "region", nullable=True, low=1)
    _boolean(data, "enabled")
    values = {k: data[k] for k in ENDPOINT_FIELDS if k in data}
    values["extra"] = _extra(data, ENDPOINT_FIELDS)
    return values


@blp.route("/v3/endpoints", methods=["GET"])
def list_endpoints() -> Response:
    ctx = authenticated()
    service_id, interface, region_id = (
        _filter("service_id"),
        _filter("interface"),
        _filter("region_id"),
    )
    if interface is not None and interface not in INTERFACES:
        raise InvalidRequest(f"Invalid input for query parameter 'interface': {interface!r}.")
    stored = services().catalog.list_endpoints(ctx, service_id, interface, region_id)
    items = [_endpoint(e) for e in stored]
    wanted = {"service_id": service_id, "interface": interface, "region_id": region_id}
    for derived in _derived_endpoints():
        if all(value is None or derived[key] == value for key, value in wanted.items()):
            items.append(derived)
    return _collection("endpoints", items)


@blp.route("/v3/endpoints", methods=["POST"])
def create_endpoint() -> Response:
    ctx = authenticated()
    data = _member("endpoint")
    missing = [k for k in ("interface", "service_id", "url") if k not in data]
    if missing:
        raise InvalidRequest(
            f"Invalid input for field '{missing[0]}': '{missing[0]}' is a required property."
        )
    values = _endpoint_input(data)
    _string(data, "id", low=1, high=64)
    if data.get("id"):
        values["id"] = data["id"]
    return created("endpoint", _endpoint(services().catalog.create_endpoint(ctx, values)))


@blp.route("/v3/endpoints/<endpoint_id>", methods=["GET"])
def get_endpoint(endpoint_id: str) -> Response:
    ctx = authenticated()
    catalog = services().catalog
    try:
        return jsonify({"endpoint": _endpoint(catalog.get_endpoint(ctx, endpoint_id))})
    except NotFound:
        for derived in _derived_endpoints():
            if derived["id"] == endpoint_id:
                return jsonify({"endpoint": derived})
        raise


@blp.route("/v3/endpoints/<endpoint_id>", methods=["PATCH"])
def update_endpoint(endpoint_id: str) -> Response:
    ctx = authenticated()
    data = _member("endpoint")
    _not_empty(data)
    _matching_id(data, endpoint_id)
    values = _endpoint_input(data)
    _store_derived(ctx, endpoint_id)
    endpoint = services().catalog.update_endpoint(ctx, endpoint_id, values)
    return jsonify({"endpoint": _endpoint(endpoint)})


@blp.route("/v3/endpoints/<endpoint_id>", methods=["DELETE"])
def delete_endpoint(endpoint_id: str) -> Response:
    ctx = authenticated()
    _store_derived(ctx, endpoint_id)
    services().catalog.delete_endpoint(ctx, endpoint_id)
    return no_content()


# -- OS-EP-FILTER endpoint groups ---------------------------------------------------------

POLICY_NAMES.update(
    {
        "identity:list_endpoint_groups": "identity:endpoint_group:list",
        "identity:get_endpoint_group": "identity:endpoint_group:get",
        "identity:create_endpoint_group": "identity:endpoint_group:create",
        "identity:update_endpoint_group": "identity:endpoint_group:update",
        "identity:delete_endpoint_group": "identity:endpoint_group:delete",
        "identity:list_endpoints_associated_with_endpoint_group": "identity:endpoint_group:get",
        "identity:list_policies": "identity:policy_blob:list",
        "identity:get_policy": "identity:policy_blob:get",
        "identity:create_policy": "identity:policy_blob:create",
        "identity:update_policy": "identity:policy_blob:update",
        "identity:delete_policy": "identity:policy_blob:delete",
    }
)
GROUP_FILTERS = ("service_id", "region_id", "interface")
GROUPS = "/v3/OS-EP-FILTER/endpoint_groups"


def _group(group: EndpointGroupRecord) -> dict[str, Any]:
    return {
        "id": group.id,
        "name": group.name,
        "description": group.description,
        "filters": group.filters,
        "links": {"self": f"{base_url()}{GROUPS}/{group.id}"},
    }


def _group_input(data: dict[str, Any], *, create: bool) -> dict[str, Any]:
    unknown = [k for k in data if k not in ("id", "name", "description", "filters", "links")]
    if unknown:
        raise InvalidRequest(f"Additional properties are not allowed ({unknown[0]!r}).")
    if create and "name" not in data:
        raise InvalidRequest("Invalid input for field 'name': 'name' is a required property.")
    _string(data, "name", low=1)
    _string(data, "description", nullable=True, high=10_000)
    if create or "filters" in data:
        filters = data.get("filters")
        if not isinstance(filters, dict) or not filters:
            raise InvalidRequest("filters field is required and cannot be empty")
        for key, value in filters.items():
            if key not in GROUP_FILTERS:
                raise InvalidRequest(
                    "Invalid input for field 'service_id or region_id or interface'."
                )
            if not isinstance(value, str) or not 1 <= len(value) <= 255:
                raise InvalidRequest(f"Invalid input for filter '{key}'.")
            if key == "interface" and value not in INTERFACES:
                raise InvalidRequest(f"Invalid input for filter 'interface': {value!r}.")
    return {k: data[k] for k in ("name", "description", "filters") if k in data}


@blp.route(GROUPS, methods=["GET"])
def list_endpoint_groups() -> Response:
    ctx = authenticated()
    groups = services().catalog.list_endpoint_groups(ctx, _filter("name"))
    return _collection("endpoint_groups", [_group(g) for g in groups])


@blp.route(GROUPS, methods=["POST"])
def create_endpoint_group() -> Response:
    ctx = authenticated()
    values = _group_input(_member("endpoint_group"), create=True)
    return created("endpoint_group", _group(services().catalog.create_endpoint_group(ctx, values)))


@blp.route(GROUPS + "/<group_id>", methods=["GET"])
def get_endpoint_group(group_id: str) -> Response:
    ctx = authenticated()
    return jsonify({"endpoint_group": _group(services().catalog.get_endpoint_group(ctx, group_id))})


@blp.route(GROUPS + "/<group_id>", methods=["PATCH"])
def update_endpoint_group(group_id: str) -> Response:
    ctx = authenticated()
    data = _member("endpoint_group")
    _not_empty(data)
    _matching_id(data, group_id)
    group = services().catalog.update_endpoint_group(
        ctx, group_id, _group_input(data, create=False)
    )
    return jsonify({"endpoint_group": _group(group)})


@blp.route(GROUPS + "/<group_id>", methods=["DELETE"])
def delete_endpoint_group(group_id: str) -> Response:
    services().catalog.delete_endpoint_group(authenticated(), group_id)
    return no_content()


@blp.route(GROUPS + "/<group_id>/endpoints", methods=["GET"])
def endpoints_of_group(group_id: str) -> Response:
    ctx = authenticated()
    found = services().catalog.endpoints_of_group(ctx, group_id)
    return _collection("endpoints", [_endpoint(e) for e in found])


# -- /v3/policies: Keystone's opaque policy blobs -----------------------------------------


def _blob(blob: PolicyBlobRecord) -> dict[str, Any]:
    return {
        **(blob.extra or {}),
        "id": blob.id,
        "type": blob.type,
        "blob": blob.blob,
        "links": {"self": f"{base_url()}/v3/policies/{blob.id}"},
    }


def _blob_input(data: dict[str, Any]) -> dict[str, Any]:
    _string(data, "type", high=255)
    _string(data, "blob", high=65_536)
    values: dict[str, Any] = {k: data[k] for k in ("type", "blob") if k in data}
    values["extra"] = _extra(data, ("type", "blob"))
    return values


@blp.route("/v3/policies", methods=["GET"])
def list_policies() -> Response:
    ctx = authenticated()
    blobs = services().catalog.list_policy_blobs(ctx, _filter("type"))
    return _collection("policies", [_blob(b) for b in blobs])


@blp.route("/v3/policies", methods=["POST"])
def create_policy() -> Response:
    ctx = authenticated()
    data = _member("policy")
    for key in ("blob", "type"):
        if key not in data:
            raise InvalidRequest(
                f"Invalid input for field '{key}': '{key}' is a required property."
            )
    return created("policy", _blob(services().catalog.create_policy_blob(ctx, _blob_input(data))))


@blp.route("/v3/policies/<blob_id>", methods=["GET"])
def get_policy(blob_id: str) -> Response:
    ctx = authenticated()
    return jsonify({"policy": _blob(services().catalog.get_policy_blob(ctx, blob_id))})


@blp.route("/v3/policies/<blob_id>", methods=["PATCH"])
def update_policy(blob_id: str) -> Response:
    ctx = authenticated()
    data = _member("policy")
    _not_empty(data)
    _matching_id(data, blob_id)
    blob = services().catalog.update_policy_blob(ctx, blob_id, _blob_input(data))
    return jsonify({"policy": _blob(blob)})


@blp.route("/v3/policies/<blob_id>", methods=["DELETE"])
def delete_policy(blob_id: str) -> Response:
    services().catalog.delete_policy_blob(authenticated(), blob_id)
    return no_content()
