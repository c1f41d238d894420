"""Identity tables: domains, projects, users, groups, roles and assignments."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from latchkey.db import Base, UTCDateTime, new_id, utcnow

ID = String(64)


class Domain(Base):
    __tablename__ = "domain"

    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    identity_backend: Mapped[str] = mapped_column(String(16), default="sql")
    # ldap domains: Keystone-named options (no password) and the sealed bind password.
    ldap_config: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    ldap_password_sealed: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    # Attributes a Keystone client sent that Latchkey has no column for, echoed back as
    # Keystone echoes them (issue 14).
    extra: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Project(Base):
    __tablename__ = "project"
    __table_args__ = (UniqueConstraint("domain_id", "name"),)

    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(255))
    domain_id: Mapped[str] = mapped_column(ForeignKey("domain.id", ondelete="CASCADE"), index=True)
    description: Mapped[str] = mapped_column(Text, default="")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # The cloud operators' project: admins there administer every domain.
    is_admin_project: Mapped[bool] = mapped_column(Boolean, default=False)
    # Keystone's project hierarchy: a parent project in the same domain, or none (the
    # domain itself is the parent, as Keystone reports it).
    parent_id: Mapped[str | None] = mapped_column(
        ForeignKey("project.id"), nullable=True, index=True
    )
    extra: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class User(Base):
    __tablename__ = "user_account"
    __table_args__ = (UniqueConstraint("domain_id", "name"),)

    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(255))
    domain_id: Mapped[str] = mapped_column(ForeignKey("domain.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16), default="human")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    email: Mapped[str | None] = mapped_column(String(320), nullable=True)
    description: Mapped[str] = mapped_column(Text, default="")
    # Free attributes tenant rules may compare with (principal_attribute), e.g. team.
    attributes: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # Application accounts belong to a project and die with it.
    owner_project_id: Mapped[str | None] = mapped_column(
        ForeignKey("project.id", ondelete="CASCADE"), nullable=True, index=True
    )
    password_hash: Mapped[str | None] = mapped_column(String(255), nullable=True)
    password_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # ldap domains: the user's id in the directory, when the directory last vouched for
    # it, and the (shadow) ids of its directory groups then: the last known state.
    external_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    directory_checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    directory_group_ids: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    # Keystone's default project: where an unscoped password login lands.
    default_project_id: Mapped[str | None] = mapped_column(
        ForeignKey("project.id", ondelete="SET NULL"), nullable=True
    )
    extra: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Group(Base):
    __tablename__ = "user_group"
    __table_args__ = (UniqueConstraint("domain_id", "name"),)

    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(255))
    domain_id: Mapped[str] = mapped_column(ForeignKey("domain.id", ondelete="CASCADE"), index=True)
    description: Mapped[str] = mapped_column(Text, default="")
    external_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    extra: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class GroupMembership(Base):
    __tablename__ = "group_membership"

    group_id: Mapped[str] = mapped_column(
        ForeignKey("user_group.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(
        ForeignKey("user_account.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class Role(Base):
    __tablename__ = "role"

    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    # Keystone's domain-specific roles: never in a token by themselves, only through
    # the global roles they imply. Names stay unique across all domains (docs/keystone.md).
    domain_id: Mapped[str | None] = mapped_column(
        ForeignKey("domain.id", ondelete="CASCADE"), nullable=True, index=True
    )
    extra: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RoleImplication(Base):
    __tablename__ = "role_implication"

    prior_role_id: Mapped[str] = mapped_column(
        ForeignKey("role.id", ondelete="CASCADE"), primary_key=True
    )
    implied_role_id: Mapped[str] = mapped_column(
        ForeignKey("role.id", ondelete="CASCADE"), primary_key=True
    )


class RoleAssignment(Base):
    """A role given to exactly one actor (user or group) on exactly one target.

    Separate nullable foreign keys (rather than a polymorphic id) let the
    database delete assignments with their user, group, project or domain.
    """

    __tablename__ = "role_assignment"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # "<actor>:<target>:<role>", unique, because NULLs defeat a composite unique constraint.
    key: Mapped[str] = mapped_column(String(255), unique=True)
    role_id: Mapped[str] = mapped_column(ForeignKey("role.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[str | None] = mapped_column(
        ForeignKey("user_account.id", ondelete="CASCADE"), nullable=True, index=True
    )
    group_id: Mapped[str | None] = mapped_column(
        ForeignKey("user_group.id", ondelete="CASCADE"), nullable=True, index=True
    )
    project_id: Mapped[str | None] = mapped_column(
        ForeignKey("project.id", ondelete="CASCADE"), nullable=True, index=True
    )
    domain_id: Mapped[str | None] = mapped_column(
        ForeignKey("domain.id", ondelete="CASCADE"), nullable=True, index=True
    )
    # Keystone's system scope: the target is the whole deployment ("all"), no project
    # or domain (issue 14).
    system: Mapped[str | None] = mapped_column(String(16), nullable=True)
    # OS-INHERIT: the role applies to every project below the target, not the target.
    inherited: Mapped[bool] = mapped_column(Boolean, default=False)


class ProjectTag(Base):
    """Keystone's project tags: free-form strings, at most 80 per project."""

    __tablename__ = "project_tag"

    project_id: Mapped[str] = mapped_column(
        ForeignKey("project.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(255), primary_key=True)


class DomainConfig(Base):
    """Keystone's domain-specific configuration (``identity`` and ``ldap`` groups), as
    the API sets it: reported, not applied (docs/decisions.md)."""

    __tablename__ = "domain_config"

    domain_id: Mapped[str] = mapped_column(
        ForeignKey("domain.id", ondelete="CASCADE"), primary_key=True
    )
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
