"""Keystone v3 roles, domain-specific roles and implied roles (role inferences).

Grants and role assignments: ``assignments``. Every call goes through the Roles
service, which authorizes it with the enforcer under the actions of
``POLICY_NAMES``.
"""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify, request

from latchkey.errors import InvalidRequest
from latchkey.frontdoors.http.requests import services
from latchkey.frontdoors.keystone.common import (
    authenticated,
    base_url,
    blp,
    json_body,
    no_content,
    obj,
)
from latchkey.identity.records import RoleRecord

# Keystone's policy name of each endpoint -> the Latchkey action that authorizes it.
POLICY_NAMES: dict[str, str] = {
    "identity:list_roles": "identity:role:list",
    "identity:get_role": "identity:role:get",
    "identity:create_role": "identity:role:create",
    "identity:update_role": "identity:role:update",
    "identity:delete_role": "identity:role:delete",
    "identity:list_domain_roles": "identity:role:list",
    "identity:get_domain_role": "identity:role:get",
    "identity:create_domain_role": "identity:role:create",
    "identity:update_domain_role": "identity:role:update",
    "identity:delete_domain_role": "identity:role:delete",
    "identity:create_implied_role": "identity:role:imply",
    "identity:get_implied_role": "identity:role:get",
    "identity:check_implied_role": "identity:role:get",
    "identity:list_implied_roles": "identity:role:list",
    "identity:list_role_inference_rules": "identity:role:list",
    "identity:delete_implied_role": "identity:role:imply",
}

# Keys of a role that are Keystone's own, never stored among its extra attributes.
_ROLE_FIELDS = frozenset({"id", "name", "description", "domain_id", "options", "links"})
NAME_MAX = 255


def role_url(role_id: str) -> str:
    return f"{base_url()}/v3/roles/{role_id}"


def role_body(role: RoleRecord) -> dict[str, Any]:
    """A role as Keystone shows it; extra attributes a client sent are echoed."""
    return {
        **(role.extra or {}),
        "id": role.id,
        "name": role.name,
        "domain_id": role.domain_id,
        "description": role.description or None,
        "options": {},
        "links": {"self": role_url(role.id)},
    }


def _role_ref(role: RoleRecord) -> dict[str, Any]:
    return {"id": role.id, "name": role.name, "links": {"self": role_url(role.id)}}


def _list_links(path: str) -> dict[str, Any]:
    return {"self": f"{base_url()}{path}", "previous": None, "next": None}


def _optional_text(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise InvalidRequest(f"role.{key} must be a string")
    return value


def _name(data: dict[str, Any]) -> str:
    name = data.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > NAME_MAX:
        raise InvalidRequest(f"role.name must be a string of 1 to {NAME_MAX} characters")
    return name


def _options(data: dict[str, Any]) -> None:
    options = data.get("options")
    if options is None:
        return
    if not isinstance(options, dict):
        raise InvalidRequest("role.options must be an object")
    if options:
        raise InvalidRequest(f"Latchkey supports no role option: {', '.join(sorted(options))}")


def _extra(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k not in _ROLE_FIELDS}


# -- roles ----------------------------------------------------------------------------


@blp.route("/v3/roles", methods=["GET"])
def list_roles() -> Response:
    ctx = authenticated()
    domain_id = request.args.get("domain_id") or None
    roles = services().roles.list_roles(
        ctx, request.args.get("name") or None, domain_id=domain_id, global_only=True
    )
    return jsonify({"roles": [role_body(r) for r in roles], "links": _list_links("/v3/roles")})


@blp.route("/v3/roles", methods=["POST"])
def create_role() -> Response:
    ctx = authenticated()
    data = obj(json_body().get("role"), "role")
    _options(data)
    native: dict[str, Any] = {
        "name": _name(data),
        "description": _optional_text(data, "description") or "",
        "domain_id": _optional_text(data, "domain_id") or None,
        "extra": _extra(data) or None,
    }
    role = services().roles.create_role(ctx, native)
    response = jsonify({"role": role_body(role)})
    response.status_code = 201
    return response


@blp.route("/v3/roles/<role>", methods=["GET"])
def get_role(role: str) -> Response:
    return jsonify({"role": role_body(services().roles.get_role(authenticated(), role))})


@blp.route("/v3/roles/<role>", methods=["PATCH"])
def update_role(role: str) -> Response:
    ctx = authenticated()
    data = obj(json_body().get("role"), "role")
    _options(data)
    changes: dict[str, Any] = {"extra": _extra(data)}
    if "name" in data:
        changes["name"] = _name(data)
    if "description" in data:
        changes["description"] = _optional_text(data, "description") or ""
    if "domain_id" in data:
        current = services().roles.get_role(ctx, role)
        if (data["domain_id"] or None) != current.domain_id:
            raise InvalidRequest("a role's domain_id cannot change")
    return jsonify({"role": role_body(services().roles.update_role(ctx, role, changes))})


@blp.route("/v3/roles/<role>", methods=["DELETE"])
def delete_role(role: str) -> Response:
    services().roles.delete_role(authenticated(), role)
    return no_content()


# -- implied roles ----------------------------------------------------------------------


def _inference(prior: RoleRecord, implied: RoleRecord) -> dict[str, Any]:
    return {
        "role_inference": {"prior_role": _role_ref(prior), "implies": _role_ref(implied)},
        "links": {"self": f"{role_url(prior.id)}/implies/{implied.id}"},
    }


@blp.route("/v3/roles/<prior>/implies/<implied>", methods=["PUT"])
def create_implied_role(prior: str, implied: str) -> Response:
    response = jsonify(_inference(*services().roles.imply(authenticated(), prior, implied)))
    response.status_code = 201
    return response


@blp.route("/v3/roles/<prior>/implies/<implied>", methods=["GET", "HEAD"])
def get_implied_role(prior: str, implied: str) -> Response:
    pair = services().roles.get_implication(authenticated(), prior, implied)
    if request.method == "HEAD":
        return no_content()
    return jsonify(_inference(*pair))


@blp.route("/v3/roles/<prior>/implies/<implied>", methods=["DELETE"])
def delete_implied_role(prior: str, implied: str) -> Response:
    services().roles.unimply(authenticated(), prior, implied)
    return no_content()


@blp.route("/v3/roles/<prior>/implies", methods=["GET", "HEAD"])
def list_implied_roles(prior: str) -> Response:
    prior_role, implied = services().roles.implied_by(authenticated(), prior)
    return jsonify(
        {
            "role_inference": {
                "prior_role": _role_ref(prior_role),
                "implies": [_role_ref(r) for r in implied],
            },
            "links": {"self": f"{role_url(prior_role.id)}/implies"},
        }
    )


@blp.route("/v3/role_inferences", methods=["GET", "HEAD"])
def list_role_inferences() -> Response:
    pairs = services().roles.list_implications(authenticated())
    by_prior: dict[str, tuple[RoleRecord, list[RoleRecord]]] = {}
    for prior, implied in pairs:
        by_prior.setdefault(prior.id, (prior, []))[1].append(implied)
    rules = [
        {"prior_role": _role_ref(prior), "implies": [_role_ref(r) for r in implied]}
        for prior, implied in by_prior.values()
    ]
    return jsonify(
        {"role_inferences": rules, "links": {"self": f"{base_url()}/v3/role_inferences"}}
    )
