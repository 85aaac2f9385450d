"""Projections: exactly-once tracking, rebuild equals incremental, concurrent runners."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, Table, func, select, text

from adapters.settings import parse_database_url
from adapters.storage import BATCHES_PER_RANGE, Storage, open_storage
from domain.reports import Report
from projections.base import Positioned
from projections.events import email_events
from tests.factories import report, reports


def snapshot(store: Storage) -> dict[str, list[dict[str, Any]]]:
    """Every row of every projection's tables, in a stable order."""
    tables = [t for p in store.runner.projections.values() for t in p.tables]
    with store.engine.connect() as conn:
        return {
            table.name: [
                dict(row)
                for row in conn.execute(
                    select(table).order_by(*table.primary_key.columns)
                ).mappings()
            ]
            for table in tables
        }


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    chunks=st.lists(st.lists(reports(emails=4), min_size=1, max_size=6), min_size=1, max_size=5),
    steps=st.lists(st.integers(min_value=0, max_value=3), min_size=5, max_size=5),
)
def test_rebuild_equals_incremental(
    storage: Storage, chunks: list[list[Report]], steps: list[int]
) -> None:
    names = list(storage.runner.projections)
    storage.runner.rebuild_together(names)
    for chunk, step_count in zip(chunks, steps, strict=False):
        storage.ledger.record(chunk)
        for _ in range(step_count):  # follow part of the way, in small batches
            for name in names:
                storage.runner.step(name)
    storage.runner.catch_up_all()
    incremental = snapshot(storage)

    storage.runner.rebuild(names[0])  # one alone
    assert snapshot(storage) == incremental
    storage.runner.rebuild_batch_size = 3  # an email's events then span several reads
    storage.runner.rebuild_together(names)  # all in one pass
    assert snapshot(storage) == incremental
    assert {s.lag for s in storage.runner.status()} == {0}


def test_a_rebuild_reads_every_event_once_in_batches_of_whole_emails(storage: Storage) -> None:
    kinds = ("Delivery", "Open", "Click")
    # Three events each for 40 emails, recorded in an order that mixes the emails.
    storage.ledger.record(
        [
            report(kind, message_id=f"m-{email}", event_at=f"2025-03-14T19:0{n}:00Z")
            for n, kind in enumerate(kinds)
            for email in range(40)
        ]
    )
    head = storage.ledger.head_position()
    storage.ledger.record([report("Bounce", message_id="m-0")])  # past the head

    # Batches of about 4 events: 120 events make several ranges of email ids.
    assert head // (4 * BATCHES_PER_RANGE) >= 2
    batches = [list(batch) for batch in storage.runner.read_by_email(head, 4)]
    read = [item for batch in batches for item in batch]
    assert sorted(item.position for item in read) == list(range(1, head + 1))
    for batch in batches:
        assert 3 <= len(batch) < 4 + 3  # whole emails of three events each
        by_email: dict[str, list[int]] = {}
        for item in batch:
            by_email.setdefault(item.email_id, []).append(item.event.originator_version)
        assert all(versions == [1, 2, 3] for versions in by_email.values())
    assert len({item.email_id for item in read}) == 40


def test_rows_match_the_aggregate(storage: Storage) -> None:
    items = [
        report("Delivery", event_at="2025-03-14T19:05:00Z"),
        report("Sent", event_at="2025-03-14T19:00:00Z", from_address="a@b.test", subject="Hi"),
        report("Open", event_at="2025-03-14T19:06:00Z", machine_open=True),
        report("Bounce", message_id="other", bounce_type="Transient"),
    ]
    outcomes = storage.ledger.record(items)
    storage.runner.catch_up_all()
    rows = {row["id"]: row for row in snapshot(storage)["emails"]}
    for email_id in {o.email_id for o in outcomes}:
        assert rows[str(email_id)] == storage.ledger.view_email(email_id).as_row()
    assert rows[str(outcomes[0].email_id)]["state"] == "delivered"
    assert len(snapshot(storage)["email_events"]) == 4


class Exploding:
    """A projection that writes its rows, then fails before the batch commits."""

    name = "events"
    tables: Sequence[Table] = (email_events,)

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def process(
        self, conn: Connection, batch: Sequence[Positioned], *, whole_emails: bool = False
    ) -> None:
        self.inner.process(conn, batch, whole_emails=whole_emails)
        raise RuntimeError("process died mid-batch")


