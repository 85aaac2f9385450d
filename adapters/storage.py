"""Opening the database: the event store, the read-model engine, the schema."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import orjson
import psycopg
from eventsourcing.persistence import Transcoder
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.pool import ConnectionPoolEntry

from adapters.settings import Database
from adapters.workspaces import admin_metadata
from domain.application import EmailLedger
from domain.events import EmailEvent
from domain.reports import utc_now
from projections import default_projections
from projections.base import Positioned
from projections.runner import ProjectionRunner


class StorageUnavailableError(RuntimeError):
    """The database cannot be reached or opened."""


class OrjsonTranscoder(Transcoder):
    """Event state as plain JSON via orjson (attributes are JSON-native by design).

    The library's own `timestamp` is the one non-JSON attribute; it is written as
    RFC 3339 and read back as a datetime.
    """

    def encode(self, obj: Any) -> bytes:
        return orjson.dumps(obj)

    def decode(self, data: bytes) -> Any:
        state = orjson.loads(data)
        if isinstance(state, dict) and isinstance(state.get("timestamp"), str):
            state["timestamp"] = datetime.fromisoformat(state["timestamp"])
        return state


@dataclass
class Storage:
    """The opened database: the ledger, the SQL engine, the projection runner."""

    database: Database
    ledger: EmailLedger
    engine: Engine
    runner: ProjectionRunner

    def close(self) -> None:
        """Release every connection."""
        self.ledger.close()
        self.engine.dispose()


def check_reachable(database: Database) -> None:
    """Fail fast, with a clear message, when the database cannot be opened."""
    try:
        if database.path is not None:
            database.path.parent.mkdir(parents=True, exist_ok=True)
            sqlite3.connect(database.path, timeout=5).close()
        else:
            psycopg.connect(database.conninfo, connect_timeout=5).close()
    except (OSError, sqlite3.Error, psycopg.Error) as error:
        detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise StorageUnavailableError(f"cannot open {database.describe()}: {detail}") from None


def make_engine(database: Database) -> Engine:
    """The SQLAlchemy engine for the read models, in the same database."""
    if database.kind == "postgresql":
        return create_engine(
            database.sqlalchemy_url,
            pool_pre_ping=True,
            pool_size=4,
            max_overflow=8,
            connect_args={"connect_timeout": 5},
        )
    engine = create_engine(database.sqlalchemy_url, connect_args={"timeout": 30})
    event.listen(engine, "connect", _sqlite_connect)
    event.listen(engine, "begin", _sqlite_begin)
    return engine


def _sqlite_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    # Take transaction control from pysqlite so that `begin` can say IMMEDIATE.
    dbapi_connection.isolation_level = None
    dbapi_connection.execute("PRAGMA journal_mode=WAL")
    dbapi_connection.execute("PRAGMA busy_timeout=30000")


def _sqlite_begin(conn: Any) -> None:
    # IMMEDIATE takes the write lock at once: a projection's read of its position and
    # its write of the new one cannot interleave with another process's.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def notification_reader(ledger: EmailLedger) -> Callable[[int, int], Sequence[Positioned]]:
    """Read the stored events after a position, decoded, for the projections."""

    def read_after(position: int, limit: int) -> list[Positioned]:
        notifications = ledger.recorder.select_notifications(
            start=position, limit=limit, inclusive_of_start=False
        )
        return [
            Positioned(n.id, cast("EmailEvent", ledger.mapper.to_domain_event(n)))
            for n in notifications
        ]

    return read_after


def open_storage(
    database: Database,
    *,
    batch_size: int = 1000,
    clock: Callable[[], datetime] = utc_now,
) -> Storage:
    """Open (and on first start, create) everything the service stores."""
    check_reachable(database)
    try:
        ledger = EmailLedger(
            dict(database.eventsourcing_env), transcoder=OrjsonTranscoder(), clock=clock
        )
    except Exception as error:
        raise StorageUnavailableError(f"cannot open {database.describe()}: {error}") from None
    engine = make_engine(database)
    runner = ProjectionRunner(
        engine,
        notification_reader(ledger),
        ledger.head_position,
        default_projections(),
        batch_size=batch_size,
    )
    runner.create_tables()
    admin_metadata.create_all(engine)
    return Storage(database, ledger, engine, runner)
