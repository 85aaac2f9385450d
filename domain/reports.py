"""What a provider said about one email, normalized: the `Report`.

A report is input; an event is what the ledger recorded from it. Parsers of every
provider produce reports, and `EmailLedger.record` turns the new ones into events.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Generic, Protocol, Self, TypeVar, overload

# Emails get deterministic ids so that two workers seeing the first event of one email
# at the same moment make the same aggregate, and one of them loses the version race.
EMAIL_NAMESPACE = uuid.UUID("5b0e4a4e-8d3c-4a53-9a53-6d61696c6c65")
_EMAIL_NAMESPACE_BYTES = EMAIL_NAMESPACE.bytes


T = TypeVar("T")


class made_once(Generic[T]):  # lower case: used as a decorator, like cached_property
    """`functools.cached_property` without its lock: on Python 3.11 every first read
    takes one, which cost about as much as the value it guards, and a report makes
    three. Two threads reading at once both compute the same value, which is harmless
    for a value of a frozen object."""

    def __init__(self, func: Callable[[Any], T]) -> None:
        self.func = func
        self.name = func.__name__
        self.__doc__ = func.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, instance: None, owner: type | None = None) -> Self: ...

    @overload
    def __get__(self, instance: object, owner: type | None = None) -> T: ...

    def __get__(self, instance: object | None, owner: type | None = None) -> Self | T:
        if instance is None:
            return self
        value = instance.__dict__[self.name] = self.func(instance)
        return value


class EventType(StrEnum):
    """The kinds of event an email's log can hold."""

    SENT = "Sent"
    DELIVERY = "Delivery"
    BOUNCE = "Bounce"
    COMPLAINT = "Complaint"
    REJECT = "Reject"
    DELIVERY_DELAY = "DeliveryDelay"
    OPEN = "Open"
    CLICK = "Click"


class SendingEventType(StrEnum):
    """The kinds of event only mailledger's own sender records, never a provider: the
    life of an email sent through the API around its hand-off to a transport (SPEC 5).
    Kept apart from EventType, so provider parsers that accept any EventType (the
    generic webhook) cannot be made to record them."""

    SCHEDULED = "Scheduled"
    DISPATCHED = "Dispatched"
    CANCELED = "Canceled"
    FAILED = "Failed"


EventKind = EventType | SendingEventType

# The kinds that recording and folding events compare with, read off their Enum classes
# once, here: on Python 3.11 reading a member off its class costs about 0.1 us, and
# folding an event did it up to eight times.
SENT, OPEN, DELIVERY_DELAY, BOUNCE, REJECT = (
    EventType.SENT,
    EventType.OPEN,
    EventType.DELIVERY_DELAY,
    EventType.BOUNCE,
    EventType.REJECT,
)
DISPATCHED, FAILED = SendingEventType.DISPATCHED, SendingEventType.FAILED

# Who records the sender's own events: mailledger itself, and its smtp:// transport for
# what a relay answered (a 4xx deferral, a 5xx refusal of the recipient).
SENDER_PROVIDER = "mailledger"
RELAY_PROVIDER = "smtp"
# The reason of a `Reject` the smtp:// transport records (a relay's 5xx, or a message
# that could not be handed to the relay) starts with this.
RELAY_REJECT_PREFIX = "smtp; "


def event_kind(value: str) -> EventKind:
    """The kind named `value`: a provider event type, else a sending one."""
    if isinstance(value, EventType | SendingEventType):
        return value  # already one (parsers pass kinds; Enum's lookup costs a microsecond)
    try:
        return EventType(value)
    except ValueError as error:
        try:
            return SendingEventType(value)
        except ValueError:
            raise error from None


# The type-specific fields each event carries (SPEC section 1), with their JSON types.
DETAIL_FIELDS: dict[EventKind, dict[str, type | tuple[type, ...]]] = {
    EventType.SENT: {
        "use_case_id": str,
        "email_type": str,
        "tier": str,
        "attachment_filenames": list,
        "has_attachment": bool,
        "tags": dict,
    },
    EventType.DELIVERY: {"smtp_response": str, "remote_mta": str},
    EventType.BOUNCE: {"bounce_type": str, "bounce_subtype": str, "diagnostic_code": str},
    EventType.COMPLAINT: {"feedback_type": str},
    EventType.REJECT: {"reason": str},
    EventType.DELIVERY_DELAY: {"delay_type": str, "expiration_time": str},
    EventType.OPEN: {"ip": str, "user_agent": str, "machine_open": bool},
    EventType.CLICK: {"link": str, "ip": str, "user_agent": str},
    SendingEventType.SCHEDULED: {"send_at": str},
    SendingEventType.DISPATCHED: {
        "transport": str,
        "provider_message_id": str,
        "smtp_response": str,
    },
    SendingEventType.CANCELED: {},
    SendingEventType.FAILED: {"reason": str, "smtp_response": str},
}

