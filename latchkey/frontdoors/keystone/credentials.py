"""Keystone v3 credentials and the OS-EC2 extension (EC2 keys of a user)."""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify, request

from latchkey.credentials.keystone import (
    CREATE,
    DELETE,
    GET,
    LIST,
    UPDATE,
)
from latchkey.credentials.records import OpenCredential
from latchkey.errors import InvalidRequest
from latchkey.frontdoors.http.requests import services
from latchkey.frontdoors.keystone.common import (
    NO_STORE,
    authenticated,
    base_url,
    blp,
    json_body,
    obj,
)

# Keystone's policy name of each endpoint -> the Latchkey action that authorizes it.
POLICY_NAMES: dict[str, str] = {
    "identity:create_credential": CREATE,
    "identity:list_credentials": LIST,
    "identity:get_credential": GET,
    "identity:update_credential": UPDATE,
    "identity:delete_credential": DELETE,
    "identity:ec2_create_credential": CREATE,
    "identity:ec2_list_credentials": LIST,
    "identity:ec2_get_credential": GET,
    "identity:ec2_delete_credential": DELETE,
}


def credential_body(found: OpenCredential) -> dict[str, Any]:
    row = found.credential
    return {
        "id": row.id,
        "user_id": row.user_id,
        "project_id": row.project_id,
        "type": row.type,
        "blob": found.blob,
        "links": {"self": f"{base_url()}/v3/credentials/{row.id}"},
    }


def _answer(body: dict[str, Any], status: int = 200) -> Response:
    response = jsonify(body)
    response.status_code = status
    response.headers.update(NO_STORE)  # every answer here carries a secret
    return response


def _text(data: dict[str, Any], key: str, required: bool = False) -> str | None:
    value = data.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"{key} must be a non-empty string")
    return value


@blp.route("/v3/credentials", methods=["POST"])
def create_credential_v3() -> Any:
    ctx = authenticated()
    data = obj(json_body().get("credential"), "credential")
    user_id = _text(data, "user_id", required=True)
    type_ = _text(data, "type", required=True)
    assert user_id is not None and type_ is not None
    created = services().keystone_credentials.create(
        ctx, user_id, type_, data.get("blob"), _text(data, "project_id")
    )
    return _answer({"credential": credential_body(created)}, 201)


@blp.route("/v3/credentials", methods=["GET"])
def list_credentials_v3() -> Any:
    found = services().keystone_credentials.list(
        authenticated(),
        user_id=request.args.get("user_id") or None,
        type_=request.args.get("type") or None,
    )
    return _answer(
        {
            "credentials": [credential_body(c) for c in found],
            "links": {"self": f"{base_url()}/v3/credentials", "previous": None, "next": None},
        }
    )


@blp.route("/v3/credentials/<credential_id>", methods=["GET"])
def get_credential_v3(credential_id: str) -> Any:
    found = services().keystone_credentials.get(authenticated(), credential_id)
    return _answer({"credential": credential_body(found)})


@blp.route("/v3/credentials/<credential_id>", methods=["PATCH"])
def update_credential_v3(credential_id: str) -> Any:
    ctx = authenticated()
    data = dict(obj(json_body().get("credential"), "credential"))
    if data.get("id") == credential_id:
        del data["id"]
    unknown = set(data) - {"user_id", "project_id", "type", "blob"}
    if unknown:
        raise InvalidRequest("unknown attributes: " + ", ".join(sorted(unknown)))
    found = services().keystone_credentials.update(ctx, credential_id, data)
    return _answer({"credential": credential_body(found)})


@blp.route("/v3/credentials/<credential_id>", methods=["DELETE"])
def delete_credential_v3(credential_id: str) -> Any:
    services().keystone_credentials.delete(authenticated(), credential_id)
    return Response(status=204)


# -- OS-EC2 --------------------------------------------------------------------------


def ec2_body(found: OpenCredential) -> dict[str, Any]:
    blob = found.ec2()
    row = found.credential
    return {
        "access": blob.get("access"),
        "secret": blob.get("secret"),
        "user_id": row.user_id,
        "tenant_id": row.project_id,
        "trust_id": blob.get("trust_id"),
        "links": {
            "self": f"{base_url()}/v3/users/{row.user_id}/credentials/OS-EC2/{blob.get('access')}"
        },
    }


@blp.route("/v3/users/<user_id>/credentials/OS-EC2", methods=["POST"])
def create_ec2_credential(user_id: str) -> Any:
    ctx = authenticated()
    tenant_id = _text(json_body(), "tenant_id", required=True)
    assert tenant_id is not None
    created = services().keystone_credentials.create_ec2(ctx, user_id, tenant_id)
    return _answer({"credential": ec2_body(created)}, 201)


@blp.route("/v3/users/<user_id>/credentials/OS-EC2", methods=["GET"])
def list_ec2_credentials(user_id: str) -> Any:
    found = services().keystone_credentials.list(authenticated(), user_id=user_id, type_="ec2")
    return _answer(
        {
            "credentials": [ec2_body(c) for c in found],
            "links": {
                "self": f"{base_url()}/v3/users/{user_id}/credentials/OS-EC2",
                "previous": None,
                "next": None,
            },
        }
    )


@blp.route("/v3/users/<user_id>/credentials/OS-EC2/<access>", methods=["GET"])
def get_ec2_credential(user_id: str, access: str) -> Any:
    found = services().keystone_credentials.get_ec2(authenticated(), user_id, access)
    return _answer({"credential": ec2_body(found)})


@blp.route("/v3/users/<user_id>/credentials/OS-EC2/<access>", methods=["DELETE"])
def delete_ec2_credential(user_id: str, access: str) -> Any:
    services().keystone_credentials.delete_ec2(authenticated(), user_id, access)
    return Response(status=204)
