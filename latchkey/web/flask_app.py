"""Latchkey's Flask: Flask with two per-request costs taken out (bench/README.md).

Both change how, not what: JSON answers hold the same values with the keys in
the same order, written as UTF-8 rather than with ``\\u`` escapes, and floats
perhaps in other notation (tests/unit/test_flask_app.py).
"""

from __future__ import annotations

import inspect
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


class OrjsonProvider(DefaultJSONProvider):
    """Flask's JSON provider, writing with orjson (~8x faster than ``json.dumps``
    on a token's claims; a batch of 100 decisions is ~20 KB of JSON).

    Only compact and indented output goes through orjson, with Flask's own
    ``default`` for what it does not write itself; anything it refuses (an
    integer wider than 64 bits) and any other formatting fall back to
    ``json.dumps``. Reading stays with ``json.loads``: orjson refuses integers
    wider than 64 bits, which request validation reports field by field.
    """

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
