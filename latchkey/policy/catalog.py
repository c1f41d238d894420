"""The service catalog: relying services, their endpoints, actions and resource types.

Tenant rules are validated against it: an action, resource type or attribute
the catalog does not know is an error, and so is a value of the wrong type.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, String, Text, select
from sqlalchemy.orm import Mapped, mapped_column

from latchkey.audit import CHANGE, AuditLog, AuditTarget
from latchkey.db import Base, DbSession, UTCDateTime, new_id, utcnow
from latchkey.errors import Conflict, InvalidRequest, NotFound
from latchkey.policy.context import CallContext
from latchkey.policy.enforcer import Enforcer, Target

SERVICE_TYPE = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
NAME_PART = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
ATTRIBUTE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
ATTRIBUTE_TYPES = ("string", "integer", "number", "boolean", "list of string")
MAX_ACTIONS = 500
MAX_RESOURCE_TYPES = 100
MAX_ATTRIBUTES = 100
CACHE_SECONDS = 5.0


class Service(Base):
    __tablename__ = "catalog_service"

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=new_id)
    type: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str] = mapped_column(Text, default="")
    endpoints: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    actions: Mapped[list[str]] = mapped_column(JSON, default=list)
    # {"objects:container": {"attributes": {"env": "string", "owner": {"type": "string",
    #   "sensitive": true}}}}; normalised on save to {"type", "sensitive"} objects.
    resource_types: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


@dataclass(frozen=True)
class Attribute:
    type: str
    sensitive: bool = False


@dataclass(frozen=True)
class CatalogView:
    """An immutable snapshot: what tenant rules and decisions are checked against."""

    actions: frozenset[str]
    resource_types: dict[str, dict[str, Attribute]]
    # (id, type, name, endpoints) of every service, by type: the catalog a token
    # answer carries (Keystone clients find their endpoints there).
    services: tuple[tuple[str, str, str, tuple[dict[str, Any], ...]], ...] = ()

    def actions_for(self, resource_type: str) -> list[str]:
        prefix = resource_type + ":"
        return sorted(a for a in self.actions if a.startswith(prefix))

    def sensitive(self, resource_type: str) -> frozenset[str]:
        attributes = self.resource_types.get(resource_type, {})
        return frozenset(name for name, a in attributes.items() if a.sensitive)


class Catalog:
    def __init__(self, session: DbSession, enforcer: Enforcer, audit: AuditLog) -> None:
        self._session = session
        self._enforcer = enforcer
        self._audit = audit
        self._cache: tuple[float, CatalogView] | None = None
        self._lock = threading.Lock()

    # -- reading --------------------------------------------------------------------

    def view(self) -> CatalogView:
        cached = self._cache
        if cached is not None and time.monotonic() - cached[0] < CACHE_SECONDS:
            return cached[1]
        actions: set[str] = set()
        types: dict[str, dict[str, Attribute]] = {}
        entries = []
        for service in self._session.scalars(select(Service).order_by(Service.type)):
            entries.append((service.id, service.type, service.name, tuple(service.endpoints or ())))
            actions.update(service.actions)
            for name, spec in service.resource_types.items():
                types[name] = {
                    attr: Attribute(value["type"], bool(value.get("sensitive")))
                    for attr, value in (spec.get("attributes") or {}).items()
                }
        view = CatalogView(frozenset(actions), types, tuple(entries))
        with self._lock:
            self._cache = (time.monotonic(), view)
        return view

    def forget(self) -> None:
        self._cache = None

    def list_services(self, ctx: CallContext) -> list[Service]:
        self._enforcer.enforce(ctx.auth, "identity:service:list", Target())
        return list(self._session.scalars(select(Service).order_by(Service.type)))

    def get_service(self, ctx: CallContext, ref: str) -> Service:
        self._enforcer.enforce(ctx.auth, "identity:service:get", Target())
        return self._find(ref)

    # -- changing -------------------------------------------------------------------

    def create_service(self, ctx: CallContext, data: dict[str, Any]) -> Service:
        self._enforcer.enforce(ctx.auth, "identity:service:create", Target())
        if self._session.scalar(select(Service.id).where(Service.type == data["type"])):
            raise Conflict(f"a service of type {data['type']!r} exists", code="service_type_taken")
        service = Service(**normalise(data))
        self._session.add(service)
        self._session.flush()
        self._record(ctx, "identity:service:create", service)
        self._commit()
        return service

    def replace_service(self, ctx: CallContext, ref: str, data: dict[str, Any]) -> Service:
        self._enforcer.enforce(ctx.auth, "identity:service:update", Target())
        service = self._find(ref)
        if data["type"] != service.type:
            raise InvalidRequest("a service's type cannot change", code="service_type_fixed")
        for key, value in normalise(data).items():
            setattr(service, key, value)
        service.updated_at = utcnow()
        self._record(ctx, "identity:service:update", service)
        self._commit()
        return service

    def delete_service(self, ctx: CallContext, ref: str) -> None:
        self._enforcer.enforce(ctx.auth, "identity:service:delete", Target())
        service = self._find(ref)
        if service.type in LATCHKEY_SERVICE_TYPES:
            raise Conflict("Latchkey's own services cannot be removed", code="service_protected")
        self._session.delete(service)
        self._record(ctx, "identity:service:delete", service)
        self._commit()

    def register_builtin(self, services: list[dict[str, Any]]) -> None:
        """Latchkey's own services (bootstrap): created or brought up to date."""
        for data in services:
            found = self._session.scalar(select(Service).where(Service.type == data["type"]))
            values = normalise(data)
            if found is None:
                self._session.add(Service(**values))
            else:
                for key, value in values.items():
                    setattr(found, key, value)
        self._session.commit()
        self.forget()

    def _find(self, ref: str) -> Service:
        service = self._session.get(Service, ref) or self._session.scalar(
            select(Service).where(Service.type == ref)
        )
        if service is None:
            raise NotFound(f"no service {ref!r}", code="service_not_found")
        return service

    def _record(self, ctx: CallContext, action: str, service: Service) -> None:
        self._audit.add(
            type=CHANGE,
            action=action,
            outcome="success",
            actor_id=ctx.actor_id,
            target=AuditTarget("service", service.id),
            request_id=ctx.request_id,
            source_ip=ctx.source_ip,
            details={"type": service.type},
        )

    def _commit(self) -> None:
        self._session.commit()
        self.forget()


