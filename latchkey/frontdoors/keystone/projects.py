"""Keystone v3 projects and project tags."""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify, request

from latchkey.errors import Forbidden, InvalidRequest, LatchkeyError, NotFound
from latchkey.frontdoors.http.requests import services
from latchkey.frontdoors.keystone.common import (
    authenticated,
    base_url,
    blp,
    created,
    json_body,
    no_content,
    obj,
)
from latchkey.frontdoors.keystone.domains import (
    DOMAIN_REFUSALS,
    SHORT_NAME,
    bool_field,
    collection,
    domain_fields,
    every,
    id_field,
    merged_extra,
    name_field,
    no_options,
    query_bool,
    query_list,
    query_str,
    reraise,
    split_extra,
    text_field,
    token_domain_id,
)
from latchkey.identity.records import DomainRecord, ProjectRecord
from latchkey.policy.context import CallContext

POLICY_NAMES: dict[str, str] = {
    "identity:list_projects": "identity:project:list",
    "identity:create_project": "identity:project:create",
    "identity:get_project": "identity:project:get",
    "identity:update_project": "identity:project:update",
    "identity:delete_project": "identity:project:delete",
    "identity:list_project_tags": "identity:project:get",
    "identity:get_project_tag": "identity:project:get",
    "identity:update_project_tags": "identity:project:update",
    "identity:create_project_tag": "identity:project:update",
    "identity:delete_project_tags": "identity:project:update",
    "identity:delete_project_tag": "identity:project:update",
}

PROJECT_FIELDS = {
    "id",
    "name",
    "domain_id",
    "description",
    "enabled",
    "parent_id",
    "is_domain",
    "tags",
    "options",
    "links",
}


def project_body(project: ProjectRecord, tags: list[str] | None = None) -> dict[str, Any]:
    if tags is None:
        tags = services().directory.tags_of([project.id])[project.id]
    return {
        **(project.extra or {}),
        "id": project.id,
        "name": project.name,
        "domain_id": project.domain_id,
        "description": project.description or "",
        "enabled": project.enabled,
        # Keystone: a top-level project's parent is its domain.
        "parent_id": project.parent_id or project.domain_id,
        "is_domain": False,
        "tags": tags,
        "options": {},
        "links": {"self": f"{base_url()}/v3/projects/{project.id}"},
    }


def domain_as_project(domain: DomainRecord) -> dict[str, Any]:
    """A domain seen through /v3/projects, as Keystone shows one (`is_domain: true`)."""
    extra = {k: v for k, v in (domain.extra or {}).items() if k != "tags"}
    return {
        **extra,
        "id": domain.id,
        "name": domain.name,
        "domain_id": None,
        "description": domain.description or "",
        "enabled": domain.enabled,
        "parent_id": None,
        "is_domain": True,
        "tags": (domain.extra or {}).get("tags", []),
        "options": {},
        "links": {"self": f"{base_url()}/v3/projects/{domain.id}"},
    }


def _is_a_domain(project_id: str) -> bool:
    """No project has this id, a domain does: Keystone's domain acting as a project."""
    directory = services().directory
    return (
        directory.lookup_project(project_id=project_id, name=None, domain_id=None) is None
        and directory.lookup_domain(domain_id=project_id, name=None) is not None
    )


def _domain_data(data: dict[str, Any], *, creating: bool) -> dict[str, Any]:
    """A project body that makes or changes a domain: only what a domain has."""
    known = PROJECT_FIELDS - {"name", "description", "enabled", "tags", "options"}
    unused = {k: v for k, v in data.items() if k in known and v is not None}
    unused.pop("is_domain", None)
    if unused:
        raise InvalidRequest(f"a domain has no {', '.join(sorted(unused))}")
    rest = {k: v for k, v in data.items() if k not in known}
    return domain_fields(rest, creating=creating)


