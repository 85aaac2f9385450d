"""The outbox: emails accepted through the API, until their transport is done.

Rows are claimed with a lease, in short transactions, so that any number of workers
(threads or processes) share the queue, a worker that dies mid-send only delays its
rows until the lease runs out, and no transaction is held open while the ledger or a
transport works.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, RowMapping, and_, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError

from adapters.sending.blobs import put_blob
from adapters.sending.tables import send_idempotency, send_outbox
from domain.reports import format_time

PENDING = "pending"  # accepted; leaves at due_at (send_at, or at once); `step`: attempts
SANDBOX = "sandbox"  # with the sandbox; `step` is the simulator's next event
CANCELED = "canceled"
REJECTED = "rejected"  # suppressed, or refused by the relay
FAILED = "failed"  # the relay kept answering 4xx until the retry window closed
DONE = "done"
WORKING = (PENDING, SANDBOX)
IDEMPOTENCY_WINDOW = timedelta(hours=24)


class IdempotencyRaceError(RuntimeError):
    """Another request stored the same Idempotency-Key first."""


@dataclass(frozen=True)
class Idempotent:
    """The first answer given to an Idempotency-Key, and what it was for."""

    fingerprint: str
    email_id: str
    response: dict[str, Any]


def find_idempotent(
    engine: Engine, workspace_id: str, key: str, now: datetime
) -> Idempotent | None:
    """The answer stored for this key in the last 24 hours, if any."""
    query = select(send_idempotency).where(
        send_idempotency.c.workspace_id == workspace_id,
        send_idempotency.c.key == key,
        send_idempotency.c.created_at > format_time(now - IDEMPOTENCY_WINDOW),
    )
    with engine.connect() as conn:
        row = conn.execute(query).mappings().first()
    if row is None:
        return None
    return Idempotent(row["fingerprint"], row["email_id"], dict(row["response"]))


def store_accepted(
    engine: Engine,
    row: dict[str, Any],
    contents: Sequence[bytes],
    idempotency: tuple[str, str, dict[str, Any]] | None,
    now: datetime,
) -> None:
    """Store the blobs, the outbox row and the key's answer in one transaction.

    `idempotency` is (key, fingerprint, response). Raises IdempotencyRaceError, storing
    nothing, when another request stored the same key first.
    """
    try:
        with engine.begin() as conn:
            for content in contents:
                put_blob(conn, content)
            if idempotency is not None:
                key, fingerprint, response = idempotency
                stale = send_idempotency.c.created_at <= format_time(now - IDEMPOTENCY_WINDOW)
                conn.execute(
                    delete(send_idempotency).where(
                        send_idempotency.c.workspace_id == row["workspace_id"],
                        send_idempotency.c.key == key,
                        stale,
                    )
                )
                conn.execute(
                    send_idempotency.insert().values(
                        workspace_id=row["workspace_id"],
                        key=key,
                        fingerprint=fingerprint,
                        email_id=row["email_id"],
                        response=response,
                        created_at=format_time(now),
                    )
                )
            conn.execute(send_outbox.insert().values(**row))
    except IntegrityError:
        raise IdempotencyRaceError(row["workspace_id"]) from None


def get_row(engine: Engine, workspace_id: str, email_id: str) -> RowMapping | None:
    """The workspace's outbox row of an email (None for another workspace's)."""
    query = select(send_outbox).where(
        send_outbox.c.email_id == email_id, send_outbox.c.workspace_id == workspace_id
    )
    with engine.connect() as conn:
        return conn.execute(query).mappings().first()


def _free(now: str) -> Any:
    return or_(send_outbox.c.lease_until.is_(None), send_outbox.c.lease_until < now)


def next_due(engine: Engine) -> str | None:
    """When the earliest row waiting for the worker is due (None when none waits)."""
    query = select(func.min(send_outbox.c.due_at)).where(send_outbox.c.status.in_(WORKING))
    with engine.connect() as conn:
        due: str | None = conn.execute(query).scalar()
    return due


def claim(engine: Engine, now: datetime, lease: timedelta, limit: int) -> list[RowMapping]:
    """Lease up to `limit` due rows to this worker; the rows, with their lease."""
    moment = format_time(now)
    token = format_time(now + lease)
    query = (
        select(send_outbox.c.email_id)
        .where(send_outbox.c.status.in_(WORKING), send_outbox.c.due_at <= moment, _free(moment))
        .order_by(send_outbox.c.due_at)
        .limit(limit)
    )
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        ids = list(conn.execute(query).scalars())
        if not ids:
            return []
        conn.execute(
            update(send_outbox).where(send_outbox.c.email_id.in_(ids)).values(lease_until=token)
        )
        return list(
            conn.execute(select(send_outbox).where(send_outbox.c.email_id.in_(ids))).mappings()
        )


@dataclass(frozen=True)
class Advance:
    """What the worker did with a leased row: its new status, step and due time."""

    email_id: str
    lease: str
    status: str
    step: int
    due_at: str


def advance(engine: Engine, moves: Sequence[Advance]) -> None:
    """Store the workers' progress and end their leases (only rows still leased by
    them: a row whose lease ran out and was taken over is left to its new owner)."""
    if not moves:
        return
    with engine.begin() as conn:
        for move in moves:
            conn.execute(
                update(send_outbox)
                .where(
                    send_outbox.c.email_id == move.email_id,
                    send_outbox.c.lease_until == move.lease,
                )
                .values(status=move.status, step=move.step, due_at=move.due_at, lease_until=None)
            )


def release(engine: Engine, leases: Sequence[tuple[str, str]]) -> None:
    """Give leased rows back untouched (the work failed; another pass retries it)."""
    with engine.begin() as conn:
        for email_id, lease in leases:
            conn.execute(
                update(send_outbox)
                .where(send_outbox.c.email_id == email_id, send_outbox.c.lease_until == lease)
                .values(lease_until=None)
            )


def cancel(engine: Engine, workspace_id: str, email_id: str, now: datetime) -> str | None:
    """Cancel a scheduled email no worker holds: its status afterwards (`canceled` when
    it is canceled, now or before), or None when the workspace has no such row."""
    moment = format_time(now)
    mine = and_(send_outbox.c.email_id == email_id, send_outbox.c.workspace_id == workspace_id)
    with engine.begin() as conn:
        conn.execute(
            update(send_outbox)
            .where(
                mine,
                send_outbox.c.status == PENDING,
                send_outbox.c.send_at.is_not(None),
                send_outbox.c.step == 0,  # no attempt yet (an SMTP retry has left)
                _free(moment),
            )
            .values(status=CANCELED)
        )
        status: str | None = conn.execute(select(send_outbox.c.status).where(mine)).scalar()
    return status


def purge_idempotency(engine: Engine, now: datetime) -> None:
    """Forget Idempotency-Keys older than 24 hours."""
    with engine.begin() as conn:
        conn.execute(
            delete(send_idempotency).where(
                send_idempotency.c.created_at <= format_time(now - IDEMPOTENCY_WINDOW)
            )
        )


def new_email_row(**values: Any) -> dict[str, Any]:
    """An outbox row for a just-accepted email, with the worker's fields initialized."""
    return {"status": PENDING, "step": 0, "lease_until": None, **values}


def row_id(row: RowMapping) -> uuid.UUID:
    """The email id of an outbox row."""
    return uuid.UUID(row["email_id"])
