"""The Email aggregate's laws: dedup, order independence, derived fields, the chain."""

from __future__ import annotations

import dataclasses
import gc
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.application import project_aggregate
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.email import Email, verify_chain, view_of
from domain.events import EmailEvent
from domain.reports import Report
from tests.factories import distinct, report, reports

RECEIVED = datetime(2025, 3, 15, 8, 0, tzinfo=UTC)


def record_all(items: list[Report]) -> dict[UUID, tuple[Email, list[EmailEvent]]]:
    """Record reports one by one, as arrivals; each email with its recorded events."""
    emails: dict[UUID, tuple[Email, list[EmailEvent]]] = {}
    for item in items:
        email, log = emails.setdefault(
            item.target_email_id, (Email.blank(item.target_email_id, RECEIVED), [])
        )
        email.record(item, RECEIVED)
        log.extend(e for e in email.collect_events() if isinstance(e, EmailEvent))
    return emails


def pending(email: Email) -> list[EmailEvent]:
    """The events the email recorded since they were last collected."""
    return [e for e in email.collect_events() if isinstance(e, EmailEvent)]


def views(emails: dict[UUID, tuple[Email, list[EmailEvent]]]) -> dict[UUID, dict[str, Any]]:
    return {email_id: view_of(log).as_row() for email_id, (_, log) in emails.items()}


def facts(emails: dict[UUID, tuple[Email, list[EmailEvent]]]) -> dict[UUID, set[tuple[Any, ...]]]:
    return {
        email_id: {(e.event_type, e.semantic_key, e.transport_key) for e in log}
        for email_id, (_, log) in emails.items()
    }


@settings(max_examples=150, deadline=None)
@given(
    base=st.lists(reports(), min_size=1, max_size=12),
    copies=st.lists(st.integers(min_value=0, max_value=11), max_size=12),
    order=st.randoms(use_true_random=False),
)
def test_redelivery_in_any_order_records_each_fact_once(
    base: list[Report], copies: list[int], order: Any
) -> None:
    once = distinct(base)
    arrivals = once + [once[i % len(once)] for i in copies]
    order.shuffle(arrivals)

    recorded = record_all(arrivals)

    expected = record_all(once)
    assert facts(recorded) == facts(expected)
    assert views(recorded) == views(expected)


@settings(max_examples=100, deadline=None)
@given(items=st.lists(reports(emails=1), min_size=1, max_size=10), order=st.randoms())
def test_arrival_order_does_not_change_derived_state(items: list[Report], order: Any) -> None:
    once = distinct(items)
    shuffled = list(once)
    order.shuffle(shuffled)
    assert views(record_all(shuffled)) == views(record_all(once))


@settings(max_examples=50, deadline=None)
@given(items=st.lists(reports(), min_size=1, max_size=10))
def test_replaying_the_log_rebuilds_the_same_email(items: list[Report]) -> None:
    for email, log in record_all(items).values():
        replayed = project_aggregate(None, log)
        assert isinstance(replayed, Email)
        assert replayed.keys == email.keys
        assert replayed.version == email.version == len(log)
        assert verify_chain(log) is None
        # Loading from stored states (what the ledger does) reads the same email.
        loaded = Email.from_heads(
            email.id, RECEIVED, [(e.originator_version, e.__dict__) for e in log]
        )
        assert (loaded.keys, loaded.last_hash, loaded.version, loaded.workspace_id) == (
            email.keys,
            email.last_hash,
            email.version,
            email.workspace_id,
        )


@settings(max_examples=25, deadline=None)
@given(items=st.lists(reports(emails=1), min_size=1, max_size=10))
def test_a_cached_email_keys_stay_out_of_the_garbage_collectors_passes(
    items: list[Report],
) -> None:
    # A serving process caches up to 100,000 emails; every full pass of the collector
    # walks what it tracks, and a set of keys per email tripled that walk.
    for email, log in record_all(items).values():
        loaded = Email.from_heads(
            email.id, RECEIVED, [(e.originator_version, e.__dict__) for e in log]
        )
        for held in (email, loaded, project_aggregate(None, log)):
            assert isinstance(held, Email)
            assert held.keys
            assert not gc.is_tracked(held.keys)


