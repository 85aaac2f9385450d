"""The events of an email's log, declared explicitly, one class per kind.

Every event carries the common fields of `EmailEvent`; each subclass adds the
type-specific fields of SPEC section 1. Attributes are JSON-native (times are RFC 3339
text of fixed width, so comparing them as text compares the moments).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import fields
from functools import cache
from typing import TYPE_CHECKING, Any, ClassVar, Self

from eventsourcing.domain import AggregateEvent

from domain.reports import (
    DETAIL_FIELDS,
    SENT,
    EventKind,
    EventType,
    SendingEventType,
    canonical_json,
)

if TYPE_CHECKING:
    from domain.email import Email

GENESIS_HASH = "0" * 64


class EmailEvent(AggregateEvent):
    """What every recorded event of an email carries."""

    event_type: ClassVar[EventKind]

    workspace_id: str
    message_id: str
    to_address: str
    event_at: str
    received_at: str
    provider: str
    transport_key: str | None
    semantic_key: str
    receipt_id: str | None
    from_address: str | None
    subject: str | None
    sent_at: str | None
    setup_id: str | None
    prev_hash: str
    hash: str

    @classmethod
    def from_values(cls, values: dict[str, Any], *, check: bool = True) -> Self:
        """The event with these attribute values, exactly the fields of its class
        (as the library's mapper builds a stored event: without the dataclass's
        field-by-field constructor, which costs more than the rest of recording).
        `check=False` takes stored values as they are, like the mapper."""
        names = _field_names(cls)
        if check and values.keys() != names:
            wrong = sorted(names.symmetric_difference(values))
            raise TypeError(f"{cls.__name__}: missing or unknown fields {', '.join(wrong)}")
        event = object.__new__(cls)
        event.__dict__.update(values)
        return event

    def mutate(self, aggregate: Any) -> Any:
        # Any kind of event may be an email's first: it creates the aggregate.
        if aggregate is None:
            from domain.email import Email  # noqa: PLC0415 (the aggregate imports us)

            aggregate = Email.blank(self.originator_id, self.timestamp)
        return super().mutate(aggregate)

    def apply(self, aggregate: Email) -> None:
        aggregate.absorb(self)

    def detail(self) -> dict[str, Any]:
        """The type-specific fields, by name."""
        return {name: getattr(self, name) for name in DETAIL_FIELDS[self.event_type]}

    def carries_origin(self) -> bool:
        """Whether the event says who sent the email (and so can describe it)."""
        return (
            self.event_type is SENT
            or self.from_address is not None
            or self.subject is not None
            or self.sent_at is not None
            or self.setup_id is not None
        )

    def chain_content(self) -> dict[str, Any]:
        """What the chain hash covers: everything the event says, and where it stands."""
        return chain_content(type(self), self.__dict__, str(self.originator_id))

    def computed_hash(self) -> str:
        """SHA-256 over the previous event's hash and this event's canonical content."""
        return chain_hash(self.prev_hash, self.chain_content())

    def is_whole(self) -> bool:
        """Whether the event has every field of its class (one read back from changed
        stored bytes may not)."""
        return all(name in self.__dict__ for name in (*_chained_names(type(self)), "hash"))

    def link_error(self, prev: str) -> tuple[str, str] | None:
        """(expected, found) when this event does not follow an event hashed `prev`."""
        return link_error(type(self), self.__dict__, str(self.originator_id), prev)


@cache
def _field_names(cls: type[EmailEvent]) -> frozenset[str]:
    return frozenset(f.name for f in fields(cls))


@cache
def _chained_names(cls: type[EmailEvent]) -> tuple[str, ...]:
    # Computed once per class: the dataclass fields the chain covers.
    return tuple(
        f.name for f in fields(cls) if f.name not in ("hash", "timestamp", "originator_id")
    )


def chain_hash(prev_hash: str, content: dict[str, Any], *, plain: bool = False) -> str:
    """The hash that links an event to the one before it (`plain`: see canonical_json)."""
    return hashlib.sha256(prev_hash.encode() + canonical_json(content, plain=plain)).hexdigest()


def chain_content(
    cls: type[EmailEvent], values: Mapping[str, Any], originator_id: str
) -> dict[str, Any]:
    """What the chain hash of an event of class `cls` covers, from its attribute values
    (an event's own, or a stored event's decoded state with its version added)."""
    content = {name: values[name] for name in _chained_names(cls)}
    content["originator_id"] = originator_id
    content["event_type"] = str(cls.event_type)
    return content


def new_chain_content(
    cls: type[EmailEvent], values: Mapping[str, Any], originator_id: str
) -> dict[str, Any]:
    """`chain_content` of an event being made from `values` (its every field but
    `hash`, as `EmailEvent.from_values` then requires): the same dict, made by copying
    the values whole instead of field by field, at a fraction of the cost."""
    content = dict(values)
    del content["timestamp"]
    content["originator_id"] = originator_id
    content["event_type"] = str(cls.event_type)
    return content


def link_error(
    cls: type[EmailEvent], values: Mapping[str, Any], originator_id: str, prev: str
) -> tuple[str, str] | None:
    """(expected, found) when the event with these values does not follow an event
    hashed `prev` (its prev_hash names another, or its own hash is not what it says)."""
    if values["prev_hash"] != prev:
        return prev, values["prev_hash"]
    expected = chain_hash(prev, chain_content(cls, values, originator_id))
    if expected != values["hash"]:
        return expected, values["hash"]
    return None


class Sent(EmailEvent):
    """The email was accepted for sending."""

    event_type = EventType.SENT
    use_case_id: str | None
    email_type: str | None
    tier: str | None
    attachment_filenames: list[str]
    has_attachment: bool
    tags: dict[str, Any]


class Delivery(EmailEvent):
    """The receiving server accepted the email."""

    event_type = EventType.DELIVERY
    smtp_response: str | None
    remote_mta: str | None


class Bounce(EmailEvent):
    """The email bounced."""

    event_type = EventType.BOUNCE
    bounce_type: str | None
    bounce_subtype: str | None
    diagnostic_code: str | None


class Complaint(EmailEvent):
    """The recipient marked the email as spam."""

    event_type = EventType.COMPLAINT
    feedback_type: str | None


class Reject(EmailEvent):
    """The email was refused before it was sent."""

    event_type = EventType.REJECT
    reason: str | None


class DeliveryDelay(EmailEvent):
    """Delivery is delayed; the provider keeps trying."""

    event_type = EventType.DELIVERY_DELAY
    delay_type: str | None
    expiration_time: str | None


class Open(EmailEvent):
    """The email was opened (or fetched by a proxy: `machine_open`)."""

    event_type = EventType.OPEN
    ip: str | None
    user_agent: str | None
    machine_open: bool


class Click(EmailEvent):
    """A link in the email was clicked."""

    event_type = EventType.CLICK
    link: str | None
    ip: str | None
    user_agent: str | None


class Scheduled(EmailEvent):
    """The email was accepted to leave at `send_at`; until then it is queued."""

    event_type = SendingEventType.SCHEDULED
    send_at: str | None


class Dispatched(EmailEvent):
    """mailledger handed the email to its transport (the sandbox or an SMTP relay)."""

    event_type = SendingEventType.DISPATCHED
    transport: str | None
    provider_message_id: str | None
    smtp_response: str | None


class Canceled(EmailEvent):
    """The email was canceled while queued; it never left."""

    event_type = SendingEventType.CANCELED


class Failed(EmailEvent):
    """The transport kept refusing the email for a while (temporary errors) and
    mailledger gave up; it never left."""

    event_type = SendingEventType.FAILED
    reason: str | None
    smtp_response: str | None


EVENT_CLASSES: dict[EventKind, type[EmailEvent]] = {
    cls.event_type: cls
    for cls in (
        Sent,
        Delivery,
        Bounce,
        Complaint,
        Reject,
        DeliveryDelay,
        Open,
        Click,
        Scheduled,
        Dispatched,
        Canceled,
        Failed,
    )
}
