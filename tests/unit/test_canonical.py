"""The fast canonical encoder writes exactly the bytes the domain's definition writes:
keys and chain hashes computed either way are the same."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from adapters.canonical import canonical_json
from domain.reports import standard_canonical_json

scalars = (
    st.none()
    | st.booleans()
    | st.integers()  # beyond 64 bits too
    | st.integers(min_value=-(2**64), max_value=2**64)
    | st.floats(allow_nan=False)
    | st.text()
    | st.sampled_from(["é", "\u2028", "\x7f", "\x00\x1f", '"\\', "😀", "\uffff"])
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.lists(inner, max_size=3).map(tuple)
        | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=30,
)


def standard_or_error(value: Any) -> bytes | type[BaseException]:
    try:
        return standard_canonical_json(value)
    except (TypeError, ValueError) as error:
        return type(error)


def fast_or_error(value: Any) -> bytes | type[BaseException]:
    try:
        return canonical_json(value)
    except (TypeError, ValueError) as error:
        return type(error)


@given(json_values)
def test_the_fast_encoder_writes_the_standard_bytes(value: Any) -> None:
    assert fast_or_error(value) == standard_or_error(value)


def test_floats_the_two_libraries_write_differently_still_come_out_standard() -> None:
    for value in (1e-05, [1e16, {"x": 1.5e-7}], {"a": 2**70}, {"b": "\ud800"}):
        assert fast_or_error(value) == standard_or_error(value)


def test_keys_sort_by_code_point_and_text_stays_utf8() -> None:
    assert canonical_json({"é": 1, "z": [True, None], "a": "😀"}) == (
        '{"a":"😀","z":[true,null],"é":1}'.encode()
    )
