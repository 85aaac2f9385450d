"""SendGrid Event Webhook: a JSON array of events, signed with ECDSA P-256.

The signature covers the timestamp header followed by the raw body. SendGrid documents
no timestamp tolerance; a request is refused when its timestamp is more than
`TOLERANCE` from now. Ten minutes rather than the common five: SendGrid batches
events for up to 30 s before posting, and the receiver's clock may drift, while an
attacker still cannot replay a captured request beyond that window.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from datetime import timedelta

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key

from adapters.providers.base import (
    EMAIL_ID_ARG,
    Endpoint,
    JsonObject,
    Parsed,
    PayloadError,
    SignatureError,
    VerifyContext,
    compact,
    config_text,
    correlation_id,
    load_json,
    lower_headers,
    parse_events,
    reading,
)
from domain.reports import EventType, Report

PROVIDER = "sendgrid"
SIGNATURE_HEADER = "x-twilio-email-event-webhook-signature"
TIMESTAMP_HEADER = "x-twilio-email-event-webhook-timestamp"
TOLERANCE = timedelta(minutes=10)

# SendGrid `event` -> mailledger event. Others (processed, unsubscribe, group_*...) are
# acknowledged only.
EVENT_TYPES: dict[str, EventType] = {
    "delivered": EventType.DELIVERY,
    "bounce": EventType.BOUNCE,
    "deferred": EventType.DELIVERY_DELAY,
    "spamreport": EventType.COMPLAINT,
    "dropped": EventType.REJECT,
    "open": EventType.OPEN,
    "click": EventType.CLICK,
}

# mailledger detail field <- SendGrid event field.
DETAIL_SOURCES: dict[EventType, dict[str, str]] = {
    EventType.DELIVERY: {"smtp_response": "response"},
    EventType.BOUNCE: {"diagnostic_code": "reason"},
    EventType.DELIVERY_DELAY: {},
    EventType.COMPLAINT: {},
    EventType.REJECT: {"reason": "reason"},
    EventType.OPEN: {"ip": "ip", "user_agent": "useragent"},
    EventType.CLICK: {"link": "url", "ip": "ip", "user_agent": "useragent"},
}

# A bounce's `type`: "bounce" is a permanent refusal (SendGrid suppresses the address);
# "blocked" is the receiving server refusing this message, often for reputation or
# content, and says nothing final about the address.
BOUNCE_TYPES = {"bounce": "Permanent", "blocked": "Transient"}
UNKNOWN_BOUNCE_TYPE = "Undetermined"


def verify(
    body: bytes, headers: Mapping[str, str], endpoint: Endpoint, context: VerifyContext
) -> None:
    """Check the ECDSA signature over timestamp + body, and the timestamp's age."""
    found = lower_headers(headers)
    signature, timestamp = found.get(SIGNATURE_HEADER), found.get(TIMESTAMP_HEADER)
    if not signature or not timestamp:
        raise SignatureError("the SendGrid signature headers are missing")
    try:
        moment = int(timestamp)
    except ValueError:
        raise SignatureError("the SendGrid timestamp is not a unix time") from None
    if abs(context.now.timestamp() - moment) > TOLERANCE.total_seconds():
        raise SignatureError("the SendGrid timestamp is too far from now")
    try:
        _public_key(endpoint).verify(
            base64.b64decode(signature, validate=True),
            timestamp.encode() + body,
            ec.ECDSA(hashes.SHA256()),
        )
    except (InvalidSignature, binascii.Error):
        raise SignatureError("the SendGrid signature does not match") from None


def _public_key(endpoint: Endpoint) -> ec.EllipticCurvePublicKey:
    text = config_text(endpoint, "public_key")
    try:
        key = load_der_public_key(base64.b64decode(text, validate=True))
    except (ValueError, UnsupportedAlgorithm):
        raise SignatureError("the endpoint's public_key is not a base64 DER key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise SignatureError("the endpoint's public_key is not an ECDSA P-256 key")
    return key


def parse(body: bytes, endpoint: Endpoint, receipt_id: str | None) -> Parsed:
    """The reports of one SendGrid batch, in its order."""
    events = load_json(body, "the SendGrid body")
    if not isinstance(events, list):
        raise PayloadError("the SendGrid body must be a JSON array of events")
    return parse_events(
        (JsonObject.of(item, f"event[{index}]") for index, item in enumerate(events)),
        "event",
        EVENT_TYPES,
        PROVIDER,
        lambda event, kind: _report(event, kind, endpoint, receipt_id),
    )


def _report(
    event: JsonObject, event_type: EventType, endpoint: Endpoint, receipt_id: str | None
) -> Report:
    with reading(event.where):
        return Report(
            workspace_id=endpoint.workspace_id,
            event_type=event_type,
            provider=PROVIDER,
            message_id=_message_id(event),
            to_address=event.text("email"),
            event_at=event.unix_time("timestamp"),
            transport_key=event.maybe_text("sg_event_id"),
            # Custom arguments arrive flattened into the event.
            email_id=correlation_id(event.data.get(EMAIL_ID_ARG)),
            receipt_id=receipt_id,
            setup_id=endpoint.setup_id,
            detail=_detail(event, event_type),
        )


def _message_id(event: JsonObject) -> str:
    """The id SendGrid's send API answered (X-Message-Id), else the Message-ID header.

    `sg_message_id` is that id with a per-recipient suffix after a dot, as in
    `03_Wof6nRbqqzxRvLpZbfw.filter0017p3mdw1-11399-59ADB335-16.0`. The v3 X-Message-Id
    is URL-safe base64 and holds no dot, so what precedes the first dot is the id the
    sender was given, the same for every recipient of one send: the id the email is
    filed under. Asynchronous bounces carry no `sg_message_id`; their `smtp-id` is
    the message's Message-ID header, kept without its angle brackets.
    """
    sg_message_id = event.maybe_text("sg_message_id")
    if sg_message_id:
        return sg_message_id.split(".", 1)[0]
    smtp_id = event.maybe_text("smtp-id")
    if smtp_id and smtp_id.strip("<> "):
        return smtp_id.strip("<> ")
    raise PayloadError(f"{event.where} has neither sg_message_id nor smtp-id")


def _detail(event: JsonObject, event_type: EventType) -> dict[str, object]:
    detail: dict[str, object] = {
        ours: event.maybe_text(theirs) for ours, theirs in DETAIL_SOURCES[event_type].items()
    }
    if event_type is EventType.BOUNCE:
        kind = event.maybe_text("type")
        detail["bounce_type"] = BOUNCE_TYPES.get(kind or "", UNKNOWN_BOUNCE_TYPE)
        detail["bounce_subtype"] = event.maybe_text("bounce_classification") or kind
    if event_type is EventType.OPEN:
        detail["machine_open"] = event.flag("sg_machine_open")
    return compact(detail)
