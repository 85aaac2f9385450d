"""Which email a relay's own message id stands for.

An SMTP relay answers 250 with its id for the message (SES: `Ok 0100018e...`), and
reports later events under that id, often without anything of mailledger's echoed back
(SES classic notifications carry no tags). The `provider_ids` read model keeps, from
every `Dispatched` event that names one, (workspace, the relay's id, recipient) -> the
email; webhook and import events without an echoed email id are filed under the email
it names (`link_relay_ids`, one query per batch). It is a projection like the others
(rebuildable); the send worker brings it up to the log's head right after a relay takes
mail, so the first bounce finds it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import replace

from sqlalchemy import Column, Connection, Engine, Index, String, Table, select
from sqlalchemy.dialects import postgresql, sqlite

from adapters.workspaces import admin_metadata
from domain.reports import Report, SendingEventType
from projections.base import Positioned
from projections.bulk import select_among

NAME = "provider_ids"

provider_ids = Table(
    "provider_message_ids",
    admin_metadata,
    Column("workspace_id", String(36), primary_key=True),
    Column("provider_message_id", String(998), primary_key=True),
    Column("to_address", String(320), primary_key=True),
    Column("email_id", String(36), nullable=False),
    Index("provider_message_ids_by_email", "email_id"),
)


class ProviderIdsProjection:
    """Keeps `provider_message_ids` from the `Dispatched` events that name a relay id."""

    name = NAME
    tables: Sequence[Table] = (provider_ids,)

    def process(
        self, conn: Connection, batch: Sequence[Positioned], *, whole_emails: bool = False
    ) -> None:
        rows = [
            {
                "workspace_id": item.event.workspace_id,
                "provider_message_id": relay_id,
                "to_address": item.event.to_address,
                "email_id": item.email_id,
            }
            for item in batch
            if item.event.event_type is SendingEventType.DISPATCHED
            and (relay_id := getattr(item.event, "provider_message_id", None))
        ]
        if not rows:
            return
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        conn.execute(dialect.insert(provider_ids).on_conflict_do_nothing(), rows)


def emails_for(
    engine: Engine, workspace_id: str, keys: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], str]:
    """The email id of each (relay message id, recipient) of the workspace that has one."""
    wanted = set(keys)
    ids = sorted({message_id for message_id, _ in wanted})
    c = provider_ids.c
    query = select(c.provider_message_id, c.to_address, c.email_id)
    with engine.connect() as conn:
        rows = select_among(
            conn, query.where(c.workspace_id == workspace_id), c.provider_message_id, ids
        )
    found: dict[tuple[str, str], str] = {}
    for row in rows:
        key = (row["provider_message_id"], row["to_address"])
        if key in wanted:
            found[key] = row["email_id"]
    return found


def link_relay_ids(engine: Engine, reports: Sequence[Report]) -> list[Report]:
    """The reports, those without an echoed email id filed under the email their
    (message id, recipient) is a relay's id for, where it is one."""
    unlinked: dict[str, set[tuple[str, str]]] = {}
    for r in reports:
        if r.email_id is None:
            unlinked.setdefault(r.workspace_id, set()).add((r.message_id, r.to_address))
    found = {
        (workspace_id, *key): uuid.UUID(email_id)
        for workspace_id, keys in unlinked.items()
        for key, email_id in emails_for(engine, workspace_id, keys).items()
    }
    if not found:
        return list(reports)
    return [
        replace(r, email_id=email_id)
        if r.email_id is None
        and (email_id := found.get((r.workspace_id, r.message_id, r.to_address)))
        else r
        for r in reports
    ]
