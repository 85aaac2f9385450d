"""Runs projections over the notification log with exactly-once tracking.

Each step locks its projection's tracking row, reads the next batch of events after
the recorded position, applies it, and moves the position, all in one transaction.
A process that dies mid-batch leaves nothing applied; two processes never apply the
same batch, because the second waits on the row lock and then sees the new position.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import Column, Connection, Engine, Table, bindparam, inspect, select, text, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.schema import CreateIndex, CreateTable

from projections.base import Positioned, Projection, metadata, tracking

log = logging.getLogger(__name__)

EventReader = Callable[[int, int], Sequence[Positioned]]
# (head, size) -> the events at or before position `head`, in batches of about `size`
# that each hold every event of their emails (each email's in version order).
EmailOrderReader = Callable[[int, int], Iterable[Sequence[Positioned]]]
Progress = Callable[[int], object]


class Stop(Protocol):
    """What tells a follower to stop (a threading or multiprocessing Event)."""

    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...


@dataclass(frozen=True)
class ProjectionStatus:
    """Where a projection stands against the head of the log."""

    name: str
    position: int
    head: int

    @property
    def lag(self) -> int:
        """How many positions it still has to apply (an upper bound: ids may skip)."""
        return max(self.head - self.position, 0)


class UnknownProjectionError(LookupError):
    """No projection has this name."""


class SchemaUpgradeError(RuntimeError):
    """A table lacks a column that cannot be added to it in place."""


def add_column_ddl(conn: Connection, table: Table, column: Column[Any]) -> str:
    """`ALTER TABLE ... ADD COLUMN ...` for a column the stored table lacks.

    The column's specification (type, server default, NOT NULL) is compiled for the
    connection's dialect, as CREATE TABLE would write it. Only a nullable column or one
    with a server default can be added to a table that may hold rows.
    """
    if not column.nullable and column.server_default is None:
        raise SchemaUpgradeError(
            f"table {table.name!r} lacks column {column.name!r}, which is NOT NULL without "
            "a server default and so cannot be added in place: give it a server default "
            "(or make it nullable), or drop the table and rebuild the projection"
        )
    dialect = conn.dialect
    # The compiler of the table's CREATE TABLE writes each column's specification.
    compiler = dialect.ddl_compiler(dialect, CreateTable(table))
    spec = compiler.get_column_specification(column)
    return f"ALTER TABLE {dialect.identifier_preparer.format_table(table)} ADD COLUMN {spec}"


def add_missing_columns(engine: Engine) -> list[str]:
    """Add to each existing table of `metadata` the columns it declares but the
    database lacks (a database made before new view columns); the `table.column`
    names added."""
    added: list[str] = []
    with engine.begin() as conn:
        inspector = inspect(conn)
        for table in metadata.sorted_tables:
            if not inspector.has_table(table.name):
                continue
            present = {column["name"] for column in inspector.get_columns(table.name)}
            for column in table.columns:
                if column.name not in present:
                    conn.execute(text(add_column_ddl(conn, table, column)))
                    added.append(f"{table.name}.{column.name}")
    for name in added:
        log.info("added column %s to an existing table", name)
    return added


class ProjectionRunner:
    """Follows the log for a set of projections."""

    def __init__(
        self,
        engine: Engine,
        read_after: EventReader,
        read_by_email: EmailOrderReader,
        head: Callable[[], int],
        projections: Sequence[Projection],
        *,
        batch_size: int = 1000,
        rebuild_batch_size: int = 20_000,
        reader: Engine | None = None,
    ) -> None:
        self.engine = engine
        # An autocommit engine for looking without locking (see `_caught_up`).
        self.reader = reader
        self.read_after = read_after
        self.head = head
        self.projections = {p.name: p for p in projections}
        self.batch_size = batch_size
        self.rebuild_batch_size = rebuild_batch_size
        self.read_by_email = read_by_email

    def create_tables(self) -> None:
        """Create the read-model tables and tracking rows that do not exist yet, and
        add the columns an older database's tables lack (see `add_missing_columns`)."""
        metadata.create_all(self.engine)
        try:
            add_missing_columns(self.engine)
        except DBAPIError:
            # Another process added them at the same moment: what it did is what we
            # wanted; look again, so a real failure still shows.
            add_missing_columns(self.engine)
        with self.engine.begin() as conn:
            known = set(conn.execute(select(tracking.c.name)).scalars())
            missing = [{"name": n, "position": 0} for n in self.projections if n not in known]
            if missing:
                try:
                    conn.execute(tracking.insert(), missing)
                except IntegrityError:  # another process made them first
                    conn.rollback()

    def get(self, name: str) -> Projection:
        """The projection of that name."""
        try:
            return self.projections[name]
        except KeyError:
            names = ", ".join(sorted(self.projections))
            raise UnknownProjectionError(f"no projection {name!r} (known: {names})") from None

    def _lock(self, conn: Connection, names: Sequence[str]) -> dict[str, int]:
        """Lock the named projections' tracking rows (in name order, so two runners
        never wait on each other in a cycle); their positions."""
        query = select(tracking.c.name, tracking.c.position).where(tracking.c.name.in_(names))
        query = query.order_by(tracking.c.name)
        if conn.dialect.name == "postgresql":
            query = query.with_for_update()  # rows are locked as the sort returns them
        positions = {name: int(position) for name, position in conn.execute(query)}
        missing = set(names).difference(positions)
        if missing:
            raise UnknownProjectionError(f"no tracking row for {', '.join(sorted(missing))}")
        return positions

    def _caught_up(self, names: list[str]) -> bool:
        # Whether every named projection has seen the newest event, read without locks
        # (with the reader, when there is one): when it says no, or is wrong because an
        # event just arrived, the locked step (or the next one) does the work.
        if self.reader is None:
            return False
        head = self.head()
        query = select(tracking.c.position).where(tracking.c.name.in_(names))
        with self.reader.connect() as conn:
            positions = list(conn.execute(query).scalars())
        return len(positions) == len(names) and min(positions) >= head

    def step(self, name: str) -> int:
        """Apply the next batch of one projection; the number of events applied."""
        return self.step_together([name])

    def step_together(self, names: Sequence[str], batch_size: int | None = None) -> int:
        """Read the next batch once and apply it to each of the named projections.

        Each applies only what lies past its own position, in one transaction with
        the others; the number of events read.
        """
        chosen = {name: self.get(name) for name in sorted(set(names))}
        if self._caught_up(list(chosen)):
            return 0  # the usual answer when idle: two plain reads, no lock, no transaction
        with self.engine.begin() as conn:
            positions = self._lock(conn, list(chosen))
            batch = self.read_after(min(positions.values()), batch_size or self.batch_size)
            if not batch:
                return 0
            moved = []
            for name, projection in chosen.items():
                todo = [item for item in batch if item.position > positions[name]]
                if todo:
                    projection.process(conn, todo)
                    moved.append({"moved": name, "position": todo[-1].position})
            if moved:
                conn.execute(update(tracking).where(tracking.c.name == bindparam("moved")), moved)
        return len(batch)

    def catch_up(self, name: str, progress: Progress | None = None) -> int:
        """Apply batches until the projection has seen every stored event."""
        return self.catch_up_together([name], progress)

    def catch_up_together(
        self,
        names: Sequence[str],
        progress: Progress | None = None,
        batch_size: int | None = None,
    ) -> int:
        """Apply batches to the named projections until they have seen every event."""
        total = 0
        while applied := self.step_together(names, batch_size):
            total += applied
            if progress is not None:
                progress(applied)
        return total

    def catch_up_all(self) -> int:
        """Catch every projection up, reading the log once for all of them."""
        return self.catch_up_together(list(self.projections))

    def rebuild(self, name: str, progress: Progress | None = None) -> int:
        """Empty the projection's tables and apply the whole log from position 0."""
        return self.rebuild_together([name], progress)

    def rebuild_together(self, names: Sequence[str], progress: Progress | None = None) -> int:
        """Rebuild the named projections from position 0 in one pass over the log.

        The pass reads the log in batches that each hold every event of their emails
        (`read_by_email`) and hands the projections each email's events together, so
        each email's rows are written once (not once per batch its events fall in).
        It runs in one transaction that empties the tables (on PostgreSQL, writes new
        ones beside them and swaps them in: `_TablesAside`) and ends with every
        position at the head it read to: queries keep seeing the old rows until the
        new ones replace them, and a rebuild that fails leaves the projections as they
        were. Events recorded meanwhile are past that head, and the usual steps apply
        them afterwards.
        """
        chosen = {name: self.get(name) for name in sorted(set(names))}
        with self.engine.begin() as conn:
            self._lock(conn, list(chosen))
            tables = [table for projection in chosen.values() for table in projection.tables]
            aside = _TablesAside(conn, tables) if conn.dialect.name == "postgresql" else None
            if aside is None:
                for table in tables:
                    conn.execute(table.delete())
            head = self.head()
            total = 0
            for batch in self.read_by_email(head, self.rebuild_batch_size):
                for projection in chosen.values():
                    projection.process(conn, batch, whole_emails=True)
                total += len(batch)
                if progress is not None:
                    progress(len(batch))
            if aside is not None:
                aside.swap_in()
            chosen_rows = tracking.c.name.in_(list(chosen))
            conn.execute(update(tracking).where(chosen_rows).values(position=head))
        return total

    def status(self) -> list[ProjectionStatus]:
        """Each projection's position and the head of the log."""
        head = self.head()
        with self.engine.connect() as conn:
            query = select(tracking.c.name, tracking.c.position)
            rows: dict[str, int] = dict(conn.execute(query).all())
        return [ProjectionStatus(name, int(rows.get(name, 0)), head) for name in self.projections]

    def run(self, stop: Stop, interval: float) -> None:
        """Follow the log until `stop` is set, riding out database outages."""
        while not stop.is_set():
            try:
                self.catch_up_all()
            except DBAPIError as error:
                log.warning("projections paused, database unavailable: %s", error.orig)
            except Exception as error:
                log.warning("projections paused: %s", error)
            stop.wait(interval)


