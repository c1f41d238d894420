"""The native identity API: domains, projects, users, groups, roles, assignments.

Views validate and serialise; the services decide, enforce and commit.
"""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from latchkey.frontdoors.http import schemas as s
from latchkey.frontdoors.http.blueprint import Blueprint
from latchkey.frontdoors.http.requests import call_context, services

blp = Blueprint("identity", __name__, url_prefix="/v1", description="Identity")


def _page(key: str, page: Any) -> dict[str, Any]:
    return {key: page.items, "next_marker": page.next_marker}


# -- domains ------------------------------------------------------------------------


@blp.route("/domains")
class DomainsView(MethodView):
    @blp.arguments(s.NameQuery, location="query")
    @blp.response(200, s.DomainList)
    def get(self, query: dict[str, Any]) -> dict[str, Any]:
        page = services().directory.list_domains(
            call_context(),
            name=query.get("name"),
            marker=query.get("marker"),
            limit=query.get("limit"),
        )
        return _page("domains", page)

    @blp.arguments(s.DomainCreate)
    @blp.response(201, s.DomainOut)
    def post(self, data: dict[str, Any]) -> Any:
        return services().directory.create_domain(call_context(), data)


@blp.route("/domains/<domain_id>")
class DomainView(MethodView):
    @blp.response(200, s.DomainOut)
    def get(self, domain_id: str) -> Any:
        return services().directory.get_domain(call_context(), domain_id)

    @blp.arguments(s.DomainUpdate)
    @blp.response(200, s.DomainOut)
    def patch(self, data: dict[str, Any], domain_id: str) -> Any:
        return services().directory.update_domain(call_context(), domain_id, data)

    @blp.response(204)
    def delete(self, domain_id: str) -> None:
        services().directory.delete_domain(call_context(), domain_id)


# -- projects -----------------------------------------------------------------------


@blp.route("/projects")
class ProjectsView(MethodView):
    @blp.arguments(s.DomainFilterQuery, location="query")
    @blp.response(200, s.ProjectList)
    def get(self, query: dict[str, Any]) -> dict[str, Any]:
        page = services().directory.list_projects(
            call_context(),
            domain_id=query.get("domain_id"),
            name=query.get("name"),
            marker=query.get("marker"),
            limit=query.get("limit"),
        )
        return _page("projects", page)

    @blp.arguments(s.ProjectCreate)
    @blp.response(201, s.ProjectOut)
    def post(self, data: dict[str, Any]) -> Any:
        return services().directory.create_project(call_context(), data)


@blp.route("/projects/<project_id>")
class ProjectView(MethodView):
    @blp.response(200, s.ProjectOut)
    def get(self, project_id: str) -> Any:
        return services().directory.get_project(call_context(), project_id)

    @blp.arguments(s.ProjectUpdate)
    @blp.response(200, s.ProjectOut)
    def patch(self, data: dict[str, Any], project_id: str) -> Any:
        return services().directory.update_project(call_context(), project_id, data)

    @blp.response(204)
    def delete(self, project_id: str) -> None:
        services().directory.delete_project(call_context(), project_id)


# -- users --------------------------------------------------------------------------


@blp.route("/users")
class UsersView(MethodView):
    @blp.arguments(s.UserQuery, location="query")
    @blp.response(200, s.UserList)
    def get(self, query: dict[str, Any]) -> dict[str, Any]:
        page = services().accounts.list_users(
            call_context(),
            domain_id=query.get("domain_id"),
            name=query.get("name"),
            kind=query.get("kind"),
            marker=query.get("marker"),
            limit=query.get("limit"),
            owner_project_id=query.get("owner_project_id"),
        )
        return _page("users", page)

    @blp.arguments(s.UserCreate)
    @blp.response(201, s.UserOut)
    def post(self, data: dict[str, Any]) -> Any:
        return services().accounts.create_user(call_context(), data)


@blp.route("/users/<user_id>")
class UserView(MethodView):
    @blp.response(200, s.UserOut)
    def get(self, user_id: str) -> Any:
        return services().accounts.get_user(call_context(), user_id)

    @blp.arguments(s.UserUpdate)
    @blp.response(200, s.UserOut)
    def patch(self, data: dict[str, Any], user_id: str) -> Any:
        return services().accounts.update_user(call_context(), user_id, data)

    @blp.response(204)
    def delete(self, user_id: str) -> None:
        services().accounts.delete_user(call_context(), user_id)


@blp.route("/users/<user_id>/password", methods=["POST"])
@blp.arguments(s.PasswordChange)
@blp.response(204)
def change_password(data: dict[str, Any], user_id: str) -> None:
    services().accounts.change_password(
        call_context(), user_id, data["original_password"], data["password"]
    )


@blp.route("/users/<user_id>/projects", methods=["GET"])
@blp.response(200, s.ProjectRefList)
def user_projects(user_id: str) -> dict[str, Any]:
    return {"projects": services().accounts.list_user_projects(call_context(), user_id)}


