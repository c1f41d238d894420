"""Keystone's ``/v3/ec2tokens`` and ``/v3/s3tokens``: a token for a request signed
with an EC2 key. Reached without a token (PUBLIC_ENDPOINTS), throttled like every
door that checks a secret (latchkey/frontdoors/http/throttling.py)."""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify, request

from latchkey.errors import AuthenticationFailed
from latchkey.frontdoors.http.requests import call_context, services
from latchkey.frontdoors.keystone.common import (
    NO_STORE,
    SUBJECT_TOKEN_HEADER,
    blp,
    json_body,
)
from latchkey.frontdoors.keystone.tokens import token_body
from latchkey.tokens.service import IssuedToken

# Keystone checks no policy on these: the signature is the authentication.
POLICY_NAMES: dict[str, str] = {}


def signed_credentials(body: dict[str, Any]) -> dict[str, Any]:
    """``credentials`` (Keystone's name) or ``ec2Credentials`` (the older one)."""
    found = body.get("credentials", body.get("ec2Credentials"))
    if not isinstance(found, dict):
        raise AuthenticationFailed("The request you have made requires authentication.")
    return found


def _answer(issued: IssuedToken) -> Response:
    response = jsonify({"token": token_body(issued.claims, "nocatalog" not in request.args)})
    response.headers[SUBJECT_TOKEN_HEADER] = issued.token
    response.headers.update(NO_STORE)
    return response


@blp.route("/v3/ec2tokens", methods=["POST"])
def ec2_tokens() -> Any:
    credentials = signed_credentials(json_body())
    ctx = call_context(authenticate=False)
    return _answer(services().keystone_credentials.ec2_token(ctx, credentials))


@blp.route("/v3/s3tokens", methods=["POST"])
def s3_tokens() -> Any:
    credentials = signed_credentials(json_body())
    ctx = call_context(authenticate=False)
    return _answer(services().keystone_credentials.s3_token(ctx, credentials))
