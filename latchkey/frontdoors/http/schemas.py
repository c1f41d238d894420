"""Request and response schemas of the identity API (they generate the OpenAPI document)."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, validate

from latchkey.frontdoors.http.fields import ID, NAME

DESCRIPTION = validate.Length(max=10_000)
EMAIL = validate.Length(max=320)  # the column's size
KINDS = ("human", "application")


class PageQuery(Schema):
    limit = fields.Integer(validate=validate.Range(min=1, max=1000))
    marker = fields.String(validate=ID)


class NameQuery(PageQuery):
    name = fields.String(validate=NAME)


class DomainFilterQuery(NameQuery):
    domain_id = fields.String(validate=ID)


class UserQuery(DomainFilterQuery):
    kind = fields.String(validate=validate.OneOf(KINDS))
    owner_project_id = fields.String(validate=ID)


class DomainCreate(Schema):
    name = fields.String(required=True, validate=NAME)
    description = fields.String(validate=DESCRIPTION)
    enabled = fields.Boolean()
    identity_backend = fields.String(validate=validate.OneOf(["sql", "ldap"]))
    # Keystone's [ldap] option names; checked (and the directory tested) by the service.
    ldap = fields.Dict(keys=fields.String(validate=validate.Length(max=64)))


class DomainUpdate(Schema):
    name = fields.String(validate=NAME)
    description = fields.String(validate=DESCRIPTION)
    enabled = fields.Boolean()
    ldap = fields.Dict(keys=fields.String(validate=validate.Length(max=64)))


class DomainOut(Schema):
    id = fields.String()
    name = fields.String()
    description = fields.String()
    enabled = fields.Boolean()
    identity_backend = fields.String()
    # The options as stored: the bind password never leaves (see ldap_password_set).
    ldap = fields.Dict(attribute="ldap_config", allow_none=True)
    ldap_password_set = fields.Method("_password_set")
    created_at = fields.DateTime()

    def _password_set(self, domain: Any) -> bool:
        return bool(getattr(domain, "ldap_password_set", False))


class DomainList(Schema):
    domains = fields.List(fields.Nested(DomainOut))
    next_marker = fields.String(allow_none=True)


class ProjectCreate(Schema):
    name = fields.String(required=True, validate=NAME)
    domain_id = fields.String(load_default="default", validate=ID)
    description = fields.String(validate=DESCRIPTION)
    enabled = fields.Boolean()


class ProjectUpdate(Schema):
    name = fields.String(validate=NAME)
    description = fields.String(validate=DESCRIPTION)
    enabled = fields.Boolean()


class ProjectOut(Schema):
    id = fields.String()
    name = fields.String()
    domain_id = fields.String()
    description = fields.String()
    enabled = fields.Boolean()
    is_admin_project = fields.Boolean()
    created_at = fields.DateTime()


class ProjectList(Schema):
    projects = fields.List(fields.Nested(ProjectOut))
    next_marker = fields.String(allow_none=True)


ATTRIBUTES = fields.Dict(
    keys=fields.String(validate=validate.Regexp(r"^[a-z][a-z0-9_]{0,63}$")),
    values=fields.Raw(),
    validate=validate.Length(max=50),
)


class UserCreate(Schema):
    name = fields.String(required=True, validate=NAME)
    attributes = ATTRIBUTES
    domain_id = fields.String(load_default="default", validate=ID)
    kind = fields.String(validate=validate.OneOf(KINDS))
    password = fields.String(load_only=True, validate=validate.Length(max=4096))
    enabled = fields.Boolean()
    email = fields.Email(allow_none=True, validate=EMAIL)
    description = fields.String(validate=DESCRIPTION)
    owner_project_id = fields.String(allow_none=True, validate=ID)


class UserUpdate(Schema):
    name = fields.String(validate=NAME)
    attributes = ATTRIBUTES
    password = fields.String(load_only=True, validate=validate.Length(max=4096))
    enabled = fields.Boolean()
    email = fields.Email(allow_none=True, validate=EMAIL)
    description = fields.String(validate=DESCRIPTION)


class PasswordChange(Schema):
    original_password = fields.String(
        required=True, load_only=True, validate=validate.Length(max=4096)
    )
    password = fields.String(required=True, load_only=True, validate=validate.Length(max=4096))


class UserOut(Schema):
    id = fields.String()
    name = fields.String()
    domain_id = fields.String()
    kind = fields.String()
    enabled = fields.Boolean()
    email = fields.String(allow_none=True)
    description = fields.String()
    owner_project_id = fields.String(allow_none=True)
    attributes = fields.Dict(allow_none=True)
    password_changed_at = fields.DateTime(allow_none=True)
    created_at = fields.DateTime()


class UserList(Schema):
    users = fields.List(fields.Nested(UserOut))
    next_marker = fields.String(allow_none=True)


class GroupCreate(Schema):
    name = fields.String(required=True, validate=NAME)
    domain_id = fields.String(load_default="default", validate=ID)
    description = fields.String(validate=DESCRIPTION)


class GroupUpdate(Schema):
    name = fields.String(validate=NAME)
    description = fields.String(validate=DESCRIPTION)


class GroupOut(Schema):
    id = fields.String()
    name = fields.String()
    domain_id = fields.String()
    description = fields.String()
    created_at = fields.DateTime()


class GroupList(Schema):
    groups = fields.List(fields.Nested(GroupOut))
    next_marker = fields.String(allow_none=True)


class UserRefList(Schema):
    users = fields.List(fields.Nested(UserOut))


class ProjectRefList(Schema):
    projects = fields.List(fields.Nested(ProjectOut))


class RoleCreate(Schema):
    name = fields.String(required=True, validate=NAME)
    description = fields.String(validate=DESCRIPTION)


class RoleOut(Schema):
    id = fields.String()
    name = fields.String()
    description = fields.String()


class RoleList(Schema):
    roles = fields.List(fields.Nested(RoleOut))


class RoleQuery(Schema):
    name = fields.String(validate=NAME)


class RoleImplicationOut(Schema):
    prior_role = fields.Nested(RoleOut)
    implies = fields.Nested(RoleOut)


class RoleImplicationList(Schema):
    role_implications = fields.List(fields.Nested(RoleImplicationOut))


class AssignmentQuery(Schema):
    user_id = fields.String(validate=ID)
    group_id = fields.String(validate=ID)
    project_id = fields.String(validate=ID)
    domain_id = fields.String(validate=ID)
    role = fields.String(validate=NAME)
    effective = fields.Boolean(load_default=False)


class AssignmentList(Schema):
    role_assignments = fields.List(fields.Dict())
