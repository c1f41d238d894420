"""Keystone v3 tokens: issue (password, token, application credential; project, domain,
system or trust scope), validate, revoke; the projects, domains, system and catalog a
token may reach."""

from __future__ import annotations

import threading
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

from flask import Response, jsonify, request
from marshmallow import ValidationError

from latchkey.errors import (
    AuthenticationFailed,
    InvalidRequest,
    NotFound,
)
from latchkey.frontdoors.http.requests import call_context, services
from latchkey.frontdoors.http.tokens import TokenRequest
from latchkey.frontdoors.keystone.application_credentials import access_rule_body
from latchkey.frontdoors.keystone.catalog import token_catalog
from latchkey.frontdoors.keystone.common import (
    ACCESS_RULES_HEADER,
    NO_STORE,
    SUBJECT_TOKEN_HEADER,
    authenticated,
    base_url,
    blp,
    json_body,
    keystone_time,
    obj,
    role_refs,
)

SUPPORTED_METHODS = ("password", "token", "application_credential")

# Keystone's policy names for these endpoints, by the Latchkey action that decides each.
POLICY_NAMES: dict[str, str] = {
    "identity:validate_token": "identity:token:validate",
    "identity:check_token": "identity:token:validate",
    "identity:revoke_token": "identity:token:revoke",
    "identity:get_auth_projects": "identity:user:list_projects",
    "identity:get_auth_domains": "(any valid token: the caller's own)",
    "identity:get_auth_system": "(any valid token: the caller's own)",
    "identity:get_auth_catalog": "(any valid token)",
}

# -- tokens -----------------------------------------------------------------------------


def token_body(
    claims: dict[str, Any], with_catalog: bool, base: str | None = None
) -> dict[str, Any]:
    """The ``token`` of Keystone's answer; ``base``: the public base URL, when the
    caller has it (the validation lane), else ``base_url()`` of the request."""
    token = _token_core(claims)
    if with_catalog and ("project" in claims or "domain" in claims or "system" in claims):
        return {**token, "catalog": token_catalog(base=base)}
    return token


def _token_core(claims: dict[str, Any]) -> dict[str, Any]:
    """The answer's token without its catalog, built once per token (by ``jti``) and
    never modified: it depends only on the token's claims and its roles' ids, and
    a role is never renamed (deleting one revokes every token naming it)."""
    jti = claims["jti"]
    with _CORES_LOCK:
        core = _CORES.get(jti)
        if core is not None:
            _CORES.move_to_end(jti)
            return core
    core = _build_token_core(claims)
    with _CORES_LOCK:
        _CORES[jti] = core
        if len(_CORES) > CORES_KEPT:
            _CORES.popitem(last=False)
    return core


CORES_KEPT = 4096  # tokens whose answer a worker keeps (~1 KB each)
_CORES: OrderedDict[str, dict[str, Any]] = OrderedDict()
_CORES_LOCK = threading.Lock()


def _build_token_core(claims: dict[str, Any]) -> dict[str, Any]:
    user = claims["user"]
    token: dict[str, Any] = {
        "expires_at": keystone_time(datetime.fromtimestamp(claims["exp"], UTC)),
        "issued_at": keystone_time(
            datetime.fromtimestamp(claims.get("iat_ms", claims["iat"] * 1000) / 1000, UTC)
        ),
        "methods": list(claims.get("methods") or []),
        # Keystone: a rescoped token's audit ids end with its chain's first token.
        "audit_ids": [claims["jti"]]
        + ([claims["audit_chain_id"]] if claims.get("audit_chain_id") else []),
        "user": {
            "id": user["id"],
            "name": user["name"],
            "domain": {"id": user["domain"]["id"], "name": user["domain"]["name"]},
            "password_expires_at": None,
        },
    }
    if "project" in claims or "domain" in claims or "system" in claims:
        # An unscoped token carries no roles (Keystone leaves the key out).
        token["roles"] = role_refs(list(claims.get("roles") or []))
    if "project" in claims:
        project = claims["project"]
        token["project"] = {
            "id": project["id"],
            "name": project["name"],
            "domain": {"id": project["domain"]["id"], "name": project["domain"]["name"]},
        }
        token["is_admin_project"] = bool(project.get("is_admin_project"))
    elif "domain" in claims:
        token["domain"] = {"id": claims["domain"]["id"], "name": claims["domain"]["name"]}
    elif "system" in claims:
        token["system"] = {"all": True}
    trust = claims.get("trust")
    if trust:
        token["OS-TRUST:trust"] = {
            "id": trust["id"],
            "impersonation": bool(trust.get("impersonation")),
            "trustor_user": {"id": trust.get("trustor_user_id")},
            "trustee_user": {"id": trust.get("trustee_user_id")},
        }
    credential = claims.get("application_credential")
    if credential:
        token["application_credential"] = {
            "id": credential["id"],
            "name": credential.get("name"),
            "restricted": bool(credential.get("restricted", True)),
        }
        if credential.get("access_rules"):
            token["application_credential"]["access_rules"] = [
                access_rule_body(rule) for rule in credential["access_rules"]
            ]
    return token