def normalise(data: dict[str, Any]) -> dict[str, Any]:
    """Check a service document and return its stored form; InvalidRequest names the field."""
    service_type = data["type"]
    if not SERVICE_TYPE.match(service_type):
        raise _invalid("type", "a lower-case word such as 'objects'")
    actions = list(dict.fromkeys(data.get("actions") or []))
    if len(actions) > MAX_ACTIONS:
        raise _invalid("actions", f"at most {MAX_ACTIONS}")
    for index, action in enumerate(actions):
        parts = action.split(":")
        if (
            len(parts) != 3
            or parts[0] != service_type
            or not all(NAME_PART.match(p) for p in parts[1:])
        ):
            raise _invalid(
                f"actions/{index}", f"{action!r} is not '{service_type}:<resource>:<verb>'"
            )
    types = data.get("resource_types") or {}
    if len(types) > MAX_RESOURCE_TYPES:
        raise _invalid("resource_types", f"at most {MAX_RESOURCE_TYPES}")
    stored_types: dict[str, Any] = {}
    for name, spec in types.items():
        parts = name.split(":")
        if len(parts) != 2 or parts[0] != service_type or not NAME_PART.match(parts[1]):
            raise _invalid(f"resource_types/{name}", f"not '{service_type}:<resource>'")
        attributes = (spec or {}).get("attributes") or {}
        if not isinstance(attributes, dict) or len(attributes) > MAX_ATTRIBUTES:
            raise _invalid(
                f"resource_types/{name}/attributes",
                f"an object of at most {MAX_ATTRIBUTES} attributes",
            )
        stored: dict[str, Any] = {}
        for attr, attr_spec in attributes.items():
            if not isinstance(attr, str) or not ATTRIBUTE_NAME.match(attr):
                raise _invalid(
                    f"resource_types/{name}/attributes",
                    f"attribute names are lower-case identifiers, not {attr!r}",
                )
            if isinstance(attr_spec, str):
                attr_spec = {"type": attr_spec}
            if not isinstance(attr_spec, dict) or attr_spec.get("type") not in ATTRIBUTE_TYPES:
                raise _invalid(
                    f"resource_types/{name}/attributes/{attr}",
                    f"type must be one of {', '.join(ATTRIBUTE_TYPES)}",
                )
            stored[attr] = {
                "type": attr_spec["type"],
                "sensitive": bool(attr_spec.get("sensitive", False)),
            }
        stored_types[name] = {"attributes": stored}
    return {
        "type": service_type,
        "name": data.get("name") or service_type,
        "description": data.get("description", ""),
        "endpoints": list(data.get("endpoints") or []),
        "actions": actions,
        "resource_types": stored_types,
    }


def _invalid(pointer: str, detail: str) -> InvalidRequest:
    return InvalidRequest(
        f"{pointer}: {detail}", code="invalid_service", extra={"pointer": "/" + pointer}
    )


LATCHKEY_SERVICE_TYPES = ("identity", "policy", "secrets")
