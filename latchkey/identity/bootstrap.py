"""`latchkey bootstrap`: the Default domain, admin project, default roles, admin user.

Idempotent: whatever exists is left alone (an existing admin keeps its password).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from latchkey.audit import CHANGE, AuditLog, AuditTarget
from latchkey.credentials.service import PepperRing
from latchkey.db import DbSession
from latchkey.identity.models import (
    Domain,
    Project,
    Role,
    RoleAssignment,
    RoleImplication,
    User,
)
from latchkey.identity.passwords import PasswordHasher
from latchkey.identity.roles import assignment_key
from latchkey.policy.catalog import Catalog
from latchkey.policy.enforcer import RULES
from latchkey.tokens.keys import KeyRing

DEFAULT_DOMAIN_ID = "default"
ADMIN_PROJECT, ADMIN_USER = "admin", "admin"
DEFAULT_ROLES = ("reader", "member", "admin", "service")
IMPLICATIONS = (("admin", "member"), ("member", "reader"))


@dataclass(frozen=True)
class BootstrapResult:
    created: list[str]
    generated_password: str | None


class Bootstrap:
    def __init__(
        self,
        session: DbSession,
        hasher: PasswordHasher,
        keys: KeyRing,
        audit: AuditLog,
        catalog: Catalog,
        peppers: PepperRing,
    ) -> None:
        self._peppers = peppers
        self._session = session
        self._hasher = hasher
        self._keys = keys
        self._audit = audit
        self._catalog = catalog

    def run(self, admin_password: str | None) -> BootstrapResult:
        created: list[str] = []
        domain = self._session.get(Domain, DEFAULT_DOMAIN_ID)
        if domain is None:
            domain = Domain(
                id=DEFAULT_DOMAIN_ID, name="Default", description="The default sql domain"
            )
            self._session.add(domain)
            created.append("domain Default")
        project = self._session.scalar(
            select(Project).where(
                Project.domain_id == DEFAULT_DOMAIN_ID, Project.name == ADMIN_PROJECT
            )
        )
        if project is None:
            project = Project(
                name=ADMIN_PROJECT,
                domain_id=DEFAULT_DOMAIN_ID,
                is_admin_project=True,
                description="Cloud administrators",
            )
            self._session.add(project)
            created.append("project admin")
        roles = {}
        for name in DEFAULT_ROLES:
            role = self._session.scalar(select(Role).where(Role.name == name))
            if role is None:
                role = Role(name=name)
                self._session.add(role)
                created.append(f"role {name}")
            roles[name] = role
        self._session.flush()
        for prior, implied in IMPLICATIONS:
            pair = (roles[prior].id, roles[implied].id)
            if self._session.get(RoleImplication, pair) is None:
                self._session.add(RoleImplication(prior_role_id=pair[0], implied_role_id=pair[1]))
                created.append(f"implication {prior} -> {implied}")
        generated = None
        user = self._session.scalar(
            select(User).where(User.domain_id == DEFAULT_DOMAIN_ID, User.name == ADMIN_USER)
        )
        if user is None:
            if not admin_password:
                generated = admin_password = secrets.token_urlsafe(24)
            self._hasher.check_policy(admin_password)
            user = User(
                name=ADMIN_USER,
                domain_id=DEFAULT_DOMAIN_ID,
                password_hash=self._hasher.hash(admin_password),
            )
            self._session.add(user)
            self._session.flush()
            created.append("user admin")
        # As `keystone-manage bootstrap`: admin on the admin project, on the default
        # domain and on the system (Keystone's system scope: Latchkey's cloud scope).
        for scope, scope_id in (("project", project.id), ("domain", domain.id), ("system", "all")):
            key = assignment_key(scope, scope_id, "user", user.id, roles["admin"].id)
            if self._session.scalar(select(RoleAssignment.id).where(RoleAssignment.key == key)):
                continue
            target = {"system": scope_id} if scope == "system" else {f"{scope}_id": scope_id}
            self._session.add(
                RoleAssignment(key=key, role_id=roles["admin"].id, user_id=user.id, **target)
            )
            created.append(f"admin role on {scope} {scope_id}")
        if created:
            self._audit.add(
                type=CHANGE,
                action="identity:bootstrap",
                outcome="success",
                actor_id=None,
                target=AuditTarget("domain", DEFAULT_DOMAIN_ID, domain_id=DEFAULT_DOMAIN_ID),
                request_id=None,
                source_ip=None,
                details={"created": created},
            )
        self._session.commit()
        if self._keys.ensure_keys():
            created.append("signing keys")
        if self._peppers.ensure():
            created.append("credential pepper")
        self._catalog.register_builtin(builtin_services())
        return BootstrapResult(created, generated)


# What tenant rules may test on Latchkey's own resources (the targets in
# latchkey/identity/* carry them; docs/policy.md "Latchkey's own actions").
IDENTITY_ATTRIBUTES: dict[str, dict[str, str]] = {
    "identity:project": {"name": "string"},
    "identity:user": {"kind": "string", "name": "string"},
    "identity:application_credential": {"name": "string", "unrestricted": "boolean"},
    "identity:role_assignment": {"role": "string", "actor_type": "string"},
}


def builtin_services() -> list[dict[str, Any]]:
    """Latchkey registers itself in its catalog: every action its own API names."""
    services = []
    for service_type, name in (
        ("identity", "Latchkey identity"),
        ("policy", "Latchkey policy"),
        ("secrets", "Latchkey secrets"),
    ):
        actions = sorted(a for a in RULES if a.startswith(service_type + ":"))
        if service_type == "secrets":
            actions = [
                f"secrets:secret:{verb}" for verb in ("create", "read", "list", "update", "delete")
            ]
        resources = sorted({":".join(a.split(":")[:2]) for a in actions})
        types: dict[str, Any] = {r: {"attributes": {}} for r in resources}
        if service_type == "secrets":
            types = {"secrets:secret": {"attributes": {"name": "string"}}}
        for resource, attributes in IDENTITY_ATTRIBUTES.items():
            if resource in types:
                types[resource] = {"attributes": attributes}
        services.append(
            {"type": service_type, "name": name, "actions": actions, "resource_types": types}
        )
    return services
