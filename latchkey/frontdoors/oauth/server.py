"""authlib's authorization server, wired to application credentials and Latchkey tokens.

* Clients are application credentials (``client_id`` = credential id, ``client_secret``
  = one of its live secrets), by ``client_secret_basic`` or ``client_secret_post``.
* ``client_credentials`` authenticates the credential through
  ``Authentication.application_credential``: one secret check, the usual audit record,
  and the very token ``POST /v1/auth/tokens`` would issue. ``scope`` (role names) may
  only narrow that token's roles.
* Introspection (RFC 7662) and revocation (RFC 7009) authenticate the caller with
  ``ApplicationCredentials.verify`` (failures audited like a login) and issue nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.integrations.flask_oauth2.requests import FlaskOAuth2Payload, FlaskOAuth2Request
from authlib.oauth2.rfc6749 import ClientMixin, InvalidScopeError, OAuth2Request
from authlib.oauth2.rfc6749.grants import ClientCredentialsGrant
from authlib.oauth2.rfc6749.util import scope_to_list
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7662 import IntrospectionEndpoint
from flask import Flask, Request
from flask import request as flask_request

from latchkey.errors import AuthenticationFailed, Forbidden
from latchkey.frontdoors.http.requests import call_context, services
from latchkey.policy.context import AuthContext
from latchkey.policy.enforcer import Target
from latchkey.tokens.keys import ALGORITHM
from latchkey.tokens.service import TOKEN_TYPE, IssuedToken, TokenInvalid, sign

# Introspecting a token issued to another client (docs/api.md, docs/oauth.md).
INTROSPECT_OTHERS = "identity:token:introspect"
TOKEN_PATH = "/oauth2/token"
INTROSPECTION_PATH = "/oauth2/introspect"
REVOCATION_PATH = "/oauth2/revoke"
METADATA_PATH = "/.well-known/oauth-authorization-server"
JWKS_PATH = "/.well-known/jwks.json"
AUTH_METHODS = ["client_secret_basic", "client_secret_post"]
GRANT_TYPES = ["client_credentials"]
MAX_CLIENT_ID_LENGTH = 64  # credential ids are short; longer ones never reach the database
EXTENSION = "latchkey_oauth"


class CredentialClient(ClientMixin):
    """An application credential acting as an OAuth client.

    ``issue`` (the token endpoint): checking the secret *is* the login and yields the
    token. Elsewhere the secret is only verified.
    """

    def __init__(self, client_id: str, issue: bool, malformed: bool = False) -> None:
        self.client_id = client_id
        self._issue = issue
        self._malformed = malformed
        self.issued: IssuedToken | None = None
        # Introspection and revocation: who this client acts as, once its secret checked.
        self.caller: AuthContext | None = None

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        return None

    def get_allowed_scope(self, scope: str) -> str:
        return scope

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return False

    def check_client_secret(self, client_secret: str) -> bool:
        if self._malformed:
            return False
        app_services = services()
        ctx = call_context(authenticate=False)
        try:
            if self._issue:
                self.issued = app_services.authentication.application_credential(
                    ctx, {"id": self.client_id}, client_secret, None
                )
            else:
                self.caller = app_services.authentication.credential_caller(
                    ctx, self.client_id, client_secret
                )
        except (AuthenticationFailed, Forbidden):
            return False
        return True

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method in AUTH_METHODS

    def check_response_type(self, response_type: str) -> bool:
        return False

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in GRANT_TYPES

    def may_introspect_others(self) -> bool:
        """May this client introspect tokens not issued to it? The enforcer decides, for
        the caller a token from this credential would be now."""
        if self.caller is None:
            return False
        return services().enforcer.allowed(self.caller, INTROSPECT_OTHERS, Target())


@dataclass
class ValidatedToken:
    """A Latchkey token that passed ``Tokens.validate`` (signature, claims, revocation)."""

    claims: dict[str, Any] = field(default_factory=dict)

    def is_expired(self) -> bool:
        return False  # validate() already refused expired tokens

    def is_revoked(self) -> bool:
        return False  # ... and revoked ones

    def check_client(self, client: CredentialClient) -> bool:
        return bool(self.claims.get("client_id") == client.client_id)


def _query_token(token_string: str) -> ValidatedToken | None:
    try:
        return ValidatedToken(services().tokens.validate(token_string))
    except TokenInvalid:
        return None


class CredentialGrant(ClientCredentialsGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = AUTH_METHODS

    def validate_requested_scope(self) -> None:
        """``scope``: role names, a subset of what the credential's token would carry."""
        scope = self.request.payload.scope
        if not scope:
            return
        client: CredentialClient = self.request.client
        assert client.issued is not None
        requested = set(scope_to_list(scope) or [])
        if not requested <= set(client.issued.claims["roles"]):
            # The login succeeded and was audited; the token is dropped unseen.
            raise InvalidScopeError("scope may only name roles the credential carries")


