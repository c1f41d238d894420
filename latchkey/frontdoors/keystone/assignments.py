"""Keystone v3 grants (projects, domains, the system, OS-INHERIT) and role assignments."""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify, request

from latchkey.errors import InvalidRequest, NotFound
from latchkey.frontdoors.http.requests import services
from latchkey.frontdoors.keystone.common import authenticated, base_url, blp
from latchkey.frontdoors.keystone.roles import role_body, role_url
from latchkey.identity.roles import DOMAIN, PROJECT, SYSTEM, SYSTEM_ALL, Assignment

# Keystone's policy name of each endpoint -> the Latchkey action that authorizes it.
POLICY_NAMES: dict[str, str] = {
    "identity:create_grant": "identity:role_assignment:grant",
    "identity:revoke_grant": "identity:role_assignment:revoke",
    "identity:check_grant": "identity:role_assignment:list",
    "identity:list_grants": "identity:role_assignment:list",
    "identity:create_system_grant_for_user": "identity:role_assignment:grant",
    "identity:revoke_system_grant_for_user": "identity:role_assignment:revoke",
    "identity:check_system_grant_for_user": "identity:role_assignment:list",
    "identity:list_system_grants_for_user": "identity:role_assignment:list",
    "identity:create_system_grant_for_group": "identity:role_assignment:grant",
    "identity:revoke_system_grant_for_group": "identity:role_assignment:revoke",
    "identity:check_system_grant_for_group": "identity:role_assignment:list",
    "identity:list_system_grants_for_group": "identity:role_assignment:list",
    "identity:list_role_assignments": "identity:role_assignment:list",
    "identity:list_role_assignments_for_tree": "identity:role_assignment:list",
}

INHERITED_TO = "OS-INHERIT:inherited_to"


def _grant_path(
    scope_type: str, scope_id: str, actor_type: str, actor_id: str, inherited: bool
) -> str:
    if scope_type == SYSTEM:
        return f"/v3/system/{actor_type}s/{actor_id}/roles"
    if inherited:
        return f"/v3/OS-INHERIT/{scope_type}s/{scope_id}/{actor_type}s/{actor_id}/roles"
    return f"/v3/{scope_type}s/{scope_id}/{actor_type}s/{actor_id}/roles"


def _role_path(grants: str, role_id: str, inherited: bool) -> str:
    return f"{grants}/{role_id}" + ("/inherited_to_projects" if inherited else "")


# -- grants ---------------------------------------------------------------------------


def _one_grant(
    scope_type: str, scope_id: str, actor_type: str, actor_id: str, role_id: str, inherited: bool
) -> Response:
    ctx = authenticated()
    roles = services().roles
    args = (ctx, scope_type, scope_id, actor_type, actor_id, role_id)
    if request.method == "PUT":
        roles.grant(*args, inherited=inherited)
    elif request.method == "DELETE":
        roles.revoke(*args, inherited=inherited)
    else:  # GET and HEAD: does the grant exist?
        roles.check_grant(*args, inherited=inherited)
    return Response(status=204)


def _grant_list(
    scope_type: str, scope_id: str, actor_type: str, actor_id: str, inherited: bool
) -> Response:
    found = services().roles.list_grants(
        authenticated(), scope_type, scope_id, actor_type, actor_id, inherited=inherited
    )
    path = _grant_path(scope_type, scope_id, actor_type, actor_id, inherited)
    if inherited:
        path += "/inherited_to_projects"
    return jsonify(
        {
            "roles": [role_body(r) for r in found],
            "links": {"self": base_url() + path, "previous": None, "next": None},
        }
    )


def _register(scope_type: str, actor_type: str, inherited: bool) -> None:
    prefix = "/v3/OS-INHERIT" if inherited else "/v3"
    suffix = "/inherited_to_projects" if inherited else ""
    name = f"{'inherited_' if inherited else ''}{scope_type}_{actor_type}"
    # Parameters named after what they hold (project_id, group_id, ...), as elsewhere.
    actor = f"{actor_type}_id"
    if scope_type == SYSTEM:
        base = f"{prefix}/system/{actor_type}s/<{actor}>/roles"
    else:
        base = f"{prefix}/{scope_type}s/<{scope_type}_id>/{actor_type}s/<{actor}>/roles"

    def ids(values: dict[str, str]) -> tuple[str, str]:
        return values.get(f"{scope_type}_id", SYSTEM_ALL), values[actor]

    def one(role: str, **values: str) -> Response:
        scope_id, actor_id = ids(values)
        return _one_grant(scope_type, scope_id, actor_type, actor_id, role, inherited)

    def listing(**values: str) -> Response:
        scope_id, actor_id = ids(values)
        return _grant_list(scope_type, scope_id, actor_type, actor_id, inherited)

    blp.add_url_rule(
        f"{base}/<role>{suffix}",
        endpoint=f"grant_{name}",
        view_func=one,
        methods=["PUT", "GET", "HEAD", "DELETE"],
    )
    blp.add_url_rule(
        f"{base}{suffix}", endpoint=f"grants_{name}", view_func=listing, methods=["GET", "HEAD"]
    )