def test_a_batch_that_fails_halfway_applies_nothing(storage: Storage) -> None:
    storage.ledger.record([report("Delivery", message_id=f"m-{i}") for i in range(5)])
    healthy = storage.runner.projections["events"]
    storage.runner.projections["events"] = Exploding(healthy)
    with pytest.raises(RuntimeError, match="mid-batch"):
        storage.runner.step("events")
    assert snapshot(storage)["email_events"] == []
    assert {s.name: s.position for s in storage.runner.status()}["events"] == 0

    storage.runner.projections["events"] = healthy
    storage.runner.catch_up("events")
    assert len(snapshot(storage)["email_events"]) == 5


def test_a_rebuild_that_fails_leaves_the_projection_as_it_was(storage: Storage) -> None:
    storage.ledger.record([report("Delivery", message_id=f"m-{i}") for i in range(5)])
    storage.runner.catch_up_all()
    before = snapshot(storage)
    healthy = storage.runner.projections["events"]
    storage.runner.projections["events"] = Exploding(healthy)
    with pytest.raises(RuntimeError, match="mid-batch"):
        storage.runner.rebuild("events")
    assert snapshot(storage) == before
    assert {s.lag for s in storage.runner.status()} == {0}


class Peeking:
    """The events projection, looking at the live table (from another connection, as
    a query would) before each batch of a rebuild."""

    name = "events"
    tables: Sequence[Table] = (email_events,)

    def __init__(self, inner: Any, store: Storage) -> None:
        self.inner, self.store = inner, store
        self.seen: list[int] = []

    def process(
        self, conn: Connection, batch: Sequence[Positioned], *, whole_emails: bool = False
    ) -> None:
        with self.store.reader.connect() as reader:
            reader.exec_driver_sql("SET lock_timeout = '2s'")  # a wait fails the test
            count = select(func.count()).select_from(email_events)
            self.seen.append(reader.execute(count).scalar_one())
        self.inner.process(conn, batch, whole_emails=whole_emails)


@pytest.mark.postgres
def test_queries_read_the_old_rows_during_a_rebuild_and_the_new_ones_after(
    postgres_url: str,
) -> None:
    store = open_storage(parse_database_url(postgres_url))
    try:
        store.ledger.record([report("Delivery", message_id=f"m-{i}") for i in range(9)])
        store.runner.catch_up_all()
        before = snapshot(store)
        peeking = Peeking(store.runner.projections["events"], store)
        store.runner.projections["events"] = peeking
        store.runner.rebuild_batch_size = 3  # several batches, a look before each
        store.runner.rebuild("events")
        assert len(peeking.seen) >= 2
        assert set(peeking.seen) == {9}  # the old rows, without waiting
        assert snapshot(store) == before
        with store.engine.connect() as conn:
            indexes = conn.execute(
                text("SELECT indexname FROM pg_indexes WHERE tablename = 'email_events'")
            ).scalars()
            assert {index.name for index in email_events.indexes} <= set(indexes)
            aside = conn.execute(
                text("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'mailledger_rebuild%'")
            ).all()
            assert aside == []  # the rebuild's own schema is gone
    finally:
        store.close()


def test_status_reports_position_and_lag(storage: Storage) -> None:
    storage.ledger.record([report("Delivery", message_id=f"m-{i}") for i in range(10)])
    storage.runner.step("emails")  # batch size 7 in these tests
    status = {s.name: s for s in storage.runner.status()}
    assert (status["emails"].position, status["emails"].lag) == (7, 3)
    assert (status["events"].position, status["events"].lag) == (0, 10)


@pytest.mark.postgres
def test_concurrent_runners_never_apply_an_event_twice(postgres_url: str) -> None:
    writer = open_storage(parse_database_url(postgres_url), batch_size=5)
    runners = [open_storage(parse_database_url(postgres_url), batch_size=5) for _ in range(4)]
    try:
        for i in range(20):
            writer.ledger.record([report("Open", message_id=f"m-{i % 3}", ip=f"10.0.0.{i}")])
        errors: list[BaseException] = []

        def follow(store: Storage) -> None:
            try:
                store.runner.catch_up_all()
            except BaseException as error:
                errors.append(error)

        threads = [threading.Thread(target=follow, args=(r,)) for r in runners]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        rows = snapshot(writer)
        assert sorted(r["open_count"] for r in rows["emails"]) == [6, 7, 7]
        assert len(rows["email_events"]) == 20
    finally:
        for store in [writer, *runners]:
            store.close()
