"""Token endpoints, the revocation feed and the JWKS."""

from __future__ import annotations

from typing import Any

from flask import jsonify, request
from flask.views import MethodView
from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from latchkey.errors import InvalidRequest
from latchkey.frontdoors.http.blueprint import Blueprint
from latchkey.frontdoors.http.requests import call_context, services
from latchkey.tokens.service import MAX_TOKEN_LENGTH

blp = Blueprint("tokens", __name__, description="Tokens")
SUBJECT_TOKEN_HEADER = "X-Subject-Token"
ID = validate.Length(min=1, max=64)
NAME = validate.Length(min=1, max=255)


class DomainRef(Schema):
    id = fields.String(validate=ID)
    name = fields.String(validate=NAME)


class UserRef(Schema):
    id = fields.String(validate=ID)
    name = fields.String(validate=NAME)
    domain = fields.Nested(DomainRef)


class PasswordMethod(Schema):
    user = fields.Nested(UserRef, required=True)
    password = fields.String(required=True, validate=validate.Length(max=4096))


class CredentialUserRef(Schema):
    id = fields.String(validate=ID)
    name = fields.String(validate=NAME)
    domain = fields.Nested(DomainRef)


class ApplicationCredentialMethod(Schema):
    id = fields.String(validate=ID)
    name = fields.String(validate=NAME)
    user = fields.Nested(CredentialUserRef)
    secret = fields.String(required=True, validate=validate.Length(min=1, max=512))


class TokenMethod(Schema):
    """Keystone's ``token`` method: a valid token, for a new one in another scope."""

    id = fields.String(required=True, validate=validate.Length(min=1, max=MAX_TOKEN_LENGTH))


class AuthMethods(Schema):
    password = fields.Nested(PasswordMethod)
    application_credential = fields.Nested(ApplicationCredentialMethod)
    token = fields.Nested(TokenMethod)

    @validates_schema
    def methods_together(self, data: dict[str, Any], **_: Any) -> None:
        if not data:
            raise ValidationError("give an authentication method")
        if "application_credential" in data and len(data) != 1:
            raise ValidationError("an application credential authenticates alone")


class ProjectRef(Schema):
    id = fields.String(validate=ID)
    name = fields.String(validate=NAME)
    domain = fields.Nested(DomainRef)


class SystemRef(Schema):
    all = fields.Boolean(required=True, validate=validate.Equal(True))


class TrustRef(Schema):
    id = fields.String(required=True, validate=ID)


class ScopeRef(Schema):
    project = fields.Nested(ProjectRef)
    domain = fields.Nested(DomainRef)
    # Keystone's system scope: {"system": {"all": true}}, the whole deployment.
    system = fields.Nested(SystemRef)
    # An OS-TRUST trust the caller is the trustee of.
    trust = fields.Nested(TrustRef, data_key="OS-TRUST:trust")
    # Keystone's "scope": "unscoped": no scope, not even the user's default project.
    unscoped = fields.Boolean(validate=validate.Equal(True))

    @validates_schema
    def one_scope(self, data: dict[str, Any], **_: Any) -> None:
        if len(data) != 1:
            raise ValidationError("scope to exactly one project, domain, system or trust")


class TokenRequest(Schema):
    auth = fields.Nested(AuthMethods, required=True)
    scope = fields.Nested(ScopeRef)


class TokenOut(Schema):
    token = fields.String()
    expires_at = fields.DateTime()
    issued_at = fields.DateTime()
    user = fields.Dict()
    project = fields.Dict()
    domain = fields.Dict()
    system = fields.Dict()
    trust = fields.Dict()
    roles = fields.List(fields.String())
    methods = fields.List(fields.String())
    application_credential = fields.Dict()


class RevocationQuery(Schema):
    # Event ids are 32-bit integers in the database.
    since = fields.Integer(load_default=0, validate=validate.Range(min=0, max=2**31 - 1))
    limit = fields.Integer(load_default=500, validate=validate.Range(min=1, max=5000))


class RevocationOut(Schema):
    id = fields.Integer()
    kind = fields.String()
    subject = fields.String()
    issued_before = fields.DateTime()
    created_at = fields.DateTime()


