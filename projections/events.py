"""The events view: one row per stored event, for the events list."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Connection,
    Index,
    Integer,
    RowMapping,
    String,
    Table,
    select,
    tuple_,
)

from domain.reports import uuid5_bytes
from projections.base import Positioned, metadata
from projections.bulk import insert_rows
from projections.emails import TIME, emails

email_events = Table(
    "email_events",
    metadata,
    Column("position", BigInteger, primary_key=True, autoincrement=False),
    Column("id", String(36), nullable=False),
    Column("email_id", String(36), nullable=False),
    Column("workspace_id", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("event_type", String(16), nullable=False),
    Column("event_at", TIME, nullable=False),
    Column("received_at", TIME, nullable=False),
    Column("provider", String(32), nullable=False),
    Column("transport_key", String(300)),
    Column("semantic_key", String(64), nullable=False),
    Column("receipt_id", String(36)),
    Column("message_id", String(998), nullable=False),
    Column("to_address", String(320), nullable=False),
    Column("detail", JSON, nullable=False),
    Index("email_events_by_email", "workspace_id", "email_id", "event_at"),
    Index("email_events_by_type", "workspace_id", "event_type", "event_at"),
    Index("email_events_by_time", "workspace_id", "event_at"),
)


def event_id(email_id: uuid.UUID, version: int) -> str:
    """A stable id for the event at `version` of an email's log: `uuid5(email_id,
    str(version))`, written out directly (a rebuild makes one per event, and the
    UUID object cost more than the hash)."""
    h = uuid5_bytes(email_id.bytes, str(version).encode()).hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class EventsProjection:
    """Appends one row per event; rows are never changed."""

    name = "events"
    tables: Sequence[Table] = (email_events,)

    def process(
        self, conn: Connection, batch: Sequence[Positioned], *, whole_emails: bool = False
    ) -> None:
        rows = [
            {
                "id": event_id(item.event.originator_id, item.event.originator_version),
                "position": item.position,
                "email_id": item.email_id,
                "workspace_id": item.event.workspace_id,
                "version": item.event.originator_version,
                "event_type": str(item.event.event_type),
                "event_at": item.event.event_at,
                "received_at": item.event.received_at,
                "provider": item.event.provider,
                "transport_key": item.event.transport_key,
                "semantic_key": item.event.semantic_key,
                "receipt_id": item.event.receipt_id,
                "message_id": item.event.message_id,
                "to_address": item.event.to_address,
                "detail": item.event.detail(),
            }
            for item in batch
        ]
        insert_rows(conn, email_events, rows)


LISTED_TYPES = ("Reject", "Delivery", "Bounce", "Complaint", "DeliveryDelay", "Open", "Click")


@dataclass(frozen=True)
class EventFilter:
    """What the event list is narrowed to (scope by its emails' use case or setup)."""

    workspace_id: str
    use_case_id: str | None = None
    setup_id: str | None = None
    email_ids: tuple[str, ...] = ()
    event_types: tuple[str, ...] = ()
    event_at_after: str | None = None
    event_at_before: str | None = None


def list_events(
    conn: Connection, where: EventFilter, after: tuple[str, int] | None, limit: int
) -> list[RowMapping]:
    """Provider events newest first (by event_at, then log position), after a keyset
    position, at most `limit` of them."""
    scope = select(emails.c.id).where(emails.c.workspace_id == where.workspace_id)
    if where.use_case_id is not None:
        scope = scope.where(emails.c.use_case_id == where.use_case_id)
    if where.setup_id is not None:
        scope = scope.where(emails.c.setup_id == where.setup_id)
    ev = email_events.c
    query = select(email_events).where(
        ev.workspace_id == where.workspace_id,
        ev.email_id.in_(scope),
        ev.event_type.in_(where.event_types or LISTED_TYPES),
    )
    if where.email_ids:
        query = query.where(ev.email_id.in_(where.email_ids))
    if where.event_at_after is not None:
        query = query.where(ev.event_at >= where.event_at_after)
    if where.event_at_before is not None:
        query = query.where(ev.event_at < where.event_at_before)
    if after is not None:
        query = query.where(tuple_(ev.event_at, ev.position) < tuple_(*after))
    query = query.order_by(ev.event_at.desc(), ev.position.desc()).limit(limit)
    return list(conn.execute(query).mappings())
