"""The batch endpoint's plain-Python check list (``CheckList``) against the nested
marshmallow schemas it replaces: the same inputs accepted with the same result,
the same inputs refused with the same messages."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from marshmallow import Schema, ValidationError, fields, validate

from latchkey.frontdoors.http.policy import BatchIn, CheckIn


class NestedBatchIn(Schema):
    checks = fields.List(
        fields.Nested(CheckIn), required=True, validate=validate.Length(min=1, max=1000)
    )
    explain = fields.Boolean(load_default=False)


def outcome(schema: Schema, body: Any) -> tuple[str, Any]:
    try:
        return "loaded", schema.load(body)
    except ValidationError as exc:
        return "refused", exc.messages


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.text(max_size=3),
    st.sampled_from(["", "x" * 64, "x" * 65, "x" * 100, "x" * 101, "y" * 201, "z" * 256]),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=2), max_leaves=4)
attribute_maps = st.one_of(
    st.dictionaries(st.sampled_from(["env", "k" * 64, "k" * 65, "team"]), values, max_size=3),
    st.dictionaries(st.text(max_size=2), st.integers(), min_size=101, max_size=102),
    values,
)
resources = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "type": scalars,
            "id": scalars,
            "project_id": scalars,
            "attributes": attribute_maps,
            "extra": scalars,
        },
    ),
    values,
)
checks = st.one_of(
    st.fixed_dictionaries(
        {}, optional={"action": scalars, "resource": resources, "explain": st.booleans()}
    ),
    values,
)
good_check = st.fixed_dictionaries(
    {
        "action": st.text(min_size=1, max_size=200),
        "resource": st.fixed_dictionaries(
            {
                "type": st.text(min_size=1, max_size=100),
                "project_id": st.text(min_size=1, max_size=64),
            },
            optional={
                "id": st.text(max_size=255),
                "attributes": st.dictionaries(
                    st.text(max_size=64), values.filter(lambda v: v is not None), max_size=5
                ),
            },
        ),
    }
)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=st.fixed_dictionaries(
        {"checks": st.one_of(st.lists(st.one_of(checks, good_check), max_size=4), values)}
    )
)
def test_check_list_agrees_with_nested_schemas(body: dict[str, Any]) -> None:
    assert outcome(BatchIn(), body) == outcome(NestedBatchIn(), body)


@settings(max_examples=200, deadline=None)
@given(items=st.lists(good_check, min_size=1, max_size=5))
def test_valid_checks_load_alike(items: list[Any]) -> None:
    body = {"checks": items}
    assert outcome(BatchIn(), body) == outcome(NestedBatchIn(), body)
    assert outcome(BatchIn(), body)[0] == "loaded"


def test_limits() -> None:
    one = {"action": "a:b:c", "resource": {"type": "a:b", "project_id": "p"}}
    for body in ({"checks": []}, {"checks": [one] * 1001}, {}, {"checks": None}):
        assert outcome(BatchIn(), body) == outcome(NestedBatchIn(), body)
        assert outcome(BatchIn(), body)[0] == "refused"
