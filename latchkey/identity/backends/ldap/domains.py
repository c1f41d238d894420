"""LDAP domains: the service between Latchkey's database and each domain's directory.

LDAP users and groups get *shadow rows* in ``user_account`` / ``user_group``
so role assignments, application credentials and audit events can refer to
them. A shadow row's id is derived from the domain id and the directory's id
for the entry (UUID v5), so every Latchkey node computes the same public id
without coordination. The directory stays the authority: shadow rows are
refreshed whenever the directory is asked.

The service bind password lives in the secret store, never in the database.
``ldap.password`` is either a value, which Latchkey moves into the store (as
``ldap-bind-password-<domain id>``), or ``{"secret_ref": "<project id>/<secret
id>"}``, a tenant secret of the admin project. The column
``domain.ldap_password_sealed`` (named after the Foundation's format) now holds
only the reference, ASCII: ``system:<name>#<version>`` or
``secret:<project id>/<secret id>``. Passwords are read once per reference and
held in memory, so a store outage does not stop LDAP logins.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar, cast

from sqlalchemy import Executable, Table, select
from sqlalchemy.dialects import postgresql, sqlite

from latchkey import metrics
from latchkey.db import DbSession, utcnow
from latchkey.errors import (
    Conflict,
    InvalidRequest,
    LatchkeyError,
    NotFound,
    ServiceUnavailable,
)
from latchkey.identity.backends import OwnerState
from latchkey.identity.backends.ldap.directory import (
    LdapConfig,
    LdapDirectory,
    LdapError,
    LdapGroup,
    LdapUnavailable,
    LdapUser,
)
from latchkey.identity.models import Domain, Group, Project, User
from latchkey.secrets.backends import SecretStoreUnavailable
from latchkey.secrets.backends.master_key import SEALED_PREFIX, KeyProtector
from latchkey.secrets.system import SystemSecrets

log = logging.getLogger(__name__)

_Shadow = TypeVar("_Shadow", User, Group)

# Configuration-time failures are 422s with their own codes (503 ldap_unavailable is
# for a configured directory that has gone away).
CONFIG_CHECK_CODES = {
    "ldap_unavailable": "ldap_unreachable",
    "ldap_bind_failed": "ldap_bind_failed",
    "ldap_tls_failed": "ldap_tls_failed",
}

# Fixed namespace: changing it would change every LDAP user's public id.
LDAP_ID_NAMESPACE = uuid.UUID("6f1c2d4e-8a3b-5c7d-9e0f-1a2b3c4d5e6f")

PASSWORD_PREFIX = "ldap-bind-password-"  # + domain id: the password's name in the store
SYSTEM_REF, TENANT_REF = "system:", "secret:"
SECRET_REF = re.compile(r"^([0-9a-f]{32})/([0-9a-f]{32})$")  # <project id>/<secret id>


@functools.lru_cache(maxsize=65536)  # paging sorts whole listings by it, page after page
def public_id(domain_id: str, kind: str, ldap_id: str) -> str:
    return uuid.uuid5(LDAP_ID_NAMESPACE, f"{domain_id}:{kind}:{ldap_id}").hex


class LdapDomains:
    """Directories per domain, shadow rows, password checks, owner re-checks, health."""

    name = "ldap"
    writable = False

    legacy_label = "LDAP bind passwords"

    def __init__(
        self,
        session: DbSession,
        system: SystemSecrets,
        *,
        recheck: timedelta,
        outage_grace: timedelta,
        directory_factory: Callable[[LdapConfig, str | None], LdapDirectory] = LdapDirectory,
    ) -> None:
        self._session = session
        self._system = system
        self._passwords: dict[tuple[str, bytes], str] = {}  # (domain id, reference) -> value
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
        self, domain_id: str, name: str, options: dict[str, Any], password_ref: bytes | None
    ) -> tuple[dict[str, Any], bytes | None]:
        """Validate and test a configuration; return what to store: the public options
        and the password's reference (a new value is written to the secret store only
        once the directory accepted it)."""
        try:
            config = LdapConfig.from_mapping(options)
        except LdapError as exc:
            raise InvalidRequest(str(exc), code="ldap_invalid_config") from exc
        except TypeError as exc:
            raise InvalidRequest(
                "an ldap option has the wrong type", code="ldap_invalid_config"
            ) from exc
        given = options.get("password")
        value: str | None = None
        if given is None:
            value = self._password(domain_id, password_ref)
        elif isinstance(given, str):
            value = given or None
        elif isinstance(given, dict) and set(given) == {"secret_ref"}:
            password_ref = (TENANT_REF + self._tenant_ref(given["secret_ref"])).encode()
            try:
                value = self._password(domain_id, password_ref)
            except ServiceUnavailable as exc:
                if exc.code != "ldap_password_missing":
                    raise
                raise InvalidRequest(
                    "ldap.password.secret_ref names no secret of the admin project",
                    code="ldap_invalid_secret_ref",
                ) from exc
        else:
            raise InvalidRequest(
                'ldap.password must be a string or {"secret_ref": "<project id>/<secret id>"}',
                code="ldap_invalid_config",
            )
        directory = self._factory(config, value)
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
        if isinstance(given, str):
            password_ref = self._store_password(domain_id, value) if value else None
        return config.public(), password_ref

    def configure(self, domain: Domain, options: dict[str, Any] | None) -> None:
        if not options:
            raise InvalidRequest(
                "an ldap domain needs its `ldap` options", code="ldap_invalid_config"
            )
        domain.ldap_config, domain.ldap_password_sealed = self.prepare(
            domain.id, domain.name, options, None
        )

    def reconfigure(self, domain: Domain, options: dict[str, Any], *, name: str) -> None:
        # Options given replace the stored ones key by key; the password stays unless
        # a new one is given. The result is tested before it is saved.
        merged = {**(domain.ldap_config or {}), **options}
        domain.ldap_config, domain.ldap_password_sealed = self.prepare(
            domain.id, name, merged, domain.ldap_password_sealed
        )
        self.forget(domain.id)

    def _store_password(self, domain_id: str, value: str) -> bytes:
        entry = self._system.put(PASSWORD_PREFIX + domain_id, value.encode())
        reference = f"{SYSTEM_REF}{entry.name}#{entry.version}".encode()
        self._passwords[(domain_id, reference)] = value
        return reference

    def _tenant_ref(self, ref: Any) -> str:
        """``<project id>/<secret id>`` of a secret of the admin project, checked."""
        match = SECRET_REF.match(ref) if isinstance(ref, str) else None
        if match is None:
            raise InvalidRequest(
                "ldap.password.secret_ref must be <project id>/<secret id>",
                code="ldap_invalid_secret_ref",
            )
        # Only the cloud operators' own secrets: a domain's configuration (its URL
        # included) must never be a way to send a tenant's secret to a directory.
        project = self._session.get(Project, match.group(1))
        if project is None or not project.is_admin_project:
            raise InvalidRequest(
                "ldap.password.secret_ref must name a secret of the admin project",
                code="ldap_invalid_secret_ref",
            )
        return ref

    def forget(self, domain_id: str) -> None:
        self._passwords = {k: v for k, v in self._passwords.items() if k[0] != domain_id}
        self._listings = {k: v for k, v in self._listings.items() if k[0] != domain_id}
        with self._lock:
            entry = self._directories.pop(domain_id, None)
        if entry is not None:
            entry[1].close()

    def discard(self, domain_id: str) -> None:
        """A deleted domain: its directory closed, its stored bind password removed.

        Called after the deletion committed; with the store down the password stays
        there (logged) rather than undo a deletion that is already done.
        """
        self.forget(domain_id)
        name = PASSWORD_PREFIX + domain_id
        if not self._system.has(name):
            return
        try:
            self._system.delete(name)
            self._session.commit()
        except SecretStoreUnavailable:
            self._session.rollback()
            log.warning(
                "the deleted domain's bind password stays in the secret store",
                extra={"domain_id": domain_id, "secret": name},
            )

    def preload(self) -> None:
        """Read every domain's bind password into memory (at start), store errors logged."""
        for domain in self._session.scalars(
            select(Domain).where(Domain.identity_backend == "ldap")
        ):
            try:
                self._password(domain.id, domain.ldap_password_sealed)
            except LatchkeyError as exc:
                log.warning(
                    "cannot read an LDAP bind password at start",
                    extra={"domain": domain.name, "error": exc.code},
                )

    def directory(self, domain: Domain) -> LdapDirectory:
        fingerprint = repr(sorted((domain.ldap_config or {}).items())) + repr(
            domain.ldap_password_sealed
        )
        with self._lock:
            cached = self._directories.get(domain.id)
            if cached is not None and cached[0] == fingerprint:
                return cached[1]
        config = LdapConfig.from_mapping(domain.ldap_config or {})
        directory = self._factory(config, self._password(domain.id, domain.ldap_password_sealed))
        with self._lock:
            old = self._directories.get(domain.id)
            self._directories[domain.id] = (fingerprint, directory)
        if old is not None:
            old[1].close()
        return directory

    def _password(self, domain_id: str, reference: bytes | None) -> str | None:
        if not reference:
            return None
        cached = self._passwords.get((domain_id, reference))
        if cached is not None:
            return cached
        if reference.startswith(SEALED_PREFIX):
            raise ServiceUnavailable(
                "this domain's bind password is still sealed by the master key file; "
                "run `latchkey secrets migrate-internal`",
                code="ldap_password_not_migrated",
            )
        text = reference.decode("ascii")
        if text.startswith(SYSTEM_REF):
            name = text.removeprefix(SYSTEM_REF).partition("#")[0]
            value = self._system.get(name).decode()
        else:
            project_id, _, secret_id = text.removeprefix(TENANT_REF).partition("/")
            try:
                value = self._system.tenant_secret(project_id, secret_id).decode()
            except NotFound as exc:
                raise ServiceUnavailable(
                    "the secret holding this domain's bind password is gone",
                    code="ldap_password_missing",
                ) from exc
        self._passwords[(domain_id, reference)] = value
        return value

    # -- the Foundation's sealed passwords ----------------------------------------------

    def _legacy_domains(self) -> list[Domain]:
        domains = self._session.scalars(select(Domain).where(Domain.identity_backend == "ldap"))
        return [d for d in domains if (d.ldap_password_sealed or b"").startswith(SEALED_PREFIX)]

    def legacy_count(self) -> int:
        return len(self._legacy_domains())

    def migrate_legacy(self, legacy: KeyProtector) -> int:
        """Move bind passwords sealed by the master-key file into the store."""
        moved = 0
        for domain in self._legacy_domains():
            try:
                sealed = domain.ldap_password_sealed or b""
                value = legacy.unseal(sealed, _context(domain.id)).decode()
                domain.ldap_password_sealed = (
                    self._store_password(domain.id, value) if value else None
                )
                self._session.commit()
            except BaseException:
                self._session.rollback()
                raise
            self.forget(domain.id)
            moved += 1
        return moved

    # -- users ----------------------------------------------------------------------

    def find_user(self, domain: Domain, name: str) -> User | None:
        """Look the name up in the directory and refresh the shadow row."""
        found = self._call(domain, "find_user", lambda d: d.find_user(name))
        if found is None:
            return None
        user = self._sync_user(domain, found)
        self._dns[user.id] = found.dn
        return user

    def get_user(self, domain: Domain, user_id: str) -> User | None:
        """The shadow row, refreshed from the directory (None once the entry is gone)."""
        row = self._session.get(User, user_id)
        if row is None or row.domain_id != domain.id or not row.external_id:
            return None
        ldap_id = row.external_id
        found = self._call(domain, "get_user", lambda d: d.get_user(ldap_id))
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
            found = self._call(domain, "get_user", lambda d: d.get_user(user.external_id or ""))
            if found is None:
                return False
            dn = found.dn
        entry = LdapUser(user.external_id, user.name, dn, user.email, user.enabled)
        return self._call(
            domain, "authenticate", lambda _d: directory.authenticate(entry, password)
        )

    def group_ids(self, domain: Domain, user: User) -> list[str]:
        """The user's directory groups as shadow group ids (remembered on the user)."""
        entry = LdapUser(
            user.external_id or "", user.name, self._dns.get(user.id, ""), user.email, user.enabled
        )
        if not entry.dn:
            fresh = self._call(domain, "get_user", lambda d: d.get_user(user.external_id or ""))
            if fresh is None:
                return []
            entry = fresh
        groups = self._call(domain, "groups_of", lambda d: d.groups_of(entry))
        ids = [group.id for group in self._sync_groups(domain, groups)]
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
            found = _observed(
                "get_user", lambda: self.directory(domain).get_user(user.external_id or "")
            )
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
        self,
        domain: Domain,
        *,
        name: str | None,
        kind: str | None,
        enabled: bool | None,
        marker: str | None,
        limit: int,
    ) -> tuple[list[User], str | None]:
        """Every user, by paged searches; shadow rows refreshed for the page returned.
        ``kind`` and ``enabled`` are not applied: a directory lists its people as they are."""
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
            group = self.find_group(domain, name)
            return ([group] if group else []), None
        entries = self._listing(domain, "group", lambda d: list(d.iter_groups()))
        return self._page(
            entries,
            marker,
            limit,
            lambda e: public_id(domain.id, "group", e.ldap_id),
            lambda page: self._sync_groups(domain, page),
        )

    def get_group(self, domain: Domain, group_id: str) -> Group | None:
        row = self._session.get(Group, group_id)
        if row is None or row.domain_id != domain.id or not row.external_id:
            return None
        ldap_id = row.external_id
        found = self._call(domain, "get_group", lambda d: d.get_group(ldap_id))
        return self._sync_groups(domain, [found])[0] if found else None

    def find_group(self, domain: Domain, name: str) -> Group | None:
        found = self._call(domain, "find_group", lambda d: d.find_group(name))
        return self._sync_groups(domain, [found])[0] if found else None

    def groups_of(self, domain: Domain, user: User) -> list[Group]:
        ids = self.group_ids(domain, user)
        query = select(Group).where(Group.id.in_(ids)).order_by(Group.name)
        return list(self._session.scalars(query))

    def members_of(self, domain: Domain, group: Group) -> list[User]:
        ldap_id = group.external_id or ""
        entry = self._call(domain, "get_group", lambda d: d.get_group(ldap_id))
        if entry is None:
            return []
        members = self._call(domain, "members_of", lambda d: d.members_of(entry))
        return sorted(self._sync_users(domain, members), key=lambda user: user.name)

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
        entries: list[Any] = self._call(domain, f"list_{kind}s", scan)
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
        fresh = {
            user_id: {
                "id": user_id,
                "domain_id": domain.id,
                "kind": "human",
                "external_id": entry.ldap_id,
                "name": entry.name,
                "email": entry.email,
                "enabled": entry.enabled,
            }
            for user_id, entry in zip(ids, entries, strict=True)
        }
        known = self._shadow_rows(User, domain.id, fresh)
        users = []
        for user_id, entry in zip(ids, entries, strict=True):
            user = known[user_id]
            user.name, user.email, user.enabled = entry.name, entry.email, entry.enabled
            # directory_checked_at is left alone: only a check that also read the user's
            # groups (group_ids, recheck) may extend the cache and the outage grace.
            users.append(user)
        self._session.flush()
        return users

    def _sync_groups(self, domain: Domain, entries: list[LdapGroup]) -> list[Group]:
        ids = [public_id(domain.id, "group", e.ldap_id) for e in entries]
        fresh = {
            group_id: {
                "id": group_id,
                "domain_id": domain.id,
                "external_id": entry.ldap_id,
                "name": entry.name,
            }
            for group_id, entry in zip(ids, entries, strict=True)
        }
        known = self._shadow_rows(Group, domain.id, fresh)
        groups = []
        for group_id, entry in zip(ids, entries, strict=True):
            group = known[group_id]
            group.name = entry.name
            groups.append(group)
        self._session.flush()
        return groups

    def _free_names(
        self, model: type[_Shadow], domain_id: str, fresh: dict[str, dict[str, Any]]
    ) -> None:
        """The directory decides who holds a name: a shadow row of another entry still
        carrying one of these names (renamed, or deleted and the name given to someone
        new) gets a placeholder name until its own entry is seen again."""
        names = {values["name"] for values in fresh.values()}
        stale = self._session.scalars(
            select(model).where(
                model.domain_id == domain_id,
                model.name.in_(names),
                model.id.not_in(list(fresh)),
            )
        )
        renamed = False
        for row in stale:
            row.name = f"~{row.id}"  # ids are unique, names never start with "~" in LDAP
            renamed = True
        if renamed:
            self._session.flush()

    def _shadow_rows(
        self, model: type[_Shadow], domain_id: str, fresh: dict[str, dict[str, Any]]
    ) -> dict[str, _Shadow]:
        """id -> row for every id of ``fresh``, inserting the missing ones from it.

        Two workers may both find a row missing (two first logins of one person, or of
        two members of one group, at once): the insert skips rows that conflict with
        one that exists by then (``ON CONFLICT DO NOTHING`` on every unique index, not
        only the id: PostgreSQL may meet the other worker's row first in the
        (domain, name) index, and a conflict in an index that is not an arbiter is an
        error); PostgreSQL waits for the other transaction to end first, SQLite for
        its write lock. The rows are read back, so the second worker uses the first
        one's row instead of failing. Missing ids are inserted in id order, so
        concurrent workers lock them in the same order.

        A row still missing after that lost its name to another entry's row written
        meanwhile (a rename seen by two workers at once): names are freed again and
        the insert tried once more; a second loss is a 409 the client may retry.
        """
        if not fresh:
            return {}
        known: dict[str, _Shadow] = {}
        for _attempt in range(2):
            self._free_names(model, domain_id, fresh)
            wanted = sorted(set(fresh) - set(known))
            rows = self._session.scalars(select(model).where(model.id.in_(wanted)))
            known.update((row.id, row) for row in rows)
            missing = sorted(set(fresh) - set(known))
            if not missing:
                return known
            self._session.execute(
                _insert_unless_present(self._session, model), [fresh[i] for i in missing]
            )
            added = self._session.scalars(select(model).where(model.id.in_(missing)))
            known.update((row.id, row) for row in added)
            if len(known) == len(fresh):
                return known
        raise Conflict(
            "the directory entry changed while it was being read; try again",
            code="directory_changed",
        )

    def _call(self, domain: Domain, name: str, operation: Callable[[LdapDirectory], Any]) -> Any:
        try:
            return _observed(name, lambda: operation(self.directory(domain)))
        except LdapUnavailable as exc:
            raise _unavailable(domain) from exc
        except LdapError as exc:
            raise _unavailable(domain, str(exc)) from exc


T = TypeVar("T")


def _observed(name: str, call: Callable[[], T]) -> T:
    """One directory call, timed (``latchkey_ldap_seconds``); its LdapError counted
    (``latchkey_ldap_errors_total``). ``name`` is one of a few fixed operations."""
    started = time.perf_counter()
    try:
        return call()
    except LdapError:
        metrics.child(metrics.LDAP_ERRORS, name).inc()
        raise
    finally:
        metrics.child(metrics.LDAP_SECONDS, name).observe(time.perf_counter() - started)


def _unavailable(domain: Domain, detail: str | None = None) -> LatchkeyError:
    return ServiceUnavailable(
        detail or f"the directory of domain {domain.name!r} cannot be reached",
        code="ldap_unavailable",
        extra={"domain": domain.name},
    )


def _insert_unless_present(session: DbSession, model: type[_Shadow]) -> Executable:
    """INSERT ... ON CONFLICT DO NOTHING (any unique index), in the session's dialect."""
    table = cast(Table, model.__table__)
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    return sqlite.insert(table).on_conflict_do_nothing()


def _context(domain_id: str) -> str:
    """The associated data the Foundation sealed a bind password with."""
    return f"latchkey:ldap-bind-password:{domain_id}"
