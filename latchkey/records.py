"""What the records of every package share.

A record is what a service hands a front door instead of an ORM row: a frozen copy
of the fields the front door reads, under the row's own names, holding nothing that
can reach back into a session. ``copy_row`` fills one from a row.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Hashable
from typing import Any, TypeVar, cast

R = TypeVar("R")


@functools.cache
def _field_names(cls: Hashable) -> tuple[str, ...]:
    return tuple(field.name for field in dataclasses.fields(cast(Any, cls)))


def copy_row(cls: type[R], row: object, **computed: Any) -> R:
    """``cls`` filled from ``row``'s attributes of the same names; ``computed`` gives
    the fields a row does not hold as such. Dicts and lists are copied, so the record
    shares nothing mutable with the session's objects."""
    values = dict(computed)
    for name in _field_names(cast(Hashable, cls)):
        if name not in values:
            value = getattr(row, name)
            if isinstance(value, dict | list):
                value = type(value)(value)
            values[name] = value
    return cls(**values)
