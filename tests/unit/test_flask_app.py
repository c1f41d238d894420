"""LatchkeyFlask answers as plain Flask does, only faster (frontdoors/http/flask_app.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from flask.json.provider import DefaultJSONProvider
from hypothesis import given
from hypothesis import strategies as st

from latchkey.frontdoors.http.flask_app import LatchkeyFlask

app = LatchkeyFlask("test")
flask_provider = DefaultJSONProvider(app)

# Beyond printable ASCII the two differ in escaping only (orjson writes UTF-8), and
# floats may be written in other notation (6.1e-05 or 0.000061): the same numbers.
PRINTABLE_ASCII = st.characters(min_codepoint=32, max_codepoint=126)


def json_documents(numbers: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(
        st.none() | st.booleans() | numbers | st.text(alphabet=PRINTABLE_ASCII),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.text(alphabet=PRINTABLE_ASCII, max_size=8), children, max_size=4)
        ),
        max_leaves=20,
    )


# Integers wider than 64 bits too: orjson refuses them, json.dumps writes them.
without_floats = json_documents(st.integers())
json_values = json_documents(st.integers() | st.floats(allow_nan=False, allow_infinity=False))


@dataclasses.dataclass
class Point:
    x: int
    at: datetime


@given(without_floats)
def test_compact_json_is_what_flask_writes_byte_for_byte(value: Any) -> None:
    compact = {"separators": (",", ":")}
    assert app.json.dumps(value, **compact) == flask_provider.dumps(value, **compact)


@given(st.recursive(st.text() | st.integers(), lambda c: st.dictionaries(st.text(), c)))
def test_any_text_reads_back_the_same(value: Any) -> None:
    assert json.loads(app.json.dumps(value, separators=(",", ":"))) == value


@given(json_values)
def test_compact_and_indented_json_read_as_what_flask_writes(value: Any) -> None:
    compact = {"separators": (",", ":")}
    assert json.loads(app.json.dumps(value, **compact)) == json.loads(
        flask_provider.dumps(value, **compact)
    )
    assert json.loads(app.json.dumps(value, indent=2)) == json.loads(
        flask_provider.dumps(value, indent=2)
    )


def test_dates_dataclasses_and_keys_that_are_not_strings_as_flask_writes_them() -> None:
    value = {
        "when": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        "point": Point(1, datetime(2026, 1, 1)),
    }
    compact = {"separators": (",", ":")}
    assert app.json.dumps(value, **compact) == flask_provider.dumps(value, **compact)
    assert app.json.dumps({3: "x"}, **compact) == flask_provider.dumps({3: "x"}, **compact)


def test_other_arguments_go_to_json_dumps() -> None:
    assert app.json.dumps({"b": 1, "a": 2}) == '{"a": 2, "b": 1}'


def test_coroutines_still_go_to_flask() -> None:
    """ensure_sync remembers which functions are plain; a coroutine function still
    reaches Flask's own handling (here: its advice to install the async extra)."""

    async def later() -> int:
        await asyncio.sleep(0)
        return 42

    def now() -> int:
        return 41

    assert app.ensure_sync(now) is now
    assert app.ensure_sync(now) is now
    for _ in range(2):
        with pytest.raises(RuntimeError, match="async"):
            app.ensure_sync(later)
