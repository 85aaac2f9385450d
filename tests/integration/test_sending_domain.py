"""The domain's sending events (Scheduled, Dispatched, Canceled, Failed, the relay's
attempts): the fold's laws hold for them too, provider events still win, and they
round-trip through both stores."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.application import project_aggregate
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.storage import Storage
from domain.email import Email, verify_chain, view_of
from domain.events import EmailEvent
from domain.reports import EventType, Report, SendingEventType, event_kind
from projections.emails import get_email_row

RECEIVED = datetime(2025, 3, 15, 8, 0, tzinfo=UTC)
WORKSPACE = "6f1f2a4e-0000-4000-8000-000000000001"
KINDS = [*EventType, *SendingEventType]
_TIMES = st.integers(min_value=0, max_value=5).map(lambda m: f"2025-03-14T19:0{m}:00Z")


def make(
    kind: str,
    event_at: str = "2025-03-14T19:00:00Z",
    message: int = 1,
    provider: str = "mailledger",
    **detail: Any,
) -> Report:
    return Report(
        workspace_id=WORKSPACE,
        event_type=event_kind(kind),
        provider=provider,
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
    # The relay's attempts come from provider `smtp` (delays, bounces) or carry an
    # `smtp; ` reason (rejects); either kind may also come from anyone else.
    provider = "mailledger"
    if kind is SendingEventType.SCHEDULED:
        detail["send_at"] = draw(st.one_of(st.none(), _TIMES))
    elif kind is SendingEventType.DISPATCHED:
        detail["transport"] = draw(st.sampled_from(["sandbox", "smtp"]))
        detail["smtp_response"] = draw(st.sampled_from([None, "250 ok", "250 queued as X1"]))
    elif kind is SendingEventType.FAILED:
        detail["smtp_response"] = draw(st.sampled_from([None, "421 busy"]))
    elif kind is EventType.BOUNCE:
        detail["bounce_type"] = draw(st.sampled_from(["Permanent", "Transient"]))
        provider = draw(st.sampled_from(["mailledger", "smtp"]))
    elif kind is EventType.DELIVERY_DELAY:
        provider = draw(st.sampled_from(["mailledger", "smtp", "smtp", "smtp"]))
        detail["expiration_time"] = draw(st.one_of(st.none(), _TIMES))
    elif kind is EventType.REJECT:
        detail["reason"] = draw(st.sampled_from(["suppressed", "smtp; 554 no", "smtp; 550 x"]))
    elif kind is EventType.OPEN:
        detail["machine_open"] = draw(st.booleans())
    return make(kind.value, draw(_TIMES), draw(st.integers(1, 2)), provider, **detail)


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
    return {email_id: view_of(log).as_row() for email_id, (_, log) in fold(items).items()}


def distinct(items: list[Report]) -> list[Report]:
    seen: set[str] = set()
    kept = []
    for item in items:
        if item.semantic_key not in seen:
            kept.append(item)
            seen.add(item.semantic_key)
    return kept


@settings(max_examples=300, deadline=None)
@given(items=st.lists(any_report(), min_size=1, max_size=14), order=st.randoms())
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
        assert (replayed.keys, replayed.last_hash) == (email.keys, email.last_hash)
        assert verify_chain(log) is None


def state_of(*items: Report) -> str:
    ((_, log),) = fold(list(items)).values()
    return view_of(log).state


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


def attempt(n: int) -> Report:
    """The relay's n-th deferral (a 4xx), as the smtp:// transport records it."""
    at = f"2025-03-14T19:0{n}:00Z"
    return make("DeliveryDelay", at, provider="smtp", delay_type="TransientCommunicationFailure")


def test_an_email_whose_attempts_were_all_deferred_is_sending() -> None:
    assert state_of(SENT, attempt(1)) == "sending"
    assert state_of(SENT, SCHEDULED, attempt(1), attempt(2)) == "sending"
    dispatched = make("Dispatched", "2025-03-14T19:05:00Z", transport="smtp")
    assert state_of(SENT, attempt(1), dispatched) == "sent"
    assert state_of(SENT, attempt(1), make("Failed", "2025-03-14T19:05:00Z")) == "failed"
    bounce = make("Bounce", "2025-03-14T19:05:00Z", provider="smtp", bounce_type="Permanent")
    assert state_of(SENT, attempt(1), bounce) == "bounced"
    refused = make("Reject", "2025-03-14T19:05:00Z", reason="smtp; 554 no")
    assert state_of(SENT, attempt(1), refused) == "rejected"


