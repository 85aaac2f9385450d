"""The email view: one row per email with its summary and detail fields."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Connection,
    Index,
    Integer,
    RowMapping,
    String,
    Table,
    bindparam,
    select,
    tuple_,
)

from domain.email import EmailView
from projections.base import Positioned, metadata
from projections.bulk import save_rows, select_among

TIME = String(27)  # RFC 3339 UTC with microseconds: fixed width, sorts as time

emails = Table(
    "emails",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("workspace_id", String(64), nullable=False),
    Column("message_id", String(998), nullable=False),
    Column("to_address", String(320), nullable=False),
    Column("from_address", String(320)),
    Column("subject", String(998)),
    Column("setup_id", String(36)),
    Column("use_case_id", String(36)),
    Column("email_type", String(32)),
    Column("tier", String(32)),
    Column("attachment_filenames", JSON, nullable=False),
    Column("has_attachment", Boolean, nullable=False),
    Column("tags", JSON, nullable=False),
    Column("state", String(16), nullable=False),
    Column("sent_at", TIME),
    Column("id_rank", String(128)),
    Column("origin_rank", String(128)),
    Column("origin_sent_at", TIME),
    Column("first_event_at", TIME),
    Column("delivered_at", TIME),
    Column("bounced_at", TIME),
    Column("bounce_type", String(32)),
    Column("bounce_subtype", String(64)),
    Column("bounce_rank", String(128)),
    Column("complained_at", TIME),
    Column("rejected_at", TIME),
    Column("delivery_delay_at", TIME),
    Column("first_open_at", TIME),
    Column("last_open_at", TIME),
    Column("open_count", Integer, nullable=False),
    Column("human_open_count", Integer, nullable=False),
    Column("first_click_at", TIME),
    Column("last_click_at", TIME),
    Column("click_count", Integer, nullable=False),
    Column("updated_at", TIME),
    # Sending through the API (EmailView.send_at, dispatched_at, canceled_at, failed_at).
    Column("send_at", TIME),
    Column("dispatched_at", TIME),
    Column("canceled_at", TIME),
    Column("failed_at", TIME),
    # Transport attempts (EmailView.try_count, last_tries, try_keys, provider_delay_at).
    # Defaulted or nullable, so ProjectionRunner.create_tables adds them to an older table.
    Column("try_count", Integer, nullable=False, server_default="0"),
    Column("last_tries", JSON, nullable=False, server_default="[]"),
    Column("try_keys", JSON, nullable=False, server_default="[]"),
    Column("provider_delay_at", TIME),
    # The list queries: scoped by use case or setup, newest first, keyset by id.
    Index("emails_by_use_case", "workspace_id", "use_case_id", "sent_at", "id"),
    Index("emails_by_setup", "workspace_id", "setup_id", "sent_at", "id"),
    # A state filter (the common "show me what bounced") walks only that state's rows.
    Index("emails_by_use_case_state", "workspace_id", "use_case_id", "state", "sent_at", "id"),
    # Correlation: a provider's message id and recipient find the email.
    Index("emails_by_message", "workspace_id", "message_id", "to_address"),
)


def existing(conn: Connection, ids: list[str]) -> list[RowMapping]:
    """The stored rows of these emails."""
    return select_among(conn, select(emails), emails.c.id, ids)


class EmailsProjection:
    """Keeps `emails` equal to folding each email's events into an `EmailView`."""

    name = "emails"
    tables: Sequence[Table] = (emails,)

    def process(
        self, conn: Connection, batch: Sequence[Positioned], *, whole_emails: bool = False
    ) -> None:
        grouped: dict[str, list[Positioned]] = {}
        for item in batch:
            grouped.setdefault(item.email_id, []).append(item)
        stored = [] if whole_emails else existing(conn, list(grouped))
        views = {row["id"]: EmailView.from_row(row) for row in stored}
        stored_ids = set(views)
        for email_id, items in grouped.items():
            view = views.get(email_id)
            if view is None:
                view = views[email_id] = EmailView(
                    id=email_id, workspace_id=items[0].event.workspace_id
                )
            for item in items:
                view.apply(item.event)
        rows = [views[email_id].as_row() for email_id in grouped]
        save_rows(conn, emails, rows, stored_ids)


STATES = (
    "queued",
    "sending",
    "failed",
    "canceled",
    "sent",
    "delivered",
    "rejected",
    "bounced",
    "complained",
)


@dataclass(frozen=True)
class EmailFilter:
    """What the email list is narrowed to (scope by use case or setup, then filters)."""

    workspace_id: str
    use_case_id: str | None = None
    setup_id: str | None = None
    to_addresses: tuple[str, ...] = ()
    states: tuple[str, ...] = ()
    sent_after: str | None = None
    sent_before: str | None = None


SUMMARY_COLUMNS = (
    "id", "use_case_id", "setup_id", "from_address", "to_address", "subject", "state",
    "sent_at", "has_attachment", "open_count", "click_count",
)  # fmt: skip


def list_emails(
    conn: Connection, where: EmailFilter, after: tuple[str, str] | None, limit: int
) -> list[RowMapping]:
    """Emails newest first (by sent_at, then id), after a keyset position, at most
    `limit` of them (their summary columns)."""
    columns = [emails.c[name] for name in SUMMARY_COLUMNS]
    query = select(*columns).where(emails.c.workspace_id == where.workspace_id)
    if where.use_case_id is not None:
        query = query.where(emails.c.use_case_id == where.use_case_id)
    if where.setup_id is not None:
        query = query.where(emails.c.setup_id == where.setup_id)
    if where.to_addresses:
        query = query.where(emails.c.to_address.in_([a.lower() for a in where.to_addresses]))
    if where.states:
        query = query.where(emails.c.state.in_(where.states))
    if where.sent_after is not None:
        query = query.where(emails.c.sent_at >= where.sent_after)
    if where.sent_before is not None:
        query = query.where(emails.c.sent_at < where.sent_before)
    if after is not None:
        query = query.where(tuple_(emails.c.sent_at, emails.c.id) < tuple_(*after))
    query = query.order_by(emails.c.sent_at.desc(), emails.c.id.desc()).limit(limit)
    return list(conn.execute(query).mappings())


# Built once (the detail endpoint's one query).
_EMAIL_BY_ID = select(emails).where(
    emails.c.id == bindparam("email_id"), emails.c.workspace_id == bindparam("workspace_id")
)


def get_email_row(conn: Connection, workspace_id: str, email_id: str) -> RowMapping | None:
    """One email of the workspace, or None (also for another workspace's email)."""
    found = conn.execute(_EMAIL_BY_ID, {"email_id": email_id, "workspace_id": workspace_id})
    return found.mappings().first()
