"""Application credentials under /v1/users/{uid}/application-credentials."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from marshmallow import Schema, fields, validate

from latchkey.credentials.records import CreatedCredential, CredentialRecord
from latchkey.frontdoors.http.blueprint import Blueprint
from latchkey.frontdoors.http.requests import call_context, services

blp = Blueprint(
    "application_credentials",
    __name__,
    url_prefix="/v1/users/<user_id>",
    description="Application credentials",
)
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class AccessRule(Schema):
    service = fields.String(required=True, validate=validate.Length(min=1, max=64))
    method = fields.String(required=True, validate=validate.Length(min=1, max=16))
    path = fields.String(required=True, validate=validate.Length(min=1, max=512))


class CredentialCreate(Schema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=255))
    description = fields.String(validate=validate.Length(max=10_000))
    project_id = fields.String(required=True, validate=validate.Length(min=1, max=64))
    roles = fields.List(
        fields.String(validate=validate.Length(min=1, max=255)), validate=validate.Length(max=100)
    )
    expires_at = fields.AwareDateTime(allow_none=True)
    unrestricted = fields.Boolean()
    access_rules = fields.List(fields.Nested(AccessRule), validate=validate.Length(max=100))
    allowed_cidrs = fields.List(
        fields.String(validate=validate.Length(min=1, max=64)), validate=validate.Length(max=50)
    )


class SecretCreate(Schema):
    expires_at = fields.AwareDateTime(allow_none=True)


class SecretOut(Schema):
    id = fields.String()
    created_at = fields.DateTime()
    expires_at = fields.DateTime(allow_none=True)
    last_used_at = fields.DateTime(allow_none=True)


class NewSecretOut(SecretOut):
    secret = fields.String()


class CredentialOut(Schema):
    id = fields.String()
    name = fields.String()
    description = fields.String()
    user_id = fields.String()
    project_id = fields.String()
    roles = fields.List(fields.String())
    unrestricted = fields.Boolean()
    expires_at = fields.DateTime(allow_none=True)
    access_rules = fields.List(fields.Dict())
    allowed_cidrs = fields.List(fields.String())
    created_at = fields.DateTime()
    last_used_at = fields.DateTime(allow_none=True)
    secrets = fields.List(fields.Nested(SecretOut))


class CreatedCredentialOut(CredentialOut):
    secret = fields.String()
    secret_id = fields.String()


class CredentialList(Schema):
    application_credentials = fields.List(fields.Nested(CredentialOut))


class NameQuery(Schema):
    name = fields.String(validate=validate.Length(min=1, max=255))


@blp.route("/application-credentials")
class CredentialsView(MethodView):
    @blp.arguments(NameQuery, location="query")
    @blp.response(200, CredentialList)
    def get(self, query: dict[str, Any], user_id: str) -> dict[str, Any]:
        found = services().credentials.list_credentials(call_context(), user_id, query.get("name"))
        return {"application_credentials": found}

    @blp.arguments(CredentialCreate)
    @blp.response(201, CreatedCredentialOut)
    def post(self, data: dict[str, Any], user_id: str) -> Any:
        created: CreatedCredential = services().credentials.create(call_context(), user_id, data)
        body = {column: getattr(created.credential, column) for column in CredentialOut().fields}
        body.update(secret=created.secret_value, secret_id=created.secret.id)
        return body, 201, NO_STORE


@blp.route("/application-credentials/<credential_id>")
class CredentialView(MethodView):
    @blp.response(200, CredentialOut)
    def get(self, user_id: str, credential_id: str) -> CredentialRecord:
        return services().credentials.get(call_context(), user_id, credential_id)

    @blp.response(204)
    def delete(self, user_id: str, credential_id: str) -> None:
        services().credentials.delete(call_context(), user_id, credential_id)


@blp.route("/application-credentials/<credential_id>/secrets", methods=["POST"])
@blp.arguments(SecretCreate)
@blp.response(201, NewSecretOut)
def add_secret(data: dict[str, Any], user_id: str, credential_id: str) -> Any:
    secret, value = services().credentials.add_secret(
        call_context(), user_id, credential_id, data.get("expires_at")
    )
    body = {
        "id": secret.id,
        "created_at": secret.created_at,
        "expires_at": secret.expires_at,
        "last_used_at": None,
        "secret": value,
    }
    return body, 201, NO_STORE


@blp.route("/application-credentials/<credential_id>/secrets/<secret_id>", methods=["DELETE"])
@blp.response(204)
def delete_secret(user_id: str, credential_id: str, secret_id: str) -> None:
    services().credentials.delete_secret(call_context(), user_id, credential_id, secret_id)
