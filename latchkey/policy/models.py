"""ORM classes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from latchkey.db import Base, UTCDateTime, new_id, utcnow


class Region(Base):
    """A Keystone region: ``parent_region_id`` is checked by the service, as Keystone
    checks it (no foreign key: a subtree is removed row by row)."""

    __tablename__ = "catalog_region"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    description: Mapped[str] = mapped_column(String(255), default="")
    parent_region_id: Mapped[str | None] = mapped_column(String(255), index=True, nullable=True)
    extra: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Endpoint(Base):
    """Where a service answers: one row per (interface, URL, region), with its own id.

    Shared by the native API (``endpoints: [{interface, url, region}]`` on a service)
    and Keystone's ``/v3/endpoints``."""

    __tablename__ = "catalog_endpoint"

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=new_id)
    service_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("catalog_service.id", ondelete="CASCADE"), index=True
    )
    interface: Mapped[str] = mapped_column(String(8))
    url: Mapped[str] = mapped_column(Text)
    region_id: Mapped[str | None] = mapped_column(
        String(255),
        ForeignKey("catalog_region.id", ondelete="RESTRICT"),
        index=True,
        nullable=True,
    )
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # The order the native API was given them in.
    position: Mapped[int] = mapped_column(Integer, default=0)
    extra: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    def native(self) -> dict[str, str]:
        """The native API's shape of an endpoint."""
        out = {"interface": self.interface, "url": self.url}
        if self.region_id is not None:
            out["region"] = self.region_id
        return out


class Service(Base):
    __tablename__ = "catalog_service"

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=new_id)
    # Not unique (Keystone allows several services of one type); the native API still
    # refuses a second service of a type (docs/decisions.md "Keystone: service types").
    type: Mapped[str] = mapped_column(String(255), index=True)
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str] = mapped_column(Text, default="")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # Latchkey's own services (identity, policy, secrets): kept by bootstrap, never removed.
    builtin: Mapped[bool] = mapped_column(Boolean, default=False)
    actions: Mapped[list[str]] = mapped_column(JSON, default=list)
    # {"objects:container": {"attributes": {"env": "string", "owner": {"type": "string",
    #   "sensitive": true}}}}; normalised on save to {"type", "sensitive"} objects.
    resource_types: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    extra: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    endpoint_rows: Mapped[list[Endpoint]] = relationship(
        order_by=(Endpoint.position, Endpoint.created_at, Endpoint.id),
        cascade="all, delete-orphan",
        passive_deletes=True,
        lazy="selectin",
    )

    @property
    def endpoints(self) -> list[dict[str, str]]:
        """The native API's ``endpoints``: ``[{interface, url, region}]``."""
        return [e.native() for e in self.endpoint_rows]


class EndpointGroup(Base):
    """Keystone's OS-EP-FILTER endpoint group: a named filter over endpoints
    (``service_id``, ``interface``, ``region_id``). Stored and answered; no project is
    associated with one, so no token's catalog is filtered by it."""

    __tablename__ = "catalog_endpoint_group"

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str] = mapped_column(Text, default="")
    filters: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PolicyBlob(Base):
    """Keystone's ``/v3/policies``: opaque ``{blob, type}`` documents kept for services
    that fetch them. Not Latchkey's tenant policy: nothing here decides anything."""

    __tablename__ = "keystone_policy_blob"

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=new_id)
    type: Mapped[str] = mapped_column(String(255))
    blob: Mapped[str] = mapped_column(Text)
    extra: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class DecisionRecord(Base):
    """A sample of decisions, so a policy draft can be replayed against real traffic."""

    __tablename__ = "decision_record"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    project_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    principal: Mapped[dict[str, Any]] = mapped_column(JSON)
    action: Mapped[str] = mapped_column(String(200))
    # Without the attributes the catalog marks sensitive.
    resource: Mapped[dict[str, Any]] = mapped_column(JSON)
    allowed: Mapped[bool] = mapped_column(Boolean)
    decided_by: Mapped[str] = mapped_column(String(16))
    rule: Mapped[str | None] = mapped_column(String(64), nullable=True)


class Policy(Base):
    """A project's or a domain's rule document: which of its versions is active.

    A project or domain without a row has no rules of its own. Exactly one of
    ``project_id`` and ``domain_id`` is set: two foreign keys rather than a kind and
    an id, so deleting the project or domain still deletes its policy and versions.
    """

    __tablename__ = "tenant_policy"
    __table_args__ = (
        CheckConstraint("(project_id IS NULL) <> (domain_id IS NULL)", name="one_scope"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    project_id: Mapped[str | None] = mapped_column(
        ForeignKey("project.id", ondelete="CASCADE"), unique=True, nullable=True
    )
    domain_id: Mapped[str | None] = mapped_column(
        ForeignKey("domain.id", ondelete="CASCADE"), unique=True, nullable=True
    )
    active_version: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PolicyVersion(Base):
    """One version of a project's or a domain's rule document, as validated when saved."""

    __tablename__ = "tenant_policy_version"
    __table_args__ = (UniqueConstraint("policy_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    policy_id: Mapped[int] = mapped_column(
        ForeignKey("tenant_policy.id", ondelete="CASCADE"), index=True
    )
    version: Mapped[int] = mapped_column(Integer)
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    author_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    policy: Mapped[Policy] = relationship()


class PolicyBoundary(Base):
    """Boundary texts as loaded; the newest row is in force in every process."""

    __tablename__ = "policy_boundary"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    text: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(String(1024))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
