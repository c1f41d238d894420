"""OAuth 2.0 endpoints: token, introspection, revocation and RFC 8414 metadata.

Errors here are RFC 6749 JSON (``{"error": "invalid_client"}``), written by authlib,
not problem+json.
"""

from __future__ import annotations

from flask import Response, current_app, jsonify

from latchkey.oauth.server import (
    EXTENSION,
    INTROSPECTION_PATH,
    METADATA_PATH,
    REVOCATION_PATH,
    TOKEN_PATH,
    LatchkeyAuthorizationServer,
    metadata,
)
from latchkey.web.blueprint import Blueprint

blp = Blueprint("oauth2", __name__, description="OAuth 2.0 (client_credentials)")


def _server() -> LatchkeyAuthorizationServer:
    server: LatchkeyAuthorizationServer = current_app.extensions[EXTENSION]
    return server


@blp.record_once
def _init_server(state: object) -> None:
    app = state.app  # type: ignore[attr-defined]
    app.extensions[EXTENSION] = LatchkeyAuthorizationServer(app)


@blp.route(TOKEN_PATH, methods=["POST"])
def token() -> Response:
    response: Response = _server().create_token_response()
    return response


@blp.route(INTROSPECTION_PATH, methods=["POST"])
def introspect() -> Response:
    response: Response = _server().create_endpoint_response("introspection")
    response.headers["Cache-Control"] = "no-store"
    return response


@blp.route(REVOCATION_PATH, methods=["POST"])
def revoke() -> Response:
    response: Response = _server().create_endpoint_response("revocation")
    return response


@blp.route(METADATA_PATH, methods=["GET"])
def authorization_server_metadata() -> Response:
    response = jsonify(metadata())
    response.headers["Cache-Control"] = "public, max-age=300"
    return response
