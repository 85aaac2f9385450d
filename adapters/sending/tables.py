"""The tables sending keeps beside the event log (on `admin_metadata`).

- `blobs`: bodies and attachments, content-addressed by SHA-256, stored once.
- `send_outbox`: one row per email accepted through the API, from acceptance until
  its transport is done with it; the worker's queue, so a restart loses nothing.
- `send_idempotency`: the first answer to each `Idempotency-Key` of a workspace.
- `suppressions`: the addresses a workspace no longer sends to, projected from the
  log's hard bounces and complaints; `suppression_removals` are the deletions that the
  projection honours, so a rebuild keeps them; `suppression_manual` the addresses added
  by hand.
"""

from __future__ import annotations

from sqlalchemy import JSON, Column, Index, Integer, LargeBinary, String, Table, Text

from adapters.workspaces import admin_metadata

TIME = String(27)  # RFC 3339 UTC with microseconds: fixed width, sorts as time

blobs = Table(
    "blobs",
    admin_metadata,
    Column("sha256", String(64), primary_key=True),
    Column("size", Integer, nullable=False),
    Column("content", LargeBinary, nullable=False),
    Column("created_at", TIME, nullable=False),
)

send_outbox = Table(
    "send_outbox",
    admin_metadata,
    Column("email_id", String(36), primary_key=True),
    Column("workspace_id", String(36), nullable=False),
    Column("use_case_id", String(36), nullable=False),
    Column("message_id", String(998), nullable=False),
    Column("to_address", String(320), nullable=False),
    Column("from_address", String(320), nullable=False),
    Column("subject", Text, nullable=False),
    Column("body_sha256", String(64), nullable=False),
    # [{filename, sha256, size, content_type}], in the order they were sent.
    Column("attachments", JSON, nullable=False),
    # The reports recorded on acceptance (Sent, and Scheduled), so that whoever finds
    # the row first (the request or the worker) can record them; the ledger drops repeats.
    Column("reports", JSON, nullable=False),
    Column("send_at", TIME),
    Column("accepted_at", TIME, nullable=False),
    # pending -> (sandbox | sent | rejected | canceled | failed); sandbox -> done.
    Column("status", String(16), nullable=False),
    Column("due_at", TIME, nullable=False),
    Column("step", Integer, nullable=False),
    Column("lease_until", TIME),
    Index("send_outbox_due", "status", "due_at"),
    Index("send_outbox_by_workspace", "workspace_id", "email_id"),
)

send_idempotency = Table(
    "send_idempotency",
    admin_metadata,
    Column("workspace_id", String(36), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("fingerprint", String(64), nullable=False),
    Column("email_id", String(36), nullable=False),
    Column("response", JSON, nullable=False),
    Column("created_at", TIME, nullable=False),
)

suppressions = Table(
    "suppressions",
    admin_metadata,
    Column("workspace_id", String(64), primary_key=True),
    Column("address", String(320), primary_key=True),
    Column("cause", String(16), nullable=False),
    Column("since", TIME, nullable=False),
    Column("email_id", String(36)),
    Column("received_at", TIME, nullable=False),
    Index("suppressions_by_since", "workspace_id", "since", "address"),
)

suppression_removals = Table(
    "suppression_removals",
    admin_metadata,
    Column("workspace_id", String(64), primary_key=True),
    Column("address", String(320), primary_key=True),
    Column("removed_at", TIME, nullable=False),
)

# Addresses put on the list by hand (cause `manual`); kept apart from the projected
# list, so a rebuild keeps them.
suppression_manual = Table(
    "suppression_manual",
    admin_metadata,
    Column("workspace_id", String(64), primary_key=True),
    Column("address", String(320), primary_key=True),
    Column("since", TIME, nullable=False),
)
