"""The content-addressed blob store: bodies and attachments, by SHA-256, stored once."""

from __future__ import annotations

import hashlib

from sqlalchemy import Connection, Engine, func, select
from sqlalchemy.dialects import postgresql, sqlite

from adapters.sending.tables import blobs
from domain.reports import format_time, utc_now


def blob_key(content: bytes) -> str:
    """The key a blob is stored under: its SHA-256, hex."""
    return hashlib.sha256(content).hexdigest()


def put_blob(conn: Connection, content: bytes) -> str:
    """Store `content` unless a blob with its hash is there already; its key."""
    key = blob_key(content)
    present = conn.execute(select(blobs.c.sha256).where(blobs.c.sha256 == key)).first()
    if present is not None:
        return key
    values = {
        "sha256": key,
        "size": len(content),
        "content": content,
        "created_at": format_time(utc_now()),
    }
    # Another request storing the same content at the same moment is not an error.
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    conn.execute(insert(blobs).values(**values).on_conflict_do_nothing())
    return key


def get_blob(engine: Engine, key: str) -> bytes | None:
    """The blob stored under `key`, or None."""
    with engine.connect() as conn:
        content = conn.execute(select(blobs.c.content).where(blobs.c.sha256 == key)).scalar()
    return None if content is None else bytes(content)


def count_blobs(engine: Engine) -> int:
    """How many distinct blobs are stored (for tests and status output)."""
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(blobs)).scalar_one())
