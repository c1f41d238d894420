"""OAuth 2.0 endpoints: token, introspection, revocation and RFC 8414 metadata.

Errors here are RFC 6749 JSON (``{"error": "invalid_client"}``), written by authlib,
not problem+json.
"""

from __future__ import annotations

from typing import Any

from flask import Response, current_app, jsonify

from latchkey.frontdoors.http.blueprint import Blueprint
from latchkey.frontdoors.http.openapi import oauth_error_responses
from latchkey.frontdoors.oauth.server import (
    EXTENSION,
    INTROSPECTION_PATH,
    METADATA_PATH,
    REVOCATION_PATH,
    TOKEN_PATH,
    LatchkeyAuthorizationServer,
    metadata,
)

blp = Blueprint("oauth2", __name__, description="OAuth 2.0 (client_credentials)")


FORM = "application/x-www-form-urlencoded"
_CLIENT_FIELDS: dict[str, Any] = {
    "client_id": {
        "type": "string",
        "description": "client_secret_post: the application credential's id "
        "(or send both in HTTP basic).",
    },
    "client_secret": {"type": "string", "description": "client_secret_post: its secret."},
}
_NO_STORE = {
    "Cache-Control": {"schema": {"type": "string"}, "description": "no-store"},
    "Pragma": {"schema": {"type": "string"}, "description": "no-cache"},
}


def _form(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "required": True,
        "content": {
            FORM: {
                "schema": {
                    "type": "object",
                    "properties": {**properties, **_CLIENT_FIELDS},
                    "required": required,
                }
            }
        },
    }


def _json(description: str, schema: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": schema}},
        **extra,
    }


TOKEN_DOC: dict[str, Any] = {
    "summary": "OAuth 2.0 client_credentials grant (RFC 6749 section 4.4)",
    "requestBody": _form(
        {
            "grant_type": {"type": "string", "enum": ["client_credentials"]},
            "scope": {
                "type": "string",
                "description": "Role names, space-separated: narrows the token's roles.",
            },
        },
        ["grant_type"],
    ),
    "responses": {
        200: _json(
            "RFC 6749 section 5.1 access token response",
            {
                "type": "object",
                "required": ["access_token", "token_type", "expires_in"],
                "properties": {
                    "access_token": {"type": "string"},
                    "token_type": {"type": "string", "enum": ["Bearer"]},
                    "expires_in": {"type": "integer"},
                    "scope": {"type": "string"},
                },
            },
            headers=_NO_STORE,
        ),
        **oauth_error_responses(),
    },
}
_TOKEN_FIELDS = {
    "token": {"type": "string"},
    "token_type_hint": {"type": "string", "description": "access_token"},
}
INTROSPECT_DOC: dict[str, Any] = {
    "summary": "OAuth 2.0 token introspection (RFC 7662)",
    "requestBody": _form(_TOKEN_FIELDS, ["token"]),
    "responses": {
        200: _json(
            "RFC 7662 section 2.2 introspection response: `{active: false}` for a token "
            "that is not valid or that the client may not see",
            {
                "type": "object",
                "required": ["active"],
                "properties": {
                    "active": {"type": "boolean"},
                    "sub": {"type": "string"},
                    "client_id": {"type": "string", "nullable": True},
                    "username": {"type": "string", "nullable": True},
                    "exp": {"type": "integer"},
                    "iat": {"type": "integer"},
                    "iss": {"type": "string"},
                    "aud": {},
                    "jti": {"type": "string"},
                    "scope": {"type": "string"},
                    "token_type": {"type": "string"},
                },
            },
            headers={"Cache-Control": _NO_STORE["Cache-Control"]},
        ),
        **oauth_error_responses(),
    },
}
REVOKE_DOC: dict[str, Any] = {
    "summary": "OAuth 2.0 token revocation (RFC 7009)",
    "requestBody": _form(_TOKEN_FIELDS, ["token"]),
    "responses": {
        200: _json(
            "Revoked, or not a token this client may revoke (RFC 7009 section 2.2)",
            {"type": "object"},
        ),
        **oauth_error_responses(),
    },
}
METADATA_DOC: dict[str, Any] = {
    "summary": "OAuth 2.0 authorization server metadata (RFC 8414)",
    "responses": {
        200: _json(
            "RFC 8414 metadata",
            {
                "type": "object",
                "required": ["issuer", "token_endpoint", "jwks_uri"],
                "properties": {
                    "issuer": {"type": "string"},
                    "token_endpoint": {"type": "string"},
                    "introspection_endpoint": {"type": "string"},
                    "revocation_endpoint": {"type": "string"},
                    "jwks_uri": {"type": "string"},
                    "grant_types_supported": {"type": "array", "items": {"type": "string"}},
                    "response_types_supported": {"type": "array", "items": {"type": "string"}},
                },
            },
            headers={"Cache-Control": {"schema": {"type": "string"}}},
        )
    },
}


def _server() -> LatchkeyAuthorizationServer:
    server: LatchkeyAuthorizationServer = current_app.extensions[EXTENSION]
    return server


@blp.record_once
def _init_server(state: object) -> None:
    app = state.app  # type: ignore[attr-defined]
    app.extensions[EXTENSION] = LatchkeyAuthorizationServer(app)


@blp.route(TOKEN_PATH, methods=["POST"])
@blp.doc(**TOKEN_DOC)
def token() -> Response:
    response: Response = _server().create_token_response()
    return response


@blp.route(INTROSPECTION_PATH, methods=["POST"])
@blp.doc(**INTROSPECT_DOC)
def introspect() -> Response:
    response: Response = _server().create_endpoint_response("introspection")
    response.headers["Cache-Control"] = "no-store"
    return response


@blp.route(REVOCATION_PATH, methods=["POST"])
@blp.doc(**REVOKE_DOC)
def revoke() -> Response:
    response: Response = _server().create_endpoint_response("revocation")
    return response


@blp.route(METADATA_PATH, methods=["GET"])
@blp.doc(**METADATA_DOC)
def authorization_server_metadata() -> Response:
    response = jsonify(metadata())
    response.headers["Cache-Control"] = "public, max-age=300"
    return response
