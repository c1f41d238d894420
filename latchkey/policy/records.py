"""What the policy package hands to front doors: plain frozen values, never ORM rows.

Each record carries the fields the front doors read, under the names the rows have
(so the /v1 schemas dump them by attribute and the /v3 bodies read them as before).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # of() takes rows; importing a record loads no ORM class
    from latchkey.policy.models import Endpoint, EndpointGroup, PolicyBlob, Region, Service


def _copy(value: dict[str, Any] | None) -> dict[str, Any] | None:
    return dict(value) if value is not None else None


@dataclass(frozen=True, slots=True)
class RegionRecord:
    id: str
    description: str
    parent_region_id: str | None
    extra: dict[str, Any] | None
    created_at: datetime

    @classmethod
    def of(cls, row: Region) -> RegionRecord:
        return cls(row.id, row.description, row.parent_region_id, _copy(row.extra), row.created_at)


@dataclass(frozen=True, slots=True)
class EndpointRecord:
    id: str
    service_id: str
    interface: str
    url: str
    region_id: str | None
    enabled: bool
    extra: dict[str, Any] | None
    created_at: datetime

    @classmethod
    def of(cls, row: Endpoint) -> EndpointRecord:
        return cls(
            id=row.id,
            service_id=row.service_id,
            interface=row.interface,
            url=row.url,
            region_id=row.region_id,
            enabled=row.enabled,
            extra=_copy(row.extra),
            created_at=row.created_at,
        )


@dataclass(frozen=True, slots=True)
class ServiceRecord:
    id: str
    type: str
    name: str
    description: str
    enabled: bool
    builtin: bool
    actions: list[str]
    resource_types: dict[str, Any]
    # The native API's ``endpoints``: ``[{interface, url, region}]``, in order.
    endpoints: list[dict[str, str]]
    extra: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: Service) -> ServiceRecord:
        return cls(
            id=row.id,
            type=row.type,
            name=row.name,
            description=row.description,
            enabled=row.enabled,
            builtin=row.builtin,
            actions=list(row.actions or []),
            resource_types=dict(row.resource_types or {}),
            endpoints=row.endpoints,
            extra=_copy(row.extra),
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


@dataclass(frozen=True, slots=True)
class EndpointGroupRecord:
    id: str
    name: str
    description: str
    filters: dict[str, Any]
    created_at: datetime

    @classmethod
    def of(cls, row: EndpointGroup) -> EndpointGroupRecord:
        return cls(row.id, row.name, row.description, dict(row.filters or {}), row.created_at)


@dataclass(frozen=True, slots=True)
class PolicyBlobRecord:
    id: str
    type: str
    blob: str
    extra: dict[str, Any] | None
    created_at: datetime

    @classmethod
    def of(cls, row: PolicyBlob) -> PolicyBlobRecord:
        return cls(row.id, row.type, row.blob, _copy(row.extra), row.created_at)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    decided_by: str  # token | boundary | policy | error | budget
    rule: str | None = None
    explanation: dict[str, Any] | None = None
    code: str | None = None  # decision_budget_exceeded, with decided_by "budget"

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"allowed": self.allowed, "decided_by": self.decided_by}
        if self.rule is not None:
            body["rule"] = self.rule
        if self.code is not None:
            body["code"] = self.code
        if self.explanation is not None:
            body["explain"] = self.explanation
        return body
