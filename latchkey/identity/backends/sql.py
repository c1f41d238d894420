"""The sql backend: users, groups, memberships and password hashes in Latchkey's database."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, select

from latchkey.db import DbSession
from latchkey.errors import InvalidRequest
from latchkey.identity.backends import OwnerState
from latchkey.identity.models import Domain, Group, GroupMembership, User
from latchkey.identity.passwords import PasswordHasher


class SqlIdentity:
    name = "sql"
    writable = True

    def __init__(self, session: DbSession, hasher: PasswordHasher) -> None:
        self._session = session
        self._hasher = hasher

    # -- configuration: an sql domain has no backend options ---------------------------

    def configure(self, domain: Domain, options: dict[str, Any] | None) -> None:
        if options is not None:
            raise _no_options()

    def reconfigure(self, domain: Domain, options: dict[str, Any], *, name: str) -> None:
        raise _no_options()

    def discard(self, domain_id: str) -> None:
        """The rows went with the domain."""

    # -- users ------------------------------------------------------------------------

    def get_user(self, domain: Domain, user_id: str) -> User | None:
        user = self._session.get(User, user_id)
        return user if user is not None and user.domain_id == domain.id else None

    def find_user(self, domain: Domain, name: str) -> User | None:
        return self._session.scalar(
            select(User).where(User.domain_id == domain.id, User.name == name)
        )

    def list_users(
        self,
        domain: Domain | None,
        *,
        name: str | None,
        kind: str | None,
        enabled: bool | None,
        marker: str | None,
        limit: int,
    ) -> tuple[list[User], str | None]:
        """``domain`` None: every domain's rows (shadow rows of ldap users included)."""
        query = select(User)
        if domain is not None:
            query = query.where(User.domain_id == domain.id)
        if name:
            query = query.where(User.name == name)
        if kind:
            query = query.where(User.kind == kind)
        if enabled is not None:
            query = query.where(User.enabled == enabled)
        return page_of(self._session, query, User.id, marker, limit)

    def verify_password(self, user: User, password: str) -> bool:
        return self._hasher.verify(user.password_hash, password)

    def group_ids(self, domain: Domain, user: User) -> list[str]:
        return []  # memberships are rows, which role resolution reads itself

    def recheck(self, domain: Domain, user: User) -> OwnerState:
        return OwnerState(exists=True, enabled=True, group_ids=[], from_cache=True)

    # -- groups -----------------------------------------------------------------------

    def get_group(self, domain: Domain, group_id: str) -> Group | None:
        group = self._session.get(Group, group_id)
        return group if group is not None and group.domain_id == domain.id else None

    def find_group(self, domain: Domain, name: str) -> Group | None:
        return self._session.scalar(
            select(Group).where(Group.domain_id == domain.id, Group.name == name)
        )

    def list_groups(
        self, domain: Domain | None, *, name: str | None, marker: str | None, limit: int
    ) -> tuple[list[Group], str | None]:
        """``domain`` None: every domain's groups."""
        query = select(Group)
        if domain is not None:
            query = query.where(Group.domain_id == domain.id)
        if name:
            query = query.where(Group.name == name)
        return page_of(self._session, query, Group.id, marker, limit)

    def groups_of(self, domain: Domain, user: User) -> list[Group]:
        query = (
            select(Group)
            .join(GroupMembership, GroupMembership.group_id == Group.id)
            .where(GroupMembership.user_id == user.id)
            .order_by(Group.name)
        )
        return list(self._session.scalars(query))

    def members_of(self, domain: Domain, group: Group) -> list[User]:
        query = (
            select(User)
            .join(GroupMembership, GroupMembership.user_id == User.id)
            .where(GroupMembership.group_id == group.id)
            .order_by(User.name)
        )
        return list(self._session.scalars(query))


def page_of(
    session: DbSession, query: Select[Any], id_column: Any, marker: str | None, size: int
) -> tuple[list[Any], str | None]:
    """Rows after ``marker`` by id, at most ``size``; the next marker when more follow."""
    if marker:
        query = query.where(id_column > marker)
    rows = list(session.scalars(query.order_by(id_column).limit(size + 1)))
    more = len(rows) > size
    rows = rows[:size]
    return rows, (str(rows[-1].id) if more and rows else None)


def _no_options() -> InvalidRequest:
    return InvalidRequest("`ldap` options belong to ldap domains", code="ldap_invalid_config")
