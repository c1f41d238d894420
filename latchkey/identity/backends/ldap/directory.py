"""The ldap backend: a read-only corporate directory, reached through ldap3.

Pure directory access, no Flask and no database: ``LdapDirectory`` finds
users and groups, checks passwords by binding as the user over pooled
connections, and lists with paged searches. Option names are Keystone's
``[ldap]`` options so operators can carry their configuration over.

Every value placed in a filter goes through ``escape_filter_chars`` (LDAP
injection), and an empty password is refused before any bind: an LDAP
"unauthenticated bind" (a DN with an empty password) succeeds without
checking anything.
"""

from __future__ import annotations

import contextlib
import queue
import ssl
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import ldap3
from ldap3.core.exceptions import LDAPException, LDAPSocketOpenError, LDAPStartTLSError
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import parse_dn

SCOPES = {"one": ldap3.LEVEL, "sub": ldap3.SUBTREE, "base": ldap3.BASE}
TLS_REQUIREMENTS = {"demand": ssl.CERT_REQUIRED, "allow": ssl.CERT_OPTIONAL, "never": ssl.CERT_NONE}
TRUE_WORDS = frozenset({"true", "yes", "1", "on"})
OPTION_TYPES: dict[str, type] = {"str": str, "int": int, "bool": bool}
OPTION_TYPE_WORDS = {str: "string", int: "integer", bool: "boolean"}

# ldap3's ServerPool sleeps POOLING_LOOP_TIMEOUT (10 s by default) after every failed
# cycle over its servers, the last one included: with ``active=1`` that is 10 s added to
# every request while a directory is down (logins, /readyz, configuration checks).
ldap3.set_config_parameter("POOLING_LOOP_TIMEOUT", 0)


class LdapError(Exception):
    """Base of directory errors; ``reason`` is a stable machine word."""

    reason = "ldap_error"


class LdapUnavailable(LdapError):
    reason = "ldap_unavailable"


class LdapTlsFailed(LdapUnavailable):
    """StartTLS or LDAPS failed: usually the CA file or the server's certificate."""

    reason = "ldap_tls_failed"


class LdapBindFailed(LdapError):
    reason = "ldap_bind_failed"


class LdapConfigError(LdapError):
    reason = "ldap_invalid_config"


