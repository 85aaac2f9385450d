"""Mailgun webhooks: `{"signature": {...}, "event-data": {...}}`, HMAC-SHA256 signed.

The signature covers only `timestamp + token`, not the event: what makes a captured
request useless to replay is that the timestamp must be recent and each token is
accepted once. Mailgun's own advice is the same.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from datetime import timedelta
from email.utils import getaddresses

import orjson

from adapters.providers.base import (
    EMAIL_ID_ARG,
    Endpoint,
    JsonObject,
    Parsed,
    PayloadError,
    SignatureError,
    VerifyContext,
    address,
    compact,
    config_text,
    correlation_id,
    load_json,
    reading,
)
from domain.reports import EventType, Report

PROVIDER = "mailgun"
TOLERANCE = timedelta(minutes=5)

# (Mailgun `event`, `severity`) -> mailledger event; severity only matters for failed.
# Others (accepted, unsubscribed, stored, failed without a known severity...) are
# acknowledged only.
EVENT_TYPES: dict[tuple[str, str | None], EventType] = {
    ("delivered", None): EventType.DELIVERY,
    ("failed", "permanent"): EventType.BOUNCE,
    ("failed", "temporary"): EventType.DELIVERY_DELAY,
    ("opened", None): EventType.OPEN,
    ("clicked", None): EventType.CLICK,
    ("complained", None): EventType.COMPLAINT,
    ("rejected", None): EventType.REJECT,
}
SEVERED = frozenset({"failed"})

# mailledger detail field <- event-data field (`client-info` fields come separately).
DETAIL_SOURCES: dict[EventType, dict[str, str]] = {
    EventType.DELIVERY: {},
    EventType.BOUNCE: {"bounce_subtype": "reason"},
    EventType.DELIVERY_DELAY: {"delay_type": "reason"},
    EventType.COMPLAINT: {},
    EventType.REJECT: {"reason": "reason"},
    EventType.OPEN: {"ip": "ip"},
    EventType.CLICK: {"link": "url", "ip": "ip"},
}
# mailledger detail field that holds the SMTP conversation ("550 5.1.1 ...").
SMTP_TEXT_FIELD: dict[EventType, str] = {
    EventType.DELIVERY: "smtp_response",
    EventType.BOUNCE: "diagnostic_code",
}
BOUNCE_TYPE = "Permanent"  # a failure of severity permanent


def verify(
    body: bytes, headers: Mapping[str, str], endpoint: Endpoint, context: VerifyContext
) -> None:
    """Check the HMAC of timestamp + token, the timestamp's age, and the token's novelty."""
    signature = _signature_object(body)
    timestamp, token = signature.get("timestamp"), signature.get("token")
    if isinstance(timestamp, int) and not isinstance(timestamp, bool):
        timestamp = str(timestamp)  # documented as text; the digits are what was signed
    if not isinstance(timestamp, str) or not isinstance(token, str) or not token:
        raise SignatureError("the Mailgun signature has no timestamp or token")
    key = config_text(endpoint, "signing_key").encode()
    expected = hmac.new(key, (timestamp + token).encode(), hashlib.sha256).hexdigest().encode()
    # A subaccount's events carry the primary account's signature in parent-signature.
    offered = [signature.get("signature"), signature.get("parent-signature")]
    if not any(
        isinstance(given, str) and hmac.compare_digest(expected, given.encode())
        for given in offered
    ):
        raise SignatureError("the Mailgun signature does not match")
    try:
        moment = float(timestamp)
    except ValueError:
        raise SignatureError("the Mailgun timestamp is not a unix time") from None
    if abs(context.now.timestamp() - moment) > TOLERANCE.total_seconds():
        raise SignatureError("the Mailgun timestamp is too far from now")
    # Last, so that only a genuine, current request uses a token up.
    if not context.replay_guard.first_use(f"{PROVIDER}:{token}"):
        raise SignatureError("the Mailgun token was already used")


def _signature_object(body: bytes) -> Mapping[str, object]:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise SignatureError("the body is not a signed Mailgun webhook") from None
    signature = payload.get("signature") if isinstance(payload, dict) else None
    if not isinstance(signature, dict):
        raise SignatureError("the body is not a signed Mailgun webhook")
    return signature


def parse(body: bytes, endpoint: Endpoint, receipt_id: str | None) -> Parsed:
    """The report of one Mailgun webhook."""
    payload = JsonObject.of(load_json(body, "the Mailgun body"), "the Mailgun body")
    event = payload.child("event-data")
    kind = event.text("event")
    severity = event.maybe_text("severity") if kind in SEVERED else None
    event_type = EVENT_TYPES.get((kind, severity))
    if event_type is None:
        name = kind if severity is None else f"{kind}/{severity}"
        return Parsed([], ignored=[f"{PROVIDER}:{name}"])
    headers = event.maybe_child("message").maybe_child("headers")
    with reading(event.where):
        report = Report(
            workspace_id=endpoint.workspace_id,
            event_type=event_type,
            provider=PROVIDER,
            message_id=_message_id(headers),
            to_address=_recipient(event, headers),
            event_at=event.unix_time("timestamp"),
            transport_key=event.maybe_text("id"),
            email_id=correlation_id(event.maybe_child("user-variables").data.get(EMAIL_ID_ARG)),
            receipt_id=receipt_id,
            from_address=address(headers.maybe_text("from")),
            subject=headers.maybe_text("subject"),
            setup_id=endpoint.setup_id,
            detail=_detail(event, event_type),
        )
    return Parsed([report])


def _message_id(headers: JsonObject) -> str:
    message_id = headers.maybe_text("message-id")
    if message_id is None or not message_id.strip("<> "):
        raise PayloadError(f"{headers.where}.message-id is required")
    return message_id.strip("<> ")


def _recipient(event: JsonObject, headers: JsonObject) -> str:
    """`recipient`; a rejected event has none, its message's single To address stands in."""
    recipient = event.maybe_text("recipient")
    if recipient is not None:
        return recipient
    addresses = [found for _, found in getaddresses([headers.maybe_text("to") or ""]) if found]
    if len(addresses) != 1:
        raise PayloadError(f"{event.where}.recipient is required")
    return addresses[0]


def _detail(event: JsonObject, event_type: EventType) -> dict[str, object]:
    detail: dict[str, object] = {
        ours: event.maybe_text(theirs) for ours, theirs in DETAIL_SOURCES[event_type].items()
    }
    status = event.maybe_child("delivery-status")
    if event_type in SMTP_TEXT_FIELD:
        detail[SMTP_TEXT_FIELD[event_type]] = _smtp_text(status)
    if event_type is EventType.BOUNCE:
        detail["bounce_type"] = BOUNCE_TYPE
    if event_type is EventType.DELIVERY:
        detail["remote_mta"] = status.maybe_text("mx-host")
    if event_type is EventType.REJECT and detail["reason"] is None:
        detail["reason"] = event.maybe_child("reject").maybe_text("reason")
    if event_type in (EventType.OPEN, EventType.CLICK):
        detail["user_agent"] = event.maybe_child("client-info").maybe_text("user-agent")
    return compact(detail)


def _smtp_text(status: JsonObject) -> str | None:
    """ "550 5.1.1 The email account does not exist" from code and message/description."""
    parts = [
        status.maybe_text("code"),
        status.maybe_text("message") or status.maybe_text("description"),
    ]
    text = " ".join(part for part in parts if part)
    return text or None
