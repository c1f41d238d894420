"""OAuth 2.0 (docs/oauth.md): client_credentials with an application credential as client,
introspection (RFC 7662), revocation (RFC 7009) and metadata (RFC 8414).

The Flask test client covers the rules on both backends; authlib's own OAuth 2.0 client
(``OAuth2Session``) runs against the app served over HTTP on SQLite.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata
from flask import Flask
from joserfc import jwt
from joserfc.jwk import KeySet
from werkzeug.serving import make_server
from werkzeug.test import TestResponse

from tests.conftest import ADMIN_PASSWORD, Api, build_app, make_settings, reset_database

TOKEN_URL = "/oauth2/token"
INTROSPECT_URL = "/oauth2/introspect"
REVOKE_URL = "/oauth2/revoke"
PASSWORD = "person-password-1"


# -- helpers ----------------------------------------------------------------------------


def basic(client_id: str, secret: str) -> dict[str, str]:
    raw = f"{client_id}:{secret}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return decoded


def credential_for(
    api: Api, admin: str, *roles: str, credential_roles: list[str] | None = None
) -> dict[str, Any]:
    """A new person holding ``roles`` on a new project, and an application credential."""
    suffix = secrets.token_hex(3)
    project = api.ok("POST", "/v1/projects", admin, {"name": f"p-{suffix}"})
    user = api.ok("POST", "/v1/users", admin, {"name": f"u-{suffix}", "password": PASSWORD})
    for role in roles or ("member",):
        api.ok("PUT", f"/v1/projects/{project['id']}/users/{user['id']}/roles/{role}", admin)
    token = api.login(f"u-{suffix}", PASSWORD, project=project["name"])
    body: dict[str, Any] = {"name": "oauth", "project_id": project["id"]}
    if credential_roles is not None:
        body["roles"] = credential_roles
    response = api.call("POST", f"/v1/users/{user['id']}/application-credentials", token, body)
    assert response.status_code == 201, response.get_json()
    created: dict[str, Any] = response.get_json()
    return created


def token_request(api: Api, cred: dict[str, Any], **form: str) -> TestResponse:
    form.setdefault("grant_type", "client_credentials")
    return api.client.post(TOKEN_URL, data=form, headers=basic(cred["id"], cred["secret"]))


def access_token(api: Api, cred: dict[str, Any], **form: str) -> str:
    response = token_request(api, cred, **form)
    assert response.status_code == 200, response.get_json()
    return str(response.get_json()["access_token"])


def introspect(api: Api, cred: dict[str, Any], token: str) -> dict[str, Any]:
    response = api.client.post(
        INTROSPECT_URL, data={"token": token}, headers=basic(cred["id"], cred["secret"])
    )
    assert response.status_code == 200, response.get_json()
    assert response.headers["Cache-Control"] == "no-store"
    body: dict[str, Any] = response.get_json()
    return body


def validity(api: Api, admin: str, token: str) -> int:
    response = api.call("GET", "/v1/auth/tokens", admin, headers={"X-Subject-Token": token})
    return response.status_code


# -- token endpoint ---------------------------------------------------------------------


def test_client_credentials_basic_and_post_issue_the_native_token(
    api: Api, admin_token: str
) -> None:
    cred = credential_for(api, admin_token)
    response = token_request(api, cred)
    assert response.status_code == 200, response.get_json()
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    assert body["token_type"] == "Bearer"
    assert 0 < body["expires_in"] <= 3600 * 24
    assert body["scope"] == "member reader"
    assert "refresh_token" not in body

    # The same JWT (RFC 9068 profile) /v1/auth/tokens issues for the credential.
    native = api.client.post(
        "/v1/auth/tokens",
        json={"auth": {"application_credential": {"id": cred["id"], "secret": cred["secret"]}}},
    ).get_json()["token"]
    oauth_claims, native_claims = claims_of(body["access_token"]), claims_of(native)
    for key in ("iss", "aud", "sub", "client_id", "roles", "project", "application_credential"):
        assert oauth_claims[key] == native_claims[key], key
    assert oauth_claims["client_id"] == cred["id"]
    header = json.loads(base64.urlsafe_b64decode(body["access_token"].split(".")[0] + "=="))
    assert header["typ"] == "at+jwt" and header["alg"] == "ES256"

    validated = api.call(
        "GET", "/v1/auth/tokens", admin_token, headers={"X-Subject-Token": body["access_token"]}
    )
    assert validated.status_code == 200
    assert validated.get_json()["jti"] == oauth_claims["jti"]

    posted = api.client.post(
        TOKEN_URL,
        data={
            "grant_type": "client_credentials",
            "client_id": cred["id"],
            "client_secret": cred["secret"],
        },
    )
    assert posted.status_code == 200, posted.get_json()
    assert validity(api, admin_token, posted.get_json()["access_token"]) == 200


def test_issuance_is_audited_like_a_credential_login(api: Api, admin_token: str) -> None:
    cred = credential_for(api, admin_token)
    token = access_token(api, cred)
    events = api.ok("GET", "/v1/audit/events?limit=1000", admin_token)["events"]
    issued = [e for e in events if (e.get("details") or {}).get("jti") == claims_of(token)["jti"]]
    assert [(e["action"], e["outcome"]) for e in issued] == [
        ("identity:auth:application_credential", "success")
    ]


def test_wrong_or_missing_client_authentication_is_invalid_client(
    api: Api, admin_token: str
) -> None:
    cred = credential_for(api, admin_token)
    for headers in (basic(cred["id"], "lkac_wrong"), basic("no-such-credential", "x"), {}):
        response = api.client.post(
            TOKEN_URL, data={"grant_type": "client_credentials"}, headers=headers
        )
        assert response.status_code == 401, response.get_json()
        assert response.get_json()["error"] == "invalid_client"
        assert response.headers["Content-Type"].startswith("application/json")
    posted = api.client.post(
        TOKEN_URL,
        data={"grant_type": "client_credentials", "client_id": cred["id"], "client_secret": "no"},
    )
    assert posted.status_code == 401 and posted.get_json()["error"] == "invalid_client"
    too_long = api.client.post(
        TOKEN_URL, data={"grant_type": "client_credentials"}, headers=basic("x" * 500, "y")
    )
    assert too_long.status_code == 401 and too_long.get_json()["error"] == "invalid_client"


def test_other_grant_types_are_unsupported(api: Api, admin_token: str) -> None:
    cred = credential_for(api, admin_token)
    for grant in ("password", "authorization_code", "refresh_token", ""):
        response = token_request(api, cred, grant_type=grant)
        assert response.status_code == 400, response.get_json()
        assert response.get_json()["error"] == "unsupported_grant_type"


def test_scope_only_narrows(api: Api, admin_token: str) -> None:
    cred = credential_for(api, admin_token, "member")  # carries member, reader
    narrowed = token_request(api, cred, scope="reader")
    assert narrowed.status_code == 200, narrowed.get_json()
    assert narrowed.get_json()["scope"] == "reader"
    token = narrowed.get_json()["access_token"]
    assert claims_of(token)["roles"] == ["reader"]
    checked = api.call("GET", "/v1/auth/tokens", admin_token, headers={"X-Subject-Token": token})
    assert checked.status_code == 200 and checked.get_json()["roles"] == ["reader"]

    # A role brings the roles it implies, within what the credential carries.
    implied = token_request(api, cred, scope="member")
    assert claims_of(implied.get_json()["access_token"])["roles"] == ["member", "reader"]
    same = token_request(api, cred, scope="reader member")
    assert same.get_json()["scope"] == "member reader"

    for wider in ("admin", "reader admin", "service", "no-such-role"):
        refused = token_request(api, cred, scope=wider)
        assert refused.status_code == 400, refused.get_json()
        assert refused.get_json()["error"] == "invalid_scope"
        assert "access_token" not in refused.get_json()


# -- introspection ----------------------------------------------------------------------


def test_introspection_of_own_tokens(api: Api, admin_token: str) -> None:
    cred = credential_for(api, admin_token)
    token = access_token(api, cred)
    claims = claims_of(token)
    body = introspect(api, cred, token)
    assert body["active"] is True
    assert body["sub"] == claims["sub"] and body["client_id"] == cred["id"]
    assert body["exp"] == claims["exp"] and body["iat"] == claims["iat"]
    assert body["iss"] == claims["iss"] and body["aud"] == claims["aud"]
    assert body["scope"] == "member reader" and body["token_type"] == "Bearer"

    assert introspect(api, cred, "not-a-token") == {"active": False}
    assert introspect(api, cred, token[:-4] + "AAAA") == {"active": False}
    revoked = api.call("DELETE", "/v1/auth/tokens", admin_token, headers={"X-Subject-Token": token})
    assert revoked.status_code == 204
    assert introspect(api, cred, token) == {"active": False}


def test_introspection_of_other_tokens_needs_the_service_role(api: Api, admin_token: str) -> None:
    owner = credential_for(api, admin_token)
    other = credential_for(api, admin_token)
    relying = credential_for(api, admin_token, "service", credential_roles=["service"])
    token = access_token(api, owner)
    assert introspect(api, other, token) == {"active": False}
    seen = introspect(api, relying, token)
    assert seen["active"] is True and seen["client_id"] == owner["id"]
    # A password token too: its client_id is the user.
    assert introspect(api, relying, admin_token)["active"] is True
    assert introspect(api, owner, admin_token) == {"active": False}


def test_introspection_needs_client_authentication(api: Api, admin_token: str) -> None:
    cred = credential_for(api, admin_token)
    token = access_token(api, cred)
    for headers in ({}, basic(cred["id"], "lkac_wrong")):
        response = api.client.post(INTROSPECT_URL, data={"token": token}, headers=headers)
        assert response.status_code == 401, response.get_json()
        assert response.get_json()["error"] == "invalid_client"
    missing = api.client.post(INTROSPECT_URL, data={}, headers=basic(cred["id"], cred["secret"]))
    assert missing.status_code == 400 and missing.get_json()["error"] == "invalid_request"
    # A bearer token is not client authentication.
    bearer = api.call("POST", INTROSPECT_URL, token, data={"token": token})
    assert bearer.status_code == 401


# -- revocation -------------------------------------------------------------------------


def test_revocation_by_the_client(api: Api, admin_token: str) -> None:
    cred = credential_for(api, admin_token)
    token = access_token(api, cred)
    response = api.client.post(
        REVOKE_URL, data={"token": token}, headers=basic(cred["id"], cred["secret"])
    )
    assert response.status_code == 200, response.get_json()
    assert validity(api, admin_token, token) == 404
    assert introspect(api, cred, token) == {"active": False}
    # Again, or an unknown token: still 200 (RFC 7009 section 2.2).
    for again in (token, "garbage", token[:-4] + "AAAA"):
        repeat = api.client.post(
            REVOKE_URL, data={"token": again}, headers=basic(cred["id"], cred["secret"])
        )
        assert repeat.status_code == 200
    # Another credential's token may not be revoked by this client.
    other = credential_for(api, admin_token)
    theirs = access_token(api, other)
    refused = api.client.post(
        REVOKE_URL, data={"token": theirs}, headers=basic(cred["id"], cred["secret"])
    )
    assert refused.status_code == 400 and refused.get_json()["error"] == "invalid_grant"
    assert validity(api, admin_token, theirs) == 200
    unauthenticated = api.client.post(REVOKE_URL, data={"token": theirs})
    assert unauthenticated.status_code == 401
    assert unauthenticated.get_json()["error"] == "invalid_client"


# -- metadata ---------------------------------------------------------------------------


def test_authorization_server_metadata(app: Flask, api: Api) -> None:
    response = api.client.get("/.well-known/oauth-authorization-server")
    assert response.status_code == 200
    meta = response.get_json()
    issuer = app.extensions["latchkey"].settings.effective_issuer
    assert meta["issuer"] == issuer
    assert meta["token_endpoint"] == issuer + TOKEN_URL
    assert meta["introspection_endpoint"] == issuer + INTROSPECT_URL
    assert meta["revocation_endpoint"] == issuer + REVOKE_URL
    assert meta["jwks_uri"] == issuer + "/.well-known/jwks.json"
    assert meta["grant_types_supported"] == ["client_credentials"]
    methods = ["client_secret_basic", "client_secret_post"]
    for key in ("token", "introspection", "revocation"):
        assert meta[f"{key}_endpoint_auth_methods_supported"] == methods
    # authlib's RFC 8414 checks, on the same document served under an https issuer;
    # response_types_supported is [] on purpose: there is no authorization endpoint.
    secure = {
        k: v.replace(issuer, "https://id.example") for k, v in meta.items() if isinstance(v, str)
    }
    document = AuthorizationServerMetadata({**meta, **secure})
    for key in AuthorizationServerMetadata.REGISTRY_KEYS:
        if key != "response_types_supported":
            getattr(document, f"validate_{key}")()


# -- authlib's client over HTTP -----------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Flask]]:
    home: Path = tmp_path_factory.mktemp("oauth-served")
    app = build_app(make_settings(home, f"sqlite:///{home / 'latchkey.db'}"))
    reset_database(app)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", app
    server.shutdown()


@pytest.fixture
def served_cred(served: tuple[str, Flask]) -> dict[str, Any]:
    api = Api(served[1].test_client())
    return credential_for(api, api.login("admin", ADMIN_PASSWORD, project="admin"))


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
def test_authlib_client_credentials_introspection_and_revocation(
    served: tuple[str, Flask], served_cred: dict[str, Any], method: str
) -> None:
    base, _ = served
    meta = requests.get(f"{base}/.well-known/oauth-authorization-server", timeout=10).json()
    session = OAuth2Session(
        served_cred["id"],
        served_cred["secret"],
        token_endpoint_auth_method=method,
        revocation_endpoint_auth_method=method,
    )
    token = session.fetch_token(base + TOKEN_URL, grant_type="client_credentials")
    assert token["token_type"] == "Bearer" and token["expires_in"] > 0
    access = token["access_token"]

    # The token works as a bearer token on Latchkey's own API...
    checked = session.get(base + "/v1/auth/tokens", headers={"X-Subject-Token": access}, timeout=10)
    assert checked.status_code == 200, checked.text
    assert checked.json()["client_id"] == served_cred["id"]

    # ... and verifies offline against the JWKS from the metadata.
    assert meta["jwks_uri"].endswith("/.well-known/jwks.json")
    jwks = requests.get(base + "/.well-known/jwks.json", timeout=10).json()
    decoded = jwt.decode(access, KeySet.import_key_set(jwks), algorithms=["ES256"])
    assert decoded.header["typ"] == "at+jwt"
    assert decoded.claims["client_id"] == served_cred["id"]

    introspected = session.introspect_token(base + INTROSPECT_URL, token=access)
    assert introspected.status_code == 200
    assert introspected.json()["active"] is True
    assert introspected.json()["client_id"] == served_cred["id"]

    revoked = session.revoke_token(base + REVOKE_URL, token=access)
    assert revoked.status_code == 200, revoked.text
    assert session.introspect_token(base + INTROSPECT_URL, token=access).json() == {"active": False}
    refused = requests.get(
        base + "/v1/auth/tokens",
        headers={"Authorization": f"Bearer {access}", "X-Subject-Token": access},
        timeout=10,
    )
    assert refused.status_code == 401


def test_authlib_client_sees_oauth_errors(
    served: tuple[str, Flask], served_cred: dict[str, Any]
) -> None:
    base, _ = served
    wrong = OAuth2Session(served_cred["id"], "lkac_not-the-secret")
    with pytest.raises(Exception, match="invalid_client"):
        wrong.fetch_token(base + TOKEN_URL, grant_type="client_credentials")
    right = OAuth2Session(served_cred["id"], served_cred["secret"], scope="admin")
    with pytest.raises(Exception, match="invalid_scope"):
        right.fetch_token(base + TOKEN_URL, grant_type="client_credentials")
    narrow = OAuth2Session(served_cred["id"], served_cred["secret"], scope="reader")
    token = narrow.fetch_token(base + TOKEN_URL, grant_type="client_credentials")
    assert token["scope"] == "reader"


def test_odd_input_gets_oauth_errors_never_5xx(api: Api, admin_token: str) -> None:
    cred = credential_for(api, admin_token)
    odd_ids = ["\x00", "a\x00b", "é" * 10, " ", "x" * 65]
    for client_id in odd_ids:
        response = api.client.post(
            TOKEN_URL,
            data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": "s"},
        )
        assert response.status_code == 401, (client_id, response.get_json())
    for token in ("\x00", "a.b.c", "e" * 100_000):
        body = introspect(api, cred, token)
        assert body == {"active": False}
        revoked = api.client.post(
            REVOKE_URL, data={"token": token}, headers=basic(cred["id"], cred["secret"])
        )
        assert revoked.status_code == 200
    raw = api.client.post(  # invalid UTF-8 (an encoded lone surrogate) in the form
        TOKEN_URL,
        data=b"grant_type=client_credentials&client_id=%ED%A0%80&client_secret=%ED%A0%80",
        content_type="application/x-www-form-urlencoded",
    )
    assert raw.status_code == 401 and raw.get_json()["error"] == "invalid_client"
    json_body = api.client.post(TOKEN_URL, json={"grant_type": "client_credentials"})
    assert json_body.status_code == 400
    assert json_body.get_json()["error"] == "unsupported_grant_type"
    assert api.client.get(TOKEN_URL).status_code == 405
