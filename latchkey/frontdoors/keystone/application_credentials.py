"""Keystone v3 application credentials and access rules."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from flask import Response, jsonify, request

from latchkey.credentials.records import AccessRuleRecord, CredentialRecord
from latchkey.credentials.service import access_rule_id
from latchkey.errors import (
    InvalidRequest,
    NotFound,
)
from latchkey.frontdoors.http.requests import services
from latchkey.frontdoors.keystone.common import (
    NO_STORE,
    authenticated,
    base_url,
    blp,
    json_body,
    obj,
    role_refs,
)
from latchkey.policy.context import CallContext

# -- application credentials and access rules ------------------------------------------


def access_rule_body(rule: Mapping[str, str]) -> dict[str, str]:
    return {
        "id": access_rule_id(rule),
        "service": rule["service"],
        "method": rule["method"],
        "path": rule["path"],
    }


def _credential_body(credential: CredentialRecord) -> dict[str, Any]:
    base = base_url()
    return {
        "id": credential.id,
        "name": credential.name,
        "description": credential.description or None,
        "user_id": credential.user_id,
        "project_id": credential.project_id,
        # Keystone echoes the time as given, without a zone (tokens' times end in Z).
        "expires_at": _naive_time(credential.expires_at),
        "unrestricted": credential.unrestricted,
        "roles": [dict(r, domain_id=None) for r in role_refs(list(credential.roles))],
        "access_rules": [access_rule_body(rule) for rule in credential.access_rules or []],
        "system": None,
        "links": {
            "self": f"{base}/v3/users/{credential.user_id}/application_credentials/{credential.id}"
        },
    }


def _naive_time(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.%f")


def _rule_body(rule: AccessRuleRecord) -> dict[str, str]:
    return {"id": rule.id, "service": rule.service, "method": rule.method, "path": rule.path}


def _user_rules(ctx: CallContext, user_id: str) -> dict[str, dict[str, str]]:
    rules = services().credentials.list_access_rules(ctx, user_id)
    return {rule.id: _rule_body(rule) for rule in rules}


def _native_credential(ctx: CallContext, user_id: str, body: dict[str, Any]) -> dict[str, Any]:
    assert ctx.auth is not None
    data = obj(body.get("application_credential"), "application_credential")
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
            ref = obj(role, "roles[]")
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
            rule = obj(rule, "access_rules[]")
            if set(rule) == {"id"}:
                known = known if known is not None else _user_rules(ctx, user_id)
                if rule["id"] not in known:
                    raise NotFound(f"Could not find access rule: {rule['id']}.")
                rule = known[rule["id"]]
            native["access_rules"].append({k: rule.get(k) for k in ("service", "method", "path")})
    return native


@blp.route("/v3/users/<user_id>/application_credentials", methods=["POST"])
def create_credential(user_id: str) -> Any:
    ctx = authenticated()
    assert ctx.auth is not None
    # Refused before the body is read, as on the native door (the enforcer's rule).
    services().enforcer.refuse_restricted(ctx.auth, "identity:application_credential:create")
    native = _native_credential(ctx, user_id, json_body())
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
    found = services().credentials.list_credentials(authenticated(), user_id, name)
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
    credential = services().credentials.get(authenticated(), user_id, credential_id)
    return jsonify({"application_credential": _credential_body(credential)})


@blp.route("/v3/users/<user_id>/application_credentials/<credential_id>", methods=["DELETE"])
def delete_credential(user_id: str, credential_id: str) -> Any:
    services().credentials.delete(authenticated(), user_id, credential_id)
    return Response(status=204)


@blp.route("/v3/users/<user_id>/access_rules", methods=["GET"])
def list_access_rules(user_id: str) -> Any:
    rules = _user_rules(authenticated(), user_id)
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
    rule = services().credentials.get_access_rule(authenticated(), user_id, rule_id)
    return jsonify({"access_rule": _rule_body(rule)})


@blp.route("/v3/users/<user_id>/access_rules/<rule_id>", methods=["DELETE"])
def delete_access_rule(user_id: str, rule_id: str) -> Any:
    services().credentials.delete_access_rule(authenticated(), user_id, rule_id)
    return Response(status=204)
