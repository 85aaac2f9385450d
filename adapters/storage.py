"""Opening the database: the event store, the read-model engine, the schema."""

from __future__ import annotations

import contextlib
import gc
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import cache, partial
from operator import itemgetter
from typing import Any
from uuid import UUID

import orjson
import psycopg
from eventsourcing.persistence import ApplicationRecorder, OperationalError, Transcoder
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.sqlite import SQLiteApplicationRecorder
from eventsourcing.utils import resolve_topic
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Identifier
from sqlalchemy import Column, Engine, String, Table, create_engine, event, select
from sqlalchemy import exc as sqlalchemy_exc
from sqlalchemy.engine import Dialect, ExceptionContext
from sqlalchemy.exc import DisconnectionError, IntegrityError
from sqlalchemy.pool import ConnectionPoolEntry

import adapters.admin_store  # noqa: F401 (defines its tables on admin_metadata)
from adapters import canonical
from adapters.eventstore import ArrayInsertRecorder, on_dead_connection
from adapters.sending import tables as sending_tables  # noqa: F401 (defines tables too)
from adapters.sending.provider_ids import ProviderIdsProjection
from adapters.sending.suppression import SuppressionProjection
from adapters.settings import Database, Settings
from adapters.workspaces import admin_metadata
from domain.application import EmailLedger, Head
from domain.events import EmailEvent
from domain.reports import utc_now
from projections import default_projections
from projections.base import Positioned
from projections.bulk import SQLITE_CHUNK
from projections.runner import EmailOrderReader, ProjectionRunner


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


# Service-wide secrets (e.g. the key that signs continuation tokens), made once and
# shared by every worker and restart through the database.
service_secrets = Table(
    "service_secrets",
    admin_metadata,
    Column("name", String(64), primary_key=True),
    Column("value", String(128), nullable=False),
)


def service_secret(engine: Engine, name: str) -> bytes:
    """The named secret, made on first use."""
    with engine.begin() as conn:
        value = conn.execute(
            select(service_secrets.c.value).where(service_secrets.c.name == name)
        ).scalar()
        if value is None:
            value = secrets.token_hex(32)
            try:
                conn.execute(service_secrets.insert().values(name=name, value=value))
            except IntegrityError:  # another worker made it first
                conn.rollback()
                return service_secret(engine, name)
    return bytes.fromhex(value)


@dataclass
class Storage:
    """The opened database: the ledger, the SQL engine, the projection runner."""

    database: Database
    ledger: EmailLedger
    engine: Engine
    runner: ProjectionRunner
    reader: Engine
    token_secret: bytes = b""

    def close(self) -> None:
        """Release every connection."""
        self.ledger.close()
        self.engine.dispose()
        self.reader.dispose()


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


# The key of the PostgreSQL advisory lock held while a process creates or upgrades the
# schema (any 64-bit number no other user of the database picks: "mailledg" in ASCII).
SCHEMA_LOCK = 0x6D61696C6C656467


@contextmanager
def schema_lock(database: Database) -> Iterator[None]:
    """Hold the database's schema lock (PostgreSQL; SQLite serializes writers itself).

    Processes that start together (`serve --workers N`, a parallel import) each create
    what is missing and replace the event store's trigger function; PostgreSQL refuses
    two such statements on one object at once ("tuple concurrently updated"), so they
    take turns.
    """
    if database.kind != "postgresql":
        yield
        return
    try:
        conn = psycopg.connect(database.conninfo, autocommit=True, connect_timeout=5)
    except psycopg.Error as error:
        raise StorageUnavailableError(f"cannot open {database.describe()}: {error}") from None
    with conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (SCHEMA_LOCK,))
        try:
            yield
        finally:
            # A lock ends with its session: if the connection died meanwhile (the
            # database went away), so did the lock, and the error that says so is the
            # one to raise, not this statement's.
            with contextlib.suppress(psycopg.Error):
                conn.execute("SELECT pg_advisory_unlock(%s)", (SCHEMA_LOCK,))


