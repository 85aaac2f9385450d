"""The fast canonical encoder writes exactly the bytes the domain's definition writes:
keys and chain hashes computed either way are the same."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from adapters.canonical import canonical_json, install
from domain.email import Email
from domain.events import GENESIS_HASH, EmailEvent
from domain.reports import (
    DETAIL_FIELDS,
    Report,
    standard_canonical_json,
    use_canonical_encoder,
)
from tests.factories import reports

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


plain_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=30,
)


@given(plain_values)
def test_the_plain_hint_changes_no_byte_of_a_value_without_floats(value: Any) -> None:
    assert canonical_json(value, plain=True) == standard_canonical_json(value)


@given(reports(), st.text(), st.text())
def test_keys_and_hashes_are_the_standard_ones_for_any_report(
    report: Report, text: str, other: str
) -> None:
    detail = {name: text for name, kind in DETAIL_FIELDS[report.event_type].items() if kind is str}
    detail.pop("bounce_type", None)  # one of a few words, not any text
    report = replace(report, detail={**report.detail, **detail}, subject=other, transport_key=None)
    email = Email.blank(report.target_email_id, datetime(2025, 3, 15, tzinfo=UTC))
    email.record(report, datetime(2025, 3, 15, tzinfo=UTC))
    (event,) = email.collect_events()
    use_canonical_encoder(standard_canonical_json)
    try:
        assert replace(report).semantic_key == report.semantic_key
        assert isinstance(event, EmailEvent)
        assert event.link_error(GENESIS_HASH) is None  # recomputed with the standard bytes
    finally:
        install()
