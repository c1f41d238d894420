"""LDAP domains: the service between Latchkey's database and each domain's directory.

LDAP users and groups get *shadow rows* in ``user_account`` / ``user_group``
so role assignments, application credentials and audit events can refer to
them. A shadow row's id is derived from the domain id and the directory's id
for the entry (UUID v5), so every Latchkey node computes the same public id
without coordination. The directory stays the authority: shadow rows are
refreshed whenever the directory is asked.
"""

from __future__ import annotations

import functools
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from latchkey.db import DbSession, utcnow
from latchkey.errors import InvalidRequest, LatchkeyError, ServiceUnavailable
from latchkey.identity.backends.ldap import (
    LdapConfig,
    LdapDirectory,
    LdapError,
    LdapGroup,
    LdapUnavailable,
    LdapUser,
)
from latchkey.identity.models import Domain, Group, User
from latchkey.secrets.master_key import KeyProtector

# Configuration-time failures are 422s with their own codes (503 ldap_unavailable is
# for a configured directory that has gone away).
CONFIG_CHECK_CODES = {
    "ldap_unavailable": "ldap_unreachable",
    "ldap_bind_failed": "ldap_bind_failed",
    "ldap_tls_failed": "ldap_tls_failed",
}

# Fixed namespace: changing it would change every LDAP user's public id.
LDAP_ID_NAMESPACE = uuid.UUID("6f1c2d4e-8a3b-5c7d-9e0f-1a2b3c4d5e6f")


@functools.lru_cache(maxsize=65536)  # paging sorts whole listings by it, page after page
def public_id(domain_id: str, kind: str, ldap_id: str) -> str:
    return uuid.uuid5(LDAP_ID_NAMESPACE, f"{domain_id}:{kind}:{ldap_id}").hex


@dataclass(frozen=True)
class OwnerState:
    """What the directory (or the last known state, during an outage) says of a user."""

    exists: bool
    enabled: bool
    group_ids: list[str]
    from_cache: bool


