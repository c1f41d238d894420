"""The catalog, tenant policy and decision endpoints."""

from __future__ import annotations

from typing import Any, Protocol

from flask import Response, jsonify
from flask.views import MethodView
from marshmallow import Schema, ValidationError, fields, validate

from latchkey.frontdoors.http.blueprint import Blueprint
from latchkey.frontdoors.http.requests import call_context, services
from latchkey.policy.context import CallContext
from latchkey.policy.documents import PolicyDocument
from latchkey.policy.store import StoredVersion

blp = Blueprint("policy", __name__, url_prefix="/v1", description="Catalog, policy, decisions")
ID = validate.Length(min=1, max=64)


class Endpoint(Schema):
    interface = fields.String(
        required=True, validate=validate.OneOf(["public", "internal", "admin"])
    )
    url = fields.Url(required=True, require_tld=False, validate=validate.Length(max=1024))
    region = fields.String(validate=validate.Length(max=64))


class ServiceIn(Schema):
    type = fields.String(required=True, validate=validate.Length(min=1, max=32))
    name = fields.String(validate=validate.Length(max=255))
    description = fields.String(validate=validate.Length(max=10_000))
    endpoints = fields.List(fields.Nested(Endpoint), validate=validate.Length(max=50))
    actions = fields.List(
        fields.String(validate=validate.Length(max=200)), validate=validate.Length(max=500)
    )
    # Checked in depth by the catalog (names, attribute types): errors point at the field.
    resource_types = fields.Dict(
        keys=fields.String(validate=validate.Length(max=100)), values=fields.Dict()
    )


class ServiceOut(Schema):
    id = fields.String()
    type = fields.String()
    name = fields.String()
    description = fields.String()
    endpoints = fields.List(fields.Dict())
    actions = fields.List(fields.String())
    resource_types = fields.Dict()
    created_at = fields.DateTime()
    updated_at = fields.DateTime()


class ServiceList(Schema):
    services = fields.List(fields.Nested(ServiceOut))


class PolicyDocumentIn(Schema):
    # The document is checked rule by rule by the service; errors carry a pointer.
    rules = fields.List(fields.Raw(), required=True)


class PolicyOut(Schema):
    version = fields.Integer(allow_none=True)
    rules = fields.List(fields.Dict())


class ValidationOut(Schema):
    valid = fields.Boolean()
    rules = fields.Integer()


class VersionOut(Schema):
    version = fields.Integer()
    author_id = fields.String(allow_none=True)
    created_at = fields.DateTime()
    active = fields.Boolean()
    rules = fields.Integer()


class VersionList(Schema):
    versions = fields.List(fields.Nested(VersionOut))


class ResourceIn(Schema):
    type = fields.String(required=True, validate=validate.Length(min=1, max=100))
    id = fields.String(validate=validate.Length(max=255))
    project_id = fields.String(required=True, validate=ID)
    attributes = fields.Dict(
        keys=fields.String(validate=validate.Length(max=64)),
        values=fields.Raw(),
        validate=validate.Length(max=100),
    )


class CheckIn(Schema):
    action = fields.String(required=True, validate=validate.Length(min=1, max=200))
    resource = fields.Nested(ResourceIn, required=True)


class AuthorizeIn(CheckIn):
    explain = fields.Boolean(load_default=False)
    subject_token = fields.String(validate=validate.Length(min=1, max=8192), load_only=True)


class DecisionOut(Schema):
    allowed = fields.Boolean()
    decided_by = fields.String()
    rule = fields.String()
    # decision_budget_exceeded, with decided_by "budget" (a denial: the decision's time
    # budget was spent, LATCHKEY_DECISION_BUDGET_MS / _BATCH_BUDGET_MS).
    code = fields.String()
    explain = fields.Dict()


REQUIRED = "Missing data for required field."
NOT_NULL = "Field may not be null."
NOT_STRING = "Not a valid string."


def _string(value: Any, low: int, high: int) -> str | None:
    """The error marshmallow's String(validate=Length(low, high)) gives, or None."""
    if value is None:
        return NOT_NULL
    if not isinstance(value, str):
        return NOT_STRING
    if low <= len(value) <= high:
        return None
    if low:  # marshmallow's wording for Length(min, max)
        return f"Length must be between {low} and {high}."
    return f"Longer than maximum length {high}."


