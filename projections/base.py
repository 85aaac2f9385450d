"""What every projection shares: the metadata, the tracking table, the interface."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import BigInteger, Column, Connection, MetaData, String, Table

from domain.events import EmailEvent

metadata = MetaData()

# One row per projection: the position of the last event it applied. Written in the
# same transaction as the projection's rows, so an event is applied exactly once.
tracking = Table(
    "projection_tracking",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("position", BigInteger, nullable=False),
)


@dataclass(frozen=True)
class Positioned:
    """An event and its position in the application's notification log, with its
    email's id as text (as the log gave it: the projections write it in every row, and
    writing it from the UUID each time cost about a twentieth of a rebuild)."""

    position: int
    event: EmailEvent
    email_id: str


class Projection(Protocol):
    """A read model: the tables it owns and how a batch of events changes them."""

    name: str
    tables: Sequence[Table]

    def process(
        self, conn: Connection, batch: Sequence[Positioned], *, whole_emails: bool = False
    ) -> None:
        """Apply the batch (in position order) inside the caller's transaction.

        `whole_emails`: the batch holds every event of each of its emails, in any
        order, and nothing of them was applied before (a rebuild, see
        `ProjectionRunner.rebuild_together`), so their rows can be written without
        looking for stored ones first.
        """