class LdapDomains:
    """Directories per domain, shadow rows, password checks, owner re-checks, health."""

    name = "ldap"
    writable = False

    def __init__(
        self,
        session: DbSession,
        protector: KeyProtector,
        *,
        recheck: timedelta,
        outage_grace: timedelta,
        directory_factory: Callable[[LdapConfig, str | None], LdapDirectory] = LdapDirectory,
    ) -> None:
        self._session = session
        self._protector = protector
        self._recheck = recheck
        self._grace = outage_grace
        self._factory = directory_factory
        self._directories: dict[str, tuple[str, LdapDirectory]] = {}
        self._lock = threading.Lock()
        # DNs seen by the lookup that precedes a password check (saves one search).
        self._dns: dict[str, str] = {}
        self._listings: dict[tuple[str, str], tuple[float, list[Any]]] = {}

    # -- configuration (domain create/update) ----------------------------------------

    def prepare(
        self, domain_id: str, name: str, options: dict[str, Any], sealed_password: bytes | None
    ) -> tuple[dict[str, Any], bytes | None]:
        """Validate and test a configuration; return what to store (password sealed)."""
        try:
            config = LdapConfig.from_mapping(options)
        except LdapError as exc:
            raise InvalidRequest(str(exc), code="ldap_invalid_config") from exc
        except TypeError as exc:
            raise InvalidRequest(
                "an ldap option has the wrong type", code="ldap_invalid_config"
            ) from exc
        password = options.get("password")
        if password is not None and not isinstance(password, str):
            raise InvalidRequest("ldap.password must be a string", code="ldap_invalid_config")
        if password is not None:
            sealed_password = self._protector.seal(password.encode(), _context(domain_id))
        directory = self._factory(config, self._unseal(domain_id, sealed_password))
        try:
            directory.check()
        except LdapError as exc:
            # A clear 4xx at configuration time rather than a 500 at the first login.
            raise InvalidRequest(
                f"the directory of {name!r} failed a test: {exc}",
                code=CONFIG_CHECK_CODES.get(exc.reason, "ldap_check_failed"),
            ) from exc
        finally:
            directory.close()
        return config.public(), sealed_password

    def forget(self, domain_id: str) -> None:
        self._listings = {k: v for k, v in self._listings.items() if k[0] != domain_id}
        with self._lock:
            entry = self._directories.pop(domain_id, None)
        if entry is not None:
            entry[1].close()

    def directory(self, domain: Domain) -> LdapDirectory:
        fingerprint = repr(sorted((domain.ldap_config or {}).items())) + repr(
            domain.ldap_password_sealed
        )
        with self._lock:
            cached = self._directories.get(domain.id)
            if cached is not None and cached[0] == fingerprint:
                return cached[1]
        config = LdapConfig.from_mapping(domain.ldap_config or {})
        directory = self._factory(config, self._unseal(domain.id, domain.ldap_password_sealed))
        with self._lock:
            old = self._directories.get(domain.id)
            self._directories[domain.id] = (fingerprint, directory)
        if old is not None:
            old[1].close()
        return directory

    def _unseal(self, domain_id: str, sealed: bytes | None) -> str | None:
        if not sealed:
            return None
        return self._protector.unseal(sealed, _context(domain_id)).decode()

    # -- users ----------------------------------------------------------------------

    def find_user(self, domain: Domain, name: str) -> User | None:
        """Look the name up in the directory and refresh the shadow row."""
        found = self._call(domain, lambda d: d.find_user(name))
        if found is None:
            return None
        user = self._sync_user(domain, found)
        self._dns[user.id] = found.dn
        return user

    def verify_password(self, user: User, password: str) -> bool:
        domain = self._session.get(Domain, user.domain_id)
        if domain is None or not user.external_id:
            return False
        directory = self.directory(domain)
        dn = self._dns.pop(user.id, None)
        if dn is None:
            found = self._call(domain, lambda d: d.get_user(user.external_id or ""))
            if found is None:
                return False
            dn = found.dn
        entry = LdapUser(user.external_id, user.name, dn, user.email, user.enabled)
        return self._call(domain, lambda _d: directory.authenticate(entry, password))

    def group_ids(self, domain: Domain, user: User) -> list[str]:
        """The user's directory groups as shadow group ids (remembered on the user)."""
        entry = LdapUser(
            user.external_id or "", user.name, self._dns.get(user.id, ""), user.email, user.enabled
        )
        if not entry.dn:
            fresh = self._call(domain, lambda d: d.get_user(user.external_id or ""))
            if fresh is None:
                return []
            entry = fresh
        groups = self._call(domain, lambda d: d.groups_of(entry))
        ids = [self._sync_group(domain, g).id for g in groups]
        user.directory_group_ids = ids
        user.directory_checked_at = utcnow()
        return ids

    def recheck(self, domain: Domain, user: User) -> OwnerState:
        """Does the directory still vouch for this user? Cached for ``recheck``; during
        an outage the last known state holds for ``outage_grace``, then 503."""
        now = utcnow()
        checked = user.directory_checked_at
        if checked is not None and now - checked < self._recheck:
            return OwnerState(True, user.enabled, list(user.directory_group_ids or []), True)
        try:
            found = self.directory(domain).get_user(user.external_id or "")
            if found is None:
                user.enabled = False  # removed from the directory: refused from now on
                user.directory_checked_at = now
                user.directory_group_ids = []
                return OwnerState(False, False, [], False)
            self._sync_user(domain, found)
            self._dns[user.id] = found.dn
            ids = self.group_ids(domain, user)
            return OwnerState(True, found.enabled, ids, False)
        except LdapUnavailable as exc:
            if checked is not None and now - checked < self._grace:
                return OwnerState(True, user.enabled, list(user.directory_group_ids or []), True)
            raise _unavailable(domain) from exc
        except LdapError as exc:
            raise _unavailable(domain) from exc

    def list_users(
        self, domain: Domain, *, name: str | None, marker: str | None, limit: int
    ) -> tuple[list[User], str | None]:
        """Every user, by paged searches; shadow rows refreshed for the page returned."""
        if name:
            user = self.find_user(domain, name)
            return ([user] if user else []), None
        entries = self._listing(domain, "user", lambda d: list(d.iter_users()))
        return self._page(
            entries,
            marker,
            limit,
            lambda e: public_id(domain.id, "user", e.ldap_id),
            lambda page: self._sync_users(domain, page),
        )

    def list_groups(
        self, domain: Domain, *, name: str | None, marker: str | None, limit: int
    ) -> tuple[list[Group], str | None]:
        if name:
            group = self._call(domain, lambda d: d.find_group(name))
            return ([self._sync_group(domain, group)] if group else []), None
        entries = self._listing(domain, "group", lambda d: list(d.iter_groups()))
        return self._page(
            entries,
            marker,
            limit,
            lambda e: public_id(domain.id, "group", e.ldap_id),
            lambda page: [self._sync_group(domain, e) for e in page],
        )

    def _listing(
        self, domain: Domain, kind: str, scan: Callable[[LdapDirectory], list[Any]]
    ) -> list[Any]:
        """A full paged scan, reused for ``recheck`` seconds: walking the pages of a
        10,000-user directory costs one scan, not one per page."""
        key = (domain.id, kind)
        now = time.monotonic()
        cached = self._listings.get(key)
        if cached is not None and now - cached[0] < self._recheck.total_seconds():
            return cached[1]
        entries: list[Any] = self._call(domain, scan)
        self._listings[key] = (now, entries)
        return entries

    @staticmethod
    def _page(
        entries: list[Any],
        marker: str | None,
        limit: int,
        key: Callable[[Any], str],
        sync: Callable[[list[Any]], list[Any]],
    ) -> tuple[list[Any], str | None]:
        # Keys computed once (a UUID v5 each), and the page's rows synced in one go.
        ordered = sorted(((key(e), e) for e in entries), key=lambda pair: pair[0])
        if marker:
            ordered = [pair for pair in ordered if pair[0] > marker]
        page = ordered[:limit]
        rows = sync([e for _, e in page])
        more = len(ordered) > limit
        return rows, (page[-1][0] if more and page else None)

    # -- health ---------------------------------------------------------------------

    def health(self) -> dict[str, dict[str, Any]]:
        report = {}
        for domain in self._session.scalars(
            select(Domain).where(Domain.identity_backend == "ldap")
        ):
            try:
                self.directory(domain).check()
                report[domain.name] = {"status": "ok"}
            except LdapError as exc:
                report[domain.name] = {"status": "unavailable", "error": exc.reason}
        return report

    # -- shadow rows ------------------------------------------------------------------

    def _sync_user(self, domain: Domain, entry: LdapUser) -> User:
        return self._sync_users(domain, [entry])[0]

    def _sync_users(self, domain: Domain, entries: list[LdapUser]) -> list[User]:
        """Shadow rows for many entries: one SELECT and one flush, not two queries each."""
        ids = [public_id(domain.id, "user", e.ldap_id) for e in entries]
        known = (
            {u.id: u for u in self._session.scalars(select(User).where(User.id.in_(ids)))}
            if ids
            else {}
        )
        users = []
        for user_id, entry in zip(ids, entries, strict=True):
            user = known.get(user_id)
            if user is None:
                user = User(
                    id=user_id, domain_id=domain.id, kind="human", external_id=entry.ldap_id
                )
                self._session.add(user)
                known[user_id] = user
            user.name, user.email, user.enabled = entry.name, entry.email, entry.enabled
            # directory_checked_at is left alone: only a check that also read the user's
            # groups (group_ids, recheck) may extend the cache and the outage grace.
            users.append(user)
        self._session.flush()
        return users

    def _sync_group(self, domain: Domain, entry: LdapGroup) -> Group:
        group_id = public_id(domain.id, "group", entry.ldap_id)
        group = self._session.get(Group, group_id)
        if group is None:
            group = Group(id=group_id, domain_id=domain.id, external_id=entry.ldap_id)
            self._session.add(group)
        group.name = entry.name
        self._session.flush()
        return group

    def _call(self, domain: Domain, operation: Callable[[LdapDirectory], Any]) -> Any:
        try:
            return operation(self.directory(domain))
        except LdapUnavailable as exc:
            raise _unavailable(domain) from exc
        except LdapError as exc:
            raise _unavailable(domain, str(exc)) from exc


def _unavailable(domain: Domain, detail: str | None = None) -> LatchkeyError:
    return ServiceUnavailable(
        detail or f"the directory of domain {domain.name!r} cannot be reached",
        code="ldap_unavailable",
        extra={"domain": domain.name},
    )


def _context(domain_id: str) -> str:
    return f"latchkey:ldap-bind-password:{domain_id}"
