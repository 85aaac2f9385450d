"""Generic: mailledger's own event JSON, signed per Standard Webhooks.

For any MTA or in-house sender. The signature is checked here rather than with the
`standardwebhooks` package, which reads the real clock (the check must use the
context's `now`) and decodes the body as text before signing it; the scheme is small:
base64 HMAC-SHA256, keyed with the secret after `whsec_`, over `id.timestamp.body`,
offered as space-separated `v1,<base64>` entries.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any

from adapters.providers.base import (
    AlreadyReceivedError,
    Endpoint,
    JsonObject,
    Parsed,
    SignatureError,
    VerifyContext,
    config_text,
    correlation_id,
    load_json,
    lower_headers,
    parse_events,
    reading,
    rfc3339,
)
from domain.reports import DETAIL_FIELDS, EventType, Report

PROVIDER = "generic"
TOLERANCE = timedelta(minutes=5)
KEY_PREFIX = "whsec_"
SIGNATURE_VERSION = "v1"
# The event types a sender may name; any other is acknowledged only.
EVENT_TYPES = {event_type.value: event_type for event_type in EventType}
# Detail fields that are times, normalized like every other time.
TIME_FIELDS = frozenset({"expiration_time"})
# The fields a sender may give each event type: section 1's, but not what only
# mailledger decides at an API send: the use case (an email made from a webhook has
# none, SPEC 4.3) and the reputation tier (the setup's rates at send time, SPEC 5).
MAILLEDGER_ONLY = frozenset({"use_case_id", "tier"})
GIVEN_FIELDS = {
    event_type: tuple(name for name in DETAIL_FIELDS[event_type] if name not in MAILLEDGER_ONLY)
    for event_type in EventType
}


def verify(
    body: bytes, headers: Mapping[str, str], endpoint: Endpoint, context: VerifyContext
) -> None:
    """Check a Standard Webhooks signature and that its timestamp is within 5 minutes;
    a `webhook-id` already recorded is a retry (AlreadyReceivedError)."""
    found = lower_headers(headers)
    webhook_id = found.get("webhook-id")
    timestamp = found.get("webhook-timestamp")
    offered = found.get("webhook-signature")
    if not webhook_id or not timestamp or not offered:
        raise SignatureError("the webhook-id, webhook-timestamp or webhook-signature is missing")
    try:
        moment = int(timestamp)
    except ValueError:
        raise SignatureError("webhook-timestamp is not a unix time") from None
    if abs(context.now.timestamp() - moment) > TOLERANCE.total_seconds():
        raise SignatureError("webhook-timestamp is more than 5 minutes from now")
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    expected = hmac.new(_key(endpoint), signed, hashlib.sha256).digest()
    if not any(hmac.compare_digest(expected, given) for given in _signatures(offered)):
        raise SignatureError("no webhook-signature matches")
    # Last, so that only a genuine request counts; the id is remembered when the
    # request's events commit, so a request that failed can still be retried.
    if not context.replay_guard.first_use(f"{PROVIDER}:{endpoint.id}:{webhook_id}"):
        raise AlreadyReceivedError(f"webhook-id {webhook_id} was received before")


def _key(endpoint: Endpoint) -> bytes:
    secret = config_text(endpoint, "secret").removeprefix(KEY_PREFIX)
    try:
        key = base64.b64decode(secret + "=" * (-len(secret) % 4), validate=True)
    except binascii.Error:
        raise SignatureError("the endpoint's secret is not a whsec_ base64 secret") from None
    if not key:
        raise SignatureError("the endpoint's secret is empty")
    return key


def _signatures(header: str) -> list[bytes]:
    """The v1 signatures offered; entries of other versions or malformed are skipped."""
    found = []
    for entry in header.split():
        version, _, encoded = entry.partition(",")
        if version != SIGNATURE_VERSION:
            continue
        try:
            found.append(base64.b64decode(encoded, validate=True))
        except binascii.Error:
            continue
    return found


def parse(body: bytes, endpoint: Endpoint, receipt_id: str | None) -> Parsed:
    """The reports of one event object or an array of them."""
    value = load_json(body, "the body")
    if isinstance(value, list):
        events: Iterable[JsonObject] = (
            JsonObject.of(item, f"event[{i}]") for i, item in enumerate(value)
        )
    else:
        events = [JsonObject.of(value, "the event")]
    return parse_events(
        events,
        "event_type",
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
            message_id=event.text("message_id"),
            to_address=event.text("to_address"),
            event_at=event.time("event_at"),
            transport_key=event.maybe_text("event_id"),
            email_id=correlation_id(event.data.get("email_id")),
            receipt_id=receipt_id,
            from_address=event.maybe_text("from_address"),
            subject=event.maybe_text("subject"),
            sent_at=event.time("sent_at") if event.data.get("sent_at") is not None else None,
            setup_id=endpoint.setup_id,
            detail=_detail(event, event_type),
        )


def _detail(event: JsonObject, event_type: EventType) -> dict[str, Any]:
    """The event type's own fields, under their own names; types are the domain's check."""
    detail = {
        name: event.data[name]
        for name in GIVEN_FIELDS[event_type]
        if event.data.get(name) is not None
    }
    for name in TIME_FIELDS:
        if isinstance(detail.get(name), str):
            detail[name] = rfc3339(detail[name], f"{event.where}.{name}")
    return detail