class Liveness:
    """Which pooled PostgreSQL connections to ping before use, for the engines of one
    store. After the database was away (restarted, a failover, a network cut), the
    pools' connections are dead, and the first request to use each would fail with 503
    although the database is back. So a connection is pinged first, and replaced if
    dead, when it sat idle for `idle_seconds` or was last used before any engine of the
    store lost a connection; others (a busy pool's) are used without a round trip."""

    def __init__(self, idle_seconds: float = 1.0) -> None:
        self.idle_seconds = idle_seconds
        self.lost_at = 0.0  # when an engine last lost a connection (time.monotonic)

    def watch(self, engine: Engine) -> None:
        """Ping `engine`'s connections as above."""
        event.listen(engine, "checkin", self._checked_in)
        event.listen(engine, "checkout", partial(self._checked_out, engine.dialect))
        event.listen(engine, "handle_error", self._failed)

    @staticmethod
    def _checked_in(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info["idle_since"] = time.monotonic()

    def _checked_out(
        self, dialect: Dialect, dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: Any
    ) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None:
            return  # a new connection
        if idle_since > self.lost_at and time.monotonic() - idle_since < self.idle_seconds:
            return
        try:
            dialect.do_ping(dbapi_connection)
        except psycopg.Error:
            # The pool opens a new connection in its place.
            raise DisconnectionError("a pooled connection is dead") from None

    def _failed(self, context: ExceptionContext) -> None:
        if context.is_disconnect or isinstance(
            context.original_exception, psycopg.OperationalError
        ):
            self.lost_at = time.monotonic()


def make_engine(
    database: Database, *, reads_only: bool = False, liveness: Liveness | None = None
) -> Engine:
    """A SQLAlchemy engine for the read models, in the same database.

    The writing engine wraps work in transactions (IMMEDIATE ones on SQLite, so a
    projection's read of its position and its write cannot interleave with another
    process's). The reading engine runs each statement on its own, in autocommit: a
    query is then one round trip, and SQLite readers never wait for a write lock.
    """
    common: dict[str, Any] = {"json_serializer": _json_text, "json_deserializer": orjson.loads}
    if reads_only:
        common["isolation_level"] = "AUTOCOMMIT"
    if database.kind == "postgresql":
        connect_args: dict[str, Any] = {"connect_timeout": 5}
        if not reads_only:
            # The writer's statements are mostly batch lookups (`id = ANY(array)`). Once
            # the driver prepares a repeated statement, PostgreSQL soon settles on a
            # generic plan, which searches the array linearly for every row it scans and
            # keeps the plan it made when the table was small. Unprepared, each is
            # planned for its own array, which it hashes, and for the table's size
            # (about 10x faster for a follower's batch); and nothing depends on
            # server-side prepared statements, which poolers such as PgBouncer mishandle.
            connect_args["prepare_threshold"] = None
        engine = create_engine(
            database.sqlalchemy_url,
            # No ping per checkout (it doubles every query's round trips under load):
            # only a connection that may have died is pinged (`Liveness`).
            pool_size=4,
            max_overflow=8,
            connect_args=connect_args,
            **common,
        )
        (liveness or Liveness()).watch(engine)
        return engine
    engine = create_engine(database.sqlalchemy_url, connect_args={"timeout": 30}, **common)
    if not reads_only:
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
    return engine


def _json_text(value: Any) -> str:
    return orjson.dumps(value).decode()


def _sqlite_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    # Take transaction control from pysqlite so that `begin` can say IMMEDIATE.
    dbapi_connection.isolation_level = None
    dbapi_connection.execute("PRAGMA journal_mode=WAL")
    dbapi_connection.execute("PRAGMA busy_timeout=30000")


def _sqlite_begin(conn: Any) -> None:
    # IMMEDIATE takes the write lock at once: a projection's read of its position and
    # its write of the new one cannot interleave with another process's.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


# One stored event as the log holds it: (position, email id as text, version, topic,
# state as stored). Reading these, rather than the library's Notification objects, skips
# building a UUID and an object per row for walks over the whole log.
LogRow = tuple[int, str, int, str, bytes]


@cache
def event_class(topic: str) -> type[EmailEvent]:
    """The event class a stored event's topic names."""
    cls = resolve_topic(topic)
    if not (isinstance(cls, type) and issubclass(cls, EmailEvent)):
        raise TypeError(f"not an email event: {topic}")
    return cls


def decode_rows(rows: Sequence[LogRow]) -> list[Positioned]:
    """Stored events decoded for the projections: each state read straight from its
    JSON into an event of its class, as the library's mapper would build it (fields a
    class gained after the event was stored stay absent, as there). An email's id is
    parsed once per call, however many of its events there are."""
    ids: dict[str, UUID] = {}
    decoded = []
    for position, email_id, version, topic, state in rows:
        values = orjson.loads(state)
        originator_id = ids.get(email_id)
        if originator_id is None:
            originator_id = ids[email_id] = UUID(email_id)
        values["originator_id"] = originator_id
        values["originator_version"] = version
        values["timestamp"] = datetime.fromisoformat(values["timestamp"])
        event = event_class(topic).from_values(values, check=False)
        decoded.append(Positioned(position, event, email_id))
    return decoded


def notification_reader(ledger: EmailLedger) -> Callable[[int, int], Sequence[Positioned]]:
    """Read the stored events after a position, decoded, for the projections."""

    def read_after(position: int, limit: int) -> list[Positioned]:
        return decode_rows(read_log(ledger.recorder, position, limit))

    return read_after


def read_log(recorder: ApplicationRecorder, after: int, limit: int) -> list[LogRow]:
    """Up to `limit` stored events after position `after`, in log order."""
    if isinstance(recorder, PostgresApplicationRecorder):
        return _log_rows(
            recorder,
            "WHERE notification_id > %s ORDER BY notification_id LIMIT %s",
            (after, limit),
        )
    notifications = recorder.select_notifications(
        start=after, limit=limit, inclusive_of_start=False
    )
    return [
        (n.id, str(n.originator_id), n.originator_version, n.topic, n.state) for n in notifications
    ]


@on_dead_connection
def _log_rows(
    recorder: PostgresApplicationRecorder, condition: str, params: Sequence[Any]
) -> list[LogRow]:
    # The stored events `condition` (a constant WHERE ... ORDER BY ... LIMIT with
    # placeholders) selects, as LogRows, read in binary.
    statement = SQL(
        "SELECT notification_id, originator_id::text, originator_version, topic, state FROM {} "
    ).format(Identifier(recorder.datastore.schema, recorder.events_table_name)) + SQL(condition)
    with (
        recorder.datastore.get_connection() as conn,
        conn.cursor(row_factory=tuple_row, binary=True) as cursor,
    ):
        cursor.execute(statement, params)
        return cursor.fetchall()


# A rebuild reads the log a range of email ids at a time, each range about this many
# batches of events (see `whole_emails`).
BATCHES_PER_RANGE = 10


def email_order_reader(ledger: EmailLedger) -> EmailOrderReader:
    """Read the stored events at or before a position in batches of whole emails (every
    event of each of its emails, in version order), decoded, for rebuilds."""

    def read_by_email(head: int, size: int) -> Iterator[list[Positioned]]:
        for rows in whole_emails(ledger.recorder, head, size):
            yield decode_rows(rows)

    return read_by_email


def whole_emails(recorder: ApplicationRecorder, head: int, size: int) -> Iterator[list[LogRow]]:
    """The stored events at or before `head`, in batches of about `size` holding every
    event of each of their emails, each email's in version order.

    The log is read a range of email ids at a time (about BATCHES_PER_RANGE batches'
    worth each, so a rebuild holds one range, not the log), every row of a range in one
    statement, and grouped by email here. Read in email order instead, through the
    primary key, each row was a visit to another page of the table: at a million
    events, whose table is several times PostgreSQL's buffers, reading alone took
    about 18 us of the server's time an event; in ranges, about 2."""
    ranges = max(1, -(-head // (size * BATCHES_PER_RANGE)))
    bounds = [i * (1 << 128) // ranges for i in range(ranges)]
    for low, high in zip(bounds, [*bounds[1:], None], strict=True):
        batch: list[LogRow] = []
        for rows in _by_email(_range_rows(recorder, head, low, high)):
            batch.extend(rows)
            if len(batch) >= size:
                yield batch
                batch = []
        if batch:
            yield batch


def _by_email(rows: Iterable[LogRow]) -> Iterator[list[LogRow]]:
    # Each email's rows, in version order (rows come in the order the table holds them).
    emails: dict[str, list[LogRow]] = {}
    for row in rows:
        found = emails.get(row[1])
        if found is None:
            emails[row[1]] = [row]
        else:
            found.append(row)
    for found in emails.values():
        if len(found) > 1:
            found.sort(key=_VERSION)
        yield found


_VERSION = itemgetter(2)


def _range_rows(
    recorder: ApplicationRecorder, head: int, low: int, high: int | None
) -> list[LogRow]:
    # The stored events at or before `head` whose email id (as a 128-bit number) is in
    # [low, high).
    if isinstance(recorder, PostgresApplicationRecorder):
        # A range of the primary key, which the server reads as a bitmap of the table's
        # pages, in their order (or reads the whole table, for a wide range): a page is
        # read once by each range with a row on it, so however long the log, a rebuild
        # reads the table about as many times as a page holds rows. The head is applied
        # here: in the statement, the planner also walked the position index up to it,
        # once per range.
        within = "AND originator_id < %s" if high is not None else ""
        bounds = (UUID(int=low), *([] if high is None else [UUID(int=high)]))
        rows = _log_rows(recorder, f"WHERE originator_id >= %s {within}", bounds)
        return [row for row in rows if row[0] <= head]
    if isinstance(recorder, SQLiteApplicationRecorder):
        # The SQLite recorder keeps ids as hex text and positions as rowids.
        within = "AND originator_id < ?" if high is not None else ""
        query = (
            "SELECT rowid, originator_id, originator_version, topic, state "
            f"FROM {recorder.events_table_name} WHERE rowid <= ? AND originator_id >= ? {within}"
        )
        params = (head, UUID(int=low).hex, *([] if high is None else [UUID(int=high).hex]))
        with recorder.datastore.transaction(commit=False) as cursor:
            cursor.execute(query, params)
            return [
                (row[0], str(UUID(row[1])), row[2], row[3], row[4]) for row in cursor.fetchall()
            ]
    raise TypeError(f"no email-ordered reads for {type(recorder).__name__}")


def load_heads(recorder: ApplicationRecorder, email_ids: Sequence[UUID]) -> list[Head]:
    """Every stored event of many emails as (email id, version, decoded state), in
    (email, version) order: one query per chunk, the states read straight from their
    JSON (the ledger needs a few of their fields, not event objects)."""
    if isinstance(recorder, PostgresApplicationRecorder | SQLiteApplicationRecorder):
        loads = orjson.loads
        rows = _of_emails(
            recorder,
            email_ids,
            "originator_version, state",
            "ORDER BY originator_id, originator_version",
        )
        return [(email_id, version, loads(state)) for email_id, version, state in rows]
    return [
        (email_id, event.originator_version, orjson.loads(event.state))
        for email_id in email_ids
        for event in recorder.select_events(email_id)
    ]


def hold_log(recorder: ApplicationRecorder) -> AbstractContextManager[object]:
    """The recorder's `holding_log` where it has one (PostgreSQL), else nothing (on
    SQLite a retry races as the first attempt did)."""
    if isinstance(recorder, ArrayInsertRecorder):
        return recorder.holding_log()
    return contextlib.nullcontext()


def load_versions(recorder: ApplicationRecorder, email_ids: Sequence[UUID]) -> dict[UUID, int]:
    """The version of each email's newest stored event (emails with none left out), in
    one query per chunk."""
    if isinstance(recorder, PostgresApplicationRecorder | SQLiteApplicationRecorder):
        rows = _of_emails(recorder, email_ids, "max(originator_version)", "GROUP BY originator_id")
        return {row[0]: row[1] for row in rows}
    newest = {e: recorder.select_events(e, desc=True, limit=1) for e in email_ids}
    return {e: events[0].originator_version for e, events in newest.items() if events}


def _of_emails(
    recorder: PostgresApplicationRecorder | SQLiteApplicationRecorder,
    email_ids: Sequence[UUID],
    columns: str,
    rest: str,
) -> list[tuple[Any, ...]]:
    # `SELECT originator_id, {columns} ... WHERE originator_id IN email_ids {rest}`,
    # each row's id the UUID the caller gave.
    if isinstance(recorder, PostgresApplicationRecorder):
        return _of_emails_postgres(recorder, email_ids, columns, rest)
    found: list[tuple[Any, ...]] = []
    for start in range(0, len(email_ids), SQLITE_CHUNK):
        # The SQLite recorder keeps ids as hex text.
        chunk = {i.hex: i for i in email_ids[start : start + SQLITE_CHUNK]}
        marks = ", ".join("?" * len(chunk))
        statement = (
            f"SELECT originator_id, {columns} FROM {recorder.events_table_name} "
            f"WHERE originator_id IN ({marks}) {rest}"
        )
        with recorder.datastore.transaction(commit=False) as cursor:
            cursor.execute(statement, list(chunk))
            found.extend((chunk[row[0]], *tuple(row)[1:]) for row in cursor.fetchall())
    return found


@on_dead_connection
def _of_emails_postgres(
    recorder: PostgresApplicationRecorder, email_ids: Sequence[UUID], columns: str, rest: str
) -> list[tuple[Any, ...]]:
    # The ids go as one array literal and come back as text, matched to the objects
    # the caller gave: the driver makes a UUID object per element or row otherwise,
    # which cost as much as the query.
    statement = SQL(
        "SELECT originator_id::text, {} FROM {}.{} WHERE originator_id = ANY(%s::uuid[]) {}"
    ).format(
        SQL(columns),
        Identifier(recorder.datastore.schema),
        Identifier(recorder.events_table_name),
        SQL(rest),
    )
    by_text = {str(email_id): email_id for email_id in email_ids}
    with (
        recorder.datastore.get_connection() as conn,
        conn.cursor(row_factory=tuple_row, binary=True) as cursor,
    ):
        cursor.execute(statement, ["{" + ",".join(by_text) + "}"])
        return [(by_text[row[0]], *row[1:]) for row in cursor.fetchall()]


# The garbage collector's thresholds in a process that opens the store. Its full passes
# walk every object the process holds, the aggregate cache's included: about 70 ms
# each with 20,000 cached emails, and with the default thresholds (700, 10, 10) they
# took about a seventh of an import's time and held every request of a serving process
# meanwhile. Nearly everything is freed by reference counting the moment it is no
# longer used; only cycles that outlive the younger generations wait for a full pass,
# which now comes after 100 times as many younger passes.
GC_THRESHOLDS = (700, 10, 1000)

# What the drivers raise when the database stops answering (restarted, network cut).
CONNECTION_LOST = (psycopg.OperationalError, sqlalchemy_exc.OperationalError, OperationalError)


def open_storage(
    database: Database,
    *,
    batch_size: int = 1000,
    cache_size: int | None = None,
    clock: Callable[[], datetime] = utc_now,
) -> Storage:
    """Open (and on first start, create) everything the service stores; a database
    that cannot be reached, or stops answering meanwhile, is StorageUnavailableError.
    Sets the process's garbage collector thresholds (`GC_THRESHOLDS`)."""
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        return _open_storage(database, batch_size, cache_size, clock)
    except CONNECTION_LOST as error:
        raise StorageUnavailableError(f"cannot open {database.describe()}: {error}") from None


def _open_storage(
    database: Database, batch_size: int, cache_size: int | None, clock: Callable[[], datetime]
) -> Storage:
    canonical.install()
    check_reachable(database)
    env = dict(database.eventsourcing_env)
    if cache_size is not None:
        env["AGGREGATE_CACHE_MAXSIZE"] = str(cache_size)
    with schema_lock(database):
        try:
            ledger = EmailLedger(
                env,
                transcoder=OrjsonTranscoder(),
                clock=clock,
                load_heads=load_heads,
                load_versions=load_versions,
                hold_log=hold_log,
            )
        except Exception as error:
            raise StorageUnavailableError(f"cannot open {database.describe()}: {error}") from None
        liveness = Liveness()
        engine = make_engine(database, liveness=liveness)
        reader = make_engine(database, reads_only=True, liveness=liveness)
        runner = ProjectionRunner(
            engine,
            notification_reader(ledger),
            email_order_reader(ledger),
            ledger.head_position,
            [*default_projections(), SuppressionProjection(), ProviderIdsProjection()],
            batch_size=batch_size,
            rebuild_batch_size=max(batch_size, 20_000),
            reader=reader,
        )
        storage = Storage(database, ledger, engine, runner, reader)
        try:
            runner.create_tables()
            admin_metadata.create_all(engine)
            storage.token_secret = service_secret(engine, "continuation")
        except BaseException:
            storage.close()  # a caller that tries again does not keep these connections
            raise
    return storage


def open_configured(settings: Settings) -> Storage:
    """`open_storage` as the settings ask (the service, each command and the
    projection process of `serve --workers N` open it so)."""
    return open_storage(
        settings.database,
        batch_size=settings.projection_batch_size,
        cache_size=settings.cache_size,
    )
