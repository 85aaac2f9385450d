"""Every inbound webhook request, kept verbatim, and what became of it.

`receipts` rows are written once and never changed: endpoint, time, the headers that
matter, the raw body, and whether the signature verified. What processing made of a
receipt goes to the append-only `receipt_outcomes`, one row per processing, replays
included, so ingestion itself can be audited and re-run with newer parsers.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Engine,
    Index,
    Integer,
    LargeBinary,
    Select,
    String,
    Table,
    Text,
    func,
    select,
    tuple_,
)
from sqlalchemy.dialects import postgresql, sqlite

from adapters.workspaces import admin_metadata
from projections.bulk import insert_rows

TIME = String(27)

receipts = Table(
    "receipts",
    admin_metadata,
    Column("id", String(36), primary_key=True),
    Column("endpoint_id", String(36), nullable=False),
    Column("workspace_id", String(36), nullable=False),
    Column("provider", String(16), nullable=False),
    Column("received_at", TIME, nullable=False),
    Column("headers", JSON, nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("verified", Boolean, nullable=False),
    Index("receipts_by_endpoint", "endpoint_id", "received_at"),
    Index("receipts_by_time", "received_at"),
)

receipt_outcomes = Table(
    "receipt_outcomes",
    admin_metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("receipt_id", String(36), nullable=False),
    Column("at", TIME, nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("status", Integer, nullable=False),
    Column("recorded", Integer, nullable=False),
    Column("duplicates", Integer, nullable=False),
    Column("ignored", Integer, nullable=False),
    Column("message", Text),
    Column("replay", Boolean, nullable=False),
    Index("receipt_outcomes_by_receipt", "receipt_id", "id"),
)

# Single-use keys (Mailgun tokens), remembered across workers and restarts.
used_keys = Table(
    "used_keys",
    admin_metadata,
    Column("key", String(300), primary_key=True),
    Column("at", TIME, nullable=False),
)

# Headers kept with a receipt: what verification and parsing read, and what helps a
# person tell requests apart. Credentials are never kept.
KEPT_HEADERS = (
    "content-type",
    "user-agent",
    "x-amz-sns-message-type",
    "x-amz-sns-message-id",
    "x-amz-sns-topic-arn",
    "x-amz-sns-subscription-arn",
    "x-twilio-email-event-webhook-signature",
    "x-twilio-email-event-webhook-timestamp",
    "x-pm-webhook-trace-id",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
)


def kept_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers worth keeping (lowercased names); an Authorization header only as
    the fact that there was one."""
    lowered = {name.lower(): value for name, value in headers.items()}
    kept = {name: lowered[name] for name in KEPT_HEADERS if name in lowered}
    if "authorization" in lowered:
        kept["authorization"] = "(present, not kept)"
    return kept


@dataclass(frozen=True)
class Receipt:
    """One inbound request as it was received."""

    id: str
    endpoint_id: str
    workspace_id: str
    provider: str
    received_at: str
    headers: dict[str, str]
    body: bytes
    verified: bool

    def row(self) -> dict[str, Any]:
        """Its stored form."""
        return {
            "id": self.id,
            "endpoint_id": self.endpoint_id,
            "workspace_id": self.workspace_id,
            "provider": self.provider,
            "received_at": self.received_at,
            "headers": self.headers,
            "body": self.body,
            "verified": self.verified,
        }


@dataclass(frozen=True)
class Outcome:
    """What one processing of a receipt made of it."""

    receipt_id: str
    at: str
    outcome: str  # recorded | duplicate | ignored | refused | forbidden | dead_letter |
    # unconfirmed (an SNS subscription whose confirmation failed; SNS sends it again)
    status: int
    recorded: int = 0
    duplicates: int = 0
    ignored: int = 0
    message: str | None = None
    replay: bool = False


