"""ORM classes."""

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
from latchkey.identity.models import ID


class ApplicationCredential(Base):
    __tablename__ = "application_credential"
    __table_args__ = (UniqueConstraint("user_id", "name"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str] = mapped_column(Text, default="")
    user_id: Mapped[str] = mapped_column(
        ForeignKey("user_account.id", ondelete="CASCADE"), index=True
    )
    project_id: Mapped[str] = mapped_column(
        ForeignKey("project.id", ondelete="CASCADE"), index=True
    )
    roles: Mapped[list[str]] = mapped_column(JSON, default=list)  # names, implied ones expanded
    unrestricted: Mapped[bool] = mapped_column(Boolean, default=False)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    access_rules: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    allowed_cidrs: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class CredentialSecret(Base):
    __tablename__ = "application_credential_secret"

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=new_id)
    credential_id: Mapped[str] = mapped_column(
        ForeignKey("application_credential.id", ondelete="CASCADE"), index=True
    )
    # "<pepper version>$<hex HMAC-SHA-256>"; the version survives master-key rotation.
    secret_hash: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class UserAccessRule(Base):
    """An access rule a user's credentials named, kept as Keystone keeps it: it outlives
    the credentials that used it, may be named again by id, and is deleted only when
    no credential uses it any longer (issue 14)."""

    __tablename__ = "user_access_rule"

    user_id: Mapped[str] = mapped_column(
        ForeignKey("user_account.id", ondelete="CASCADE"), primary_key=True
    )
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    service: Mapped[str] = mapped_column(String(255))
    method: Mapped[str] = mapped_column(String(16))
    path: Mapped[str] = mapped_column(String(1024))


class Trust(Base):
    __tablename__ = "trust"

    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    trustor_user_id: Mapped[str] = mapped_column(
        ForeignKey("user_account.id", ondelete="CASCADE"), index=True
    )
    trustee_user_id: Mapped[str] = mapped_column(
        ForeignKey("user_account.id", ondelete="CASCADE"), index=True
    )
    project_id: Mapped[str | None] = mapped_column(
        ForeignKey("project.id", ondelete="CASCADE"), nullable=True, index=True
    )
    impersonation: Mapped[bool] = mapped_column(Boolean, default=False)
    # The delegated roles' ids (a role deleted later simply no longer counts).
    role_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    remaining_uses: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class KeystoneCredential(Base):
    """Keystone's ``/v3/credentials`` (EC2 keys among them): the blob is a secret, kept
    sealed (AES-256-GCM under a data key in the secret store), never in clear."""

    __tablename__ = "keystone_credential"

    # For type "ec2", the sha256 hex of the access key, as Keystone computes it.
    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(
        ForeignKey("user_account.id", ondelete="CASCADE"), index=True
    )
    project_id: Mapped[str | None] = mapped_column(
        ForeignKey("project.id", ondelete="CASCADE"), nullable=True, index=True
    )
    type: Mapped[str] = mapped_column(String(255))
    blob_sealed: Mapped[bytes] = mapped_column(LargeBinary)
    extra: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class OAuth1Consumer(Base):
    """Keystone's OS-OAUTH1 consumers: the secret is shown once, then kept sealed
    (an OAuth 1.0a signature needs it back in clear to be checked)."""

    __tablename__ = "oauth1_consumer"

    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    secret_sealed: Mapped[bytes] = mapped_column(LargeBinary)
    extra: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
