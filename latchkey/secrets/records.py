"""What the tenant secrets service hands to front doors: plain frozen values, never
ORM rows (and never a payload's store reference)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from latchkey.records import copy_row

if TYPE_CHECKING:  # of() takes rows; importing a record loads no ORM class
    from latchkey.secrets.models import TenantSecret


@dataclass(frozen=True, slots=True)
class TenantSecretRecord:
    id: str
    project_id: str
    name: str
    description: str
    content_type: str
    current_version: int
    store: str
    created_by: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: TenantSecret) -> TenantSecretRecord:
        return copy_row(cls, row)
