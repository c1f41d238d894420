"""Keystone v3 users: the accounts service's users, a password never in an answer."""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify

from latchkey.errors import AuthenticationFailed, Forbidden, InvalidRequest
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
    bool_field,
    collection,
    every,
    id_field,
    merged_extra,
    name_field,
    no_options,
    query_bool,
    query_str,
    split_extra,
    text_field,
    token_domain_id,
)
from latchkey.frontdoors.keystone.projects import project_bodies
from latchkey.identity.records import UserRecord

POLICY_NAMES: dict[str, str] = {
    "identity:list_users": "identity:user:list",
    "identity:create_user": "identity:user:create",
    "identity:get_user": "identity:user:get",
    "identity:update_user": "identity:user:update",
    "identity:delete_user": "identity:user:delete",
    "identity:change_password": "identity:user:change_password",
    "identity:list_groups_for_user": "identity:user:list_groups",
    "identity:list_user_projects": "identity:user:list_projects",
}

USER_FIELDS = {
    "id",
    "name",
    "domain_id",
    "enabled",
    "email",
    "description",
    "default_project_id",
    "password",
    "password_expires_at",
    "options",
    "links",
}
MAX_PASSWORD = 4096  # the hasher refuses what its policy refuses; this bounds the work


def user_body(user: UserRecord) -> dict[str, Any]:
    body: dict[str, Any] = {
        **(user.extra or {}),
        "id": user.id,
        "name": user.name,
        "domain_id": user.domain_id,
        "enabled": user.enabled,
        "password_expires_at": None,
        "options": {},
        "links": {"self": f"{base_url()}/v3/users/{user.id}"},
    }
    if user.email is not None:
        body["email"] = user.email
    if user.description:
        body["description"] = user.description
    if user.default_project_id is not None:
        body["default_project_id"] = user.default_project_id
    return body


def _password(value: Any, where: str) -> str:
    if not isinstance(value, str) or len(value) > MAX_PASSWORD:
        raise InvalidRequest(f"{where} must be a string")
    return value


def _user_fields(data: dict[str, Any], *, creating: bool) -> dict[str, Any]:
    no_options(data, "user")
    native: dict[str, Any] = {}
    if creating or "name" in data:
        native["name"] = name_field(data.get("name"), "user.name", LONG_NAME)
    if creating:
        native["domain_id"] = id_field(data.get("domain_id") or token_domain_id(), "domain_id")
        native["kind"] = "human"
    elif "domain_id" in data:
        native["domain_id"] = data["domain_id"]
    if "enabled" in data:
        native["enabled"] = bool_field(data["enabled"], "user.enabled")
    if "description" in data:
        native["description"] = text_field(data["description"], "user.description")
    if "email" in data:
        email = data["email"]
        if email is not None and (not isinstance(email, str) or len(email) > 320):
            raise InvalidRequest("user.email must be a string of at most 320 characters")
        native["email"] = email
    if data.get("password") is not None:
        native["password"] = _password(data["password"], "user.password")
    if "default_project_id" in data:
        project_id = data["default_project_id"]
        if project_id is not None:  # that it exists, the service checks once it may
            project_id = id_field(project_id, "user.default_project_id")
        native["default_project_id"] = project_id
    extra = split_extra(data, USER_FIELDS, "user")
    if extra or creating:
        native["extra"] = extra
    return native


@blp.route("/v3/users", methods=["GET"])
def list_users() -> Response:
    ctx = authenticated()
    domain_id, name, enabled = query_str("domain_id"), query_str("name"), query_bool("enabled")
    users, truncated = every(
        lambda marker, limit: services().accounts.list_users(
            ctx,
            domain_id=domain_id,
            name=name,
            kind=None,
            marker=marker,
            limit=limit,
            enabled=enabled,
        )
    )
    return collection("users", [user_body(u) for u in users], truncated)


@blp.route("/v3/users", methods=["POST"])
def create_user() -> Response:
    ctx = authenticated()
    data = obj(json_body().get("user"), "user")
    user = services().accounts.create_user(ctx, _user_fields(data, creating=True))
    return created("user", user_body(user))


@blp.route("/v3/users/<user_id>", methods=["GET"])
def get_user(user_id: str) -> Response:
    return jsonify({"user": user_body(services().accounts.get_user(authenticated(), user_id))})


@blp.route("/v3/users/<user_id>", methods=["PATCH"])
def update_user(user_id: str) -> Response:
    ctx = authenticated()
    data = obj(json_body().get("user"), "user")
    if "id" in data and data["id"] != user_id:
        raise InvalidRequest("a user's id cannot change")
    native = _user_fields(data, creating=False)
    accounts = services().accounts
    current = accounts.get_user(ctx, user_id)
    if "domain_id" in native and native.pop("domain_id") != current.domain_id:
        raise InvalidRequest("a user cannot move to another domain")
    if "extra" in native:
        native["extra"] = merged_extra(current.extra, native["extra"])
    user = accounts.update_user(ctx, user_id, native)
    return jsonify({"user": user_body(user)})


@blp.route("/v3/users/<user_id>", methods=["DELETE"])
def delete_user(user_id: str) -> Response:
    services().accounts.delete_user(authenticated(), user_id)
    return no_content()


@blp.route("/v3/users/<user_id>/password", methods=["POST"])
def change_password(user_id: str) -> Response:
    ctx = authenticated()
    data = obj(json_body().get("user"), "user")
    original = _password(data.get("original_password"), "user.original_password")
    new = _password(data.get("password"), "user.password")
    try:
        services().accounts.change_password(ctx, user_id, original, new)
    except Forbidden as error:
        if error.code != "original_password_wrong":
            raise
        # Keystone: a wrong original password is a failed authentication.
        raise AuthenticationFailed(code="original_password_wrong") from error
    return no_content()


@blp.route("/v3/users/<user_id>/projects", methods=["GET"])
def list_user_projects(user_id: str) -> Response:
    projects = services().accounts.list_user_projects(authenticated(), user_id)
    return collection("projects", project_bodies(projects))
