"""Keystone's domain-specific configuration (``/v3/domains/{id}/config``)."""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify

from latchkey.frontdoors.http.requests import services
from latchkey.frontdoors.keystone.common import authenticated, blp, json_body
from latchkey.identity.domain_configs import CREATE, DELETE, GET, GET_DEFAULT, UPDATE

POLICY_NAMES: dict[str, str] = {
    "identity:create_domain_config": CREATE,
    "identity:get_domain_config": GET,
    "identity:get_domain_config_default": GET_DEFAULT,
    "identity:update_domain_config": UPDATE,
    "identity:delete_domain_config": DELETE,
}
BASE = "/v3/domains/<domain_id>/config"


def _config() -> Any:
    return json_body().get("config")


def _answer(config: dict[str, Any], status: int = 200) -> Response:
    response = jsonify({"config": config})
    response.status_code = status
    return response


@blp.route("/v3/domains/config/default", methods=["GET"])
def domain_config_default() -> Any:
    return _answer(services().domain_configs.defaults(authenticated()))


@blp.route("/v3/domains/config/<group>/default", methods=["GET"])
def domain_config_group_default(group: str) -> Any:
    return _answer(services().domain_configs.defaults(authenticated(), group))


@blp.route("/v3/domains/config/<group>/<option>/default", methods=["GET"])
def domain_config_option_default(group: str, option: str) -> Any:
    return _answer(services().domain_configs.defaults(authenticated(), group, option))


@blp.route(BASE, methods=["PUT"])
def create_domain_config(domain_id: str) -> Any:
    ctx = authenticated()
    config, created = services().domain_configs.create(ctx, domain_id, _config())
    return _answer(config, 201 if created else 200)


@blp.route(BASE, methods=["GET"])
@blp.route(BASE + "/<group>", methods=["GET"])
@blp.route(BASE + "/<group>/<option>", methods=["GET"])
def get_domain_config(domain_id: str, group: str | None = None, option: str | None = None) -> Any:
    return _answer(services().domain_configs.get(authenticated(), domain_id, group, option))


@blp.route(BASE, methods=["PATCH"])
@blp.route(BASE + "/<group>", methods=["PATCH"])
@blp.route(BASE + "/<group>/<option>", methods=["PATCH"])
def update_domain_config(
    domain_id: str, group: str | None = None, option: str | None = None
) -> Any:
    ctx = authenticated()
    config = services().domain_configs.update(ctx, domain_id, _config(), group, option)
    return _answer(config)


@blp.route(BASE, methods=["DELETE"])
@blp.route(BASE + "/<group>", methods=["DELETE"])
@blp.route(BASE + "/<group>/<option>", methods=["DELETE"])
def delete_domain_config(
    domain_id: str, group: str | None = None, option: str | None = None
) -> Any:
    services().domain_configs.delete(authenticated(), domain_id, group, option)
    return Response(status=204)
