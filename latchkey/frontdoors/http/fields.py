"""Bounds every request value shares (issue 13, class 5: no input yields a 500).

- Ids, names and references are never empty: ``""`` is a 422 naming the field,
  never "absent" and never a row with an empty foreign key (docs/api.md).
- Integers that reach the database fit its ``integer`` columns (32-bit signed on
  PostgreSQL): ids, versions, cursors. JSON bodies are bounded before any field
  sees them (64-bit integers, finite floats: ``latchkey.frontdoors.http.flask_app``), query
  parameters by their fields, path parameters by ``BoundedIntegerConverter``.
"""

from __future__ import annotations

from typing import Any

from marshmallow import fields, validate
from werkzeug.routing import IntegerConverter, Map, ValidationError

DB_INT_MAX = 2**31 - 1  # PostgreSQL `integer`, the type of every id, version and cursor
ID = validate.Length(min=1, max=64)  # ids and references: never empty
NAME = validate.Length(min=1, max=255)


class DbInteger(fields.Integer):
    """An integer bound for a database column: from 0 to ``DB_INT_MAX`` unless
    ``validate`` says otherwise (and then still within the column)."""

    def __init__(self, *, low: int = 0, high: int = DB_INT_MAX, **kwargs: Any) -> None:
        if not (-DB_INT_MAX - 1 <= low <= high <= DB_INT_MAX):
            raise ValueError("a DbInteger's bounds must fit the database column")
        super().__init__(validate=validate.Range(min=low, max=high), **kwargs)


class BoundedIntegerConverter(IntegerConverter):
    """Flask's ``<int:...>`` bounded to the database column: a larger number is no
    route (404) rather than a value the database refuses. Digits are counted before
    ``int()`` runs."""

    def __init__(
        self,
        map: Map,
        fixed_digits: int = 0,
        min: int | None = 0,
        max: int | None = DB_INT_MAX,
        signed: bool = False,
    ) -> None:
        super().__init__(map, fixed_digits, min, max, signed)

    def to_python(self, value: str) -> Any:
        if len(value.lstrip("-")) > len(str(DB_INT_MAX)):
            raise ValidationError()
        return super().to_python(value)
