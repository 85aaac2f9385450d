"""The email and event queries: lists with filters and keyset pages, and detail."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy import Connection, Engine, RowMapping

from adapters.http import tokens
from adapters.http.api import Call, Operation, json_response, not_found, rfc3339_time
from adapters.storage import Storage
from projections.emails import EmailFilter, get_email_row, list_emails
from projections.events import EventFilter, event_id, list_events

State = Literal[
    "queued", "sending", "failed", "canceled", "sent", "delivered", "rejected", "bounced",
    "complained",
]  # fmt: skip
ListedEventType = Literal[
    "Reject", "Delivery", "Bounce", "Complaint", "DeliveryDelay", "Open", "Click"
]

SCOPE = "use_case_id or setup_id is required"


class _Listing(BaseModel):
    model_config = ConfigDict(extra="ignore")

    use_case_id: str | None = Field(None, description="Only emails of this use case.")
    setup_id: str | None = Field(None, description="Only emails of this email setup.")
    limit: int = Field(50, ge=1, le=200, description="Page size, 1 to 200.")
    continuation_token: str | None = Field(
        None, description="From the previous page, to get the next one."
    )

    @model_validator(mode="after")
    def _scoped(self) -> _Listing:
        if self.use_case_id is None and self.setup_id is None:
            raise ValueError(SCOPE)
        return self


class EmailListQuery(_Listing):
    """Filters of the email list."""

    to_address: list[str] = Field(default_factory=list, description="Recipient (repeatable).")
    state: list[State] = Field(default_factory=list, description="Derived state (repeatable).")
    sent_after: str | None = Field(None, description="RFC 3339; sent at or after.")
    sent_before: str | None = Field(None, description="RFC 3339; sent strictly before.")

    _times = field_validator("sent_after", "sent_before")(rfc3339_time)


class EventListQuery(_Listing):
    """Filters of the event list."""

    email_id: list[str] = Field(default_factory=list, description="Email id (repeatable).")
    event_type: list[ListedEventType] = Field(
        default_factory=list, description="Event type (repeatable)."
    )
    event_at_after: str | None = Field(None, description="RFC 3339; happened at or after.")
    event_at_before: str | None = Field(None, description="RFC 3339; happened strictly before.")

    _times = field_validator("event_at_after", "event_at_before")(rfc3339_time)


class EmailSummary(BaseModel):
    """An email as the list shows it."""

    id: str = Field(description="The email's id (one per recipient).")
    ses_use_case_id: str | None = Field(description="The email's use case id.")
    setup_id: str | None
    from_address: str | None
    to_address: str
    subject: str | None
    state: State
    sent_at: str | None = Field(description="RFC 3339 UTC.")
    has_attachment: bool
    open_count: int
    click_count: int


class TransportTry(BaseModel):
    """One attempt to hand the email to its transport."""

    at: str = Field(description="RFC 3339 UTC.")
    outcome: Literal["dispatched", "deferred", "bounced", "rejected", "failed"] = Field(
        description="dispatched: the transport took it; deferred: a 4xx or no answer, "
        "tried again later; bounced: a 5xx to the recipient; rejected: any other refusal; "
        "failed: the last deferral of the retry window."
    )
    response: str | None = Field(
        description="The relay's reply when the attempt recorded it (null for the "
        "sandbox and for deferrals)."
    )


class EmailDetail(EmailSummary):
    """An email with every derived field."""

    message_id: str
    email_type: str | None
    tier: str | None
    attachment_filenames: list[str]
    delivered_at: str | None
    bounced_at: str | None
    bounce_type: str | None
    bounce_subtype: str | None
    complained_at: str | None
    rejected_at: str | None
    delivery_delay_at: str | None
    first_open_at: str | None
    last_open_at: str | None
    first_click_at: str | None
    last_click_at: str | None
    updated_at: str | None
    try_count: int = Field(
        description="How many times mailledger handed the email to its transport "
        "(0 for an email not sent through the API, or not yet tried)."
    )
    last_tries: list[TransportTry] = Field(
        description="The latest three of those attempts, most recent first."
    )


class EmailList(BaseModel):
    """One page of emails, newest first."""

    emails: list[EmailSummary]
    has_more: bool
    continuation_token: str | None


class EventOut(BaseModel):
    """One provider event of an email."""

    id: str
    email_id: str
    event_type: ListedEventType
    event_at: str
    received_at: str
    detail: dict[str, Any] = Field(description="The event's type-specific fields.")


class EventList(BaseModel):
    """One page of events, newest first."""

    events: list[EventOut]
    has_more: bool
    continuation_token: str | None


SUMMARY_FIELDS = tuple(name for name in EmailSummary.model_fields if name != "ses_use_case_id")
DETAIL_FIELDS = tuple(name for name in EmailDetail.model_fields if name != "ses_use_case_id")


def _shape(row: RowMapping, names: Sequence[str]) -> dict[str, Any]:
    shaped = {name: row[name] for name in names}
    shaped["ses_use_case_id"] = row["use_case_id"]
    return shaped


Fetch = Callable[[Connection, Any, Any, int], list[RowMapping]]


@dataclass(frozen=True)
class _Pager:
    """How one list is paged: its name, how rows are fetched, its keyset columns."""

    name: str
    fetch: Fetch
    key: tuple[str, str]
    key_types: tuple[type, type]
    item: Callable[[RowMapping], dict[str, Any]]


def _list_page(
    storage: Storage, listing: _Pager, workspace_id: str, q: Any, where: Any
) -> dict[str, Any]:
    """One page of a list: the keyset position from the token, then `limit + 1` rows to
    know whether more follow, and the token of the next page."""
    filters = q.model_dump(exclude={"limit", "continuation_token"})
    query = tokens.fingerprint(listing.name, {"w": workspace_id, **filters})
    after = None
    if q.continuation_token is not None:
        position = tokens.read(storage.token_secret, q.continuation_token, query)
        after = tuple(kind(value) for kind, value in zip(listing.key_types, position, strict=True))
    with storage.reader.connect() as conn:
        rows = listing.fetch(conn, where, after, q.limit + 1)
    has_more = len(rows) > q.limit
    page = rows[: q.limit]
    token = None
    if has_more:
        last = [page[-1][listing.key[0]], page[-1][listing.key[1]]]
        token = tokens.issue(storage.token_secret, query, last)
    return {
        listing.name: [listing.item(row) for row in page],
        "has_more": has_more,
        "continuation_token": token,
    }


def _event_item(row: RowMapping) -> dict[str, Any]:
    return {
        "id": event_id(uuid.UUID(row["email_id"]), row["version"]),
        "email_id": row["email_id"],
        "event_type": row["event_type"],
        "event_at": row["event_at"],
        "received_at": row["received_at"],
        "detail": row["detail"],
    }


EMAILS = _Pager(
    "emails", list_emails, ("sent_at", "id"), (str, str), lambda row: _shape(row, SUMMARY_FIELDS)
)
EVENTS = _Pager("events", list_events, ("event_at", "position"), (str, int), _event_item)


def _emails_page(storage: Storage, workspace_id: str, q: EmailListQuery) -> dict[str, Any]:
    where = EmailFilter(
        workspace_id,
        q.use_case_id,
        q.setup_id,
        tuple(q.to_address),
        tuple(q.state),
        q.sent_after,
        q.sent_before,
    )
    return _list_page(storage, EMAILS, workspace_id, q, where)


def _events_page(storage: Storage, workspace_id: str, q: EventListQuery) -> dict[str, Any]:
    where = EventFilter(
        workspace_id,
        q.use_case_id,
        q.setup_id,
        tuple(q.email_id),
        tuple(q.event_type),
        q.event_at_after,
        q.event_at_before,
    )
    return _list_page(storage, EVENTS, workspace_id, q, where)


def _detail(engine: Engine, workspace_id: str, email_id: str) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = get_email_row(conn, workspace_id, email_id)
    return None if row is None else _shape(row, DETAIL_FIELDS)


def email_key(text: str) -> str:
    """The canonical form of an email id from a path; 404 when it is not a UUID."""
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise not_found("email") from None


async def list_emails_endpoint(call: Call) -> Any:
    return json_response(await call.run(_emails_page, call.storage, call.workspace_id, call.query))


async def list_events_endpoint(call: Call) -> Any:
    return json_response(await call.run(_events_page, call.storage, call.workspace_id, call.query))


async def get_email_endpoint(call: Call) -> Any:
    email_id = email_key(call.path("email_id"))
    found = await call.run(_detail, call.storage.reader, call.workspace_id, email_id)
    if found is None:
        raise not_found("email")
    return json_response(found)


def email_operations() -> list[Operation]:
    """The email and event queries."""
    return [
        Operation(
            "GET",
            "/v1/{workspace_id}/email",
            list_emails_endpoint,
            "List emails, newest first",
            "Channel.view",
            "emails",
            query=EmailListQuery,
            response=EmailList,
            errors=(400, 422),
        ),
        Operation(
            "GET",
            "/v1/{workspace_id}/email/event",
            list_events_endpoint,
            "List provider events, newest first",
            "Channel.view",
            "emails",
            query=EventListQuery,
            response=EventList,
            errors=(400, 422),
        ),
        Operation(
            "GET",
            "/v1/{workspace_id}/email/{email_id}",
            get_email_endpoint,
            "Get one email with every derived field",
            "Channel.view",
            "emails",
            response=EmailDetail,
            errors=(404,),
        ),
    ]
