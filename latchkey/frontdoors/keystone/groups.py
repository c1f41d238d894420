"""Keystone v3 groups and their members."""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify

from latchkey.errors import InvalidRequest, NotFound
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
from latchkey.frontdoors.keystone.domains import (
    LONG_NAME,
    collection,
    every,
    id_field,
    merged_extra,
    name_field,
    query_str,
    split_extra,
    text_field,
    token_domain_id,
)
from latchkey.frontdoors.keystone.users import user_body
from latchkey.identity.records import GroupRecord

POLICY_NAMES: dict[str, str] = {
    "identity:list_groups": "identity:group:list",
    "identity:create_group": "identity:group:create",
    "identity:get_group": "identity:group:get",
    "identity:update_group": "identity:group:update",
    "identity:delete_group": "identity:group:delete",
    "identity:list_users_in_group": "identity:group:list_members",
    "identity:check_user_in_group": "identity:group:list_members",
    "identity:add_user_to_group": "identity:group:add_member",
    "identity:remove_user_from_group": "identity:group:remove_member",
}

GROUP_FIELDS = {"id", "name", "domain_id", "description", "links"}


def group_body(group: GroupRecord) -> dict[str, Any]:
    return {
        **(group.extra or {}),
        "id": group.id,
        "name": group.name,
        "domain_id": group.domain_id,
        "description": group.description or "",
        "links": {"self": f"{base_url()}/v3/groups/{group.id}"},
    }


def _group_fields(data: dict[str, Any], *, creating: bool) -> dict[str, Any]:
    native: dict[str, Any] = {}
    if creating or "name" in data:
        native["name"] = name_field(data.get("name"), "group.name", LONG_NAME)
    if creating:
        native["domain_id"] = id_field(data.get("domain_id") or token_domain_id(), "domain_id")
    elif "domain_id" in data:
        native["domain_id"] = data["domain_id"]
    if "description" in data:
        native["description"] = text_field(data["description"], "group.description")
    extra = split_extra(data, GROUP_FIELDS, "group")
    if extra or creating:
        native["extra"] = extra
    return native


@blp.route("/v3/groups", methods=["GET"])
def list_groups() -> Response:
    ctx = authenticated()
    domain_id, name = query_str("domain_id"), query_str("name")
    groups, truncated = every(
        lambda marker, limit: services().accounts.list_groups(
            ctx, domain_id=domain_id, name=name, marker=marker, limit=limit
        )
    )
    return collection("groups", [group_body(g) for g in groups], truncated)


@blp.route("/v3/groups", methods=["POST"])
def create_group() -> Response:
    ctx = authenticated()
    data = obj(json_body().get("group"), "group")
    group = services().accounts.create_group(ctx, _group_fields(data, creating=True))
    return created("group", group_body(group))


@blp.route("/v3/groups/<group_id>", methods=["GET"])
def get_group(group_id: str) -> Response:
    return jsonify({"group": group_body(services().accounts.get_group(authenticated(), group_id))})


@blp.route("/v3/groups/<group_id>", methods=["PATCH"])
def update_group(group_id: str) -> Response:
    ctx = authenticated()
    data = obj(json_body().get("group"), "group")
    if "id" in data and data["id"] != group_id:
        raise InvalidRequest("a group's id cannot change")
    native = _group_fields(data, creating=False)
    accounts = services().accounts
    current = accounts.get_group(ctx, group_id)
    if "domain_id" in native and native.pop("domain_id") != current.domain_id:
        raise InvalidRequest("a group cannot move to another domain")
    if "extra" in native:
        native["extra"] = merged_extra(current.extra, native["extra"])
    group = accounts.update_group(ctx, group_id, native)
    return jsonify({"group": group_body(group)})


@blp.route("/v3/groups/<group_id>", methods=["DELETE"])
def delete_group(group_id: str) -> Response:
    services().accounts.delete_group(authenticated(), group_id)
    return no_content()


# Membership, both ways (users.py holds the users themselves).
@blp.route("/v3/users/<user_id>/groups", methods=["GET"])
def list_user_groups(user_id: str) -> Response:
    groups = services().accounts.list_user_groups(authenticated(), user_id)
    return collection("groups", [group_body(g) for g in groups])


@blp.route("/v3/groups/<group_id>/users", methods=["GET"])
def list_group_users(group_id: str) -> Response:
    users = services().accounts.list_members(authenticated(), group_id)
    return collection("users", [user_body(u) for u in users])


@blp.route("/v3/groups/<group_id>/users/<user_id>", methods=["GET", "HEAD"])
def check_group_user(group_id: str, user_id: str) -> Response:
    if not services().accounts.is_member(authenticated(), group_id, user_id):
        raise NotFound(f"User {user_id} is not a member of group {group_id}.")
    return no_content()


@blp.route("/v3/groups/<group_id>/users/<user_id>", methods=["PUT"])
def add_group_user(group_id: str, user_id: str) -> Response:
    services().accounts.add_member(authenticated(), group_id, user_id)
    return no_content()


@blp.route("/v3/groups/<group_id>/users/<user_id>", methods=["DELETE"])
def remove_group_user(group_id: str, user_id: str) -> Response:
    services().accounts.remove_member(authenticated(), group_id, user_id)
    return no_content()