def save(
    engine: Engine,
    new_receipts: Sequence[Receipt],
    outcomes: Sequence[Outcome],
    *,
    flush: bool = True,
) -> None:
    """Store receipts and outcomes in one transaction.

    `flush=False` lets PostgreSQL acknowledge the commit before its WAL reaches disk.
    The group commit uses it because the ledger's own (synchronous) commit comes right
    after: flushing the WAL that far flushes these earlier records too, so one disk
    flush serves the whole group.
    """
    with engine.begin() as conn:
        if not flush and conn.dialect.name == "postgresql":
            conn.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")
        # On PostgreSQL by COPY: a group commit writes a row per request, and a
        # statement per row (what executemany sends) cost more than storing them.
        insert_rows(conn, receipts, [r.row() for r in new_receipts])
        insert_rows(conn, receipt_outcomes, [vars(o) for o in outcomes])


def mark_used(engine: Engine, keys: Sequence[str], at: str) -> None:
    """Remember single-use keys (a key already remembered stays as it was)."""
    if not keys:
        return
    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(used_keys).on_conflict_do_nothing(index_elements=["key"])
    with engine.begin() as conn:
        conn.execute(stmt, [{"key": key, "at": at} for key in keys])


def was_used(engine: Engine, key: str) -> bool:
    """Whether a single-use key was already accepted."""
    with engine.connect() as conn:
        return (
            conn.execute(select(used_keys.c.key).where(used_keys.c.key == key)).first() is not None
        )


def _replay_query(
    endpoint_id: str | None, since: str | None, dead_letters_only: bool
) -> Select[Any]:
    query = select(receipts).where(receipts.c.verified.is_(True))
    if endpoint_id is not None:
        query = query.where(receipts.c.endpoint_id == endpoint_id)
    if since is not None:
        query = query.where(receipts.c.received_at >= since)
    if dead_letters_only:
        latest = (
            select(receipt_outcomes.c.receipt_id, func.max(receipt_outcomes.c.id).label("last"))
            .group_by(receipt_outcomes.c.receipt_id)
            .subquery()
        )
        dead = (
            select(latest.c.receipt_id)
            .join(receipt_outcomes, receipt_outcomes.c.id == latest.c.last)
            .where(receipt_outcomes.c.outcome == "dead_letter")
        )
        query = query.where(receipts.c.id.in_(dead))
    return query


def for_replay(
    engine: Engine,
    *,
    endpoint_id: str | None = None,
    since: str | None = None,
    dead_letters_only: bool = False,
    batch: int = 500,
) -> Iterator[Receipt]:
    """Verified receipts in the order they came, optionally only dead letters (those
    whose latest outcome is `dead_letter`), read a page at a time."""
    query = _replay_query(endpoint_id, since, dead_letters_only)
    query = query.order_by(receipts.c.received_at, receipts.c.id).limit(batch)
    last: tuple[str, str] | None = None
    while True:
        page = query
        if last is not None:
            page = page.where(tuple_(receipts.c.received_at, receipts.c.id) > tuple_(*last))
        with engine.connect() as conn:
            rows = list(conn.execute(page).mappings())
        for row in rows:
            yield Receipt(**{column.name: row[column.name] for column in receipts.columns})
        if len(rows) < batch:
            return
        last = (rows[-1]["received_at"], rows[-1]["id"])


def count_for_replay(
    engine: Engine,
    *,
    endpoint_id: str | None = None,
    since: str | None = None,
    dead_letters_only: bool = False,
) -> int:
    """How many receipts `for_replay` would give (for a progress bar)."""
    query = _replay_query(endpoint_id, since, dead_letters_only).subquery()
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(query)).scalar_one())


def outcomes_of(engine: Engine, receipt_id: str) -> list[Outcome]:
    """Every processing of a receipt, oldest first."""
    query = (
        select(receipt_outcomes)
        .where(receipt_outcomes.c.receipt_id == receipt_id)
        .order_by(receipt_outcomes.c.id)
    )
    with engine.connect() as conn:
        rows = list(conn.execute(query).mappings())
    return [Outcome(**{k: v for k, v in row.items() if k != "id"}) for row in rows]
