"""The domain's sending events (Scheduled, Dispatched, Canceled): the fold's laws hold
for them too, provider events still win, and they round-trip through both stores."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.application import project_aggregate
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.storage import Storage
from domain.email import Email, verify_chain
from domain.events import EmailEvent
from domain.reports import EventType, Report, SendingEventType, event_kind
from projections.emails import get_email_row

RECEIVED = datetime(2025, 3, 15, 8, 0, tzinfo=UTC)
WORKSPACE = "6f1f2a4e-0000-4000-8000-000000000001"
KINDS = [*EventType, *SendingEventType]
_TIMES = st.integers(min_value=0, max_value=5).map(lambda m: f"2025-03-14T19:0{m}:00Z")


def make(
    kind: str, event_at: str = "2025-03-14T19:00:00Z", message: int = 1, **detail: Any
) -> Report:
    return Report(
        workspace_id=WORKSPACE,
        event_type=event_kind(kind),
        provider="mailledger",
        message_id=f"msg-{message}",
        to_address="rcpt@example.com",
        event_at=event_at,
        detail=detail,
    )


@st.composite
def any_report(draw: st.DrawFn) -> Report:
    """A report of any kind, the sender's own included, about one of two emails."""
    kind = draw(st.sampled_from(KINDS))
    detail: dict[str, Any] = {}
    if kind is SendingEventType.SCHEDULED:
        detail["send_at"] = draw(st.one_of(st.none(), _TIMES))
    elif kind is SendingEventType.DISPATCHED:
        detail["transport"] = draw(st.sampled_from(["sandbox", "smtp"]))
    elif kind is EventType.BOUNCE:
        detail["bounce_type"] = draw(st.sampled_from(["Permanent", "Transient"]))
    elif kind is EventType.OPEN:
        detail["machine_open"] = draw(st.booleans())
    return make(kind.value, draw(_TIMES), draw(st.integers(1, 2)), **detail)


def fold(items: list[Report]) -> dict[UUID, tuple[Email, list[EmailEvent]]]:
    emails: dict[UUID, tuple[Email, list[EmailEvent]]] = {}
    for item in items:
        email, log = emails.setdefault(
            item.target_email_id, (Email.blank(item.target_email_id, RECEIVED), [])
        )
        email.record(item, RECEIVED)
        log.extend(e for e in email.collect_events() if isinstance(e, EmailEvent))
    return emails


def views(items: list[Report]) -> dict[UUID, dict[str, Any]]:
    return {email_id: email.view.as_row() for email_id, (email, _) in fold(items).items()}


def distinct(items: list[Report]) -> list[Report]:
    seen: set[str] = set()
    kept = []
    for item in items:
        if item.semantic_key not in seen:
            kept.append(item)
            seen.add(item.semantic_key)
    return kept


@settings(max_examples=150, deadline=None)
@given(items=st.lists(any_report(), min_size=1, max_size=12), order=st.randoms())
def test_arrival_order_does_not_change_the_view(items: list[Report], order: Any) -> None:
    once = distinct(items)
    shuffled = list(once)
    order.shuffle(shuffled)
    assert views(shuffled) == views(once)


@settings(max_examples=100, deadline=None)
@given(items=st.lists(any_report(), min_size=1, max_size=10), order=st.randoms())
def test_redelivery_records_each_fact_once(items: list[Report], order: Any) -> None:
    arrivals = items + items
    order.shuffle(arrivals)
    assert views(arrivals) == views(distinct(items))


@settings(max_examples=50, deadline=None)
@given(items=st.lists(any_report(), min_size=1, max_size=10))
def test_replaying_the_log_rebuilds_the_same_email(items: list[Report]) -> None:
    for email, log in fold(items).values():
        replayed = project_aggregate(None, log)
        assert isinstance(replayed, Email)
        assert replayed.view == email.view
        assert verify_chain(log) is None


def state_of(*items: Report) -> str:
    ((email, _),) = fold(list(items)).values()
    return email.view.state


SENT = make("Sent")
SCHEDULED = make("Scheduled", send_at="2025-03-15T10:00:00.000000Z")


def test_a_scheduled_email_is_queued_until_it_is_dispatched() -> None:
    assert state_of(SENT) == "sent"
    assert state_of(SENT, SCHEDULED) == "queued"
    assert state_of(SENT, SCHEDULED, make("Dispatched", "2025-03-15T10:00:01Z")) == "sent"
    assert state_of(SENT, SCHEDULED, make("Canceled", "2025-03-14T19:30:00Z")) == "canceled"


def test_provider_events_win_over_the_senders_states() -> None:
    later = "2025-03-15T10:00:05Z"
    assert state_of(SENT, SCHEDULED, make("Delivery", later)) == "delivered"
    assert state_of(SENT, SCHEDULED, make("Open", later)) == "sent"
    assert state_of(SENT, SCHEDULED, make("DeliveryDelay", later)) == "sent"
    assert state_of(SENT, SCHEDULED, make("Reject", later, reason="suppressed")) == "rejected"
    bounce = make("Bounce", later, bounce_type="Permanent")
    assert state_of(SENT, SCHEDULED, make("Canceled"), bounce) == "bounced"


def test_the_view_keeps_the_earliest_send_time() -> None:
    ((email, _),) = fold([SENT, SCHEDULED]).values()
    assert email.view.send_at == "2025-03-15T10:00:00.000000Z"
    assert email.view.sent_at == "2025-03-14T19:00:00.000000Z"


def test_an_unknown_kind_is_still_refused_as_before() -> None:
    with pytest.raises(ValueError, match="is not a valid EventType"):
        make("Exploded")


def test_sending_events_round_trip_through_the_store(storage: Storage) -> None:
    items = [
        SENT,
        SCHEDULED,
        make("Dispatched", "2025-03-15T10:00:01Z", transport="smtp", provider_message_id="p-1"),
        make("Canceled", "2025-03-15T10:00:02Z"),
    ]
    outcomes = storage.ledger.record(items)
    stored = storage.ledger.get_history(outcomes[0].email_id)
    assert [e.event_type for e in stored] == ["Sent", "Scheduled", "Dispatched", "Canceled"]
    for event, item in zip(stored, items, strict=True):
        assert event.detail() == item.full_detail()
        assert event.hash == event.computed_hash()
    storage.runner.catch_up_all()
    with storage.reader.connect() as conn:
        row = get_email_row(conn, WORKSPACE, str(outcomes[0].email_id))
    assert row is not None
    assert (row["state"], row["send_at"]) == ("canceled", "2025-03-15T10:00:00.000000Z")
