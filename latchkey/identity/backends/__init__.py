"""Identity backends: where a domain's users and groups come from.

Each domain names its backend (``domain.identity_backend``); the services ask
``IdentityBackends.of(domain)`` and then only the protocol, so a difference between
backends is an answer of the backend (``writable``, ``group_ids``, ``recheck``), not an
``if`` on its name in a service. Users and groups are ``User``/``Group`` rows in both:
the sql backend's own rows, or the ldap backend's shadow rows refreshed from the
directory whenever it is asked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from latchkey.identity.models import Domain, Group, User

if TYPE_CHECKING:
    from latchkey.identity.backends.sql import SqlIdentity


@dataclass(frozen=True)
class OwnerState:
    """What a backend says of a user at use time (an application credential, an EC2
    signature): does it still vouch for them, and through which extra groups."""

    exists: bool
    enabled: bool
    group_ids: list[str]
    from_cache: bool


class IdentityBackend(Protocol):
    """One per domain kind. ``writable`` is checked once, in the user service."""

    name: str
    writable: bool

    # -- a domain's configuration (domain create, update, delete) -----------------------

    def configure(self, domain: Domain, options: dict[str, Any] | None) -> None:
        """Check and store a new domain's backend options (``None``: none given)."""
        ...

    def reconfigure(self, domain: Domain, options: dict[str, Any], *, name: str) -> None:
        """Options given for an existing domain (``name``: the domain's name after the
        update), merged into the stored ones and checked before they are saved."""
        ...

    def discard(self, domain_id: str) -> None:
        """A deleted domain (after the deletion committed): what the backend held for it."""
        ...

    # -- users ------------------------------------------------------------------------

    def get_user(self, domain: Domain, user_id: str) -> User | None: ...

    def find_user(self, domain: Domain, name: str) -> User | None: ...

    def list_users(
        self,
        domain: Domain,
        *,
        name: str | None,
        kind: str | None,
        enabled: bool | None,
        marker: str | None,
        limit: int,
    ) -> tuple[list[User], str | None]:
        """One page of the domain's users, ordered by id; the next page's marker."""
        ...

    def verify_password(self, user: User, password: str) -> bool: ...

    def group_ids(self, domain: Domain, user: User) -> list[str]:
        """The groups the user is in that are *not* membership rows (role resolution
        reads those itself): the directory's groups for ldap, none for sql."""
        ...

    def recheck(self, domain: Domain, user: User) -> OwnerState:
        """Does the backend still vouch for this user? A directory changes behind
        Latchkey's back and is asked again; sql rows are the truth, so sql always
        vouches, with no extra groups (the row's own ``enabled`` is the caller's check)."""
        ...

    # -- groups -----------------------------------------------------------------------

    def get_group(self, domain: Domain, group_id: str) -> Group | None: ...

    def find_group(self, domain: Domain, name: str) -> Group | None: ...

    def list_groups(
        self, domain: Domain, *, name: str | None, marker: str | None, limit: int
    ) -> tuple[list[Group], str | None]:
        """One page of the domain's groups, ordered by id; the next page's marker."""
        ...

    def groups_of(self, domain: Domain, user: User) -> list[Group]:
        """Every group the user is a member of, by name."""
        ...

    def members_of(self, domain: Domain, group: Group) -> list[User]:
        """Every member of the group, by name."""
        ...


class IdentityBackends:
    """The backend of each domain, chosen by the domain's ``identity_backend``.

    ``sql`` also answers listings that name no domain: Latchkey's rows of every domain,
    the other backends' shadow rows included."""

    def __init__(self, sql: SqlIdentity, *others: IdentityBackend) -> None:
        self.sql = sql
        self._by_name: dict[str, IdentityBackend] = {sql.name: sql}
        self._by_name.update((backend.name, backend) for backend in others)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._by_name)

    def named(self, name: str) -> IdentityBackend | None:
        return self._by_name.get(name)

    def of(self, domain: Domain) -> IdentityBackend:
        return self._by_name[domain.identity_backend]