def test_provider_events_win_over_sending() -> None:
    later = "2025-03-14T19:09:00Z"
    assert state_of(SENT, attempt(1), make("Delivery", later)) == "delivered"
    assert state_of(SENT, attempt(1), make("Open", later)) == "sent"
    assert state_of(SENT, attempt(1), make("DeliveryDelay", later, provider="ses")) == "sent"
    assert state_of(SENT, attempt(1), make("Complaint", later)) == "complained"


def test_a_scheduled_email_is_queued_before_any_attempt() -> None:
    assert state_of(SENT, SCHEDULED) == "queued"
    assert state_of(SENT, SCHEDULED, attempt(1)) == "sending"


def tries_of(*items: Report) -> tuple[int, list[dict[str, Any]]]:
    ((_, log),) = fold(list(items)).values()
    view = view_of(log)
    return view.try_count, view.last_tries


def test_the_view_counts_tries_and_keeps_the_last_three() -> None:
    assert tries_of(SENT) == (0, [])
    assert tries_of(SENT, make("Open")) == (0, [])
    dispatched = make("Dispatched", "2025-03-14T19:07:00Z", transport="smtp",
                      smtp_response="250 queued as X1")  # fmt: skip
    count, last = tries_of(SENT, dispatched, attempt(3), attempt(1), attempt(5), attempt(2))
    assert count == 5
    assert [(t["at"][11:16], t["outcome"], t["response"]) for t in last] == [
        ("19:07", "dispatched", "250 queued as X1"),
        ("19:05", "deferred", None),
        ("19:03", "deferred", None),
    ]


def test_each_concluding_attempt_names_its_outcome_and_reply() -> None:
    at = "2025-03-14T19:09:00Z"
    cases = [
        (make("Failed", at, reason="window closed", smtp_response="421 busy"), "failed",
         "421 busy"),
        (make("Bounce", at, provider="smtp", bounce_type="Permanent",
              diagnostic_code="smtp; 550 5.1.1 unknown"), "bounced", "550 5.1.1 unknown"),
        (make("Reject", at, reason="smtp; 554 5.7.1 spam"), "rejected", "554 5.7.1 spam"),
        (make("Dispatched", at, transport="sandbox"), "dispatched", None),
    ]  # fmt: skip
    for event, outcome, response in cases:
        count, last = tries_of(SENT, attempt(1), event)
        assert count == 2
        assert last[0] == {"at": "2025-03-14T19:09:00.000000Z", "outcome": outcome,
                           "response": response}  # fmt: skip


def test_provider_events_are_not_tries() -> None:
    at = "2025-03-14T19:09:00Z"
    others = [
        make("DeliveryDelay", at, provider="ses"),
        make("Bounce", at, provider="sendgrid", bounce_type="Permanent"),
        make("Reject", at, reason="suppressed"),
        make("Reject", at, provider="ses", reason="smtp; looks like ours"),
        make("Delivery", at),
    ]
    assert tries_of(SENT, *others) == (0, [])


def test_the_view_keeps_the_earliest_send_time() -> None:
    ((_, log),) = fold([SENT, SCHEDULED]).values()
    assert view_of(log).send_at == "2025-03-15T10:00:00.000000Z"
    assert view_of(log).sent_at == "2025-03-14T19:00:00.000000Z"


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
        assert event.detail() == item.full_detail
        assert event.hash == event.computed_hash()
    storage.runner.catch_up_all()
    with storage.reader.connect() as conn:
        row = get_email_row(conn, WORKSPACE, str(outcomes[0].email_id))
    assert row is not None
    assert (row["state"], row["send_at"]) == ("canceled", "2025-03-15T10:00:00.000000Z")


def test_tries_and_the_sending_state_reach_the_emails_table(storage: Storage) -> None:
    items = [SENT, attempt(1), attempt(2), attempt(3), attempt(4)]
    outcomes = storage.ledger.record(items)
    storage.runner.catch_up_all()
    email_id = str(outcomes[0].email_id)
    with storage.reader.connect() as conn:
        row = get_email_row(conn, WORKSPACE, email_id)
    assert row is not None
    assert (row["state"], row["try_count"]) == ("sending", 4)
    assert [t["at"][11:16] for t in row["last_tries"]] == ["19:04", "19:03", "19:02"]
    assert row["last_tries"][0] == {
        "at": "2025-03-14T19:04:00.000000Z",
        "outcome": "deferred",
        "response": None,
    }
    assert row == {**storage.ledger.view_email(outcomes[0].email_id).as_row(), "id": email_id}
