"""The ledger on a real store: batches, round trips, races, restarts, tampering."""

from __future__ import annotations

import threading
import uuid
from dataclasses import fields, replace
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.settings import parse_database_url
from adapters.storage import Storage, open_storage
from domain.application import EmailNotFoundError
from domain.events import EmailEvent
from domain.reports import EventType, Report
from tests.factories import distinct, report, reports

EVERY_KIND = [
    report(
        "Sent",
        event_at="2025-03-14T19:00:00Z",
        from_address="shop@news.test",
        subject="Ünïcode ✓ subject",
        setup_id="setup-1",
        use_case_id="uc-1",
        email_type="transactional",
        tier="good",
        attachment_filenames=["invoice.pdf", "Résumé.txt"],
        tags={"campaign": "spring", "n": 3},
    ),
    report("Delivery", event_at="2025-03-14T19:00:02Z", smtp_response="250 2.0.0 OK"),
    report(
        "Bounce",
        event_at="2025-03-14T19:00:03Z",
        bounce_type="Permanent",
        bounce_subtype="General",
        diagnostic_code="smtp; 550 5.1.1 user unknown",
    ),
    report("Complaint", event_at="2025-03-14T19:00:04Z", feedback_type="abuse"),
    report("Reject", event_at="2025-03-14T19:00:05Z", reason="Bad content"),
    report("DeliveryDelay", event_at="2025-03-14T19:00:06Z", delay_type="MailboxFull"),
    report(
        "Open",
        event_at="2025-03-14T19:00:07Z",
        ip="192.0.2.1",
        user_agent="Mail",
        machine_open=True,
    ),
    report("Click", event_at="2025-03-14T19:00:08Z", link="https://a.test/?q=1", ip="192.0.2.1"),
]


def test_every_event_kind_round_trips_through_the_store(storage: Storage) -> None:
    outcomes = storage.ledger.record(EVERY_KIND)
    assert [o.version for o in outcomes] == list(range(1, 9))
    email_id = outcomes[0].email_id

    stored = storage.ledger.get_history(email_id)

    assert [e.event_type for e in stored] == list(EventType)
    for event, sent in zip(stored, EVERY_KIND, strict=True):
        assert event.event_at == sent.event_at
        assert event.detail() == sent.full_detail
        assert event.semantic_key == sent.semantic_key
        assert event.hash == event.computed_hash()
    fresh = open_storage(storage.database)
    try:
        again = fresh.ledger.get_history(email_id)
        assert [_attributes(e) for e in again] == [_attributes(e) for e in stored]
        assert fresh.ledger.view_email(email_id) == storage.ledger.view_email(email_id)
    finally:
        fresh.close()


def _attributes(event: EmailEvent) -> dict[str, Any]:
    return {f.name: getattr(event, f.name) for f in fields(event)}


def test_a_batch_for_many_emails_is_one_transaction(storage: Storage) -> None:
    batch = [report("Delivery", message_id=f"m-{i}") for i in range(50)]
    before = storage.ledger.head_position()
    outcomes = storage.ledger.record(batch)
    assert all(o.recorded for o in outcomes)
    assert storage.ledger.head_position() - before == 50
    assert len({o.email_id for o in outcomes}) == 50


def test_redelivered_batch_records_nothing(storage: Storage) -> None:
    batch = [report("Delivery", message_id=f"m-{i}", transport_key=f"t-{i}") for i in range(10)]
    storage.ledger.record(batch)
    head = storage.ledger.head_position()
    assert not any(o.recorded for o in storage.ledger.record(batch + batch))
    assert storage.ledger.head_position() == head


def test_a_stale_cache_loses_the_race_then_reloads_and_records(database_url: str) -> None:
    first = open_storage(parse_database_url(database_url))
    second = open_storage(parse_database_url(database_url))
    try:
        first.ledger.record([report("Sent")])
        # A redelivery loads the email into the second process's cache at version 1.
        assert not second.ledger.record([report("Sent")])[0].recorded
        first.ledger.record([report("Delivery")])
        (outcome,) = second.ledger.record([report("Open")])
        assert outcome.version == 3
        (dup,) = second.ledger.record([report("Delivery", transport_key="new-id")])
        assert not dup.recorded
        assert [e.event_type for e in first.ledger.get_history(outcome.email_id)] == [
            "Sent",
            "Delivery",
            "Open",
        ]
    finally:
        first.close()
        second.close()


