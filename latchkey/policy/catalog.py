"""The service catalog: relying services, their endpoints, actions and resource types.

Tenant rules are validated against it: an action, resource type or attribute
the catalog does not know is an error, and so is a value of the wrong type.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from latchkey.audit import CHANGE, AuditLog, AuditTarget
from latchkey.db import DbSession, new_id, utcnow
from latchkey.errors import Conflict, InvalidRequest, LatchkeyError, NotFound
from latchkey.policy.context import CallContext
from latchkey.policy.enforcer import Enforcer, Target
from latchkey.policy.models import Endpoint, EndpointGroup, PolicyBlob, Region, Service
from latchkey.policy.records import (
    EndpointGroupRecord,
    EndpointRecord,
    PolicyBlobRecord,
    RegionRecord,
    ServiceRecord,
)

SERVICE_TYPE = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
NAME_PART = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
ATTRIBUTE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
ATTRIBUTE_TYPES = ("string", "integer", "number", "boolean", "list of string")
MAX_ACTIONS = 500
MAX_RESOURCE_TYPES = 100
MAX_ATTRIBUTES = 100
CACHE_SECONDS = 5.0


INTERFACES = ("public", "internal", "admin")
MAX_EXTRA_BYTES = 16_384


@dataclass(frozen=True)
class Attribute:
    type: str
    sensitive: bool = False


@dataclass(frozen=True)
class CatalogEntry:
    """One enabled service as a token's catalog shows it, with its enabled endpoints
    as (id, interface, url, region_id)."""

    id: str
    type: str
    name: str
    builtin: bool
    endpoints: tuple[tuple[str, str, str, str | None], ...]


@dataclass(frozen=True)
class CatalogView:
    """An immutable snapshot: what tenant rules and decisions are checked against."""

    actions: frozenset[str]
    resource_types: dict[str, dict[str, Attribute]]
    # Every enabled service, by type: the catalog a token answer carries (Keystone
    # clients find their endpoints there).
    services: tuple[CatalogEntry, ...] = ()

    def actions_for(self, resource_type: str) -> list[str]:
        prefix = resource_type + ":"
        return sorted(a for a in self.actions if a.startswith(prefix))

    def sensitive(self, resource_type: str) -> frozenset[str]:
        attributes = self.resource_types.get(resource_type, {})
        return frozenset(name for name, a in attributes.items() if a.sensitive)


class RegionInUse(LatchkeyError):
    """Keystone's answer to deleting a region that endpoints still use: 403, not a denial."""

    status = 403
    code = "region_in_use"