def project_bodies(projects: list[ProjectRecord]) -> list[dict[str, Any]]:
    tags = services().directory.tags_of([p.id for p in projects])
    return [project_body(p, tags[p.id]) for p in projects]


def _tags(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(tag, str) for tag in value):
        raise InvalidRequest("tags must be a list of strings")
    return value


def _project_fields(data: dict[str, Any], *, creating: bool) -> dict[str, Any]:
    no_options(data, "project")
    native: dict[str, Any] = {}
    if creating or "name" in data:
        native["name"] = name_field(data.get("name"), "project.name", SHORT_NAME)
    if "description" in data:
        native["description"] = text_field(data["description"], "project.description")
    if "enabled" in data:
        native["enabled"] = bool_field(data["enabled"], "project.enabled")
    if "tags" in data:
        native["tags"] = _tags(data["tags"])
    if data.get("is_domain") not in (None, False):
        raise InvalidRequest("project.is_domain must be a boolean")
    if creating:
        domain_id = data.get("domain_id")
        parent_id = data.get("parent_id")
        if parent_id is not None:
            parent_id = id_field(parent_id, "project.parent_id")
        if domain_id is None and parent_id and _is_a_domain(parent_id):
            domain_id = parent_id  # a domain as the parent: a top-level project in it
        if domain_id is None and not parent_id:
            domain_id = token_domain_id()
        if domain_id is not None:
            domain_id = id_field(domain_id, "project.domain_id")
        native["domain_id"] = domain_id  # None: the parent's (the service finds it)
        if parent_id and parent_id != domain_id:
            native["parent_id"] = parent_id  # a domain id as parent: a top-level project
    else:
        for key in ("domain_id", "parent_id"):
            if key in data:
                native[key] = data[key]
    extra = split_extra(data, PROJECT_FIELDS, "project")
    if extra or creating:
        native["extra"] = extra
    return native


@blp.route("/v3/projects", methods=["GET"])
def list_projects() -> Response:
    ctx = authenticated()
    if query_bool("is_domain"):  # Keystone's domains acting as projects
        name, enabled = query_str("name"), query_bool("enabled")
        domains, truncated = every(
            lambda marker, limit: services().directory.list_domains(
                ctx, name=name, marker=marker, limit=limit, enabled=enabled
            )
        )
        return collection("projects", [domain_as_project(d) for d in domains], truncated)
    filters: dict[str, Any] = {
        "domain_id": query_str("domain_id"),
        "name": query_str("name"),
        "enabled": query_bool("enabled"),
        "parent_id": query_str("parent_id"),
        "tags": query_list("tags"),
        "tags_any": query_list("tags-any"),
        "not_tags": query_list("not-tags"),
        "not_tags_any": query_list("not-tags-any"),
    }
    projects, truncated = every(
        lambda marker, limit: services().directory.list_projects(
            ctx, marker=marker, limit=limit, **filters
        )
    )
    return collection("projects", project_bodies(projects), truncated)


@blp.route("/v3/projects", methods=["POST"])
def create_project() -> Response:
    ctx = authenticated()
    data = obj(json_body().get("project"), "project")
    if data.get("is_domain") is True:
        native = _domain_data(data, creating=True)
        native["identity_backend"] = "sql"
        domain = services().directory.create_domain(ctx, native)
        return created("project", domain_as_project(domain))
    project = services().directory.create_project(ctx, _project_fields(data, creating=True))
    return created("project", project_body(project))


def _as_list(ctx: CallContext, projects: list[ProjectRecord]) -> list[dict[str, Any]]:
    return [{"project": body} for body in project_bodies(projects)]