def test_after_losing_a_race_a_writer_checks_its_cached_emails_before_recording(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = open_storage(parse_database_url(database_url))
    second = open_storage(parse_database_url(database_url))
    inserts: list[int] = []
    insert_events = second.ledger.recorder.insert_events

    def counted(*args: Any, **kwargs: Any) -> Any:
        inserts.append(1)
        return insert_events(*args, **kwargs)

    monkeypatch.setattr(second.ledger.recorder, "insert_events", counted)
    try:
        first.ledger.record([report("Sent")])
        second.ledger.record([report("Sent")])  # cached by the second at version 1
        first.ledger.record([report("Delivery")])
        second.ledger.record([report("Open")])
        assert len(inserts) == 2  # lost the race once, then reloaded and recorded

        first.ledger.record([report("Click", link="https://a.test/")])
        inserts.clear()
        (outcome,) = second.ledger.record([report("Open", event_at="2025-03-14T20:00:00Z")])
        assert outcome.version == 5
        assert len(inserts) == 1  # saw the Click before recording: no race lost
        history = first.ledger.get_history(outcome.email_id)
        assert [e.event_type for e in history] == ["Sent", "Delivery", "Open", "Click", "Open"]
        assert first.ledger.find_broken_link(outcome.email_id) is None
    finally:
        first.close()
        second.close()


def test_state_survives_a_restart(database_url: str) -> None:
    first = open_storage(parse_database_url(database_url))
    (outcome,) = first.ledger.record([report("Bounce", bounce_type="Permanent")])
    first.runner.catch_up_all()
    first.close()

    again = open_storage(parse_database_url(database_url))
    try:
        assert again.ledger.view_email(outcome.email_id).state == "bounced"
        assert {s.lag for s in again.runner.status()} == {0}
        (dup,) = again.ledger.record([report("Bounce", bounce_type="Permanent")])
        assert not dup.recorded
    finally:
        again.close()


def test_unknown_email_is_not_found(storage: Storage) -> None:
    with pytest.raises(EmailNotFoundError):
        storage.ledger.view_email(report(message_id="never").target_email_id)
    with pytest.raises(EmailNotFoundError):
        storage.ledger.get_history(report(message_id="never").target_email_id)


def test_a_changed_stored_event_breaks_the_chain(storage: Storage) -> None:
    outcomes = storage.ledger.record(EVERY_KIND[:4])
    email_id = outcomes[0].email_id
    assert storage.ledger.find_broken_link(email_id) is None
    _tamper(storage, email_id, version=3, old=b"Permanent", new=b"Transient")

    fresh = open_storage(storage.database)
    try:
        broken = fresh.ledger.find_broken_link(email_id)
    finally:
        fresh.close()
    assert broken is not None
    assert broken[0] == 3


def _tamper(storage: Storage, email_id: Any, *, version: int, old: bytes, new: bytes) -> None:
    if storage.database.kind == "postgresql":
        with psycopg.connect(storage.database.conninfo, autocommit=True) as conn:
            conn.execute(
                "UPDATE mailledger_events SET state = replace(state::text, %s, %s)::bytea "
                "WHERE originator_id = %s AND originator_version = %s",
                (old.hex(), new.hex(), email_id, version),
            )
        return
    import sqlite3

    assert storage.database.path is not None
    with sqlite3.connect(storage.database.path) as conn:
        (state,) = conn.execute(
            "SELECT state FROM stored_events WHERE originator_id = ? AND originator_version = ?",
            (email_id.hex, version),
        ).fetchone()
        conn.execute(
            "UPDATE stored_events SET state = ? WHERE originator_id = ? AND originator_version = ?",
            (bytes(state).replace(old, new), email_id.hex, version),
        )


@pytest.mark.postgres
def test_a_retry_holds_the_log_so_another_writer_cannot_make_it_lose_again(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = open_storage(parse_database_url(postgres_url))
    second = open_storage(parse_database_url(postgres_url))
    try:
        first.ledger.record([report("Sent")])
        second.ledger.record([report("Sent")])  # cached by the second at version 1
        attempts: list[threading.Thread] = []
        apply = second.ledger._apply

        def with_a_rival(reports: Any, emails: Any) -> Any:
            # Before each attempt of the second, the first appends to the same email.
            at = f"2025-03-14T20:0{len(attempts)}:00Z"
            rival = threading.Thread(
                target=first.ledger.record, args=([report("Open", event_at=at)],)
            )
            attempts.append(rival)
            rival.start()
            rival.join(timeout=1)  # done at once, unless the log is held
            return apply(reports, emails)

        monkeypatch.setattr(second.ledger, "_apply", with_a_rival)
        (outcome,) = second.ledger.record([report("Delivery")])
        assert len(attempts) == 2  # lost to the first rival, then recorded
        for rival in attempts:
            rival.join(timeout=10)
            assert not rival.is_alive()
        history = [e.event_type for e in first.ledger.get_history(outcome.email_id)]
        # The retry held the log from before its loads: the second rival waited for it.
        assert history == ["Sent", "Open", "Delivery", "Open"]
        assert first.ledger.find_broken_link(outcome.email_id) is None
    finally:
        first.close()
        second.close()


@pytest.mark.postgres
def test_eight_threads_recording_overlapping_reports_lose_and_double_nothing(
    postgres_url: str,
) -> None:
    stores = [open_storage(parse_database_url(postgres_url)) for _ in range(8)]
    reports = [
        report(kind, message_id=f"m-{i % 40}", event_at=f"2025-03-14T19:{i % 60:02d}:00Z")
        for i, kind in enumerate(["Delivery", "Open", "Click", "Bounce", "DeliveryDelay"] * 40)
    ]
    distinct = {r.semantic_key: r for r in reports}
    errors: list[BaseException] = []

    def work(store: Storage, offset: int) -> None:
        try:
            rotated = reports[offset * 25 :] + reports[: offset * 25]
            for start in range(0, len(rotated), 20):
                store.ledger.record(rotated[start : start + 20])
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=work, args=(s, i)) for i, s in enumerate(stores)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        ledger = stores[0].ledger
        assert ledger.head_position() >= len(distinct)
        recorded: list[str] = []
        for email_id in {r.target_email_id for r in reports}:
            history = ledger.get_history(email_id)
            assert [e.originator_version for e in history] == list(range(1, len(history) + 1))
            assert ledger.find_broken_link(email_id) is None
            recorded.extend(e.semantic_key for e in history)
        assert sorted(recorded) == sorted(distinct)
    finally:
        for store in stores:
            store.close()


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    base=st.lists(reports(emails=3), min_size=1, max_size=8),
    copies=st.lists(st.integers(min_value=0, max_value=7), max_size=8),
    order=st.randoms(use_true_random=False),
    batch=st.integers(min_value=1, max_value=5),
)
def test_redelivery_through_the_store_changes_nothing(
    storage: Storage, base: list[Report], copies: list[int], order: Any, batch: int
) -> None:
    # The same facts go to two fresh workspaces: once each, in order, to the first;
    # shuffled, with copies, in batches, to the second. Logs and views must match.
    # (Reports sharing a key are one fact: the first to arrive is kept, so `base` keeps
    # one report per fact and the copies below are exact redeliveries.)
    base = distinct(base)
    once_ws, noisy_ws = str(uuid.uuid4()), str(uuid.uuid4())
    once = [replace(r, workspace_id=once_ws) for r in base]
    noisy = [replace(r, workspace_id=noisy_ws) for r in base]
    noisy += [noisy[i % len(noisy)] for i in copies]
    order.shuffle(noisy)

    for item in once:
        storage.ledger.record([item])
    for start in range(0, len(noisy), batch):
        storage.ledger.record(noisy[start : start + batch])

    def facts(items: list[Report]) -> dict[tuple[str, str], Any]:
        found = {}
        for email_id in {r.target_email_id for r in items}:
            try:
                email = storage.ledger.view_email(email_id)
            except EmailNotFoundError:
                continue
            history = storage.ledger.get_history(email_id)
            view = email.as_row()
            for name in ("id", "workspace_id", "updated_at"):
                view.pop(name)
            key = (email.message_id, email.to_address)
            found[key] = (view, sorted((e.semantic_key, str(e.transport_key)) for e in history))
            assert storage.ledger.find_broken_link(email_id) is None
        return found

    assert facts(noisy) == facts(once)


def test_an_echoed_email_id_of_another_workspace_never_writes_there(storage: Storage) -> None:
    (theirs,) = storage.ledger.record([report("Sent", workspace_id=str(uuid.uuid4()))])
    intruder = replace(
        report("Bounce", workspace_id=str(uuid.uuid4()), bounce_type="Permanent"),
        email_id=theirs.email_id,
    )
    (outcome,) = storage.ledger.record([intruder])
    assert outcome.email_id != theirs.email_id
    assert [e.event_type for e in storage.ledger.get_history(theirs.email_id)] == ["Sent"]
    assert storage.ledger.view_email(outcome.email_id).workspace_id == intruder.workspace_id