class Catalog:
    def __init__(
        self,
        session: DbSession,
        enforcer: Enforcer,
        audit: AuditLog,
        region: str = "RegionOne",
    ) -> None:
        self._session = session
        self._enforcer = enforcer
        self._audit = audit
        self.region = region  # the region of Latchkey's own endpoints (LATCHKEY_REGION)
        self._region_checked = False
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
        for service in self._session.scalars(_ordered(select(Service))):
            if service.enabled:
                endpoints = tuple(
                    (e.id, e.interface, e.url, e.region_id)
                    for e in service.endpoint_rows
                    if e.enabled
                )
                entries.append(
                    CatalogEntry(service.id, service.type, service.name, service.builtin, endpoints)
                )
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

    def list_services(
        self, ctx: CallContext, service_type: str | None = None, name: str | None = None
    ) -> list[ServiceRecord]:
        self._enforcer.enforce(ctx.auth, "identity:service:list", Target())
        query = _ordered(select(Service))
        if service_type is not None:
            query = query.where(Service.type == service_type)
        if name is not None:
            query = query.where(Service.name == name)
        return [ServiceRecord.of(service) for service in self._session.scalars(query)]

    def get_service(self, ctx: CallContext, ref: str) -> ServiceRecord:
        """By id, or (native API) by type."""
        self._enforcer.enforce(ctx.auth, "identity:service:get", Target())
        return ServiceRecord.of(self._find(ref))

    def get_service_by_id(self, ctx: CallContext, service_id: str) -> ServiceRecord:
        self._enforcer.enforce(ctx.auth, "identity:service:get", Target())
        return ServiceRecord.of(self._by_id(service_id))

    # -- changing (the native API) --------------------------------------------------

    def create_service(self, ctx: CallContext, data: dict[str, Any]) -> ServiceRecord:
        self._enforcer.enforce(ctx.auth, "identity:service:create", Target())
        if self._session.scalar(select(Service.id).where(Service.type == data["type"])):
            raise Conflict(f"a service of type {data['type']!r} exists", code="service_type_taken")
        values = normalise(data)
        endpoints = values.pop("endpoints")
        service = Service(**values)
        self._session.add(service)
        self._session.flush()
        self._set_endpoints(service, endpoints)
        self._record(ctx, "identity:service:create", service)
        self._commit()
        return ServiceRecord.of(service)

    def replace_service(self, ctx: CallContext, ref: str, data: dict[str, Any]) -> ServiceRecord:
        self._enforcer.enforce(ctx.auth, "identity:service:update", Target())
        service = self._find(ref)
        if data["type"] != service.type:
            raise InvalidRequest("a service's type cannot change", code="service_type_fixed")
        values = normalise(data)
        endpoints = values.pop("endpoints")
        for key, value in values.items():
            setattr(service, key, value)
        self._set_endpoints(service, endpoints)
        service.updated_at = utcnow()
        self._record(ctx, "identity:service:update", service)
        self._commit()
        return ServiceRecord.of(service)

    def delete_service(self, ctx: CallContext, ref: str, by_id: bool = False) -> None:
        """Removes its endpoints too; Latchkey's own services are never removed."""
        self._enforcer.enforce(ctx.auth, "identity:service:delete", Target())
        service = self._by_id(ref) if by_id else self._find(ref)
        if service.builtin:
            raise Conflict("Latchkey's own services cannot be removed", code="service_protected")
        self._session.delete(service)
        self._record(ctx, "identity:service:delete", service)
        self._commit()

    def register_builtin(self, services: list[dict[str, Any]]) -> None:
        """Latchkey's own services (bootstrap): created or brought up to date; their
        endpoints are left as the operator set them."""
        self._region_checked = False
        self._ensure_home_region()
        for data in services:
            found = self._session.scalar(
                select(Service)
                .where(Service.type == data["type"])
                .order_by(Service.builtin.desc(), Service.created_at)
            )
            values = normalise(data)
            values.pop("endpoints")
            if found is None:
                self._session.add(Service(**values, builtin=True))
            else:
                for key, value in values.items():
                    setattr(found, key, value)
                found.builtin = True
        self._session.commit()
        self.forget()

    # -- changing (Keystone's /v3 API) ---------------------------------------------

    def create_keystone_service(self, ctx: CallContext, data: dict[str, Any]) -> ServiceRecord:
        """Keystone's rules: any type (several services may share one), no actions."""
        self._enforcer.enforce(ctx.auth, "identity:service:create", Target())
        service = Service(
            type=data["type"],
            name=data.get("name") or "",
            description=data.get("description") or "",
            enabled=data.get("enabled", True),
            extra=data.get("extra") or None,
        )
        self._session.add(service)
        self._session.flush()
        self._record(ctx, "identity:service:create", service)
        self._commit()
        return ServiceRecord.of(service)

    def update_keystone_service(
        self, ctx: CallContext, service_id: str, data: dict[str, Any]
    ) -> ServiceRecord:
        self._enforcer.enforce(ctx.auth, "identity:service:update", Target())
        service = self._by_id(service_id)
        if "type" in data and data["type"] != service.type:
            if service.builtin or service.actions or service.resource_types:
                raise InvalidRequest(
                    "the type of a service with actions cannot change: they are named after it",
                    code="service_type_fixed",
                )
            service.type = data["type"]
        if "enabled" in data and data["enabled"] is False and service.builtin:
            raise Conflict("Latchkey's own services cannot be disabled", code="service_protected")
        for key in ("name", "description", "enabled"):
            if key in data:
                setattr(service, key, data[key] if data[key] is not None else "")
        if data.get("extra"):
            service.extra = {**(service.extra or {}), **data["extra"]}
        service.updated_at = utcnow()
        self._record(ctx, "identity:service:update", service)
        self._commit()
        return ServiceRecord.of(service)

    # -- regions ----------------------------------------------------------------------

    def list_regions(
        self, ctx: CallContext, parent_region_id: str | None = None
    ) -> list[RegionRecord]:
        self._enforcer.enforce(ctx.auth, "identity:region:list", Target())
        self._ensure_home_region()
        query = select(Region).order_by(Region.id)
        if parent_region_id is not None:
            query = query.where(Region.parent_region_id == parent_region_id)
        return [RegionRecord.of(region) for region in self._session.scalars(query)]

    def get_region(self, ctx: CallContext, region_id: str) -> RegionRecord:
        self._enforcer.enforce(ctx.auth, "identity:region:get", Target())
        self._ensure_home_region()
        return RegionRecord.of(self._region(region_id))

    def create_region(self, ctx: CallContext, data: dict[str, Any]) -> RegionRecord:
        self._enforcer.enforce(ctx.auth, "identity:region:create", Target())
        self._ensure_home_region()
        region_id = data.get("id") or new_id()
        if self._session.get(Region, region_id) is not None:
            raise Conflict(f"Duplicate ID, {region_id}.", code="region_exists")
        parent = data.get("parent_region_id")
        if parent is not None:
            self._region(parent)
        region = Region(
            id=region_id,
            description=data.get("description") or "",
            parent_region_id=parent,
            extra=data.get("extra") or None,
        )
        self._session.add(region)
        self._session.flush()
        self._record_object(ctx, "identity:region:create", "region", region.id)
        self._commit()
        return RegionRecord.of(region)

    def update_region(self, ctx: CallContext, region_id: str, data: dict[str, Any]) -> RegionRecord:
        self._enforcer.enforce(ctx.auth, "identity:region:update", Target())
        region = self._region(region_id)
        if "parent_region_id" in data:
            parent = data["parent_region_id"]
            if parent is not None:
                self._region(parent)
                # No circle: the new parent must not be the region or below it.
                seen = {region.id}
                current: str | None = parent
                while current is not None:
                    if current in seen:
                        raise InvalidRequest(
                            "This operation would create a circular region hierarchy.",
                            code="region_circle",
                        )
                    seen.add(current)
                    above = self._session.get(Region, current)
                    current = above.parent_region_id if above is not None else None
            region.parent_region_id = parent
        if "description" in data:
            region.description = data["description"] or ""
        if data.get("extra"):
            region.extra = {**(region.extra or {}), **data["extra"]}
        self._record_object(ctx, "identity:region:update", "region", region.id)
        self._commit()
        return RegionRecord.of(region)

    def delete_region(self, ctx: CallContext, region_id: str) -> None:
        """As Keystone: refused (403) while it or a region below it has endpoints; the
        regions below it go with it. The region of Latchkey's own endpoints stays."""
        self._enforcer.enforce(ctx.auth, "identity:region:delete", Target())
        region = self._region(region_id)
        subtree = self._subtree(region.id)
        if self.region in subtree or self._session.scalar(
            select(Endpoint.id).where(Endpoint.region_id.in_(subtree)).limit(1)
        ):
            raise RegionInUse(
                f"Unable to delete region {region_id} because it or its child regions "
                "have associated endpoints."
            )
        for child_id in reversed(subtree):
            child = self._session.get(Region, child_id)
            if child is not None:
                self._session.delete(child)
        self._record_object(ctx, "identity:region:delete", "region", region_id)
        self._commit()

    def _subtree(self, region_id: str) -> list[str]:
        ids = [region_id]
        index = 0
        while index < len(ids):
            children = self._session.scalars(
                select(Region.id).where(Region.parent_region_id == ids[index])
            )
            ids.extend(c for c in children if c not in ids)
            index += 1
        return ids

    def _region(self, region_id: str) -> Region:
        region = self._session.get(Region, region_id)
        if region is None:
            raise NotFound(f"Could not find region: {region_id}.", code="region_not_found")
        return region

    def _ensure_home_region(self) -> None:
        """The region of Latchkey's own endpoints exists: made by bootstrap, or on first
        use after an upgrade (once per process)."""
        if self._region_checked:
            return
        if self._session.get(Region, self.region) is None:
            self._session.add(Region(id=self.region, description=""))
            try:
                self._session.commit()
            except IntegrityError:  # another worker made it first
                self._session.rollback()
        self._region_checked = True

    def _ensure_region(self, region_id: str) -> None:
        """Keystone's legacy ``region`` (and every native endpoint's): made if missing."""
        if self._session.get(Region, region_id) is None:
            self._session.add(Region(id=region_id, description=""))
            self._session.flush()

    # -- endpoints --------------------------------------------------------------------

    def list_endpoints(
        self,
        ctx: CallContext,
        service_id: str | None = None,
        interface: str | None = None,
        region_id: str | None = None,
    ) -> list[EndpointRecord]:
        self._enforcer.enforce(ctx.auth, "identity:endpoint:list", Target())
        query = select(Endpoint).order_by(Endpoint.service_id, Endpoint.position, Endpoint.id)
        if service_id is not None:
            query = query.where(Endpoint.service_id == service_id)
        if interface is not None:
            query = query.where(Endpoint.interface == interface)
        if region_id is not None:
            query = query.where(Endpoint.region_id == region_id)
        return [EndpointRecord.of(endpoint) for endpoint in self._session.scalars(query)]

    def get_endpoint(self, ctx: CallContext, endpoint_id: str) -> EndpointRecord:
        self._enforcer.enforce(ctx.auth, "identity:endpoint:get", Target())
        return EndpointRecord.of(self._endpoint(endpoint_id))

    def find_endpoint(self, endpoint_id: str) -> EndpointRecord | None:
        endpoint = self._session.get(Endpoint, endpoint_id)
        return EndpointRecord.of(endpoint) if endpoint is not None else None

    def builtin_identity(self) -> ServiceRecord | None:
        service = self._builtin_identity()
        return ServiceRecord.of(service) if service is not None else None

    def _builtin_identity(self) -> Service | None:
        return self._session.scalar(
            select(Service).where(Service.type == "identity", Service.builtin.is_(True))
        )

    def create_endpoint(self, ctx: CallContext, data: dict[str, Any]) -> EndpointRecord:
        """``data``: service_id, interface, url, and region_id (must exist) or region
        (Keystone's legacy name: made if missing), enabled, extra."""
        self._enforcer.enforce(ctx.auth, "identity:endpoint:create", Target())
        self._ensure_home_region()
        service = self._session.get(Service, data["service_id"])
        if service is None:
            raise InvalidRequest(
                "Invalid input for field 'endpoint service_id': not in the service table.",
                code="invalid_endpoint",
            )
        region_id = self._endpoint_region(data)
        endpoint = Endpoint(
            id=data.get("id") or new_id(),
            service_id=service.id,
            interface=data["interface"],
            url=data["url"],
            region_id=region_id,
            enabled=data.get("enabled", True),
            position=len(service.endpoint_rows),
            extra=data.get("extra") or None,
        )
        if self._session.get(Endpoint, endpoint.id) is not None:
            raise Conflict(f"Duplicate ID, {endpoint.id}.", code="endpoint_exists")
        self._session.add(endpoint)
        self._session.flush()
        self._session.expire(service, ["endpoint_rows"])
        self._record_object(ctx, "identity:endpoint:create", "endpoint", endpoint.id)
        self._commit()
        return EndpointRecord.of(endpoint)

    def update_endpoint(
        self, ctx: CallContext, endpoint_id: str, data: dict[str, Any]
    ) -> EndpointRecord:
        self._enforcer.enforce(ctx.auth, "identity:endpoint:update", Target())
        endpoint = self._endpoint(endpoint_id)
        if "service_id" in data and data["service_id"] != endpoint.service_id:
            if self._session.get(Service, data["service_id"]) is None:
                raise InvalidRequest(
                    "Invalid input for field 'endpoint service_id': not in the service table.",
                    code="invalid_endpoint",
                )
            endpoint.service_id = data["service_id"]
        if "region_id" in data or "region" in data:
            endpoint.region_id = self._endpoint_region(data)
        for key in ("interface", "url", "enabled"):
            if key in data:
                setattr(endpoint, key, data[key])
        if data.get("extra"):
            endpoint.extra = {**(endpoint.extra or {}), **data["extra"]}
        self._record_object(ctx, "identity:endpoint:update", "endpoint", endpoint.id)
        self._commit()
        self._session.expire_all()
        return EndpointRecord.of(self._endpoint(endpoint_id))

    def delete_endpoint(self, ctx: CallContext, endpoint_id: str) -> None:
        self._enforcer.enforce(ctx.auth, "identity:endpoint:delete", Target())
        endpoint = self._endpoint(endpoint_id)
        self._session.delete(endpoint)
        self._record_object(ctx, "identity:endpoint:delete", "endpoint", endpoint_id)
        self._commit()
        self._session.expire_all()

    def store_builtin_identity_endpoints(
        self, ctx: CallContext, endpoints: list[tuple[str, str, str]]
    ) -> None:
        """Latchkey's own identity endpoints, derived until now from its base URL, become
        rows (same ids) so that they can be changed or removed like any other."""
        self._enforcer.enforce(ctx.auth, "identity:endpoint:update", Target())
        service = self._builtin_identity()
        if service is None or service.endpoint_rows:
            return
        self._ensure_home_region()
        for position, (endpoint_id, interface, url) in enumerate(endpoints):
            self._session.add(
                Endpoint(
                    id=endpoint_id,
                    service_id=service.id,
                    interface=interface,
                    url=url,
                    region_id=self.region,
                    position=position,
                )
            )
        self._session.flush()
        self._session.expire(service, ["endpoint_rows"])
        self._commit()

    def _endpoint_region(self, data: dict[str, Any]) -> str | None:
        region_id = data.get("region_id")
        if region_id is not None:
            if self._session.get(Region, region_id) is None:
                raise InvalidRequest(
                    "Invalid input for field 'endpoint region_id': not in the region table.",
                    code="invalid_endpoint",
                )
            return str(region_id)
        legacy = data.get("region")
        if legacy is not None:
            self._ensure_region(legacy)
            return str(legacy)
        return None

    def _endpoint(self, endpoint_id: str) -> Endpoint:
        endpoint = self._session.get(Endpoint, endpoint_id)
        if endpoint is None:
            raise NotFound(f"Could not find endpoint: {endpoint_id}.", code="endpoint_not_found")
        return endpoint

    def _set_endpoints(self, service: Service, endpoints: list[dict[str, str]]) -> None:
        """The native API's whole list: rows that stay keep their ids."""
        existing = {(e.interface, e.url, e.region_id): e for e in service.endpoint_rows}
        rows = []
        for position, item in enumerate(endpoints):
            region_id = item.get("region")
            if region_id is not None:
                self._ensure_region(region_id)
            key = (item["interface"], item["url"], region_id)
            row = existing.pop(key, None)
            if row is None:
                row = Endpoint(
                    service_id=service.id,
                    interface=item["interface"],
                    url=item["url"],
                    region_id=region_id,
                )
            row.position = position
            rows.append(row)
        service.endpoint_rows = rows
        self._session.flush()

    # -- endpoint groups (OS-EP-FILTER) and policy blobs ------------------------------

    def list_endpoint_groups(
        self, ctx: CallContext, name: str | None = None
    ) -> list[EndpointGroupRecord]:
        self._enforcer.enforce(ctx.auth, "identity:endpoint_group:list", Target())
        query = select(EndpointGroup).order_by(EndpointGroup.name, EndpointGroup.id)
        if name is not None:
            query = query.where(EndpointGroup.name == name)
        return [EndpointGroupRecord.of(group) for group in self._session.scalars(query)]

    def get_endpoint_group(self, ctx: CallContext, group_id: str) -> EndpointGroupRecord:
        self._enforcer.enforce(ctx.auth, "identity:endpoint_group:get", Target())
        return EndpointGroupRecord.of(self._group(group_id))

    def endpoints_of_group(self, ctx: CallContext, group_id: str) -> list[EndpointRecord]:
        self._enforcer.enforce(ctx.auth, "identity:endpoint_group:get", Target())
        filters = self._group(group_id).filters
        query = select(Endpoint).order_by(Endpoint.service_id, Endpoint.position, Endpoint.id)
        for key in ("service_id", "interface", "region_id"):
            if key in filters:
                query = query.where(getattr(Endpoint, key) == filters[key])
        return [EndpointRecord.of(endpoint) for endpoint in self._session.scalars(query)]

    def create_endpoint_group(self, ctx: CallContext, data: dict[str, Any]) -> EndpointGroupRecord:
        self._enforcer.enforce(ctx.auth, "identity:endpoint_group:create", Target())
        group = EndpointGroup(
            name=data["name"],
            description=data.get("description") or "",
            filters=data["filters"],
        )
        self._session.add(group)
        self._session.flush()
        self._record_object(ctx, "identity:endpoint_group:create", "endpoint_group", group.id)
        self._commit()
        return EndpointGroupRecord.of(group)

    def update_endpoint_group(
        self, ctx: CallContext, group_id: str, data: dict[str, Any]
    ) -> EndpointGroupRecord:
        self._enforcer.enforce(ctx.auth, "identity:endpoint_group:update", Target())
        group = self._group(group_id)
        for key in ("name", "filters"):
            if key in data:
                setattr(group, key, data[key])
        if "description" in data:
            group.description = data["description"] or ""
        self._record_object(ctx, "identity:endpoint_group:update", "endpoint_group", group.id)
        self._commit()
        return EndpointGroupRecord.of(group)

    def delete_endpoint_group(self, ctx: CallContext, group_id: str) -> None:
        self._enforcer.enforce(ctx.auth, "identity:endpoint_group:delete", Target())
        self._session.delete(self._group(group_id))
        self._record_object(ctx, "identity:endpoint_group:delete", "endpoint_group", group_id)
        self._commit()

    def _group(self, group_id: str) -> EndpointGroup:
        group = self._session.get(EndpointGroup, group_id)
        if group is None:
            raise NotFound(
                f"Could not find Endpoint Group: {group_id}.", code="endpoint_group_not_found"
            )
        return group

    def list_policy_blobs(
        self, ctx: CallContext, blob_type: str | None = None
    ) -> list[PolicyBlobRecord]:
        self._enforcer.enforce(ctx.auth, "identity:policy_blob:list", Target())
        query = select(PolicyBlob).order_by(PolicyBlob.created_at, PolicyBlob.id)
        if blob_type is not None:
            query = query.where(PolicyBlob.type == blob_type)
        return [PolicyBlobRecord.of(blob) for blob in self._session.scalars(query)]

    def get_policy_blob(self, ctx: CallContext, blob_id: str) -> PolicyBlobRecord:
        self._enforcer.enforce(ctx.auth, "identity:policy_blob:get", Target())
        return PolicyBlobRecord.of(self._blob(blob_id))

    def create_policy_blob(self, ctx: CallContext, data: dict[str, Any]) -> PolicyBlobRecord:
        self._enforcer.enforce(ctx.auth, "identity:policy_blob:create", Target())
        blob = PolicyBlob(type=data["type"], blob=data["blob"], extra=data.get("extra") or None)
        self._session.add(blob)
        self._session.flush()
        self._record_object(ctx, "identity:policy_blob:create", "policy_blob", blob.id)
        self._commit()
        return PolicyBlobRecord.of(blob)

    def update_policy_blob(
        self, ctx: CallContext, blob_id: str, data: dict[str, Any]
    ) -> PolicyBlobRecord:
        self._enforcer.enforce(ctx.auth, "identity:policy_blob:update", Target())
        blob = self._blob(blob_id)
        for key in ("type", "blob"):
            if key in data:
                setattr(blob, key, data[key])
        if data.get("extra"):
            blob.extra = {**(blob.extra or {}), **data["extra"]}
        self._record_object(ctx, "identity:policy_blob:update", "policy_blob", blob.id)
        self._commit()
        return PolicyBlobRecord.of(blob)

    def delete_policy_blob(self, ctx: CallContext, blob_id: str) -> None:
        self._enforcer.enforce(ctx.auth, "identity:policy_blob:delete", Target())
        self._session.delete(self._blob(blob_id))
        self._record_object(ctx, "identity:policy_blob:delete", "policy_blob", blob_id)
        self._commit()

    def _blob(self, blob_id: str) -> PolicyBlob:
        blob = self._session.get(PolicyBlob, blob_id)
        if blob is None:
            raise NotFound(f"Could not find policy: {blob_id}.", code="policy_blob_not_found")
        return blob

    # -- helpers ----------------------------------------------------------------------

    def _by_id(self, service_id: str) -> Service:
        service = self._session.get(Service, service_id)
        if service is None:
            raise NotFound(f"Could not find service: {service_id}.", code="service_not_found")
        return service

    def _find(self, ref: str) -> Service:
        service = self._session.get(Service, ref) or self._session.scalar(
            select(Service)
            .where(Service.type == ref)
            .order_by(Service.builtin.desc(), Service.created_at)
            .limit(1)
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

    def _record_object(self, ctx: CallContext, action: str, kind: str, object_id: str) -> None:
        self._audit.add(
            type=CHANGE,
            action=action,
            outcome="success",
            actor_id=ctx.actor_id,
            target=AuditTarget(kind, object_id),
            request_id=ctx.request_id,
            source_ip=ctx.source_ip,
            details={},
        )

    def _commit(self) -> None:
        self._session.commit()
        self.forget()


def _ordered(query: Any) -> Any:
    return query.order_by(Service.type, Service.created_at, Service.id)


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
