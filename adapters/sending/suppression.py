"""The suppression list: addresses a workspace no longer sends to.

It is projected from the event log itself, so a hard bounce or a complaint suppresses
the address whoever reported it: the sandbox, an SMTP reply or any provider's webhook.
The projection has its own tracking row (exactly once, rebuildable like the others);
deletions are kept apart and honoured by the projection, so a rebuild does not bring
back an address someone removed, while a new bounce after the removal does. Addresses
added by hand (cause `manual`) are kept apart too, and listed with the projected ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Connection,
    Engine,
    RowMapping,
    String,
    Subquery,
    Table,
    delete,
    exists,
    literal,
    null,
    select,
    tuple_,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from adapters.sending.tables import suppression_manual, suppression_removals, suppressions
from domain.events import EmailEvent
from domain.reports import EventType, format_time
from projections.base import Positioned

if TYPE_CHECKING:
    from adapters.storage import Storage

NAME = "suppressions"


def cause_of(event: EmailEvent) -> str | None:
    """Why an event suppresses its address: `Bounce` (hard) or `Complaint`; else None."""
    if event.event_type is EventType.COMPLAINT:
        return "Complaint"
    if event.event_type is EventType.BOUNCE and getattr(event, "bounce_type", None) == "Permanent":
        return "Bounce"
    return None


class SuppressionProjection:
    """Keeps `suppressions` equal to the earliest suppressing event of each address
    since its last removal (earliest by event time, then receipt time, email id and
    cause, so the entry never depends on the order events are applied in)."""

    name = NAME
    tables: Sequence[Table] = (suppressions,)

    def process(
        self, conn: Connection, batch: Sequence[Positioned], *, whole_emails: bool = False
    ) -> None:
        found: dict[tuple[str, str], list[Entry]] = {}
        for item in batch:
            event = item.event
            cause = cause_of(event)
            if cause is not None:
                entry = (event.event_at, event.received_at, str(event.originator_id), cause)
                found.setdefault((event.workspace_id, event.to_address), []).append(entry)
        if not found:
            return
        removals, entries = suppression_removals.c, suppressions.c
        removed = _by_address(conn, suppression_removals, [removals.removed_at], list(found))
        columns = [entries.since, entries.received_at, entries.email_id, entries.cause]
        stored = _by_address(conn, suppressions, columns, list(found))
        added, changed = [], []
        for key, candidates in found.items():
            cutoff = removed.get(key)
            eligible = [e for e in candidates if cutoff is None or e[1] > cutoff[0]]
            if not eligible:
                continue
            since, received_at, email_id, cause = best = min(eligible)
            row = {"workspace_id": key[0], "address": key[1], "cause": cause, "since": since,
                   "email_id": email_id, "received_at": received_at}  # fmt: skip
            current = stored.get(key)
            if current is None:
                added.append(row)
            elif best < tuple(current):
                changed.append(row)
        if added:
            conn.execute(suppressions.insert(), added)
        for row in changed:
            where = tuple_(entries.workspace_id, entries.address) == (
                row["workspace_id"],
                row["address"],
            )
            conn.execute(update(suppressions).where(where).values(**row))


# A suppressing event as the list keeps it: (since, received_at, email_id, cause).
Entry = tuple[str, str, str, str]
ADDRESS_CHUNK = 400  # (workspace, address) pairs per query: under SQLite's parameter limit


def _by_address(
    conn: Connection, table: Table, columns: list[Any], keys: list[tuple[str, str]]
) -> dict[tuple[str, str], tuple[Any, ...]]:
    # The given columns of the table's rows for these (workspace, address) keys.
    pair = tuple_(table.c.workspace_id, table.c.address)
    found: dict[tuple[str, str], tuple[Any, ...]] = {}
    for start in range(0, len(keys), ADDRESS_CHUNK):
        query = select(table.c.workspace_id, table.c.address, *columns).where(
            pair.in_(keys[start : start + ADDRESS_CHUNK])
        )
        for row in conn.execute(query):
            found[(row[0], row[1])] = tuple(row[2:])
    return found


class SuppressionFollower:
    """Brings the suppression projection up to the log's head before a send (the
    background projection thread keeps it current too; whichever comes first applies
    an event, exactly once)."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    def follow(self) -> int:
        """Apply whatever the log holds beyond the projection's position (when there
        is nothing, the runner finds so with two plain reads, without a lock)."""
        return self.storage.runner.catch_up(NAME)


def _listed(workspace_id: str) -> Subquery:
    """The workspace's list: the projected entries, and the manual ones for addresses
    no event suppresses."""
    projected, manual = suppressions.c, suppression_manual.c
    by_event = select(
        projected.address, projected.cause, projected.since, projected.email_id
    ).where(projected.workspace_id == workspace_id)
    by_hand = select(
        manual.address,
        literal("manual", String).label("cause"),
        manual.since,
        null().label("email_id"),
    ).where(
        manual.workspace_id == workspace_id,
        ~exists().where(
            projected.workspace_id == workspace_id, projected.address == manual.address
        ),
    )
    return union_all(by_event, by_hand).subquery("listed")


def is_suppressed(engine: Engine, workspace_id: str, address: str) -> bool:
    """Whether the workspace's list holds the address."""
    listed = _listed(workspace_id)
    query = select(listed.c.address).where(listed.c.address == address.lower())
    with engine.connect() as conn:
        return conn.execute(query).first() is not None


@dataclass(frozen=True)
class SuppressionFilter:
    """What the list is narrowed to."""

    workspace_id: str
    address: str | None = None
    addresses: tuple[str, ...] | None = None


def list_suppressions(
    engine: Engine, where: SuppressionFilter, after: tuple[str, str] | None, limit: int
) -> list[RowMapping]:
    """Entries newest first (by since, then address), after a keyset position."""
    c = _listed(where.workspace_id).c
    query = select(c.address, c.cause, c.since, c.email_id)
    if where.address is not None:
        query = query.where(c.address == where.address.lower())
    if where.addresses is not None:
        query = query.where(c.address.in_([a.lower() for a in where.addresses]))
    if after is not None:
        query = query.where(tuple_(c.since, c.address) < tuple_(*after))
    query = query.order_by(c.since.desc(), c.address.desc()).limit(limit)
    with engine.connect() as conn:
        return list(conn.execute(query).mappings())


def add(engine: Engine, workspace_id: str, addresses: Sequence[str], now: datetime) -> None:
    """Put addresses on the list by hand (an address already added keeps its time)."""
    rows = [
        {"workspace_id": workspace_id, "address": address.lower(), "since": format_time(now)}
        for address in dict.fromkeys(addresses)
    ]
    with engine.begin() as conn:
        insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
        conn.execute(insert(suppression_manual).on_conflict_do_nothing(), rows)


def remove(engine: Engine, workspace_id: str, address: str, now: datetime) -> None:
    """Take an address off the list; events recorded until now no longer count."""
    address = address.lower()
    values = {"workspace_id": workspace_id, "address": address, "removed_at": format_time(now)}
    with engine.begin() as conn:
        insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
        stmt = insert(suppression_removals).values(**values)
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["workspace_id", "address"],
                set_={"removed_at": stmt.excluded.removed_at},
            )
        )
        for table in (suppressions, suppression_manual):
            conn.execute(
                delete(table).where(
                    table.c.workspace_id == workspace_id, table.c.address == address
                )
            )
