"""Postmark webhooks: one JSON record per request, told apart by `RecordType`.

Postmark signs nothing; its webhooks carry HTTP basic credentials set in the webhook's
URL, which are compared here with the endpoint's in constant time.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping

from adapters.providers.base import (
    EMAIL_ID_ARG,
    Endpoint,
    JsonObject,
    Parsed,
    SignatureError,
    VerifyContext,
    address,
    compact,
    config_text,
    correlation_id,
    load_json,
    lower_headers,
    reading,
)
from domain.reports import EventType, Report

PROVIDER = "postmark"

# RecordType -> (mailledger event, recipient field, time field). Others
# (SubscriptionChange, Inbound...) are acknowledged only.
EVENT_TYPES: dict[str, tuple[EventType, str, str]] = {
    "Delivery": (EventType.DELIVERY, "Recipient", "DeliveredAt"),
    "Bounce": (EventType.BOUNCE, "Email", "BouncedAt"),
    "SpamComplaint": (EventType.COMPLAINT, "Email", "BouncedAt"),
    "Open": (EventType.OPEN, "Recipient", "ReceivedAt"),
    "Click": (EventType.CLICK, "Recipient", "ReceivedAt"),
}

# mailledger detail field <- record field (`Geo.IP` comes separately).
DETAIL_SOURCES: dict[EventType, dict[str, str]] = {
    EventType.DELIVERY: {"smtp_response": "Details"},
    EventType.BOUNCE: {"bounce_subtype": "Type", "diagnostic_code": "Details"},
    EventType.COMPLAINT: {},
    EventType.OPEN: {"user_agent": "UserAgent"},
    EventType.CLICK: {"link": "OriginalLink", "user_agent": "UserAgent"},
}

# A bounce record's `Type` -> bounce_type; None means the record reports no failure to
# deliver and is acknowledged only. Permanent: the address is bad or Postmark has
# deactivated it. Transient: this message failed (a full mailbox, a block for content
# or reputation, the sender's DMARC policy, DNS), the address may well work later.
# Undetermined: Postmark cannot tell. Acknowledged only: auto-replies (an out-of-office
# or an address change means the mail was delivered), (un)subscribe requests, open
# relay tests and inbound-stream errors. A type not listed here is Undetermined.
BOUNCE_TYPES: dict[str, str | None] = {
    "HardBounce": "Permanent",
    "BadEmailAddress": "Permanent",
    "ManuallyDeactivated": "Permanent",
    "SpamComplaint": "Permanent",
    "Transient": "Transient",
    "SoftBounce": "Transient",
    "DnsError": "Transient",
    "Blocked": "Transient",
    "DMARCPolicy": "Transient",
    "SpamNotification": "Transient",
    "VirusNotification": "Transient",
    "ChallengeVerification": "Transient",
    "Unknown": "Undetermined",
    "Unconfirmed": "Undetermined",
    "SMTPApiError": "Undetermined",
    "TemplateRenderingFailed": "Undetermined",
    "AutoResponder": None,
    "AddressChange": None,
    "Subscribe": None,
    "Unsubscribe": None,
    "OpenRelayTest": None,
    "InboundError": None,
}
UNKNOWN_BOUNCE_TYPE = "Undetermined"

# Record types with an id of their own (the Bounce API's numeric id).
ID_FIELD = {EventType.BOUNCE: "ID", EventType.COMPLAINT: "ID"}


def verify(
    body: bytes, headers: Mapping[str, str], endpoint: Endpoint, context: VerifyContext
) -> None:
    """Check the basic credentials against the endpoint's, in constant time."""
    username, password = _credentials(lower_headers(headers).get("authorization", ""))
    expected_user = config_text(endpoint, "username").encode()
    expected_password = config_text(endpoint, "password").encode()
    # Both compared every time, so the answer's timing says nothing about which failed.
    user_ok = hmac.compare_digest(expected_user, username)
    password_ok = hmac.compare_digest(expected_password, password)
    if not (user_ok and password_ok):
        raise SignatureError("the Postmark credentials do not match")


def _credentials(authorization: str) -> tuple[bytes, bytes]:
    scheme, _, encoded = authorization.strip().partition(" ")
    if scheme.lower() != "basic" or not encoded:
        raise SignatureError("the Postmark request has no basic credentials")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except binascii.Error:
        raise SignatureError("the Postmark credentials are not base64") from None
    username, colon, password = decoded.partition(b":")
    if not colon:
        raise SignatureError("the Postmark credentials have no password")
    return username, password


def parse(body: bytes, endpoint: Endpoint, receipt_id: str | None) -> Parsed:
    """The report of one Postmark record."""
    record = JsonObject.of(load_json(body, "the Postmark body"), "the Postmark record")
    kind = record.text("RecordType")
    if kind not in EVENT_TYPES:
        return Parsed([], ignored=[f"{PROVIDER}:{kind}"])
    event_type, recipient_field, time_field = EVENT_TYPES[kind]
    detail = _detail(record, event_type)
    if event_type is EventType.BOUNCE:
        bounce_type = BOUNCE_TYPES.get(record.maybe_text("Type") or "", UNKNOWN_BOUNCE_TYPE)
        if bounce_type is None:
            return Parsed([], ignored=[f"{PROVIDER}:{kind}/{record.maybe_text('Type')}"])
        detail["bounce_type"] = bounce_type
    id_field = ID_FIELD.get(event_type)
    with reading(record.where):
        report = Report(
            workspace_id=endpoint.workspace_id,
            event_type=event_type,
            provider=PROVIDER,
            message_id=record.text("MessageID"),
            to_address=record.text(recipient_field),
            event_at=record.time(time_field),
            transport_key=record.maybe_text(id_field) if id_field else None,
            email_id=correlation_id(record.maybe_child("Metadata").data.get(EMAIL_ID_ARG)),
            receipt_id=receipt_id,
            from_address=address(record.maybe_text("From")),
            subject=record.maybe_text("Subject"),
            setup_id=endpoint.setup_id,
            detail=detail,
        )
    return Parsed([report])


def _detail(record: JsonObject, event_type: EventType) -> dict[str, object]:
    detail: dict[str, object] = {
        ours: record.maybe_text(theirs) for ours, theirs in DETAIL_SOURCES[event_type].items()
    }
    if event_type in (EventType.OPEN, EventType.CLICK):
        detail["ip"] = record.maybe_child("Geo").maybe_text("IP")
    return compact(detail)
