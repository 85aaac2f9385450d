"""The PostgreSQL event recorder, with the raw baseline's insert shape.

The library's recorder sends a batch as one array of a composite type, which psycopg
dumps row by row in Python. This one sends four typed arrays (as `INSERT ... SELECT
unnest(...)`), under the same table lock and NOTIFY, so ids still commit in order.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar, cast

from eventsourcing.persistence import InterfaceError, OperationalError, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from eventsourcing.utils import retry
from psycopg import Connection
from psycopg.rows import DictRow, tuple_row
from psycopg.sql import SQL, Identifier

F = TypeVar("F", bound=Callable[..., Any])
_retried = retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)


def on_dead_connection(func: F) -> F:
    """What the library's recorder does around each of its statements: one that fails
    because its pooled connection died (the database restarted, the network dropped
    it) is tried again on another, for up to about two seconds."""
    return cast("F", _retried(func))


class ArrayInsertRecorder(PostgresApplicationRecorder):
    """Inserts a batch of stored events in one statement of parallel arrays."""

    def __init__(self, datastore: PostgresDatastore, *, events_table_name: str = "stored_events"):
        super().__init__(datastore, events_table_name=events_table_name)
        self.insert_arrays_statement = SQL(
            "INSERT INTO {}.{} (originator_id, originator_version, topic, state) "
            "SELECT * FROM unnest(%b::uuid[], %b::bigint[], %b::text[], %b::bytea[]) "
            "RETURNING notification_id"
        ).format(Identifier(datastore.schema), Identifier(events_table_name))
        # The connection whose transaction holds the log's lock, per thread (`holding_log`).
        self._held = threading.local()

    @contextmanager
    def holding_log(self) -> Iterator[None]:
        """Run the block in a transaction that takes the log's insert lock first and
        commits at its end: the events this thread inserts meanwhile join it, and no
        other writer can insert until then (reads go on), so what the block read of
        the log still holds when it inserts."""
        with self.datastore.get_connection() as conn, conn.transaction():
            with conn.cursor() as cursor:
                self._lock_table(cursor)
            self._held.conn = conn
            try:
                yield
            finally:
                self._held.conn = None

    @contextmanager
    def _connection(self) -> Iterator[Connection[DictRow]]:
        held: Connection[DictRow] | None = getattr(self._held, "conn", None)
        if held is not None:
            yield held
            return
        with self.datastore.get_connection() as conn:
            yield conn

    @on_dead_connection
    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int]:
        if not stored_events:
            return []
        with (
            self._connection() as conn,
            conn.transaction(),
            conn.cursor() as cursor,
            conn.cursor(row_factory=tuple_row) as inserting,  # ids come back as plain tuples
        ):
            self._insert_events(cursor, stored_events, **kwargs)
            self._lock_table(cursor)
            self._notify_channel(cursor)
            inserting.execute(
                self.insert_arrays_statement,
                (
                    [e.originator_id for e in stored_events],
                    [e.originator_version for e in stored_events],
                    [e.topic for e in stored_events],
                    [e.state for e in stored_events],
                ),
            )
            return [row[0] for row in inserting.fetchall()]