BOUNCE_TYPES = ("Permanent", "Transient", "Undetermined")


class InvalidReportError(ValueError):
    """A report that cannot be recorded as it stands."""


def format_time(moment: datetime) -> str:
    """RFC 3339 UTC with microseconds: fixed width, so text order is time order."""
    if moment.tzinfo is None:
        raise InvalidReportError(f"time without a zone: {moment.isoformat()}")
    utc = moment.astimezone(UTC)
    if utc.year < 1000:  # isoformat pads the year to four digits; strftime does not
        return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    # The same text as the strftime above, written faster (a report makes several).
    return utc.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def parse_time(text: str) -> datetime:
    """Parse an RFC 3339 time (with `Z` or an offset) into an aware UTC datetime."""
    try:
        moment = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise InvalidReportError(f"not an RFC 3339 time: {text!r}") from None
    if moment.tzinfo is None:
        raise InvalidReportError(f"time without a zone: {text!r}")
    return moment.astimezone(UTC)


# UTC with `Z`, to the second and up to microseconds, of years 1000 and later: the
# canonical form itself (what `format_time` writes) and the forms most providers send,
# which are canonical once their fraction is padded to six digits. Invalid dates of
# that shape (month 13) are left to `datetime.fromisoformat`.
_UTC_TIME = re.compile(r"([1-9]\d{3}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,6}))?Z")


def normalize_time(text: str) -> str:
    """The canonical text of a time given in any RFC 3339 form."""
    utc = _UTC_TIME.fullmatch(text)
    if utc is None:
        return format_time(parse_time(text))
    # Only whether it names a real moment is left to check: the text is the canonical
    # one, or becomes it with the fraction padded (what parsing and writing it gives,
    # at a third of the cost; a report normalizes every time it is given).
    seconds, fraction = utc.groups()
    canonical = text if len(text) == 27 else f"{seconds}.{(fraction or '').ljust(6, '0')}Z"
    try:
        datetime.fromisoformat(canonical[:-1])
    except ValueError:
        raise InvalidReportError(f"not an RFC 3339 time: {text!r}") from None
    return canonical


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def standard_canonical_json(value: Any, *, plain: bool = False) -> bytes:
    """Deterministic JSON: sorted keys, no spaces, UTF-8. This defines the bytes that
    keys and chain hashes are computed over. (`plain` is a hint for faster encoders,
    see `canonical_json`; this one writes every value the same way.)"""
    return _CANONICAL.encode(value).encode()


class CanonicalEncoder(Protocol):
    """Writes canonical JSON (see `canonical_json`)."""

    def __call__(self, value: Any, *, plain: bool = False) -> bytes: ...


_encoder: CanonicalEncoder = standard_canonical_json


def use_canonical_encoder(encoder: CanonicalEncoder) -> None:
    """Compute canonical JSON with `encoder` from now on: a faster one that must write
    exactly the bytes `standard_canonical_json` writes (a stored hash depends on them)."""
    global _encoder  # noqa: PLW0603 (one encoder per process, chosen at start)
    _encoder = encoder


def canonical_json(value: Any, *, plain: bool = False) -> bytes:
    """Deterministic JSON (see `standard_canonical_json`). Used for keys and hashes.

    `plain=True` is the caller's promise that the value holds nothing but text,
    integers, booleans, null, lists and objects with text keys (no floats), which
    lets a faster encoder skip looking.
    """
    return _encoder(value, plain=plain)


# Kept for the emails seen last: an email's events tend to come together (an export's
# lines, a provider's batch), and each report asks for its email's id.
@functools.lru_cache(maxsize=4096)
def email_id_for(workspace_id: str, message_id: str, to_address: str) -> uuid.UUID:
    """The one id of the email sent as `message_id` to `to_address` in a workspace."""
    name = "\x1f".join((workspace_id, message_id, to_address.strip().lower()))
    return uuid.UUID(bytes=uuid5_bytes(_EMAIL_NAMESPACE_BYTES, name.encode()))


