"""Writing many rows at once: COPY on PostgreSQL, executemany elsewhere.

Rebuilding a projection writes a row per event; per-row statements would make the
database round trip, not the fold, the cost of a rebuild.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from operator import itemgetter
from typing import Any

import orjson
from sqlalchemy import (
    JSON,
    ColumnElement,
    Connection,
    RowMapping,
    Select,
    String,
    Table,
    func,
    select,
)
from sqlalchemy import literal as literal_value
from sqlalchemy.dialects import sqlite
from sqlalchemy.dialects.postgresql import ARRAY

SQLITE_CHUNK = 500  # values per query: well under SQLite's limit on bound parameters


def select_among(
    conn: Connection, query: Select[Any], column: ColumnElement[str], values: Sequence[str]
) -> list[RowMapping]:
    """The rows of `query` whose text `column` is one of `values`: one array parameter
    on PostgreSQL (however many values: one statement), chunks of bound parameters on
    SQLite.

    On PostgreSQL the array is a subquery (`column IN (SELECT unnest(...))`), not
    `column = ANY(...)`: the planner costs the latter as one index search per element
    and, for a batch of a thousand ids, scanned a whole table of up to about a hundred
    thousand rows instead (13 ms where the index took 3, at 60,000 emails)."""
    if conn.dialect.name == "postgresql":
        array = literal_value(list(values), ARRAY(String))
        among = column.in_(select(func.unnest(array)).scalar_subquery())
        return list(conn.execute(query.where(among)).mappings())
    rows: list[RowMapping] = []
    for start in range(0, len(values), SQLITE_CHUNK):
        chunk = values[start : start + SQLITE_CHUNK]
        rows.extend(conn.execute(query.where(column.in_(chunk))).mappings())
    return rows


def _copy(conn: Connection, table: Table, target: str, rows: Sequence[dict[str, Any]]) -> None:
    # The table's columns the rows name (every row names the same ones); the others
    # take their defaults.
    names = [c.name for c in table.columns if c.name in rows[0]]
    as_text = [i for i, name in enumerate(names) if isinstance(table.c[name].type, JSON)]
    # A row's values picked at once (`itemgetter` of several names gives a tuple), and
    # only its JSON columns written as text: per row and column in Python, this
    # picking cost about a twelfth of a rebuild.
    pick = itemgetter(*names) if len(names) > 1 else lambda row: (row[names[0]],)
    columns = ", ".join(f'"{name}"' for name in names)
    driver = conn.connection.driver_connection
    assert driver is not None
    with driver.cursor() as cursor, cursor.copy(f'COPY "{target}" ({columns}) FROM STDIN') as copy:
        for row in rows:
            values = list(pick(row))
            for i in as_text:
                values[i] = _text(values[i])
            copy.write_row(values)


def _text(value: Any) -> str:
    return orjson.dumps(value).decode()


def insert_rows(conn: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Append rows that all name the same columns (in the caller's transaction)."""
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        _copy(conn, table, table.name, rows)
    else:
        conn.execute(table.insert(), list(rows))


def upsert_rows(conn: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Insert rows, replacing any with the same primary key (in the caller's transaction)."""
    if not rows:
        return
    (key,) = (c.name for c in table.primary_key.columns)
    others = [c.name for c in table.columns if c.name != key]
    if conn.dialect.name != "postgresql":
        stmt = sqlite.insert(table)
        stmt = stmt.on_conflict_do_update(
            index_elements=[key], set_={n: stmt.excluded[n] for n in others}
        )
        conn.execute(stmt, list(rows))
        return
    staging = f"staging_{table.name}"
    # A temporary table of this connection, emptied by DELETE after each use: TRUNCATE
    # (and ON COMMIT DELETE ROWS, a TRUNCATE at every commit) makes new files each time,
    # which cost more than the upsert of a follower's small batch.
    conn.exec_driver_sql(f'CREATE TEMPORARY TABLE IF NOT EXISTS "{staging}" (LIKE "{table.name}")')
    _copy(conn, table, staging, rows)
    columns = ", ".join(f'"{c.name}"' for c in table.columns)
    updates = ", ".join(f'"{n}" = EXCLUDED."{n}"' for n in others)
    conn.exec_driver_sql(
        f'INSERT INTO "{table.name}" ({columns}) SELECT {columns} FROM "{staging}" '
        f'ON CONFLICT ("{key}") DO UPDATE SET {updates}'
    )
    conn.exec_driver_sql(f'DELETE FROM "{staging}"')


def save_rows(
    conn: Connection, table: Table, rows: Sequence[dict[str, Any]], stored: Collection[str]
) -> None:
    """Write rows keyed by `id`: appended when the table does not hold their id (not
    in `stored`, which the caller read under its own lock), replaced when it does."""
    upsert_rows(conn, table, [row for row in rows if row["id"] in stored])
    insert_rows(conn, table, [row for row in rows if row["id"] not in stored])