@dataclass(frozen=True)
class LdapConfig:
    """A domain's ``ldap`` object (Keystone's option names), password excluded."""

    url: str
    suffix: str = ""
    user: str = ""  # service bind DN; empty: anonymous searches
    query_scope: str = "sub"
    page_size: int = 500
    user_tree_dn: str = ""
    user_filter: str = ""
    user_objectclass: str = "inetOrgPerson"
    user_id_attribute: str = "uid"
    user_name_attribute: str = "uid"
    user_mail_attribute: str = "mail"
    user_enabled_attribute: str = ""  # empty: every user is enabled_default
    user_enabled_mask: int = 0  # non-zero: the attribute is an integer, these bits mean DISABLED
    user_enabled_invert: bool = False
    user_enabled_default: bool = True
    group_tree_dn: str = ""
    group_filter: str = ""
    group_objectclass: str = "groupOfNames"
    group_id_attribute: str = "cn"
    group_name_attribute: str = "cn"
    group_member_attribute: str = "member"
    group_members_are_ids: bool = False  # posixGroup/memberUid: members are user ids, not DNs
    use_tls: bool = False  # StartTLS on ldap:// URLs; ldaps:// URLs use TLS anyway
    tls_cacertfile: str = ""
    tls_req_cert: str = "demand"
    connection_timeout: int = 5  # seconds, connecting and each operation
    pool_size: int = 10  # pooled connections used for user binds
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> LdapConfig:
        known = {f.name: f for f in fields(cls) if f.name != "extra"}
        unknown = sorted(set(values) - set(known) - {"password"})
        if unknown:
            raise LdapConfigError(f"unknown ldap options: {', '.join(unknown)}")
        for name, value in values.items():
            # Annotations are strings here (postponed evaluation): "str", "int", "bool".
            expected = OPTION_TYPES.get(str(known[name].type)) if name in known else None
            if expected is not None and type(value) is not expected:  # no bool for int
                raise LdapConfigError(f"ldap.{name} must be a JSON {OPTION_TYPE_WORDS[expected]}")
        if not values.get("url"):
            raise LdapConfigError("ldap.url is required")
        config = cls(**{k: v for k, v in values.items() if k in known})
        config.check()
        return config

    def check(self) -> None:
        for url in self.urls:
            if not url.startswith(("ldap://", "ldaps://")):
                raise LdapConfigError(f"ldap.url {url!r} must start with ldap:// or ldaps://")
        if self.query_scope not in SCOPES:
            raise LdapConfigError("ldap.query_scope must be one, sub or base")
        if self.tls_req_cert not in TLS_REQUIREMENTS:
            raise LdapConfigError("ldap.tls_req_cert must be demand, allow or never")
        if not 1 <= self.page_size <= 10_000 or not 1 <= self.pool_size <= 100:
            raise LdapConfigError("ldap.page_size is 1..10000 and ldap.pool_size 1..100")
        if not 1 <= self.connection_timeout <= 120:
            raise LdapConfigError("ldap.connection_timeout is 1..120 seconds")
        for name in ("user_tree_dn", "group_tree_dn", "suffix"):
            value = getattr(self, name)
            if value:
                try:
                    parse_dn(value)
                except LDAPException as exc:
                    raise LdapConfigError(f"ldap.{name} is not a DN") from exc
        if not (self.user_tree_dn or self.suffix):
            raise LdapConfigError("set ldap.user_tree_dn or ldap.suffix")

    @property
    def urls(self) -> list[str]:
        return [u.strip() for u in self.url.split(",") if u.strip()]

    @property
    def users_base(self) -> str:
        return self.user_tree_dn or f"ou=Users,{self.suffix}"

    @property
    def groups_base(self) -> str:
        return self.group_tree_dn or f"ou=Groups,{self.suffix}"

    def public(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}


@dataclass(frozen=True)
class LdapUser:
    ldap_id: str
    name: str
    dn: str
    email: str | None
    enabled: bool


@dataclass(frozen=True)
class LdapGroup:
    ldap_id: str
    name: str
    dn: str


