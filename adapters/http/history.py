"""The history endpoint: an email's audit trail, straight from its event log.

Nothing here reads a read model: the events come from the event store, `chain_valid`
from recomputing every hash, and `?as_of=T` folds the events received up to T into
the domain's `EmailView`, the same fold the email detail is built with.
"""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from adapters.http.api import Call, Operation, json_response, not_found, rfc3339_time
from adapters.http.emails import DETAIL_FIELDS, EmailDetail, email_key
from domain.application import EmailLedger, EmailNotFoundError
from domain.email import EmailView, verify_chain
from domain.events import EmailEvent


class HistoryQuery(BaseModel):
    """Options of the history."""

    model_config = ConfigDict(extra="ignore")

    as_of: str | None = Field(
        None, description="RFC 3339; only events received up to then, and the detail then."
    )
    verify: bool = Field(False, description="Accepted for clarity; the chain is always verified.")

    _times = field_validator("as_of")(rfc3339_time)


class HistoryEvent(BaseModel):
    """One stored event, with the hashes that chain it to the one before."""

    version: int = Field(description="Its place in the email's log, from 1.")
    event_type: str
    event_at: str = Field(description="When the provider says it happened.")
    received_at: str = Field(description="When mailledger recorded it.")
    provider: str
    transport_key: str | None = Field(description="The provider's own event id, if any.")
    semantic_key: str = Field(description="Hash of the fact itself (dedup key).")
    receipt_id: str | None = Field(description="The inbound request it came in, if any.")
    detail: dict[str, Any] = Field(description="The event's type-specific fields.")
    prev_hash: str
    hash: str


class History(BaseModel):
    """An email's events in log order and whether their hash chain holds."""

    email_id: str
    events: list[HistoryEvent]
    chain_valid: bool = Field(description="Recomputed over the whole log on every request.")
    detail: EmailDetail | None = Field(
        None,
        description="Only with as_of: the email as it stood then (null if it had no event yet).",
    )


def _event(event: EmailEvent) -> dict[str, Any]:
    return {
        "version": event.originator_version,
        "event_type": str(event.event_type),
        "event_at": event.event_at,
        "received_at": event.received_at,
        "provider": event.provider,
        "transport_key": event.transport_key,
        "semantic_key": event.semantic_key,
        "receipt_id": event.receipt_id,
        "detail": event.detail(),
        "prev_hash": event.prev_hash,
        "hash": event.hash,
    }


def detail_as_of(email_id: str, events: list[EmailEvent]) -> dict[str, Any] | None:
    """The email detail folded from these events (None when there are none)."""
    if not events:
        return None
    view = EmailView(id=email_id, workspace_id=events[0].workspace_id)
    for event in events:
        view.apply(event)
    row = view.as_row()
    shaped = {name: row[name] for name in DETAIL_FIELDS}
    shaped["ses_use_case_id"] = row["use_case_id"]
    return shaped


def history(
    ledger: EmailLedger, workspace_id: str, email_id: str, as_of: str | None
) -> dict[str, Any] | None:
    """The history answer, or None for an unknown email or another workspace's."""
    try:
        events, whole = ledger.read_history(uuid.UUID(email_id))
    except EmailNotFoundError:
        return None
    if not events or events[0].workspace_id != workspace_id:
        return None
    answer: dict[str, Any] = {"email_id": email_id}
    # An event that no longer reads is left out of the list; the chain is then broken.
    chain_valid = whole and verify_chain(events) is None
    if as_of is not None:
        events = [event for event in events if event.received_at <= as_of]
    answer["events"] = [_event(event) for event in events]
    answer["chain_valid"] = chain_valid
    if as_of is not None:
        answer["detail"] = detail_as_of(email_id, events)
    return answer


async def get_history_endpoint(call: Call) -> Any:
    email_id = email_key(call.path("email_id"))
    found = await call.run(
        history, call.storage.ledger, call.workspace_id, email_id, call.query.as_of
    )
    if found is None:
        raise not_found("email")
    return json_response(found)


def history_operations() -> list[Operation]:
    """Every history endpoint."""
    return [
        Operation(
            "GET",
            "/v1/{workspace_id}/email/{email_id}/history",
            get_history_endpoint,
            "An email's audit trail: every stored event and the hash chain's verdict",
            "Channel.view",
            "emails",
            query=HistoryQuery,
            response=History,
            errors=(404, 422),
            description="Every stored event of the email in log order, each with the "
            "hash of the one before it and its own. `as_of` keeps the events received "
            "up to that time and adds `detail`, the email as it stood then.",
        )
    ]
