"""Tenant secrets under /v1/projects/{pid}/secrets."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from marshmallow import Schema, fields, validate

from latchkey.frontdoors.http.blueprint import Blueprint
from latchkey.frontdoors.http.fields import DbInteger
from latchkey.frontdoors.http.requests import call_context, services

blp = Blueprint(
    "secrets",
    __name__,
    url_prefix="/v1/projects/<project_id>/secrets",
    description="Tenant secrets",
)
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class TenantSecretCreate(Schema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=255))
    description = fields.String(validate=validate.Length(max=10_000))
    content_type = fields.String(validate=validate.Length(max=128))
    payload = fields.String(required=True, load_only=True)


class TenantPayloadIn(Schema):
    payload = fields.String(required=True, load_only=True)


class VersionQuery(Schema):
    version = DbInteger(low=1)


class TenantSecretOut(Schema):
    id = fields.String()
    project_id = fields.String()
    name = fields.String()
    description = fields.String()
    content_type = fields.String()
    current_version = fields.Integer()
    store = fields.String()
    created_by = fields.String(allow_none=True)
    created_at = fields.DateTime()
    updated_at = fields.DateTime()


class TenantSecretList(Schema):
    secrets = fields.List(fields.Nested(TenantSecretOut))


class TenantPayloadOut(Schema):
    id = fields.String()
    name = fields.String()
    version = fields.Integer()
    content_type = fields.String()
    payload = fields.String()


@blp.route("")
class SecretsView(MethodView):
    @blp.response(200, TenantSecretList)
    def get(self, project_id: str) -> dict[str, Any]:
        return {"secrets": services().secrets.list_secrets(call_context(), project_id)}

    @blp.arguments(TenantSecretCreate)
    @blp.response(201, TenantSecretOut)
    def post(self, data: dict[str, Any], project_id: str) -> Any:
        return services().secrets.create(call_context(), project_id, data)


@blp.route("/<secret_id>")
class SecretView(MethodView):
    @blp.response(200, TenantSecretOut)
    def get(self, project_id: str, secret_id: str) -> Any:
        return services().secrets.get(call_context(), project_id, secret_id)

    @blp.response(204)
    def delete(self, project_id: str, secret_id: str) -> None:
        services().secrets.delete(call_context(), project_id, secret_id)


@blp.route("/<secret_id>/payload")
class PayloadView(MethodView):
    @blp.arguments(VersionQuery, location="query")
    @blp.response(200, TenantPayloadOut)
    def get(self, query: dict[str, Any], project_id: str, secret_id: str) -> Any:
        secret, version, payload = services().secrets.payload(
            call_context(), project_id, secret_id, query.get("version")
        )
        body = {
            "id": secret.id,
            "name": secret.name,
            "version": version,
            "content_type": secret.content_type,
            "payload": payload.decode("utf-8"),
        }
        return body, 200, NO_STORE

    @blp.arguments(TenantPayloadIn)
    @blp.response(200, TenantSecretOut)
    def put(self, data: dict[str, Any], project_id: str, secret_id: str) -> Any:
        return services().secrets.new_version(call_context(), project_id, secret_id, data)