def test_an_event_is_built_only_from_exactly_its_fields() -> None:
    email = Email.blank(report().target_email_id, RECEIVED)
    email.record(report("Delivery", smtp_response="250 ok"), RECEIVED)
    (event,) = pending(email)
    values = dict(event.__dict__)
    assert type(event).from_values(values).__dict__ == values
    with pytest.raises(TypeError, match="smtp_response"):
        type(event).from_values({k: v for k, v in values.items() if k != "smtp_response"})
    with pytest.raises(TypeError, match="bounce_type"):
        type(event).from_values({**values, "bounce_type": "Permanent"})


def test_semantic_duplicate_under_new_transport_key_is_dropped() -> None:
    first = report("Bounce", transport_key="sg-1", bounce_type="Permanent")
    retry = report("Bounce", transport_key="sg-2", bounce_type="Permanent")
    email = Email.blank(first.target_email_id, RECEIVED)
    assert email.record(first, RECEIVED)
    assert not email.record(retry, RECEIVED)
    assert email.version == 1


def test_same_transport_key_with_other_content_is_dropped() -> None:
    first = report("Open", transport_key="evt-1", ip="10.0.0.1")
    altered = report("Open", transport_key="evt-1", ip="10.0.0.2")
    email = Email.blank(first.target_email_id, RECEIVED)
    email.record(first, RECEIVED)
    assert not email.record(altered, RECEIVED)
    assert view_of(pending(email)).open_count == 1


def test_same_transport_key_from_another_provider_is_a_new_event() -> None:
    ses = report("Open", transport_key="evt-1", provider="ses", ip="10.0.0.1")
    other = report("Open", transport_key="evt-1", provider="sendgrid", ip="10.0.0.2")
    email = Email.blank(ses.target_email_id, RECEIVED)
    assert email.record(ses, RECEIVED)
    assert email.record(other, RECEIVED)


def state_after(*items: Report) -> str:
    ((_, log),) = record_all(list(items)).values()
    return view_of(log).state


def test_state_precedence() -> None:
    sent = report("Sent", event_at="2025-03-14T19:00:00Z")
    delivered = report("Delivery", event_at="2025-03-14T19:01:00Z")
    bounced = report("Bounce", event_at="2025-03-14T19:02:00Z", bounce_type="Permanent")
    complained = report("Complaint", event_at="2025-03-14T19:03:00Z")
    rejected = report("Reject", event_at="2025-03-14T19:00:30Z", reason="suppressed")
    assert state_after(sent) == "sent"
    assert state_after(sent, delivered) == "delivered"
    assert state_after(delivered, rejected) == "rejected"
    assert state_after(delivered, bounced) == "bounced"
    assert state_after(bounced, delivered) == "bounced"
    assert state_after(complained, bounced, rejected, delivered) == "complained"


def test_opens_and_clicks_only_count_and_keep_state() -> None:
    items = [
        report("Delivery"),
        report("Open", event_at="2025-03-14T20:00:00Z", machine_open=True),
        report("Open", event_at="2025-03-14T19:30:00Z"),
        report("Click", event_at="2025-03-14T21:00:00Z", link="https://a.test/"),
    ]
    ((_, log),) = record_all(items).values()
    view = view_of(log)
    assert view.state == "delivered"
    assert (view.open_count, view.human_open_count, view.click_count) == (2, 1, 1)
    assert view.first_open_at == "2025-03-14T19:30:00.000000Z"
    assert view.last_open_at == "2025-03-14T20:00:00.000000Z"
    assert view.first_click_at == view.last_click_at == "2025-03-14T21:00:00.000000Z"


def test_first_and_last_follow_event_time_not_arrival() -> None:
    late_arrival_early_event = report(
        "Bounce",
        event_at="2025-03-14T19:00:00Z",
        bounce_type="Transient",
        bounce_subtype="MailboxFull",
    )
    early_arrival_later_event = report(
        "Bounce", event_at="2025-03-14T19:10:00Z", bounce_type="Permanent", bounce_subtype="General"
    )
    delays = [
        report("DeliveryDelay", event_at="2025-03-14T18:00:00Z", delay_type="MailboxFull"),
        report("DeliveryDelay", event_at="2025-03-14T18:30:00Z", delay_type="MailboxFull"),
    ]
    items = [early_arrival_later_event, delays[1], late_arrival_early_event, delays[0]]
    ((_, log),) = record_all(items).values()
    view = view_of(log)
    assert view.bounced_at == "2025-03-14T19:00:00.000000Z"
    assert (view.bounce_type, view.bounce_subtype) == ("Transient", "MailboxFull")
    assert view.delivery_delay_at == "2025-03-14T18:30:00.000000Z"


