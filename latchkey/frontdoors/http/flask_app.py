"""Latchkey's Flask: Flask with two per-request costs taken out (bench/README.md).

Both change how, not what: JSON answers hold the same values with the keys in
the same order, written as UTF-8 rather than with ``\\u`` escapes, and floats
perhaps in other notation (tests/unit/test_flask_app.py).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import orjson
from flask import Flask
from flask.json.provider import DefaultJSONProvider

# Types Flask's provider turns into JSON its own way (RFC 822 dates, dataclasses.asdict):
# orjson hands them to the same ``default`` instead of writing them itself.
_ORJSON_OPTIONS = (
    orjson.OPT_SORT_KEYS
    | orjson.OPT_NON_STR_KEYS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
)


# The widest integer a JSON body may carry: 64-bit signed, what every database column,
# Polar and orjson can hold (narrower columns are bounded by their fields). Longer
# digit strings are refused before ``int()`` runs (Python refuses > 4300 digits with
# a ValueError of its own, and converting is quadratic in the length).
JSON_INT_MIN = -(2**63)
JSON_INT_MAX = 2**63 - 1
_JSON_INT_MAX_DIGITS = len(str(JSON_INT_MAX))


class JsonNumberOutOfRange(ValueError):
    """A JSON number no field could hold: an integer beyond 64 bits, a float that
    overflows to infinity, or the NaN/Infinity constants (not JSON at all)."""


def _bounded_int(text: str) -> int:
    digits = text[1:] if text.startswith("-") else text
    if len(digits) <= _JSON_INT_MAX_DIGITS:
        value = int(text)
        if JSON_INT_MIN <= value <= JSON_INT_MAX:
            return value
    raise JsonNumberOutOfRange(
        f"a JSON integer is out of range (from {JSON_INT_MIN} to {JSON_INT_MAX})"
    )


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JsonNumberOutOfRange("a JSON number is too large for a 64-bit float")
    return value


def _no_constant(name: str) -> Any:
    raise JsonNumberOutOfRange(f"{name} is not a JSON value")


class OrjsonProvider(DefaultJSONProvider):
    """Flask's JSON provider, writing with orjson (~8x faster than ``json.dumps``
    on a token's claims; a batch of 100 decisions is ~20 KB of JSON).

    Only compact and indented output goes through orjson, with Flask's own
    ``default`` for what it does not write itself; anything it refuses (an
    integer wider than 64 bits) and any other formatting fall back to
    ``json.dumps``. Reading stays with ``json.loads``, with its numbers bounded:
    integers to 64 bits signed, floats finite, no NaN or Infinity
    (``JsonNumberOutOfRange``, a ``ValueError``: Flask answers 400). Each field
    then bounds its own numbers further (``latchkey.frontdoors.http.fields``).
    """

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        kwargs.setdefault("parse_int", _bounded_int)
        kwargs.setdefault("parse_float", _finite_float)
        kwargs.setdefault("parse_constant", _no_constant)
        return super().loads(s, **kwargs)

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        option = _orjson_option(kwargs)
        if option is not None:
            try:
                return orjson.dumps(obj, default=self.default, option=option).decode()
            except orjson.JSONEncodeError:
                pass  # json.dumps writes it, or refuses it, instead
        return super().dumps(obj, **kwargs)


def _orjson_option(kwargs: dict[str, Any]) -> int | None:
    """What Flask's ``response`` asks for: compact, or indented in debug mode."""
    if kwargs == {"separators": (",", ":")}:
        return _ORJSON_OPTIONS
    if kwargs == {"indent": 2}:
        return _ORJSON_OPTIONS | orjson.OPT_INDENT_2
    return None


class LatchkeyFlask(Flask):
    json_provider_class = OrjsonProvider

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._synchronous: dict[Callable[..., Any], bool] = {}

    def ensure_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        """Flask asks this of every hook and view on every request (a dozen times per
        request here); ``inspect.iscoroutinefunction`` is remembered per function,
        keyed by the function under a bound method (a view's method is bound to a
        new instance each request), so the memo holds one entry per function."""
        key = getattr(func, "__func__", func)
        if not inspect.isfunction(key):
            return super().ensure_sync(func)
        synchronous = self._synchronous.get(key)
        if synchronous is None:
            synchronous = self._synchronous[key] = not inspect.iscoroutinefunction(func)
        return func if synchronous else super().ensure_sync(func)