class LdapDirectory:
    """One directory (a domain's), with a service connection and a pool for user binds."""

    def __init__(self, config: LdapConfig, password: str | None) -> None:
        self.config = config
        self._password = password or None
        self._servers = ldap3.ServerPool(
            [self._server(url) for url in config.urls],
            ldap3.FIRST,  # fail over in the order given
            active=1,  # one pass over the list, then give up (an outage must be quick)
            # With several servers, skip a dead one for a while; with one, retry at once
            # so the domain recovers as soon as its directory does.
            exhaust=config.connection_timeout if len(config.urls) > 1 else False,
        )
        self._service: ldap3.Connection | None = None
        self._service_lock = threading.Lock()
        self._binds: queue.LifoQueue[ldap3.Connection] = queue.LifoQueue(config.pool_size)

    # -- connections --------------------------------------------------------------

    def _server(self, url: str) -> ldap3.Server:
        tls = ldap3.Tls(
            validate=TLS_REQUIREMENTS[self.config.tls_req_cert],
            ca_certs_file=self.config.tls_cacertfile or None,
            version=ssl.PROTOCOL_TLS_CLIENT,
        )
        return ldap3.Server(
            url,
            use_ssl=url.startswith("ldaps://"),
            tls=tls,
            connect_timeout=self.config.connection_timeout,
            get_info=ldap3.NONE,
        )

    def _open(self, user: str | None, password: str | None) -> ldap3.Connection:
        connection = ldap3.Connection(
            self._servers,
            user=user,
            password=password,
            auto_bind=ldap3.AUTO_BIND_NONE,
            client_strategy=ldap3.SAFE_SYNC,
            receive_timeout=self.config.connection_timeout,
            raise_exceptions=False,
            read_only=True,
        )
        try:
            connection.open()
            if self.config.use_tls and not self._uses_ldaps():
                connection.start_tls()
        except LDAPStartTLSError as exc:
            raise LdapTlsFailed(
                f"StartTLS with {self.config.url} failed: check "
                "tls_cacertfile and the server certificate"
            ) from exc
        except LDAPSocketOpenError as exc:
            if "ssl" in str(exc).lower() or "certificate" in str(exc).lower():
                raise LdapTlsFailed(
                    f"TLS with {self.config.url} failed: check "
                    "tls_cacertfile and the server certificate"
                ) from exc
            raise LdapUnavailable(f"cannot reach {self.config.url}: {exc}") from exc
        except LDAPException as exc:
            raise LdapUnavailable(
                f"cannot open a connection to {self.config.url}: {type(exc).__name__}"
            ) from exc
        return connection

    def _uses_ldaps(self) -> bool:
        return all(url.startswith("ldaps://") for url in self.config.urls)

    def _service_connection(self) -> ldap3.Connection:
        with self._service_lock:
            if self._service is not None and not self._service.closed:
                return self._service
            connection = self._open(self.config.user or None, self._password)
            if self.config.user or self._password:
                ok, result, _, _ = connection.bind()
                if not ok:
                    connection.unbind()
                    raise LdapBindFailed(
                        f"the service bind as {self.config.user!r} failed: "
                        f"{result.get('description', 'refused')}"
                    )
            self._service = connection
            return connection

    def _search(
        self, base: str, query: str, attributes: list[str], scope: Any = None
    ) -> list[dict[str, Any]]:
        """A search over the service connection, reconnecting once if it broke."""
        for attempt in (1, 2):
            connection = self._service_connection()
            try:
                ok, result, response, _ = connection.search(
                    base,
                    query,
                    search_scope=scope or SCOPES[self.config.query_scope],
                    attributes=attributes,
                    size_limit=0,
                    time_limit=self.config.connection_timeout,
                )
            except LDAPException as exc:
                self._drop_service()
                if attempt == 2:
                    raise LdapUnavailable(
                        f"search failed on {self.config.url}: {type(exc).__name__}"
                    ) from exc
                continue
            if ok or result.get("result") in (0, 32):  # 0 with no entries; 32: noSuchObject
                return [entry for entry in response or [] if entry.get("type") == "searchResEntry"]
            if result.get("result") in (51, 52, 80, 81):  # busy, unavailable, other, down
                self._drop_service()
                if attempt == 2:
                    raise LdapUnavailable(f"{self.config.url}: {result.get('description')}")
                continue
            raise LdapError(f"search failed: {result.get('description')}")
        raise LdapUnavailable(self.config.url)

    def _paged(self, base: str, query: str, attributes: list[str]) -> Iterator[dict[str, Any]]:
        """Every entry, page by page on one connection (paging cookies are per connection)."""
        connection = self._open(self.config.user or None, self._password)
        try:
            if self.config.user or self._password:
                ok, result, _, _ = connection.bind()
                if not ok:
                    raise LdapBindFailed(f"the service bind failed: {result.get('description')}")
            cookie: bytes | None = None
            while True:
                try:
                    ok, result, response, _ = connection.search(
                        base,
                        query,
                        search_scope=SCOPES[self.config.query_scope],
                        attributes=attributes,
                        paged_size=self.config.page_size,
                        paged_cookie=cookie,
                        time_limit=self.config.connection_timeout,
                    )
                except LDAPException as exc:
                    raise LdapUnavailable(f"paged search failed: {type(exc).__name__}") from exc
                if not ok and result.get("result") not in (0, 32):
                    raise LdapUnavailable(f"paged search failed: {result.get('description')}")
                for entry in response or []:
                    if entry.get("type") == "searchResEntry":
                        yield entry
                controls = result.get("controls") or {}
                cookie = (
                    (controls.get("1.2.840.113556.1.4.319") or {}).get("value", {}).get("cookie")
                )
                if not cookie:
                    return
        finally:
            connection.unbind()

    def _drop_service(self) -> None:
        with self._service_lock:
            if self._service is not None:
                with contextlib.suppress(LDAPException):
                    self._service.unbind()
            self._service = None

    # -- users --------------------------------------------------------------------

    def _user_filter(self, attribute: str | None = None, value: str | None = None) -> str:
        parts = [f"(objectClass={escape_filter_chars(self.config.user_objectclass)})"]
        if self.config.user_filter:
            parts.append(self.config.user_filter)  # operator-written, trusted
        if attribute is not None and value is not None:
            parts.append(f"({attribute}={escape_filter_chars(value)})")
        return "(&" + "".join(parts) + ")"

    def _user_attributes(self) -> list[str]:
        c = self.config
        names = {c.user_id_attribute, c.user_name_attribute, c.user_mail_attribute}
        if c.user_enabled_attribute:
            names.add(c.user_enabled_attribute)
        return sorted(names)

    def find_user(self, name: str) -> LdapUser | None:
        return self._one_user(self.config.user_name_attribute, name)

    def get_user(self, ldap_id: str) -> LdapUser | None:
        return self._one_user(self.config.user_id_attribute, ldap_id)

    def _one_user(self, attribute: str, value: str) -> LdapUser | None:
        if not value or "\x00" in value:
            return None
        entries = self._search(
            self.config.users_base, self._user_filter(attribute, value), self._user_attributes()
        )
        # Ambiguity is refused: two entries answering one name must not pick one at random.
        return self._user(entries[0]) if len(entries) == 1 else None

    def iter_users(self) -> Iterator[LdapUser]:
        for entry in self._paged(
            self.config.users_base, self._user_filter(), self._user_attributes()
        ):
            user = self._user(entry)
            if user is not None:
                yield user

    def _user(self, entry: dict[str, Any]) -> LdapUser | None:
        attrs = entry.get("attributes") or {}
        ldap_id = _first(attrs.get(self.config.user_id_attribute))
        name = _first(attrs.get(self.config.user_name_attribute))
        if not ldap_id or not name:
            return None
        return LdapUser(
            ldap_id=ldap_id,
            name=name,
            dn=entry["dn"],
            email=_first(attrs.get(self.config.user_mail_attribute)),
            enabled=self._enabled(attrs),
        )

    def _enabled(self, attrs: Mapping[str, Any]) -> bool:
        c = self.config
        if not c.user_enabled_attribute:
            return c.user_enabled_default
        raw = _first(attrs.get(c.user_enabled_attribute))
        if raw is None:
            return c.user_enabled_default
        if c.user_enabled_mask:
            try:
                enabled = not (int(raw) & c.user_enabled_mask)  # AD: bit 2 set = disabled
            except ValueError:
                return False
        else:
            enabled = raw.strip().lower() in TRUE_WORDS
        return not enabled if c.user_enabled_invert else enabled

    def authenticate(self, user: LdapUser, password: str) -> bool:
        """Bind as the user; an empty password never reaches the directory."""
        if not password or "\x00" in password:
            return False
        for attempt in (1, 2):
            # A pooled connection may have died with the server: then retry on a new one.
            connection = self._bind_connection(fresh=attempt == 2)
            try:
                ok, result, _, _ = connection.rebind(user=user.dn, password=password)
            except LDAPException as exc:
                with contextlib.suppress(LDAPException):
                    connection.unbind()
                if attempt == 2:
                    raise LdapUnavailable(f"cannot bind at {self.config.url}") from exc
                continue
            if not ok and result and result.get("result") in (51, 52, 80, 81):
                connection.unbind()
                if attempt == 2:
                    raise LdapUnavailable(f"{self.config.url}: {result.get('description')}")
                continue
            self._return_bind_connection(connection)
            return bool(ok)
        return False

    def _bind_connection(self, fresh: bool = False) -> ldap3.Connection:
        if not fresh:
            try:
                connection = self._binds.get_nowait()
                if not connection.closed:
                    return connection
            except queue.Empty:
                pass
        return self._open(None, None)

    def _return_bind_connection(self, connection: ldap3.Connection) -> None:
        try:
            self._binds.put_nowait(connection)
        except queue.Full:
            connection.unbind()

    # -- groups -------------------------------------------------------------------

    def _group_filter(self, attribute: str | None = None, value: str | None = None) -> str:
        parts = [f"(objectClass={escape_filter_chars(self.config.group_objectclass)})"]
        if self.config.group_filter:
            parts.append(self.config.group_filter)
        if attribute is not None and value is not None:
            parts.append(f"({attribute}={escape_filter_chars(value)})")
        return "(&" + "".join(parts) + ")"

    def _group_attributes(self) -> list[str]:
        return sorted({self.config.group_id_attribute, self.config.group_name_attribute})

    def groups_of(self, user: LdapUser) -> list[LdapGroup]:
        member = user.ldap_id if self.config.group_members_are_ids else user.dn
        entries = self._search(
            self.config.groups_base,
            self._group_filter(self.config.group_member_attribute, member),
            self._group_attributes(),
        )
        return [g for g in (self._group(e) for e in entries) if g is not None]

    def find_group(self, name: str) -> LdapGroup | None:
        entries = self._search(
            self.config.groups_base,
            self._group_filter(self.config.group_name_attribute, name),
            self._group_attributes(),
        )
        return self._group(entries[0]) if len(entries) == 1 else None

    def get_group(self, ldap_id: str) -> LdapGroup | None:
        if not ldap_id or "\x00" in ldap_id:
            return None
        entries = self._search(
            self.config.groups_base,
            self._group_filter(self.config.group_id_attribute, ldap_id),
            self._group_attributes(),
        )
        return self._group(entries[0]) if len(entries) == 1 else None

    def members_of(self, group: LdapGroup) -> list[LdapUser]:
        """The group's members that are users of this directory (others are skipped)."""
        attribute = self.config.group_member_attribute
        entries = self._search(group.dn, self._group_filter(), [attribute], scope=ldap3.BASE)
        values = (entries[0].get("attributes") or {}).get(attribute) if entries else None
        if isinstance(values, str):
            values = [values]
        members = []
        for value in values or []:
            if self.config.group_members_are_ids:
                user = self.get_user(value)
            else:
                found = self._search(
                    value, self._user_filter(), self._user_attributes(), scope=ldap3.BASE
                )
                user = self._user(found[0]) if len(found) == 1 else None
            if user is not None:
                members.append(user)
        return members

    def iter_groups(self) -> Iterator[LdapGroup]:
        for entry in self._paged(
            self.config.groups_base, self._group_filter(), self._group_attributes()
        ):
            group = self._group(entry)
            if group is not None:
                yield group

    def _group(self, entry: dict[str, Any]) -> LdapGroup | None:
        attrs = entry.get("attributes") or {}
        ldap_id = _first(attrs.get(self.config.group_id_attribute))
        name = _first(attrs.get(self.config.group_name_attribute))
        if not ldap_id or not name:
            return None
        return LdapGroup(ldap_id=ldap_id, name=name, dn=entry["dn"])

    # -- health -------------------------------------------------------------------

    def check(self) -> None:
        """Connect, service-bind and read the users' base: raises on any failure."""
        self._drop_service()
        self._search(self.config.users_base, "(objectClass=*)", ["1.1"], scope=ldap3.BASE)

    def close(self) -> None:
        self._drop_service()
        while True:
            try:
                self._binds.get_nowait().unbind()
            except queue.Empty:
                return
            except LDAPException:
                continue


def _first(value: Any) -> str | None:
    if isinstance(value, list):
        value = value[0] if value else None
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)