class RevocationList(Schema):
    revocations = fields.List(fields.Nested(RevocationOut))
    cursor = fields.Integer()


SUBJECT_TOKEN_PARAMETER = {
    "in": "header",
    "name": SUBJECT_TOKEN_HEADER,
    "required": True,
    "description": "The token to check or revoke (without it: 422 subject_token_missing).",
    "schema": {"type": "string"},
}
_CLAIMS = {
    "type": "object",
    "description": "The subject token's claims, as validated.",
    "required": ["sub", "exp", "iat", "jti"],
    "properties": {
        "sub": {"type": "string"},
        "exp": {"type": "integer"},
        "iat": {"type": "integer"},
        "jti": {"type": "string"},
        "iss": {"type": "string"},
        "aud": {},
        "user": {"type": "object"},
        "project": {"type": "object"},
        "domain": {"type": "object"},
        "system": {"type": "object"},
        "trust": {"type": "object"},
        "roles": {"type": "array", "items": {"type": "string"}},
        "methods": {"type": "array", "items": {"type": "string"}},
    },
}
_JWKS = {
    "type": "object",
    "required": ["keys"],
    "properties": {"keys": {"type": "array", "items": {"type": "object"}}},
}


def _subject_token() -> str:
    token = request.headers.get(SUBJECT_TOKEN_HEADER)
    if not token:
        raise InvalidRequest(
            f"send the token to check in {SUBJECT_TOKEN_HEADER}", code="subject_token_missing"
        )
    return token


@blp.route("/v1/auth/tokens")
class TokensView(MethodView):
    @blp.arguments(TokenRequest)
    @blp.response(
        201,
        TokenOut,
        # OpenAPI 3.0 requires a schema (or content) for every response header.
        headers={
            "Cache-Control": {"description": "no-store", "schema": {"type": "string"}},
            "Pragma": {"description": "no-cache", "schema": {"type": "string"}},
        },
    )
    def post(self, data: dict[str, Any]) -> Any:
        ctx = call_context(authenticate=False)
        issued = services().authentication.authenticate(ctx, data["auth"], data.get("scope"))
        claims = issued.claims
        body = {
            "token": issued.token,
            "expires_at": issued.expires_at,
            "issued_at": issued.issued_at,
            "user": claims["user"],
            "roles": claims["roles"],
            "methods": claims["methods"],
        }
        for key in ("project", "domain", "system", "trust", "application_credential"):
            if key in claims:
                body[key] = claims[key]
        return body, 201, {"Cache-Control": "no-store", "Pragma": "no-cache"}

    @blp.response(200)
    @blp.doc(
        parameters=[SUBJECT_TOKEN_PARAMETER],
        responses={
            200: {
                "description": "The subject token is valid",
                "content": {"application/json": {"schema": _CLAIMS}},
            }
        },
    )
    def get(self) -> Any:
        claims = services().tokens.check_subject(call_context(), _subject_token())
        return jsonify(claims)

    @blp.response(204)
    @blp.doc(parameters=[SUBJECT_TOKEN_PARAMETER])
    def delete(self) -> None:
        services().tokens.revoke(call_context(), _subject_token())


@blp.route("/v1/revocations", methods=["GET"])
@blp.arguments(RevocationQuery, location="query")
@blp.response(200, RevocationList)
def revocations(query: dict[str, Any]) -> dict[str, Any]:
    events = services().tokens.revocations_since(call_context(), query["since"], query["limit"])
    cursor = events[-1].id if events else query["since"]
    return {"revocations": events, "cursor": cursor}


@blp.route("/.well-known/jwks.json", methods=["GET"])
@blp.response(200)
@blp.doc(
    responses={
        200: {
            "description": "The token signing keys (RFC 7517 JSON Web Key Set)",
            "content": {"application/json": {"schema": _JWKS}},
            "headers": {"Cache-Control": {"schema": {"type": "string"}}},
        }
    }
)
def jwks() -> Any:
    response = jsonify(services().keys.jwks())
    response.headers["Cache-Control"] = "public, max-age=60"
    return response