def _resource_errors(resource: Any) -> dict[Any, Any] | list[str]:
    if resource is None:
        return [NOT_NULL]
    if not isinstance(resource, dict):
        return {"_schema": ["Invalid input type."]}
    errors: dict[Any, Any] = {}
    for name, low, high, required in (
        ("type", 1, 100, True),
        ("id", 0, 255, False),
        ("project_id", 1, 64, True),
    ):
        if name not in resource:
            if required:
                errors[name] = [REQUIRED]
            continue
        problem = _string(resource[name], low, high)
        if problem:
            errors[name] = [problem]
    if "attributes" in resource:
        attributes = resource["attributes"]
        if attributes is None:
            errors["attributes"] = [NOT_NULL]
        elif not isinstance(attributes, dict):
            errors["attributes"] = ["Not a valid mapping type."]
        else:
            entries: dict[str, dict[str, list[str]]] = {}
            for key, value in attributes.items():
                if problem := _string(key, 0, 64):
                    entries.setdefault(key, {})["key"] = [problem]
                if value is None:  # Raw() values may not be null either
                    entries.setdefault(key, {})["value"] = [NOT_NULL]
            if entries:
                errors["attributes"] = entries
            elif len(attributes) > 100:
                errors["attributes"] = ["Longer than maximum length 100."]
    for name in resource.keys() - {"type", "id", "project_id", "attributes"}:
        errors[name] = ["Unknown field."]
    return errors


def _check_errors(check: Any) -> dict[Any, Any] | list[str]:
    if check is None:
        return [NOT_NULL]
    if not isinstance(check, dict):
        return {"_schema": ["Invalid input type."]}
    errors: dict[Any, Any] = {}
    if "action" not in check:
        errors["action"] = [REQUIRED]
    elif problem := _string(check["action"], 1, 200):
        errors["action"] = [problem]
    if "resource" not in check:
        errors["resource"] = [REQUIRED]
    elif problems := _resource_errors(check["resource"]):
        errors["resource"] = problems
    for name in check.keys() - {"action", "resource"}:
        errors[name] = ["Unknown field."]
    return errors