def _native_request(body: dict[str, Any]) -> dict[str, Any]:
    """Keystone's ``{"auth": {"identity": …, "scope": …}}`` as Latchkey's TokenRequest."""
    auth = obj(body.get("auth"), "auth")
    identity = obj(auth.get("identity"), "auth.identity")
    methods = identity.get("methods")
    if not isinstance(methods, list) or not methods:
        raise InvalidRequest("auth.identity.methods must be a non-empty list")
    if any(m not in SUPPORTED_METHODS for m in methods):
        raise AuthenticationFailed("Latchkey supports: " + ", ".join(SUPPORTED_METHODS))
    native_auth: dict[str, Any] = {}
    for method in dict.fromkeys(methods):
        if method == "password":
            user = dict(obj(obj(identity.get("password"), "password").get("user"), "password.user"))
            password = user.pop("password", None)
            native_auth["password"] = {"user": user, "password": password}
        elif method == "token":
            token = obj(identity.get("token"), "token")
            native_auth["token"] = {"id": token.get("id")}
        else:
            native_auth["application_credential"] = obj(
                identity.get("application_credential"), "application_credential"
            )
    if "application_credential" in native_auth and len(native_auth) > 1:
        raise AuthenticationFailed()
    native: dict[str, Any] = {"auth": native_auth}
    scope = auth.get("scope")
    if scope == "unscoped":
        native["scope"] = {"unscoped": True}
    elif scope is not None:
        native["scope"] = obj(scope, "auth.scope")
    try:
        loaded: dict[str, Any] = TokenRequest().load(native)
    except ValidationError as exc:
        raise InvalidRequest(f"the authentication request is not valid: {exc.messages}") from exc
    return loaded


@blp.route("/v3/auth/tokens", methods=["POST"])
def issue_token() -> Any:
    data = _native_request(json_body())
    ctx = call_context(authenticate=False)
    issued = services().authentication.authenticate(ctx, data["auth"], data.get("scope"))
    body = {"token": token_body(issued.claims, "nocatalog" not in request.args)}
    response = jsonify(body)
    response.status_code = 201
    response.headers[SUBJECT_TOKEN_HEADER] = issued.token
    response.headers.update(NO_STORE)
    return response


def _subject_token() -> str:
    token = request.headers.get(SUBJECT_TOKEN_HEADER)
    if not token:
        raise NotFound("Could not find token: send it in X-Subject-Token.")
    return token


@blp.route("/v3/auth/tokens", methods=["GET"])
def validate_token() -> Any:
    ctx = authenticated()
    claims = services().tokens.check_subject(ctx, _subject_token())
    credential = claims.get("application_credential") or {}
    if credential.get("access_rules") and ACCESS_RULES_HEADER not in request.headers:
        # Keystone: a caller that does not announce access-rule support never learns of
        # a token it could not restrict.
        raise NotFound("Could not find token.")
    response = jsonify({"token": token_body(claims, "nocatalog" not in request.args)})
    response.headers[SUBJECT_TOKEN_HEADER] = request.headers[SUBJECT_TOKEN_HEADER]
    response.headers.update(NO_STORE)
    return response


@blp.route("/v3/auth/tokens", methods=["DELETE"])
def revoke_token() -> Any:
    services().tokens.revoke(authenticated(), _subject_token())
    return Response(status=204)


@blp.route("/v3/auth/projects", methods=["GET"])
def auth_projects() -> Any:
    ctx = authenticated()
    assert ctx.auth is not None
    projects = services().accounts.list_user_projects(ctx, ctx.auth.user_id)
    base = base_url()
    return jsonify(
        {
            "projects": [
                {
                    "id": p.id,
                    "name": p.name,
                    "domain_id": p.domain_id,
                    "description": p.description,
                    "enabled": p.enabled,
                    "is_domain": False,
                    "parent_id": p.domain_id,
                    "links": {"self": f"{base}/v3/projects/{p.id}"},
                }
                for p in projects
            ],
            "links": {"self": f"{base}/v3/auth/projects", "previous": None, "next": None},
        }
    )


@blp.route("/v3/auth/domains", methods=["GET"])
def auth_domains() -> Any:
    """The domains the caller may scope a token to."""
    domains = services().authentication.scopable_domains(authenticated())
    base = base_url()
    return jsonify(
        {
            "domains": [
                {
                    "id": d.id,
                    "name": d.name,
                    "description": d.description,
                    "enabled": d.enabled,
                    "links": {"self": f"{base}/v3/domains/{d.id}"},
                }
                for d in domains
            ],
            "links": {"self": f"{base}/v3/auth/domains", "previous": None, "next": None},
        }
    )


@blp.route("/v3/auth/system", methods=["GET"])
def auth_system() -> Any:
    """``[{"all": true}]`` when the caller holds a role on the system, else ``[]``."""
    held = services().authentication.has_system_role(authenticated())
    return jsonify(
        {
            "system": [{"all": True}] if held else [],
            "links": {"self": f"{base_url()}/v3/auth/system", "previous": None, "next": None},
        }
    )


@blp.route("/v3/auth/catalog", methods=["GET"])
def auth_catalog() -> Any:
    authenticated()
    return jsonify(
        {
            "catalog": token_catalog(),
            "links": {"self": base_url() + "/v3/auth/catalog", "previous": None, "next": None},
        }
    )
