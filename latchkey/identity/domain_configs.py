"""Keystone's domain-specific configuration: the ``identity`` and ``ldap`` groups.

Kept as the API sets it and reported as Keystone reports it, but not applied: a
Latchkey domain's identity backend and LDAP settings are its ``identity_backend``
and ``ldap`` (``/v1/domains``), checked against the directory before they are
saved (docs/decisions.md). The LDAP bind password is refused here: it belongs in
the secret store, through the domain's own settings.
"""

from __future__ import annotations

import copy
from dataclasses import fields
from typing import Any

from latchkey.audit import AuditTarget
from latchkey.db import utcnow
from latchkey.errors import InvalidRequest, NotFound
from latchkey.identity.backends.ldap.directory import LdapConfig
from latchkey.identity.common import IdentityServiceBase
from latchkey.identity.models import Domain, DomainConfig
from latchkey.policy.context import CallContext
from latchkey.policy.enforcer import Target

CREATE = "identity:domain_config:create"
GET = "identity:domain_config:get"
UPDATE = "identity:domain_config:update"
DELETE = "identity:domain_config:delete"
GET_DEFAULT = "identity:domain_config:get_default"

_LDAP_DEFAULTS = {f.name: f.default for f in fields(LdapConfig) if f.name not in ("extra", "url")}
DEFAULTS: dict[str, dict[str, Any]] = {
    "identity": {"driver": "sql", "list_limit": None},
    "ldap": {"url": "ldap://localhost", **_LDAP_DEFAULTS},
}
MAX_VALUE = 4096


def default_config(group: str | None = None, option: str | None = None) -> dict[str, Any]:
    if group is None:
        return copy.deepcopy(DEFAULTS)
    _check_group(group)
    if option is None:
        return {group: dict(DEFAULTS[group])}
    _check_option(group, option)
    return {option: DEFAULTS[group][option]}


def _check_group(group: str) -> None:
    if group not in DEFAULTS:
        raise NotFound(f"Group {group} is not supported for domain specific configurations")


def _check_option(group: str, option: str) -> None:
    if option not in DEFAULTS[group]:
        raise NotFound(
            f"Option {option} in group {group} is not supported for domain specific configurations"
        )


def _checked(config: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(config, dict) or not config:
        raise InvalidRequest("config must be a non-empty object of groups")
    checked: dict[str, dict[str, Any]] = {}
    for group, options in config.items():
        if group not in DEFAULTS:
            raise InvalidRequest(f"Group {group} is not supported for domain configurations")
        if not isinstance(options, dict) or not options:
            raise InvalidRequest(f"config.{group} must be a non-empty object of options")
        for option, value in options.items():
            if group == "ldap" and option == "password":
                raise InvalidRequest(
                    "set an LDAP bind password through the domain's ldap settings "
                    "(kept in the secret store), not its configuration"
                )
            if option not in DEFAULTS[group]:
                raise InvalidRequest(f"Option {option} in group {group} is not supported")
            if value is not None and not isinstance(value, (str, int, bool)):
                raise InvalidRequest(f"{group}.{option} must be a string, number or boolean")
            if isinstance(value, str) and len(value) > MAX_VALUE:
                raise InvalidRequest(f"{group}.{option} is too long")
        checked[group] = dict(options)
    return checked


class DomainConfigs(IdentityServiceBase):
    def _enforce_domain(self, ctx: CallContext, action: str, domain_id: str) -> None:
        self._enforce(ctx, action, Target(domain_id=domain_id))
        if self._session.get(Domain, domain_id) is None:
            raise NotFound(f"Could not find domain: {domain_id}.", code="domain_not_found")

    def defaults(
        self, ctx: CallContext, group: str | None = None, option: str | None = None
    ) -> dict[str, Any]:
        self._enforce(ctx, GET_DEFAULT, Target())
        return default_config(group, option)

    def get(
        self, ctx: CallContext, domain_id: str, group: str | None = None, option: str | None = None
    ) -> dict[str, Any]:
        self._enforce_domain(ctx, GET, domain_id)
        config = self._config(domain_id)
        if group is None:
            return config
        _check_group(group)
        if group not in config:
            raise NotFound(f"Could not find {group} in the domain's configuration.")
        if option is None:
            return {group: config[group]}
        _check_option(group, option)
        if option not in config[group]:
            raise NotFound(f"Could not find {group}.{option} in the domain's configuration.")
        return {option: config[group][option]}

    def create(self, ctx: CallContext, domain_id: str, config: Any) -> tuple[dict[str, Any], bool]:
        """Set the whole configuration; True when there was none before."""
        self._enforce_domain(ctx, CREATE, domain_id)
        checked = _checked(config)
        row = self._session.get(DomainConfig, domain_id)
        created = row is None
        if row is None:
            row = DomainConfig(domain_id=domain_id, config=checked, updated_at=utcnow())
            self._session.add(row)
        else:
            row.config, row.updated_at = checked, utcnow()
        self._record(ctx, CREATE, domain_id, checked)
        self._commit("domain_config_exists", "the domain's configuration changed meanwhile")
        return checked, created

    def update(
        self,
        ctx: CallContext,
        domain_id: str,
        config: Any,
        group: str | None = None,
        option: str | None = None,
    ) -> dict[str, Any]:
        self._enforce_domain(ctx, UPDATE, domain_id)
        current = self._config(domain_id)
        if group is not None:
            _check_group(group)
            if option is not None:
                _check_option(group, option)
                if not isinstance(config, dict) or set(config) != {option}:
                    raise InvalidRequest(f"config must name exactly the option {option}")
                config = {group: config}
            elif not isinstance(config, dict) or set(config) != {group}:
                raise InvalidRequest(f"config must name exactly the group {group}")
        checked = _checked(config)
        merged = copy.deepcopy(current)
        for name, options in checked.items():
            merged.setdefault(name, {}).update(options)
        self._save(ctx, UPDATE, domain_id, merged)
        return merged

    def delete(
        self, ctx: CallContext, domain_id: str, group: str | None = None, option: str | None = None
    ) -> None:
        self._enforce_domain(ctx, DELETE, domain_id)
        row = self._row(domain_id)
        if group is None:
            self._session.delete(row)
            self._record(ctx, DELETE, domain_id, {})
            self._session.commit()
            return
        config = copy.deepcopy(row.config)
        _check_group(group)
        if group not in config:
            raise NotFound(f"Could not find {group} in the domain's configuration.")
        if option is None:
            del config[group]
        else:
            _check_option(group, option)
            if option not in config[group]:
                raise NotFound(f"Could not find {group}.{option} in the domain's configuration.")
            del config[group][option]
            if not config[group]:
                del config[group]
        self._save(ctx, DELETE, domain_id, config)

    def _row(self, domain_id: str) -> DomainConfig:
        row = self._session.get(DomainConfig, domain_id)
        if row is None:
            raise NotFound(f"Could not find Domain Config: {domain_id}.")
        return row

    def _config(self, domain_id: str) -> dict[str, Any]:
        return copy.deepcopy(self._row(domain_id).config)

    def _save(self, ctx: CallContext, action: str, domain_id: str, config: dict[str, Any]) -> None:
        row = self._row(domain_id)
        row.config, row.updated_at = config, utcnow()
        self._record(ctx, action, domain_id, config)
        self._session.commit()

    def _record(
        self, ctx: CallContext, action: str, domain_id: str, config: dict[str, Any]
    ) -> None:
        groups = {name: sorted(options) for name, options in config.items()}
        target = AuditTarget("domain_config", domain_id, domain_id=domain_id)
        self._record_change(ctx, action, target, options=groups)