def uuid5_bytes(namespace: bytes, name: bytes) -> bytes:
    """The 16 bytes of `uuid.uuid5` for a namespace's and a name's bytes, with the
    version and variant bits set on the digest (the UUID constructor's own way of
    setting them cost as much as the hash; ids are made for every report and event)."""
    digest = bytearray(hashlib.sha1(namespace + name, usedforsecurity=False).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # the RFC 4122 variant
    return bytes(digest)


@dataclass(frozen=True, init=False)
class Report:
    """One fact a provider (or the sender) reported about one recipient's email."""

    workspace_id: str
    event_type: EventKind
    provider: str
    message_id: str
    to_address: str
    event_at: str
    transport_key: str | None = None
    email_id: uuid.UUID | None = None
    receipt_id: str | None = None
    from_address: str | None = None
    subject: str | None = None
    sent_at: str | None = None
    setup_id: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)

    def __init__(  # noqa: PLR0917 (the fields, in order, as the dataclass would take them)
        self,
        workspace_id: str,
        event_type: EventKind,
        provider: str,
        message_id: str,
        to_address: str,
        event_at: str,
        transport_key: str | None = None,
        email_id: uuid.UUID | None = None,
        receipt_id: str | None = None,
        from_address: str | None = None,
        subject: str | None = None,
        sent_at: str | None = None,
        setup_id: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        """The fields, normalized and checked. Written out, not made by the dataclass:
        a frozen dataclass sets each field through `object.__setattr__`, which cost
        about a microsecond of every report; this fills the object's dict at once.
        (tests/unit/test_reports.py checks that it takes the fields, in order.)"""
        kind = event_kind(event_type)
        to_address = to_address.strip().lower()
        event_at = normalize_time(event_at)
        if sent_at is not None:
            sent_at = normalize_time(sent_at)
        if not message_id or not to_address or not provider:
            raise InvalidReportError("a report needs a provider, a message_id and a to_address")
        vars(self).update(
            workspace_id=workspace_id,
            event_type=kind,
            provider=provider,
            message_id=message_id,
            to_address=to_address,
            event_at=event_at,
            transport_key=transport_key,
            email_id=email_id,
            receipt_id=receipt_id,
            from_address=from_address,
            subject=subject,
            sent_at=sent_at,
            setup_id=setup_id,
            detail={} if detail is None else detail,
        )
        self._check_detail()

    def _check_detail(self) -> None:
        allowed = DETAIL_FIELDS[self.event_type]
        for name, value in self.detail.items():
            expected = allowed.get(name)
            if expected is None:
                raise InvalidReportError(f"{self.event_type} has no field {name!r}")
            if value is not None and not isinstance(value, expected):
                raise InvalidReportError(f"{self.event_type}.{name} has the wrong type")
        bounce_type = self.detail.get("bounce_type")
        if bounce_type is not None and bounce_type not in BOUNCE_TYPES:
            raise InvalidReportError(f"bounce_type must be one of {', '.join(BOUNCE_TYPES)}")

    @made_once
    def target_email_id(self) -> uuid.UUID:
        """The email this report is about: echoed back by the provider, or derived."""
        if self.email_id is not None:
            return self.email_id
        return email_id_for(self.workspace_id, self.message_id, self.to_address)

    @made_once
    def full_detail(self) -> Mapping[str, Any]:
        """Every type-specific field, absent ones as null (machine_open defaults false);
        made once (the key and the event both read it), so never to be changed."""
        detail: dict[str, Any] = dict.fromkeys(DETAIL_FIELDS[self.event_type])
        detail.update(self.detail)
        if self.event_type is OPEN:
            detail["machine_open"] = bool(detail["machine_open"])
        if self.event_type is SENT:
            names = detail["attachment_filenames"] or []
            detail["attachment_filenames"] = list(names)
            detail["has_attachment"] = bool(names)
            detail["tags"] = detail["tags"] or {}
        return detail

    @made_once
    def semantic_key(self) -> str:
        """A stable hash of the fact itself, whatever id the provider sent it under."""
        fact = [
            self.provider,
            self.message_id,
            self.to_address,
            str(self.event_type),
            self.event_at,
            self.full_detail,
            # What the provider says about the email itself is part of the fact too (not
            # setup_id: mailledger files the email under a setup, the provider does not).
            [self.from_address, self.subject, self.sent_at],
        ]
        return hashlib.sha256(canonical_json(fact, plain=self.is_plain)).hexdigest()

    @property
    def is_plain(self) -> bool:
        """Whether everything the report says is text, booleans or null by construction
        (every kind's fields but `Sent`'s, whose tags may hold any JSON)."""
        return self.event_type is not SENT

    @property
    def scoped_transport_key(self) -> str | None:
        """The provider's event id, namespaced by provider so ids of two never collide."""
        if self.transport_key is None:
            return None
        return f"{self.provider}:{self.transport_key}"


def utc_now() -> datetime:
    """Now, as an aware UTC datetime."""
    return datetime.now(UTC)
