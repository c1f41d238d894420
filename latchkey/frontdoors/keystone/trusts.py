"""Keystone's OS-TRUST extension: trusts and their roles (latchkey/credentials/trusts.py)."""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify, request

from latchkey.credentials.records import TrustRecord
from latchkey.credentials.trusts import POLICY_NAMES as TRUST_POLICY_NAMES
from latchkey.credentials.trusts import Trusts
from latchkey.errors import NotFound
from latchkey.frontdoors.http.requests import services
from latchkey.frontdoors.keystone.common import (
    authenticated,
    base_url,
    blp,
    json_body,
    keystone_time,
    obj,
)
from latchkey.identity.records import RoleRecord

POLICY_NAMES: dict[str, str] = dict(TRUST_POLICY_NAMES)
PREFIX = "/v3/OS-TRUST/trusts"


def _trusts() -> Trusts:
    trusts = services().authentication.trusts
    if trusts is None:  # pragma: no cover - wired in create_app
        raise NotFound("trusts are not enabled")
    return trusts


def _role_body(role: RoleRecord) -> dict[str, Any]:
    return {
        "id": role.id,
        "name": role.name,
        "domain_id": role.domain_id,
        "description": role.description,
        "links": {"self": f"{base_url()}/v3/roles/{role.id}"},
    }


def _trust_body(trust: TrustRecord, roles: list[RoleRecord] | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": trust.id,
        "trustor_user_id": trust.trustor_user_id,
        "trustee_user_id": trust.trustee_user_id,
        "project_id": trust.project_id,
        "impersonation": trust.impersonation,
        "expires_at": keystone_time(trust.expires_at),
        "remaining_uses": trust.remaining_uses,
        "allow_redelegation": False,
        "redelegation_count": 0,
        "redelegated_trust_id": None,
        "links": {"self": f"{base_url()}{PREFIX}/{trust.id}"},
    }
    if roles is not None:
        body["roles"] = [_role_body(r) for r in roles]
        body["roles_links"] = {"self": None, "previous": None, "next": None}
    return body


def _roles_of(trusts: Trusts, trust: TrustRecord) -> list[RoleRecord]:
    return trusts.role_records(trust)


@blp.route(PREFIX, methods=["POST"])
def create_trust() -> Any:
    ctx = authenticated()
    data = obj(json_body().get("trust"), "trust")
    trusts = _trusts()
    trust = trusts.create(ctx, data)
    response = jsonify({"trust": _trust_body(trust, _roles_of(trusts, trust))})
    response.status_code = 201
    return response


@blp.route(PREFIX, methods=["GET"])
def list_trusts() -> Any:
    ctx = authenticated()
    found = _trusts().list_trusts(
        ctx,
        trustor_user_id=request.args.get("trustor_user_id") or None,
        trustee_user_id=request.args.get("trustee_user_id") or None,
    )
    base = base_url()
    return jsonify(
        {
            "trusts": [_trust_body(t, None) for t in found],
            "links": {"self": f"{base}{PREFIX}", "previous": None, "next": None},
        }
    )


@blp.route(f"{PREFIX}/<trust_id>", methods=["GET"])
def get_trust(trust_id: str) -> Any:
    trusts = _trusts()
    trust = trusts.get(authenticated(), trust_id)
    return jsonify({"trust": _trust_body(trust, _roles_of(trusts, trust))})


@blp.route(f"{PREFIX}/<trust_id>", methods=["DELETE"])
def delete_trust(trust_id: str) -> Any:
    _trusts().delete(authenticated(), trust_id)
    return Response(status=204)


@blp.route(f"{PREFIX}/<trust_id>/roles", methods=["GET"])
def list_trust_roles(trust_id: str) -> Any:
    roles = _trusts().roles(authenticated(), trust_id)
    return jsonify(
        {
            "roles": [_role_body(r) for r in roles],
            "links": {
                "self": f"{base_url()}{PREFIX}/{trust_id}/roles",
                "previous": None,
                "next": None,
            },
        }
    )


@blp.route(f"{PREFIX}/<trust_id>/roles/<role_id>", methods=["GET", "HEAD"])
def get_trust_role(trust_id: str, role_id: str) -> Any:
    roles = _trusts().roles(authenticated(), trust_id)
    for role in roles:
        if role.id == role_id:
            if request.method == "HEAD":
                return Response(status=200)
            return jsonify({"role": _role_body(role)})
    raise NotFound(f"Could not find role: {role_id}.", code="role_not_found")
