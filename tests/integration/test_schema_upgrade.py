"""Opening a database made before new view columns adds them (ALTER TABLE ... ADD
COLUMN), on both stores, so the projections work again without manual SQL."""

from __future__ import annotations

import multiprocessing
import uuid

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, inspect, select, text, update

from adapters.settings import Database, parse_database_url
from adapters.storage import Storage, open_storage
from domain.application import Outcome
from domain.reports import Report, event_kind
from projections.analytics import StatsFilter, stats_groups
from projections.base import tracking
from projections.emails import emails, get_email_row
from projections.runner import SchemaUpgradeError, add_column_ddl

WORKSPACE = "6f1f2a4e-0000-4000-8000-000000000002"
NEW_COLUMNS = ("try_count", "last_tries", "try_keys", "provider_delay_at")


def make(kind: str, minute: int, provider: str = "mailledger", **detail: object) -> Report:
    return Report(
        workspace_id=WORKSPACE,
        event_type=event_kind(kind),
        provider=provider,
        message_id="msg-upgrade",
        to_address="rcpt@example.com",
        event_at=f"2025-03-14T19:0{minute}:00Z",
        detail=detail,
    )


def deferral(minute: int) -> Report:
    return make("DeliveryDelay", minute, "smtp", delay_type="TransientCommunicationFailure")


def columns(store: Storage) -> set[str]:
    with store.engine.connect() as conn:
        return {column["name"] for column in inspect(conn).get_columns("emails")}


def row_of(store: Storage, email_id: uuid.UUID) -> dict[str, object]:
    with store.reader.connect() as conn:
        row = get_email_row(conn, WORKSPACE, str(email_id))
    assert row is not None
    return dict(row)


def test_an_older_emails_table_made_by_hand_gets_the_new_columns(database_url: str) -> None:
    database = parse_database_url(database_url)
    store = open_storage(database)
    try:
        (outcome, *_) = store.ledger.record([make("Sent", 0), deferral(1), deferral(2)])
        # The emails table as a release before the new columns made it, and its
        # projection to be followed again from the start.
        old = MetaData()
        Table("emails", old, *(c._copy() for c in emails.columns if c.name not in NEW_COLUMNS))
        with store.engine.begin() as conn:
            conn.execute(text("DROP TABLE emails"))
            old.create_all(conn)
            conn.execute(update(tracking).where(tracking.c.name == "emails").values(position=0))
        assert not set(NEW_COLUMNS) & columns(store)
    finally:
        store.close()

    store = open_storage(database)  # no manual SQL in between
    try:
        assert set(NEW_COLUMNS) <= columns(store)
        store.runner.catch_up_all()
        row = row_of(store, outcome.email_id)
        assert (row["state"], row["try_count"]) == ("sending", 2)
        assert row == store.ledger.view_email(outcome.email_id).as_row()
    finally:
        store.close()


def recorded_then_dropped(
    database: Database, reports: list[Report], columns: list[tuple[str, str]]
) -> list[Outcome]:
    """Record and project the reports, then drop the (table, column)s, as a database
    made by an older release holds them."""
    store = open_storage(database)
    try:
        outcomes = store.ledger.record(reports)
        store.runner.catch_up_all()
        with store.engine.begin() as conn:
            for table, name in columns:
                conn.execute(text(f"ALTER TABLE {table} DROP COLUMN {name}"))
    finally:
        store.close()
    return outcomes


def test_dropped_columns_come_back_with_their_defaults_on_rows_kept(database_url: str) -> None:
    database = parse_database_url(database_url)
    dropped = [("emails", name) for name in NEW_COLUMNS]
    (outcome, *_) = recorded_then_dropped(database, [make("Sent", 0), deferral(1)], dropped)
    store = open_storage(database)
    try:
        row = row_of(store, outcome.email_id)
        assert (row["try_count"], row["last_tries"], row["provider_delay_at"]) == (0, [], None)
        store.ledger.record([deferral(2)])
        store.runner.catch_up_all()  # the projection writes the new columns again
        assert row_of(store, outcome.email_id)["try_count"] == 1  # stale until a rebuild
        store.runner.rebuild("emails")
        row = row_of(store, outcome.email_id)
        assert (row["state"], row["try_count"]) == ("sending", 2)
        assert row == store.ledger.view_email(outcome.email_id).as_row()
        # Opening an up-to-date database again changes nothing.
        store.runner.create_tables()
        with store.reader.connect() as conn:
            assert conn.execute(select(emails.c.try_count)).scalars().all() == [2]
    finally:
        store.close()


def test_analytics_tables_made_before_bounced_soft_get_the_column(database_url: str) -> None:
    analytics = ("email_analytics", "analytics_hourly", "analytics_daily_domains")
    database = parse_database_url(database_url)
    bounce = make("Bounce", 1, "ses", bounce_type="Transient")
    recorded_then_dropped(
        database, [make("Sent", 0), bounce], [(table, "bounced_soft") for table in analytics]
    )
    store = open_storage(database)
    try:
        with store.engine.connect() as conn:
            inspector = inspect(conn)
            for table in analytics:
                assert "bounced_soft" in {c["name"] for c in inspector.get_columns(table)}
        where = StatsFilter(WORKSPACE)
        with store.engine.connect() as conn:
            (group,) = stats_groups(conn, where, "day")
        assert (group["bounced"], group["bounced_soft"]) == (1, 0)  # until a rebuild
        store.runner.rebuild("analytics")
        with store.engine.connect() as conn:
            (group,) = stats_groups(conn, where, "day")
        assert (group["bounced"], group["bounced_soft"]) == (1, 1)
    finally:
        store.close()


def test_a_not_null_column_without_a_default_is_refused_clearly(storage: Storage) -> None:
    table = Table("emails_future", MetaData(), Column("rank", Integer, nullable=False))
    with storage.engine.connect() as conn, pytest.raises(SchemaUpgradeError, match="rank"):
        add_column_ddl(conn, table, table.c.rank)
    nullable = Table("emails_future", MetaData(), Column("rank", Integer))
    with storage.engine.connect() as conn:
        ddl = add_column_ddl(conn, nullable, nullable.c.rank)
    assert ddl == "ALTER TABLE emails_future ADD COLUMN rank INTEGER"


def _open_and_close(url: str) -> str:
    try:
        open_storage(parse_database_url(url)).close()
    except Exception as error:  # reported to the test, which names it
        return repr(error)
    return "opened"


def test_processes_that_start_together_all_open_the_database(postgres_url: str) -> None:
    # Each start replaces the event store's trigger function; two at once made
    # PostgreSQL refuse one ("tuple concurrently updated"), and a `serve --workers N`
    # whose worker fails to start stops every worker.
    open_storage(parse_database_url(postgres_url)).close()
    with multiprocessing.get_context("fork").Pool(3) as pool:
        outcomes = [
            outcome
            for _ in range(8)
            for outcome in pool.map(_open_and_close, [postgres_url] * 3, chunksize=1)
        ]
    assert set(outcomes) == {"opened"}, [o for o in outcomes if o != "opened"][:3]
