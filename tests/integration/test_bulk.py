"""`select_among`: the rows whose key is among many values, in one statement on
PostgreSQL (an array subquery) and in chunks on SQLite."""

from __future__ import annotations

import uuid

from sqlalchemy import select

from adapters.storage import Storage
from projections.bulk import SQLITE_CHUNK, select_among
from projections.emails import emails


def _email(email_id: str) -> dict[str, object]:
    return {
        "id": email_id,
        "workspace_id": "ws",
        "message_id": f"<{email_id}@example.com>",
        "to_address": "to@example.com",
        "attachment_filenames": [],
        "has_attachment": False,
        "tags": {},
        "state": "sent",
        "open_count": 0,
        "human_open_count": 0,
        "click_count": 0,
    }


def test_finds_exactly_the_rows_among_the_values(storage: Storage) -> None:
    stored = [str(uuid.uuid4()) for _ in range(SQLITE_CHUNK + 20)]
    with storage.engine.begin() as conn:
        conn.execute(emails.insert(), [_email(i) for i in stored])
    # More values than one SQLite chunk, some repeated, some unknown.
    wanted = stored[::2] + stored[:3] + [str(uuid.uuid4()) for _ in range(SQLITE_CHUNK)]
    with storage.engine.connect() as conn:
        rows = select_among(conn, select(emails.c.id), emails.c.id, wanted)
        # Each row once, however often its value was named.
        assert sorted(row["id"] for row in rows) == sorted({*stored[::2], *stored[:3]})
        assert select_among(conn, select(emails.c.id), emails.c.id, []) == []
        narrowed = select(emails.c.id).where(emails.c.id != stored[0])
        rows = select_among(conn, narrowed, emails.c.id, stored[:4])
        assert sorted(row["id"] for row in rows) == sorted(stored[1:4])