for _actor in ("user", "group"):
    for _scope in (PROJECT, DOMAIN, SYSTEM):
        _register(_scope, _actor, inherited=False)
    for _scope in (PROJECT, DOMAIN):
        _register(_scope, _actor, inherited=True)


# -- role assignments -----------------------------------------------------------------


def _flag(name: str) -> bool:
    """Keystone's boolean query parameters: present and not "0"/"false" is true."""
    if name not in request.args:
        return False
    return request.args.get(name, "").strip().lower() not in ("0", "false", "no", "off")


def _assignment_body(
    a: Assignment, names: dict[str, dict[str, Any]] | None, base: str
) -> dict[str, Any]:
    actor_type, actor_id = ("group", a.group_id) if a.group_id else ("user", a.user_id or "")
    # Where the grant behind this assignment lives: the group's (via_group), the
    # inherited one (inherited_from), the prior role's (implied).
    source_actor = ("group", a.via_group_id) if a.via_group_id else (actor_type, actor_id)
    source_scope = a.inherited_from or (a.scope_type, a.scope_id)
    source_inherited = a.inherited or a.inherited_from is not None
    source_role = a.prior_role_id or a.role_id
    grants = _grant_path(
        source_scope[0], source_scope[1], source_actor[0], source_actor[1], source_inherited
    )
    links: dict[str, str] = {"assignment": base + _role_path(grants, source_role, source_inherited)}
    if a.via_group_id:
        links["membership"] = f"{base}/v3/groups/{a.via_group_id}/users/{a.user_id}"
    if a.prior_role_id:
        links["prior_role"] = role_url(a.prior_role_id)
    role: dict[str, Any] = {"id": a.role_id}
    actor: dict[str, Any] = {"id": actor_id}
    scope: dict[str, Any]
    if a.scope_type == SYSTEM:
        scope = {SYSTEM: {SYSTEM_ALL: True}}
    else:
        scope = {a.scope_type: {"id": a.scope_id}}
    if names is not None:
        role.update(_named(names, "role", a.role_id, a.role_name))
        actor.update(_named(names, actor_type, actor_id, ""))
        if a.scope_type != SYSTEM:
            scope[a.scope_type].update(_named(names, a.scope_type, a.scope_id, ""))
    if a.inherited:
        scope[INHERITED_TO] = "projects"
    return {"role": role, actor_type: actor, "scope": scope, "links": links}


def _named(names: dict[str, dict[str, Any]], kind: str, ref: str, default: str) -> dict[str, Any]:
    found = names.get(kind, {}).get(ref)
    if found is None:
        return {"name": default} if default else {}
    result: dict[str, Any] = {"name": found["name"]}
    if kind != DOMAIN and found["domain_id"]:
        domain = names.get(DOMAIN, {}).get(found["domain_id"]) or {}
        result["domain"] = {"id": found["domain_id"], "name": domain.get("name")}
    return result


@blp.route("/v3/role_assignments", methods=["GET", "HEAD"])
def list_role_assignments() -> Response:
    ctx = authenticated()
    args = request.args
    inherited_to = args.get("scope.OS-INHERIT:inherited_to")
    if inherited_to not in (None, "projects"):
        raise InvalidRequest("scope.OS-INHERIT:inherited_to can only be 'projects'")
    system = args.get("scope.system")
    if system not in (None, SYSTEM_ALL):
        raise InvalidRequest("scope.system can only be 'all'")
    role = args.get("role.id") or None
    try:
        found = services().roles.list_assignments(
            ctx,
            user_id=args.get("user.id") or None,
            group_id=args.get("group.id") or None,
            project_id=args.get("scope.project.id") or None,
            domain_id=args.get("scope.domain.id") or None,
            role=role,
            effective=_flag("effective"),
            system=system is not None,
            inherited=True if inherited_to else None,
            include_subtree=_flag("include_subtree"),
        )
    except NotFound as error:
        if error.code != "role_not_found":
            raise
        found = []  # Keystone: no assignment of a role that does not exist
    names = services().roles.assignment_names(found) if _flag("include_names") else None
    base = base_url()
    return jsonify(
        {
            "role_assignments": [_assignment_body(a, names, base) for a in found],
            "links": {"self": base + request.full_path.rstrip("?"), "previous": None, "next": None},
        }
    )
