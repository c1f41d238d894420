"""Keystone v3 endpoints translated onto Latchkey's own services.

Plain Flask views (the OpenAPI document describes the native ``/v1`` API only);
every answer, errors included, is shaped as Keystone shapes it.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, jsonify, request
from marshmallow import ValidationError
from sqlalchemy.exc import SQLAlchemyError
from werkzeug import exceptions as werkzeug_exceptions
from werkzeug.exceptions import HTTPException

from latchkey.errors import (
    AuthenticationFailed,
    AuthenticationRequired,
    Forbidden,
    InvalidRequest,
    LatchkeyError,
    MalformedRequest,
    NotFound,
)
from latchkey.identity.credentials import ApplicationCredential
from latchkey.identity.token_api import TokenRequest
from latchkey.policy.context import CallContext
from latchkey.web.attack_audit import note_denial
from latchkey.web.problems import (
    database_outage,
    handle_http_exception,
    handle_unexpected,
    retry_after_header,
)
from latchkey.web.requests import call_context, services

blp = Blueprint("keystone", __name__)

VERSION_ID = "v3.14"
VERSION_UPDATED = "2020-04-07T00:00:00Z"
MEDIA_TYPES = [{"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}]
SUBJECT_TOKEN_HEADER = "X-Subject-Token"
ACCESS_RULES_HEADER = "OpenStack-Identity-Access-Rules"
SUPPORTED_METHODS = ("password", "application_credential")
TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
    422: "Bad Request",
    429: "Too Many Requests",
    503: "Service Unavailable",
}
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


# -- errors ---------------------------------------------------------------------------


def keystone_error(status: int, message: str) -> Response:
    # Keystone answers validation failures with 400; Latchkey's 422 maps onto it.
    status = 400 if status == 422 else status
    body = {"error": {"code": status, "title": TITLES.get(status, "Error"), "message": message}}
    response = jsonify(body)
    response.status_code = status
    if status == 401:
        response.headers["WWW-Authenticate"] = f'Keystone uri="{base_url()}"'
    return response


@blp.errorhandler(LatchkeyError)
def _latchkey_error(error: LatchkeyError) -> Response:
    if isinstance(error, Forbidden):
        note_denial(error)  # the audit trail sees denials (issue 13, class 7)
    response = keystone_error(error.status, error.detail)
    response.headers.update(retry_after_header(error))
    return response


@blp.errorhandler(SQLAlchemyError)
def _database_error(error: SQLAlchemyError) -> Response:
    """The database unreachable: Keystone's 503 shape, with Retry-After (issue 15)."""
    outage = database_outage(error)
    if outage is None:
        return handle_unexpected(error)
    return _latchkey_error(outage)


@blp.errorhandler(HTTPException)
def _http_error(error: HTTPException) -> Response:
    status = error.code or 500
    if status >= 500:
        raise error
    return keystone_error(status, error.description or error.name)


def _is_keystone_path(path: str) -> bool:
    return path == "/" or path == "/v3" or path.startswith("/v3/")


@blp.app_errorhandler(werkzeug_exceptions.NotFound)
@blp.app_errorhandler(werkzeug_exceptions.MethodNotAllowed)
def _routing_error(error: HTTPException) -> Response:
    """No route, or not this method: raised before any view (so before the blueprint's
    own handlers), yet a Keystone client under /v3 still expects Keystone's shape."""
    if not _is_keystone_path(request.path):
        return handle_http_exception(error)
    response = keystone_error(error.code or 404, _ROUTING_MESSAGES.get(error.code or 404, ""))
    if isinstance(error, werkzeug_exceptions.MethodNotAllowed) and error.valid_methods:
        response.headers["Allow"] = ", ".join(sorted(error.valid_methods))
    return response


_ROUTING_MESSAGES = {
    404: "The resource could not be found.",
    405: "The method is not allowed for the requested URL.",
}


# -- helpers --------------------------------------------------------------------------


def base_url() -> str:
    """The public base URL: the configured issuer, else how the client reached us."""
    configured = services().settings.issuer
    return (configured or request.url_root).rstrip("/")