# -- groups -------------------------------------------------------------------------


@blp.route("/groups")
class GroupsView(MethodView):
    @blp.arguments(s.DomainFilterQuery, location="query")
    @blp.response(200, s.GroupList)
    def get(self, query: dict[str, Any]) -> dict[str, Any]:
        page = services().accounts.list_groups(
            call_context(),
            domain_id=query.get("domain_id"),
            name=query.get("name"),
            marker=query.get("marker"),
            limit=query.get("limit"),
        )
        return _page("groups", page)

    @blp.arguments(s.GroupCreate)
    @blp.response(201, s.GroupOut)
    def post(self, data: dict[str, Any]) -> Any:
        return services().accounts.create_group(call_context(), data)


@blp.route("/groups/<group_id>")
class GroupView(MethodView):
    @blp.response(200, s.GroupOut)
    def get(self, group_id: str) -> Any:
        return services().accounts.get_group(call_context(), group_id)

    @blp.arguments(s.GroupUpdate)
    @blp.response(200, s.GroupOut)
    def patch(self, data: dict[str, Any], group_id: str) -> Any:
        return services().accounts.update_group(call_context(), group_id, data)

    @blp.response(204)
    def delete(self, group_id: str) -> None:
        services().accounts.delete_group(call_context(), group_id)


@blp.route("/groups/<group_id>/users", methods=["GET"])
@blp.response(200, s.UserRefList)
def group_members(group_id: str) -> dict[str, Any]:
    return {"users": services().accounts.list_members(call_context(), group_id)}


@blp.route("/groups/<group_id>/users/<user_id>")
class GroupMemberView(MethodView):
    @blp.response(204)
    def put(self, group_id: str, user_id: str) -> None:
        services().accounts.add_member(call_context(), group_id, user_id)

    @blp.response(204)
    def delete(self, group_id: str, user_id: str) -> None:
        services().accounts.remove_member(call_context(), group_id, user_id)


# -- roles --------------------------------------------------------------------------


@blp.route("/roles")
class RolesView(MethodView):
    @blp.arguments(s.RoleQuery, location="query")
    @blp.response(200, s.RoleList)
    def get(self, query: dict[str, Any]) -> dict[str, Any]:
        return {"roles": services().roles.list_roles(call_context(), query.get("name"))}

    @blp.arguments(s.RoleCreate)
    @blp.response(201, s.RoleOut)
    def post(self, data: dict[str, Any]) -> Any:
        return services().roles.create_role(call_context(), data)


@blp.route("/roles/<role>")
class RoleView(MethodView):
    @blp.response(200, s.RoleOut)
    def get(self, role: str) -> Any:
        return services().roles.get_role(call_context(), role)

    @blp.response(204)
    def delete(self, role: str) -> None:
        services().roles.delete_role(call_context(), role)


@blp.route("/role-implications", methods=["GET"])
@blp.response(200, s.RoleImplicationList)
def role_implications() -> dict[str, Any]:
    pairs = services().roles.list_implications(call_context())
    return {"role_implications": [{"prior_role": p, "implies": i} for p, i in pairs]}


@blp.route("/roles/<prior>/implies/<implied>")
class RoleImplicationView(MethodView):
    @blp.response(204)
    def put(self, prior: str, implied: str) -> None:
        services().roles.imply(call_context(), prior, implied)

    @blp.response(204)
    def delete(self, prior: str, implied: str) -> None:
        services().roles.unimply(call_context(), prior, implied)


# -- role assignments -----------------------------------------------------------------


def _assignment_view(scope_type: str, actor_type: str) -> type[MethodView]:
    class AssignmentView(MethodView):
        @blp.response(204)
        def put(self, scope_id: str, actor_id: str, role: str) -> None:
            services().roles.grant(call_context(), scope_type, scope_id, actor_type, actor_id, role)

        @blp.response(204)
        def delete(self, scope_id: str, actor_id: str, role: str) -> None:
            services().roles.revoke(
                call_context(), scope_type, scope_id, actor_type, actor_id, role
            )

    AssignmentView.__name__ = f"{scope_type.title()}{actor_type.title()}RoleView"
    return AssignmentView


for _scope in ("project", "domain"):
    for _actor in ("user", "group"):
        blp.route(
            f"/{_scope}s/<scope_id>/{_actor}s/<actor_id>/roles/<role>",
            endpoint=f"{_scope}_{_actor}_role",
        )(_assignment_view(_scope, _actor))


@blp.route("/role-assignments", methods=["GET"])
@blp.arguments(s.AssignmentQuery, location="query")
@blp.response(200, s.AssignmentList)
def role_assignments(query: dict[str, Any]) -> dict[str, Any]:
    found = services().roles.list_assignments(
        call_context(),
        user_id=query.get("user_id"),
        group_id=query.get("group_id"),
        project_id=query.get("project_id"),
        domain_id=query.get("domain_id"),
        role=query.get("role"),
        effective=query["effective"],
    )
    return {"role_assignments": [a.as_dict() for a in found]}