def test_event_before_sent_creates_the_email_and_sent_fills_it_in() -> None:
    delivery = report("Delivery", event_at="2025-03-14T19:05:00Z")
    ((email, log),) = record_all([delivery]).values()
    view = view_of(log)
    assert view.state == "delivered"
    assert view.from_address is None
    assert view.sent_at == "2025-03-14T19:05:00.000000Z"
    assert view.attachment_filenames == []

    sent = report(
        "Sent",
        event_at="2025-03-14T19:00:00Z",
        from_address="news@shop.test",
        subject="Your order",
        use_case_id="uc-1",
        attachment_filenames=["invoice.pdf"],
    )
    email.record(sent, RECEIVED)
    view = view_of([*log, *pending(email)])
    assert (view.from_address, view.subject, view.use_case_id) == (
        "news@shop.test",
        "Your order",
        "uc-1",
    )
    assert view.sent_at == "2025-03-14T19:00:00.000000Z"
    assert view.attachment_filenames == ["invoice.pdf"]
    assert view.has_attachment
    assert view.state == "delivered"


def test_the_api_send_names_the_email_whatever_sent_a_webhook_reports() -> None:
    # An MTA's Sent for the same message, even an earlier one, does not replace what
    # the API send recorded (use case, sender, subject), in either order.
    api = report(
        "Sent",
        provider="mailledger",
        event_at="2025-03-14T19:00:00Z",
        from_address="news@shop.test",
        subject="Your order",
        use_case_id="uc-1",
    )
    relay = report(
        "Sent",
        provider="generic",
        event_at="2025-03-14T18:59:59Z",
        from_address="bounces@relay.test",
        subject="(relayed)",
    )
    for items in ([api, relay], [relay, api]):
        ((_, log),) = record_all(items).values()
        view = view_of(log)
        assert (view.use_case_id, view.from_address, view.subject) == (
            "uc-1",
            "news@shop.test",
            "Your order",
        )
        assert view.sent_at == "2025-03-14T19:00:00.000000Z"


def test_adopted_email_takes_what_the_event_says() -> None:
    delivery = report(
        "Delivery",
        event_at="2025-03-14T19:05:00Z",
        from_address="app@corp.test",
        subject="Reset your password",
        sent_at="2025-03-14T19:04:00Z",
    )
    ((_, log),) = record_all([delivery]).values()
    view = view_of(log)
    assert view.from_address == "app@corp.test"
    assert view.subject == "Reset your password"
    assert view.sent_at == "2025-03-14T19:04:00.000000Z"
    assert view.use_case_id is None


def test_updated_at_is_the_latest_receipt() -> None:
    first = report("Delivery")
    email = Email.blank(first.target_email_id, RECEIVED)
    email.record(first, RECEIVED)
    later = datetime(2025, 3, 16, 9, 0, tzinfo=UTC)
    email.record(report("Open"), later)
    assert view_of(pending(email)).updated_at == "2025-03-16T09:00:00.000000Z"


def test_chain_links_every_event_and_detects_a_change() -> None:
    items = [
        report("Sent"),
        report("Delivery"),
        report("Open"),
        report("Click", link="https://a.test/"),
    ]
    ((_, log),) = record_all(items).values()
    assert verify_chain(log) is None
    assert [e.prev_hash for e in log[1:]] == [e.hash for e in log[:-1]]

    tampered = list(log)
    tampered[2] = dataclasses.replace(log[2], ip="203.0.113.9")  # type: ignore[call-arg]
    assert verify_chain(tampered) == (3, tampered[2].computed_hash(), log[2].hash)

    reordered = [log[0], log[2], log[1], log[3]]
    broken = verify_chain(reordered)
    assert broken is not None
    assert broken[0] == 3