@blp.route("/v3/projects/<project_id>", methods=["GET"])
def get_project(project_id: str) -> Response:
    ctx = authenticated()
    directory = services().directory
    if _is_a_domain(project_id):
        return jsonify({"project": domain_as_project(directory.get_domain(ctx, project_id))})
    project = directory.get_project(ctx, project_id)
    body = project_body(project)
    if "parents_as_list" in request.args:
        body["parents"] = _as_list(ctx, directory.project_parents(ctx, project.id))
    elif "parents_as_ids" in request.args:
        nested: dict[str, Any] | None = None
        for parent in reversed(directory.project_parents(ctx, project.id)):
            nested = {parent.id: nested}
        body["parents"] = nested
    if "subtree_as_list" in request.args:
        body["subtree"] = _as_list(ctx, directory.project_subtree(ctx, project.id))
    return jsonify({"project": body})


@blp.route("/v3/projects/<project_id>", methods=["PATCH"])
def update_project(project_id: str) -> Response:
    ctx = authenticated()
    data = obj(json_body().get("project"), "project")
    if "id" in data and data["id"] != project_id:
        raise InvalidRequest("a project's id cannot change")
    directory = services().directory
    if _is_a_domain(project_id):
        native = _domain_data(data, creating=False)
        if "extra" in native:
            found = directory.get_domain(ctx, project_id)
            native["extra"] = merged_extra(found.extra, native["extra"])
        domain = directory.update_domain(ctx, project_id, native)
        return jsonify({"project": domain_as_project(domain)})
    native = _project_fields(data, creating=False)
    if "extra" in native:
        current = directory.get_project(ctx, project_id)
        native["extra"] = merged_extra(current.extra, native["extra"])
    project = directory.update_project(ctx, project_id, native)
    return jsonify({"project": project_body(project)})


@blp.route("/v3/projects/<project_id>", methods=["DELETE"])
def delete_project(project_id: str) -> Response:
    try:
        if _is_a_domain(project_id):
            services().directory.delete_domain(authenticated(), project_id)
        else:
            services().directory.delete_project(authenticated(), project_id)
    except LatchkeyError as error:
        reraise(error, {s: Forbidden for s in ("project_protected", *DOMAIN_REFUSALS)})
    return no_content()


# -- tags ------------------------------------------------------------------------------


def _tags_response(project_id: str, tags: list[str], status: int = 200) -> Response:
    response = jsonify(
        {"tags": tags, "links": {"self": f"{base_url()}/v3/projects/{project_id}/tags"}}
    )
    response.status_code = status
    return response


@blp.route("/v3/projects/<project_id>/tags", methods=["GET"])
def list_project_tags(project_id: str) -> Response:
    tags = services().directory.list_tags(authenticated(), project_id)
    return _tags_response(project_id, tags)


@blp.route("/v3/projects/<project_id>/tags", methods=["PUT"])
def replace_project_tags(project_id: str) -> Response:
    ctx = authenticated()
    tags = _tags(json_body().get("tags"))
    return _tags_response(project_id, services().directory.set_tags(ctx, project_id, tags))


@blp.route("/v3/projects/<project_id>/tags", methods=["DELETE"])
def delete_project_tags(project_id: str) -> Response:
    services().directory.remove_tag(authenticated(), project_id, None)
    return no_content()


@blp.route("/v3/projects/<project_id>/tags/<tag>", methods=["GET", "HEAD"])
def check_project_tag(project_id: str, tag: str) -> Response:
    if not services().directory.has_tag(authenticated(), project_id, tag):
        raise NotFound(f"Could not find project tag: {tag}.", code="project_tag_not_found")
    return no_content()


@blp.route("/v3/projects/<project_id>/tags/<tag>", methods=["PUT"])
def add_project_tag(project_id: str, tag: str) -> Response:
    services().directory.add_tag(authenticated(), project_id, tag)
    # 201 with no body, as Keystone (and the API working group's tags guideline) answer.
    response = Response(status=201)
    response.headers["Location"] = f"{base_url()}/v3/projects/{project_id}/tags/{tag}"
    return response


@blp.route("/v3/projects/<project_id>/tags/<tag>", methods=["DELETE"])
def delete_project_tag(project_id: str, tag: str) -> Response:
    services().directory.remove_tag(authenticated(), project_id, tag)
    return no_content()
