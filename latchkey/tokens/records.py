"""What the token services hand to front doors: plain frozen values, never ORM rows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from latchkey.records import copy_row

if TYPE_CHECKING:  # of() takes rows; importing a record loads no ORM class
    from latchkey.tokens.models import RevocationEvent


@dataclass(frozen=True, slots=True)
class RevocationRecord:
    """One revocation event, as the feed (``GET /v1/revocations``) and the CLI show it."""

    id: int
    kind: str
    subject: str
    issued_before: datetime
    created_at: datetime
    expires_at: datetime

    @classmethod
    def of(cls, row: RevocationEvent) -> RevocationRecord:
        return copy_row(cls, row)
