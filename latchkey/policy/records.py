"""What the policy package hands to front doors: plain frozen values, never ORM rows.

Each record carries the fields the front doors read, under the names the rows have
(so the /v1 schemas dump them by attribute and the /v3 bodies read them as before).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from latchkey.records import copy_row

if TYPE_CHECKING:  # of() takes rows; importing a record loads no ORM class
    from latchkey.policy.models import Endpoint, EndpointGroup, PolicyBlob, Region, Service


@dataclass(frozen=True, slots=True)
class RegionRecord:
    id: str
    description: str
    parent_region_id: str | None
    extra: dict[str, Any] | None
    created_at: datetime

    @classmethod
    def of(cls, row: Region) -> RegionRecord:
        return copy_row(cls, row)


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
        return copy_row(cls, row)


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
        return copy_row(
            cls, row, actions=list(row.actions or []), resource_types=dict(row.resource_types or {})
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
        return copy_row(cls, row, filters=dict(row.filters or {}))


@dataclass(frozen=True, slots=True)
class PolicyBlobRecord:
    id: str
    type: str
    blob: str
    extra: dict[str, Any] | None
    created_at: datetime

    @classmethod
    def of(cls, row: PolicyBlob) -> PolicyBlobRecord:
        return copy_row(cls, row)


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