def _generate_token(
    grant_type: str,
    client: CredentialClient,
    user: Any = None,
    scope: str | None = None,
    expires_in: int | None = None,
    include_refresh_token: bool = False,
) -> dict[str, Any]:
    issued = client.issued
    assert issued is not None
    token, claims = issued.token, issued.claims
    if scope:
        token, claims = _narrowed(issued, set(scope_to_list(scope) or []))
    return {
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": max(0, int(claims["exp"] - time.time())),
        "scope": " ".join(claims["roles"]),
    }


def _narrowed(issued: IssuedToken, requested: set[str]) -> tuple[str, dict[str, Any]]:
    """The same token (same jti, expiry, audit record) carrying fewer roles: those asked
    for and the roles they imply, within what the credential carries."""
    roles = services().roles.expand_names(requested) & set(issued.claims["roles"])
    claims = {**issued.claims, "roles": sorted(roles)}
    key = services().keys.signing_key()
    header = {"alg": ALGORITHM, "typ": TOKEN_TYPE, "kid": key.kid}
    return sign(header, claims, key), claims


class LatchkeyIntrospection(IntrospectionEndpoint):
    CLIENT_AUTH_METHODS = AUTH_METHODS

    def query_token(self, token_string: str, token_type_hint: str | None) -> Any:
        return _query_token(token_string)

    def check_permission(
        self, token: ValidatedToken, client: CredentialClient, request: Any
    ) -> bool:
        return token.check_client(client) or client.may_introspect_others()

    def introspect_token(self, token: ValidatedToken) -> dict[str, Any]:
        claims = token.claims
        return {
            "active": True,
            "sub": claims["sub"],
            "client_id": claims.get("client_id"),
            "username": (claims.get("user") or {}).get("name"),
            "exp": claims["exp"],
            "iat": claims["iat"],
            "iss": claims["iss"],
            "aud": claims["aud"],
            "jti": claims["jti"],
            "scope": " ".join(claims.get("roles", [])),
            "token_type": "Bearer",
        }


class LatchkeyRevocation(RevocationEndpoint):
    CLIENT_AUTH_METHODS = AUTH_METHODS

    def query_token(self, token_string: str, token_type_hint: str | None) -> Any:
        return _query_token(token_string)

    def revoke_token(self, token: ValidatedToken, request: Any) -> None:
        app_services = services()
        claims = token.claims
        ctx = call_context(authenticate=False)
        client: CredentialClient = request.client
        assert client.caller is not None
        app_services.tokens.revoke_claims(
            ctx, claims, client.caller.user_id, client_id=client.client_id, via="oauth2"
        )


class _Request(FlaskOAuth2Request):
    """authlib refuses plain-HTTP request URLs other than loopback. Latchkey leaves TLS to
    the proxy in front of it (as for the secrets ``/v1/auth/tokens`` receives), where the
    app sees ``http://``; refusing there would only turn every call into a 500."""

    def __init__(self, request: Request) -> None:
        _, _, rest = request.url.partition("://")
        OAuth2Request.__init__(
            self, method=request.method, uri="https://" + rest, headers=request.headers
        )
        self.uri = request.url
        self._request = request
        self.payload = FlaskOAuth2Payload(request)


class LatchkeyAuthorizationServer(AuthorizationServer):
    def __init__(self, app: Flask) -> None:
        super().__init__()
        self.init_app(app, query_client=self._client_for, save_token=_no_storage)
        self.register_grant(CredentialGrant)
        self.register_endpoint(LatchkeyIntrospection)
        self.register_endpoint(LatchkeyRevocation)
        self.register_token_generator(CredentialGrant.GRANT_TYPE, _generate_token)

    def create_oauth2_request(self, request: Any) -> OAuth2Request:
        return _Request(flask_request)

    @staticmethod
    def _client_for(client_id: str) -> CredentialClient:
        # Every id gets a client, so every failure is the same 401 invalid_client: an
        # unknown id costs the same hash work and leaves the same audit record as a wrong
        # secret; an id no credential can have never reaches the database.
        usable = 0 < len(client_id) <= MAX_CLIENT_ID_LENGTH and client_id.isprintable()
        return CredentialClient(
            client_id, issue=flask_request.path == TOKEN_PATH, malformed=not usable
        )


def _no_storage(token: dict[str, Any], request: Any) -> None:
    """Tokens are self-contained JWTs: nothing to store."""


def metadata() -> dict[str, Any]:
    """RFC 8414 authorization server metadata."""
    issuer = services().settings.effective_issuer
    return {
        "issuer": issuer,
        "token_endpoint": issuer + TOKEN_PATH,
        "introspection_endpoint": issuer + INTROSPECTION_PATH,
        "revocation_endpoint": issuer + REVOCATION_PATH,
        "jwks_uri": issuer + JWKS_PATH,
        "grant_types_supported": GRANT_TYPES,
        # No authorization endpoint: no response type is supported.
        "response_types_supported": [],
        "token_endpoint_auth_methods_supported": AUTH_METHODS,
        "introspection_endpoint_auth_methods_supported": AUTH_METHODS,
        "revocation_endpoint_auth_methods_supported": AUTH_METHODS,
        # Scope values are role names, which tenants define: none are listed here.
    }
