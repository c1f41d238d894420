"""What the token services hand to front doors: plain frozen values, never ORM rows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

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
        return cls(
            id=row.id,
            kind=row.kind,
            subject=row.subject,
            issued_before=row.issued_before,
            created_at=row.created_at,
            expires_at=row.expires_at,
        )