class CheckList(fields.List):
    """``List(Nested(CheckIn))``, documented as one, checked in plain Python: through
    marshmallow's nested schemas a batch of 100 checks took ~5 ms to load, a quarter
    of the batch's time. Accepts, refuses and reports what the nested schemas do
    (tests/unit/test_check_list.py holds the two side by side)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(fields.Nested(CheckIn), **kwargs)

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> list[Any]:
        if not isinstance(value, list | tuple):
            raise ValidationError(self.error_messages["invalid"])
        errors = {i: found for i, check in enumerate(value) if (found := _check_errors(check))}
        if errors:
            raise ValidationError(errors)
        return [{"action": check["action"], "resource": dict(check["resource"])} for check in value]


class BatchIn(Schema):
    checks = CheckList(required=True, validate=validate.Length(min=1, max=1000))
    explain = fields.Boolean(load_default=False)
    subject_token = fields.String(validate=validate.Length(min=1, max=8192), load_only=True)


class BatchOut(Schema):
    results = fields.List(fields.Nested(DecisionOut))


class ActionsIn(Schema):
    resource = fields.Nested(ResourceIn, required=True)
    subject_token = fields.String(validate=validate.Length(min=1, max=8192), load_only=True)


class ActionsOut(Schema):
    actions = fields.List(fields.String())


# -- catalog ------------------------------------------------------------------------


@blp.route("/services")
class ServicesView(MethodView):
    @blp.response(200, ServiceList)
    def get(self) -> dict[str, Any]:
        return {"services": services().catalog.list_services(call_context())}

    @blp.arguments(ServiceIn)
    @blp.response(201, ServiceOut)
    def post(self, data: dict[str, Any]) -> Any:
        return services().catalog.create_service(call_context(), data)


@blp.route("/services/<service_id>")
class ServiceView(MethodView):
    @blp.response(200, ServiceOut)
    def get(self, service_id: str) -> Any:
        return services().catalog.get_service(call_context(), service_id)

    @blp.arguments(ServiceIn)
    @blp.response(200, ServiceOut)
    def put(self, data: dict[str, Any], service_id: str) -> Any:
        return services().catalog.replace_service(call_context(), service_id, data)

    @blp.response(204)
    def delete(self, service_id: str) -> None:
        services().catalog.delete_service(call_context(), service_id)


# -- tenant policy ------------------------------------------------------------------


class VersionedPolicies(Protocol):
    """What the two URL families (a project's policy, a domain's) are served from:
    ``TenantPolicies`` and ``DomainPolicies``, over one version store."""

    def get(self, ctx: CallContext, scope_id: str) -> tuple[int | None, dict[str, Any]]: ...

    def validate(self, ctx: CallContext, scope_id: str, document: Any) -> PolicyDocument: ...

    def put(self, ctx: CallContext, scope_id: str, document: Any) -> int: ...

    def versions(self, ctx: CallContext, scope_id: str) -> list[StoredVersion]: ...

    def active_version(self, scope_id: str) -> int | None: ...

    def activate(self, ctx: CallContext, scope_id: str, version: int) -> None: ...


def _active_policy(policies: VersionedPolicies, ctx: CallContext, scope_id: str) -> Any:
    version, document = policies.get(ctx, scope_id)
    return {"version": version, "rules": document["rules"]}


def _put_policy(policies: VersionedPolicies, scope_id: str, data: dict[str, Any]) -> Any:
    ctx = call_context()
    policies.put(ctx, scope_id, data)
    return _active_policy(policies, ctx, scope_id)


def _validate_policy(policies: VersionedPolicies, scope_id: str, data: dict[str, Any]) -> Any:
    parsed = policies.validate(call_context(), scope_id, data)
    return {"valid": True, "rules": len(parsed.rules)}


def _version_list(policies: VersionedPolicies, scope_id: str) -> Any:
    stored = policies.versions(call_context(), scope_id)
    active = policies.active_version(scope_id)
    return {
        "versions": [
            {
                "version": v.version,
                "author_id": v.author_id,
                "created_at": v.created_at,
                "active": v.version == active,
                "rules": len(v.document.get("rules", [])),
            }
            for v in stored
        ]
    }


def _activate_policy(policies: VersionedPolicies, scope_id: str, version: int) -> Any:
    ctx = call_context()
    policies.activate(ctx, scope_id, version)
    return _active_policy(policies, ctx, scope_id)


@blp.route("/projects/<project_id>/policy")
class PolicyView(MethodView):
    @blp.response(200, PolicyOut)
    def get(self, project_id: str) -> dict[str, Any]:
        return _active_policy(services().policies, call_context(), project_id)

    @blp.arguments(PolicyDocumentIn)
    @blp.response(200, PolicyOut)
    def put(self, data: dict[str, Any], project_id: str) -> dict[str, Any]:
        return _put_policy(services().policies, project_id, data)


@blp.route("/projects/<project_id>/policy/validate", methods=["POST"])
@blp.arguments(PolicyDocumentIn)
@blp.response(200, ValidationOut)
def validate_policy(data: dict[str, Any], project_id: str) -> dict[str, Any]:
    return _validate_policy(services().policies, project_id, data)


@blp.route("/projects/<project_id>/policy/versions", methods=["GET"])
@blp.response(200, VersionList)
def policy_versions(project_id: str) -> dict[str, Any]:
    return _version_list(services().policies, project_id)


@blp.route("/projects/<project_id>/policy/versions/<int:version>/activate", methods=["POST"])
@blp.response(200, PolicyOut)
def activate_policy(project_id: str, version: int) -> dict[str, Any]:
    return _activate_policy(services().policies, project_id, version)


# -- domain-wide rules -------------------------------------------------------------


@blp.route("/domains/<domain_id>/policy")
class DomainPolicyView(MethodView):
    @blp.response(200, PolicyOut)
    def get(self, domain_id: str) -> dict[str, Any]:
        return _active_policy(services().domain_policies, call_context(), domain_id)

    @blp.arguments(PolicyDocumentIn)
    @blp.response(200, PolicyOut)
    def put(self, data: dict[str, Any], domain_id: str) -> dict[str, Any]:
        return _put_policy(services().domain_policies, domain_id, data)


@blp.route("/domains/<domain_id>/policy/validate", methods=["POST"])
@blp.arguments(PolicyDocumentIn)
@blp.response(200, ValidationOut)
def validate_domain_policy(data: dict[str, Any], domain_id: str) -> dict[str, Any]:
    return _validate_policy(services().domain_policies, domain_id, data)


@blp.route("/domains/<domain_id>/policy/versions", methods=["GET"])
@blp.response(200, VersionList)
def domain_policy_versions(domain_id: str) -> dict[str, Any]:
    return _version_list(services().domain_policies, domain_id)


@blp.route("/domains/<domain_id>/policy/versions/<int:version>/activate", methods=["POST"])
@blp.response(200, PolicyOut)
def activate_domain_policy(domain_id: str, version: int) -> dict[str, Any]:
    return _activate_policy(services().domain_policies, domain_id, version)


# -- decisions ----------------------------------------------------------------------


@blp.route("/authorize", methods=["POST"])
@blp.arguments(AuthorizeIn)
@blp.response(200, DecisionOut)
def authorize(data: dict[str, Any]) -> dict[str, Any]:
    decision = services().decisions.authorize(
        call_context(), data, data.get("subject_token"), data["explain"]
    )
    return decision.as_dict()


@blp.route("/authorize/batch", methods=["POST"])
@blp.arguments(BatchIn)
@blp.response(200, BatchOut)
def authorize_batch(data: dict[str, Any]) -> Response:
    decisions = services().decisions.batch(
        call_context(), data["checks"], data.get("subject_token"), data["explain"]
    )
    # Decision.as_dict is already DecisionOut's shape: answered as is, not dumped again
    # field by field (up to 1,000 of them).
    return jsonify({"results": [d.as_dict() for d in decisions]})


@blp.route("/authorize/actions", methods=["POST"])
@blp.arguments(ActionsIn)
@blp.response(200, ActionsOut)
def authorize_actions(data: dict[str, Any]) -> dict[str, Any]:
    return {
        "actions": services().decisions.actions(
            call_context(), data["resource"], data.get("subject_token")
        )
    }


class PlanIn(Schema):
    action = fields.String(required=True, validate=validate.Length(min=1, max=200))
    resource_type = fields.String(required=True, validate=validate.Length(min=1, max=100))
    project_id = fields.String(required=True, validate=ID)
    subject_token = fields.String(validate=validate.Length(min=1, max=8192), load_only=True)


class PlanOut(Schema):
    kind = fields.String()
    condition = fields.Dict(allow_none=True)


@blp.route("/authorize/plan", methods=["POST"])
@blp.arguments(PlanIn)
@blp.response(200, PlanOut)
def authorize_plan(data: dict[str, Any]) -> dict[str, Any]:
    kind, condition = services().decisions.plan(
        call_context(),
        data["action"],
        data["resource_type"],
        data["project_id"],
        data.get("subject_token"),
    )
    body: dict[str, Any] = {"kind": kind}
    if condition is not None:
        body["condition"] = condition
    return body


class CasePrincipal(Schema):
    user_id = fields.String(required=True, validate=ID)
    roles = fields.List(
        fields.String(validate=validate.Length(min=1, max=255)), validate=validate.Length(max=50)
    )
    application_credential_id = fields.String(validate=ID)


class SimulationCase(CheckIn):
    principal = fields.Nested(CasePrincipal, required=True)


class SimulateIn(PolicyDocumentIn):
    cases = fields.List(
        fields.Nested(SimulationCase), load_default=list, validate=validate.Length(max=1000)
    )
    recent = fields.Integer(load_default=100, validate=validate.Range(min=0, max=1000))


class SimulateOut(Schema):
    cases = fields.List(fields.Dict())
    recent = fields.Dict()


@blp.route("/projects/<project_id>/policy/simulate", methods=["POST"])
@blp.arguments(SimulateIn)
@blp.response(200, SimulateOut)
def simulate_policy(data: dict[str, Any], project_id: str) -> dict[str, Any]:
    return services().decisions.simulate(
        call_context(), project_id, {"rules": data["rules"]}, data["cases"], data["recent"]
    )