class _TablesAside:
    """A PostgreSQL rebuild's new tables, made beside the live ones in the rebuild's
    transaction: empty copies without their secondary indexes in a schema of their
    own, searched first, so the projections write there under the usual names. At
    the end their indexes are built (one sort each, where keeping them up row by row
    cost a fifth of the rebuild) and they replace the live tables. Until then, and
    while the indexes are built, queries read the live tables; only the swap itself
    waits for them. A rebuild that fails drops the schema with everything else."""

    def __init__(self, conn: Connection, tables: Sequence[Table]) -> None:
        self.conn, self.tables = conn, tables
        self.live = str(conn.exec_driver_sql("SELECT current_schema()").scalar_one())
        self.schema = f"mailledger_rebuild_{uuid.uuid4().hex[:12]}"
        path = str(conn.exec_driver_sql("SHOW search_path").scalar_one())
        conn.exec_driver_sql(f'CREATE SCHEMA "{self.schema}"')
        conn.exec_driver_sql(f'SET LOCAL search_path TO "{self.schema}", {path}')
        for table in tables:
            conn.execute(CreateTable(table))

    def swap_in(self) -> None:
        """Index the new tables and put them in the live ones' place."""
        for table in self.tables:
            for index in table.indexes:
                self.conn.execute(CreateIndex(index))
        for table in self.tables:
            self.conn.exec_driver_sql(f'DROP TABLE "{self.live}"."{table.name}"')
            self.conn.exec_driver_sql(
                f'ALTER TABLE "{self.schema}"."{table.name}" SET SCHEMA "{self.live}"'
            )
        self.conn.exec_driver_sql(f'DROP SCHEMA "{self.schema}"')
