"""Reports: normalization, keys and validation."""

from __future__ import annotations

import inspect
import uuid
from dataclasses import MISSING, fields, replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.events import EVENT_CLASSES, EmailEvent
from domain.reports import (
    DETAIL_FIELDS,
    EMAIL_NAMESPACE,
    EventType,
    InvalidReportError,
    Report,
    email_id_for,
    format_time,
    normalize_time,
    parse_time,
)
from tests.factories import report


def test_times_of_any_rfc3339_form_normalize_to_utc_microseconds() -> None:
    assert normalize_time("2025-03-14T19:04:01Z") == "2025-03-14T19:04:01.000000Z"
    assert normalize_time("2025-03-14T21:04:01.16025+02:00") == "2025-03-14T19:04:01.160250Z"


@given(
    st.datetimes(
        timezones=st.integers(-23 * 60, 23 * 60).map(lambda m: timezone(timedelta(minutes=m)))
    )
)
def test_time_text_is_fixed_width_utc_with_microseconds(moment: datetime) -> None:
    text = format_time(moment)
    assert text == moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if moment.astimezone(UTC).year >= 1000:
        assert len(text) == 27


@given(
    st.datetimes(
        # Naive bounds (hypothesis adds the zones); fixed width from year 1000 on.
        min_value=datetime(1000, 1, 2),  # noqa: DTZ001
        timezones=st.integers(-23 * 60, 23 * 60).map(lambda m: timezone(timedelta(minutes=m))),
    )
)
def test_normalizing_a_normalized_time_changes_nothing(moment: datetime) -> None:
    text = format_time(moment)
    assert normalize_time(text) == text
    assert normalize_time(moment.isoformat()) == text


@given(
    st.datetimes(min_value=datetime(1000, 1, 1), timezones=st.just(UTC)),  # noqa: DTZ001
    st.integers(0, 6),
)
def test_utc_times_to_any_precision_normalize_as_parsing_them_does(
    moment: datetime, digits: int
) -> None:
    # `...:01Z`, `...:01.5Z`, `...:01.160250Z`: the forms providers send, which take a
    # shorter path than the others; it must give what parsing and writing gives.
    seconds = moment.strftime("%Y-%m-%dT%H:%M:%S")
    fraction = moment.strftime("%f")[:digits]
    text = f"{seconds}.{fraction}Z" if digits else f"{seconds}Z"
    assert normalize_time(text) == format_time(parse_time(text))


def test_a_canonical_looking_time_that_is_no_moment_is_refused() -> None:
    for text in (
        "2025-13-14T19:04:01.000000Z",
        "2025-02-30T19:04:01.000000Z",
        "2025-02-30T19:04:01Z",
        "2025-03-14T19:04:60.5Z",
        "2025-03-14T24:04:01.25Z",
    ):
        with pytest.raises(InvalidReportError, match="RFC 3339"):
            normalize_time(text)


def test_a_time_without_zone_is_refused() -> None:
    with pytest.raises(InvalidReportError, match="zone"):
        normalize_time("2025-03-14T19:04:01")


def test_a_report_takes_its_fields_in_order_with_their_defaults() -> None:
    # Report writes its __init__ out (for speed): it must take what the dataclass's
    # would, so that keyword construction and dataclasses.replace keep working.
    parameters = list(inspect.signature(Report).parameters.values())
    assert [p.name for p in parameters] == [f.name for f in fields(Report)]
    for parameter, declared in zip(parameters, fields(Report), strict=True):
        has_default = declared.default is not MISSING or declared.default_factory is not MISSING
        assert (parameter.default is not inspect.Parameter.empty) == has_default
    made = report("Open", machine_open=True)
    given = {f.name: getattr(made, f.name) for f in fields(Report)}
    assert replace(made, subject="Hi") == Report(**{**given, "subject": "Hi"})
    assert (
        Report("w", EventType.DELIVERY, "ses", "m", "A@B.example", "2025-03-14T19:04:01Z").detail
        == {}
    )


def test_semantic_key_ignores_the_transport_key_and_time_format() -> None:
    a = report(
        "Bounce", transport_key="a", event_at="2025-03-14T19:04:01Z", bounce_type="Permanent"
    )
    b = report(
        "Bounce", transport_key="b", event_at="2025-03-14T20:04:01+01:00", bounce_type="Permanent"
    )
    assert a.semantic_key == b.semantic_key


def test_semantic_key_differs_when_the_fact_differs() -> None:
    a = report("Bounce", bounce_type="Permanent")
    b = report("Bounce", bounce_type="Transient")
    c = report("Bounce", bounce_type="Permanent", event_at="2025-03-14T19:04:02Z")
    assert len({a.semantic_key, b.semantic_key, c.semantic_key}) == 3


def test_email_ids_are_deterministic_per_workspace_message_and_recipient() -> None:
    assert email_id_for("w", "m", "A@Example.com") == email_id_for("w", "m", "a@example.com")
    assert email_id_for("w", "m", "a@example.com") != email_id_for("w2", "m", "a@example.com")
    assert email_id_for("w", "m", "a@example.com") != email_id_for("w", "m", "b@example.com")
    assert report(to_address="A@Example.com").target_email_id == email_id_for(
        report().workspace_id, "msg-1", "a@example.com"
    )


def test_unknown_field_for_the_event_type_is_refused() -> None:
    with pytest.raises(InvalidReportError, match="no field"):
        report("Delivery", bounce_type="Permanent")


def test_bounce_type_must_be_a_known_one() -> None:
    with pytest.raises(InvalidReportError, match="bounce_type"):
        report("Bounce", bounce_type="Hard")


def test_a_report_needs_a_message_id() -> None:
    with pytest.raises(InvalidReportError):
        report(message_id="")


def test_each_event_class_declares_exactly_its_detail_fields() -> None:
    common = {f.name for f in fields(EmailEvent)}
    for event_type, cls in EVENT_CLASSES.items():
        declared = [f.name for f in fields(cls) if f.name not in common]
        assert declared == list(DETAIL_FIELDS[event_type]), event_type


TEXT = st.text(st.characters(exclude_categories=["Cs"]))  # what UTF-8 can encode


@given(TEXT, TEXT, TEXT)
def test_email_ids_are_the_uuid5_of_workspace_message_and_recipient(
    workspace: str, message: str, recipient: str
) -> None:
    name = "\x1f".join((workspace, message, recipient.strip().lower()))
    assert email_id_for(workspace, message, recipient) == uuid.uuid5(EMAIL_NAMESPACE, name)