def _time(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _stable_id(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def _json_body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise MalformedRequest("the body must be a JSON object")
    return body


def _obj(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidRequest(f"{where} must be an object")
    return value


def _authenticated() -> CallContext:
    ctx = call_context()
    if ctx.auth is None:
        raise AuthenticationRequired("The request you have made requires authentication.")
    return ctx


def _version() -> dict[str, Any]:
    return {
        "id": VERSION_ID,
        "status": "stable",
        "updated": VERSION_UPDATED,
        "links": [{"rel": "self", "href": base_url() + "/v3/"}],
        "media-types": MEDIA_TYPES,
    }


# -- version discovery ----------------------------------------------------------------


@blp.route("/", methods=["GET"])
def versions() -> Response:
    response = jsonify({"versions": {"values": [_version()]}})
    response.status_code = 300
    return response


@blp.route("/v3", methods=["GET"])
@blp.route("/v3/", methods=["GET"])
def version() -> Response:
    return jsonify({"version": _version()})


# -- catalog ----------------------------------------------------------------------------


def _catalog() -> list[dict[str, Any]]:
    """The service catalog in Keystone's shape, always with an ``identity`` entry:
    built once per catalog view (refreshed every few seconds, not a query per
    token) and base URL, not once per validation; never modified once built."""
    identity_url = base_url() + "/v3"
    view = services().catalog.view()
    built = _BUILT_CATALOG.get(identity_url)
    if built is None or built[0] is not view:
        if len(_BUILT_CATALOG) >= 16:  # one or two base URLs in practice (Host header)
            _BUILT_CATALOG.clear()
        built = _BUILT_CATALOG[identity_url] = (view, _build_catalog(view.services, identity_url))
    return built[1]


# identity URL -> (the catalog view it was built from, the catalog in Keystone's shape)
_BUILT_CATALOG: dict[str, tuple[Any, list[dict[str, Any]]]] = {}


def _build_catalog(
    catalog_services: Iterable[tuple[str, str, str, tuple[dict[str, Any], ...]]], identity_url: str
) -> list[dict[str, Any]]:
    catalog = []
    seen_identity = False
    for service_id, service_type, service_name, service_endpoints in catalog_services:
        endpoints = [
            {
                "id": _stable_id(service_id, e.get("interface", ""), e.get("url", "")),
                "interface": e.get("interface", "public"),
                "region": e.get("region"),
                "region_id": e.get("region"),
                "url": e.get("url", ""),
            }
            for e in service_endpoints
        ]
        if service_type == "identity":
            seen_identity = True
            if not endpoints:
                endpoints = _identity_endpoints(service_id, identity_url)
        # Services without endpoints are listed too, as Keystone lists them:
        # keystonemiddleware refuses every access-ruled token unless its own
        # service_type is in the token's catalog.
        catalog.append(
            {"id": service_id, "type": service_type, "name": service_name, "endpoints": endpoints}
        )
    if not seen_identity:
        catalog.insert(
            0,
            {
                "id": "identity",
                "type": "identity",
                "name": "keystone",
                "endpoints": _identity_endpoints("identity", identity_url),
            },
        )
    return catalog


def _identity_endpoints(service_id: str, url: str) -> list[dict[str, Any]]:
    return [
        {
            "id": _stable_id(service_id, interface, url),
            "interface": interface,
            "region": None,
            "region_id": None,
            "url": url,
        }
        for interface in ("public", "internal", "admin")
    ]


# -- tokens -----------------------------------------------------------------------------


def _role_refs(names: list[str]) -> list[dict[str, Any]]:
    ids = services().roles.ids_by_name(names)
    return [{"id": ids.get(name, name), "name": name} for name in names]


def _token_body(claims: dict[str, Any], with_catalog: bool) -> dict[str, Any]:
    token = _token_core(claims)
    if with_catalog and ("project" in claims or "domain" in claims):
        return {**token, "catalog": _catalog()}
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
        "expires_at": _time(datetime.fromtimestamp(claims["exp"], UTC)),
        "issued_at": _time(
            datetime.fromtimestamp(claims.get("iat_ms", claims["iat"] * 1000) / 1000, UTC)
        ),
        "methods": list(claims.get("methods") or []),
        "audit_ids": [claims["jti"]],
        "user": {
            "id": user["id"],
            "name": user["name"],
            "domain": {"id": user["domain"]["id"], "name": user["domain"]["name"]},
            "password_expires_at": None,
        },
        "roles": _role_refs(list(claims.get("roles") or [])),
    }
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
    credential = claims.get("application_credential")
    if credential:
        token["application_credential"] = {
            "id": credential["id"],
            "name": credential.get("name"),
            "restricted": bool(credential.get("restricted", True)),
        }
        if credential.get("access_rules"):
            token["application_credential"]["access_rules"] = [
                _access_rule(rule) for rule in credential["access_rules"]
            ]
    return token


def _native_request(body: dict[str, Any]) -> dict[str, Any]:
    """Keystone's ``{"auth": {"identity": …, "scope": …}}`` as Latchkey's TokenRequest."""
    auth = _obj(body.get("auth"), "auth")
    identity = _obj(auth.get("identity"), "auth.identity")
    methods = identity.get("methods")
    if not isinstance(methods, list) or not methods:
        raise InvalidRequest("auth.identity.methods must be a non-empty list")
    if len(methods) != 1 or methods[0] not in SUPPORTED_METHODS:
        raise AuthenticationFailed(
            "Latchkey supports exactly one of: " + ", ".join(SUPPORTED_METHODS)
        )
    method = methods[0]
    if method == "password":
        user = dict(_obj(_obj(identity.get("password"), "password").get("user"), "password.user"))
        password = user.pop("password", None)
        native_auth: dict[str, Any] = {"password": {"user": user, "password": password}}
    else:
        native_auth = {
            "application_credential": _obj(
                identity.get("application_credential"), "application_credential"
            )
        }
    native: dict[str, Any] = {"auth": native_auth}
    scope = auth.get("scope")
    if scope is not None and scope != "unscoped":
        scope = _obj(scope, "auth.scope")
        if "system" in scope or "OS-TRUST:trust" in scope:
            raise InvalidRequest("Latchkey scopes tokens to a project or a domain only")
        native["scope"] = scope
    try:
        loaded: dict[str, Any] = TokenRequest().load(native)
    except ValidationError as exc:
        raise InvalidRequest(f"the authentication request is not valid: {exc.messages}") from exc
    return loaded


@blp.route("/v3/auth/tokens", methods=["POST"])
def issue_token() -> Any:
    data = _native_request(_json_body())
    method = data["auth"]
    ctx = call_context(authenticate=False)
    authentication = services().authentication
    if "application_credential" in method:
        credential = dict(method["application_credential"])
        secret = credential.pop("secret")
        issued = authentication.application_credential(ctx, credential, secret, data.get("scope"))
    else:
        issued = authentication.password(
            ctx, method["password"]["user"], method["password"]["password"], data.get("scope")
        )
    body = {"token": _token_body(issued.claims, "nocatalog" not in request.args)}
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
    ctx = _authenticated()
    claims = services().tokens.check_subject(ctx, _subject_token())
    credential = claims.get("application_credential") or {}
    if credential.get("access_rules") and ACCESS_RULES_HEADER not in request.headers:
        # Keystone: a caller that does not announce access-rule support never learns of
        # a token it could not restrict.
        raise NotFound("Could not find token.")
    response = jsonify({"token": _token_body(claims, "nocatalog" not in request.args)})
    response.headers[SUBJECT_TOKEN_HEADER] = request.headers[SUBJECT_TOKEN_HEADER]
    response.headers.update(NO_STORE)
    return response


@blp.route("/v3/auth/tokens", methods=["DELETE"])
def revoke_token() -> Any:
    services().tokens.revoke(_authenticated(), _subject_token())
    return Response(status=204)


@blp.route("/v3/auth/projects", methods=["GET"])
def auth_projects() -> Any:
    ctx = _authenticated()
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


@blp.route("/v3/auth/catalog", methods=["GET"])
def auth_catalog() -> Any:
    _authenticated()
    return jsonify(
        {
            "catalog": _catalog(),
            "links": {"self": base_url() + "/v3/auth/catalog", "previous": None, "next": None},
        }
    )


# -- application credentials and access rules ------------------------------------------


def _access_rule(rule: dict[str, str]) -> dict[str, str]:
    return {
        "id": _stable_id(rule["service"], rule["method"], rule["path"]),
        "service": rule["service"],
        "method": rule["method"],
        "path": rule["path"],
    }


def _credential_body(credential: ApplicationCredential) -> dict[str, Any]:
    base = base_url()
    return {
        "id": credential.id,
        "name": credential.name,
        "description": credential.description or None,
        "user_id": credential.user_id,
        "project_id": credential.project_id,
        "expires_at": _time(credential.expires_at),
        "unrestricted": credential.unrestricted,
        "roles": [dict(r, domain_id=None) for r in _role_refs(list(credential.roles))],
        "access_rules": [_access_rule(rule) for rule in credential.access_rules or []],
        "system": None,
        "links": {
            "self": f"{base}/v3/users/{credential.user_id}/application_credentials/{credential.id}"
        },
    }


def _user_rules(ctx: CallContext, user_id: str) -> dict[str, dict[str, str]]:
    rules: dict[str, dict[str, str]] = {}
    for credential in services().credentials.list_credentials(ctx, user_id):
        for rule in credential.access_rules or []:
            shaped = _access_rule(rule)
            rules[shaped["id"]] = shaped
    return rules


def _native_credential(ctx: CallContext, user_id: str, body: dict[str, Any]) -> dict[str, Any]:
    assert ctx.auth is not None
    data = _obj(body.get("application_credential"), "application_credential")
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidRequest("application_credential.name is required")
    if data.get("secret") is not None:
        raise InvalidRequest("Latchkey generates application credential secrets; omit 'secret'")
    if ctx.auth.project_id is None:
        raise InvalidRequest("create application credentials with a project-scoped token")
    native: dict[str, Any] = {
        "name": name,
        "project_id": ctx.auth.project_id,
        "unrestricted": bool(data.get("unrestricted", False)),
    }
    description = data.get("description")
    if description is not None:
        if not isinstance(description, str):
            raise InvalidRequest("description must be a string")
        native["description"] = description
    expires_at = data.get("expires_at")
    if expires_at is not None:
        try:
            parsed = datetime.fromisoformat(str(expires_at))
        except ValueError as exc:
            raise InvalidRequest("expires_at must be an ISO 8601 time") from exc
        native["expires_at"] = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    roles = data.get("roles")
    if roles is not None and not isinstance(roles, list):
        raise InvalidRequest("roles must be a list")
    if roles:  # Keystone: none or [] means every role the caller holds on the project
        native["roles"] = []
        for role in roles:
            ref = _obj(role, "roles[]")
            value = ref.get("id") or ref.get("name")
            if not isinstance(value, str) or not value:
                raise InvalidRequest("each role needs an id or a name")
            native["roles"].append(value)
    rules = data.get("access_rules")
    if rules is not None:
        if not isinstance(rules, list):
            raise InvalidRequest("access_rules must be a list")
        known: dict[str, dict[str, str]] | None = None
        native["access_rules"] = []
        for rule in rules:
            rule = _obj(rule, "access_rules[]")
            if set(rule) == {"id"}:
                known = known if known is not None else _user_rules(ctx, user_id)
                if rule["id"] not in known:
                    raise NotFound(f"Could not find access rule: {rule['id']}.")
                rule = known[rule["id"]]
            native["access_rules"].append({k: rule.get(k) for k in ("service", "method", "path")})
    return native


@blp.route("/v3/users/<user_id>/application_credentials", methods=["POST"])
def create_credential(user_id: str) -> Any:
    ctx = _authenticated()
    assert ctx.auth is not None
    # Refused before the body is read, as on the native door (the enforcer's rule).
    services().enforcer.refuse_restricted(ctx.auth, "identity:application_credential:create")
    native = _native_credential(ctx, user_id, _json_body())
    created = services().credentials.create(ctx, user_id, native)
    body = _credential_body(created.credential)
    body["secret"] = created.secret_value
    response = jsonify({"application_credential": body})
    response.status_code = 201
    response.headers.update(NO_STORE)
    return response


@blp.route("/v3/users/<user_id>/application_credentials", methods=["GET"])
def list_credentials(user_id: str) -> Any:
    name = request.args.get("name") or None
    found = services().credentials.list_credentials(_authenticated(), user_id, name)
    return jsonify(
        {
            "application_credentials": [_credential_body(c) for c in found],
            "links": {
                "self": f"{base_url()}/v3/users/{user_id}/application_credentials",
                "previous": None,
                "next": None,
            },
        }
    )


@blp.route("/v3/users/<user_id>/application_credentials/<credential_id>", methods=["GET"])
def get_credential(user_id: str, credential_id: str) -> Any:
    # Looked up by id only: a name answers 404, as Keystone does, and openstackclient
    # then lists by name and deletes by id.
    credential = services().credentials.get(_authenticated(), user_id, credential_id)
    return jsonify({"application_credential": _credential_body(credential)})


@blp.route("/v3/users/<user_id>/application_credentials/<credential_id>", methods=["DELETE"])
def delete_credential(user_id: str, credential_id: str) -> Any:
    services().credentials.delete(_authenticated(), user_id, credential_id)
    return Response(status=204)


@blp.route("/v3/users/<user_id>/access_rules", methods=["GET"])
def list_access_rules(user_id: str) -> Any:
    rules = _user_rules(_authenticated(), user_id)
    return jsonify(
        {
            "access_rules": sorted(rules.values(), key=lambda r: r["id"]),
            "links": {
                "self": f"{base_url()}/v3/users/{user_id}/access_rules",
                "previous": None,
                "next": None,
            },
        }
    )


@blp.route("/v3/users/<user_id>/access_rules/<rule_id>", methods=["GET"])
def get_access_rule(user_id: str, rule_id: str) -> Any:
    rules = _user_rules(_authenticated(), user_id)
    if rule_id not in rules:
        raise NotFound(f"Could not find access rule: {rule_id}.")
    return jsonify({"access_rule": rules[rule_id]})


@blp.route("/v3/users/<user_id>/access_rules/<rule_id>", methods=["DELETE"])
def delete_access_rule(user_id: str, rule_id: str) -> Any:
    # Latchkey keeps a rule on the credentials that use it, not as an object of its
    # own: it goes with the last of them. So a rule that exists is always in use, and
    # Keystone refuses to delete a rule in use (403); a rule no credential uses any
    # longer is already gone (404, which clients such as Terraform read as deleted).
    if rule_id in _user_rules(_authenticated(), user_id):
        raise Forbidden(
            "May not delete access rule in use: delete the application credentials that use it.",
            code="access_rule_in_use",
        )
    raise NotFound(f"Could not find access rule: {rule_id}.")
