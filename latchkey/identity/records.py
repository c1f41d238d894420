"""What the identity services hand to front doors: plain frozen values, never ORM rows.

Each record carries the fields the front doors read, under the names the rows have
(so the /v1 schemas dump them by attribute and the /v3 bodies read them as before).
Secrets stay behind: a user's password hash, a domain's sealed bind password (only
whether one is set travels).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from latchkey.records import copy_row

if TYPE_CHECKING:  # of() takes rows; importing a record loads no ORM class
    from latchkey.identity.models import Domain, Group, Project, Role, User


@dataclass(frozen=True, slots=True)
class DomainRecord:
    id: str
    name: str
    description: str
    enabled: bool
    identity_backend: str
    ldap_config: dict[str, Any] | None
    ldap_password_set: bool
    extra: dict[str, Any] | None
    created_at: datetime

    @classmethod
    def of(cls, row: Domain) -> DomainRecord:
        return copy_row(cls, row, ldap_password_set=bool(row.ldap_password_sealed))


@dataclass(frozen=True, slots=True)
class ProjectRecord:
    id: str
    name: str
    domain_id: str
    description: str
    enabled: bool
    is_admin_project: bool
    parent_id: str | None
    extra: dict[str, Any] | None
    created_at: datetime

    @classmethod
    def of(cls, row: Project) -> ProjectRecord:
        return copy_row(cls, row)


@dataclass(frozen=True, slots=True)
class UserRecord:
    id: str
    name: str
    domain_id: str
    kind: str
    enabled: bool
    email: str | None
    description: str
    attributes: dict[str, Any] | None
    owner_project_id: str | None
    default_project_id: str | None
    password_changed_at: datetime | None
    extra: dict[str, Any] | None
    created_at: datetime

    @classmethod
    def of(cls, row: User) -> UserRecord:
        return copy_row(cls, row)


@dataclass(frozen=True, slots=True)
class GroupRecord:
    id: str
    name: str
    domain_id: str
    description: str
    extra: dict[str, Any] | None
    created_at: datetime

    @classmethod
    def of(cls, row: Group) -> GroupRecord:
        return copy_row(cls, row)


@dataclass(frozen=True, slots=True)
class RoleRecord:
    id: str
    name: str
    description: str
    domain_id: str | None
    extra: dict[str, Any] | None
    created_at: datetime

    @classmethod
    def of(cls, row: Role) -> RoleRecord:
        return copy_row(cls, row)
