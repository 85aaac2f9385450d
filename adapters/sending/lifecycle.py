"""The reports mailledger's own sender makes about an email, with fixed transport keys.

Each step of an email's life has one transport key (`<email id>:<step>`), so recording
a step again, from a retried request, a restarted worker or a second process, is
dropped by the ledger whatever its time.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from domain.reports import (
    RELAY_PROVIDER,
    SENDER_PROVIDER,
    EventKind,
    EventType,
    Report,
    SendingEventType,
    email_id_for,
)

PROVIDER = SENDER_PROVIDER


def sent(
    workspace_id: str,
    message_id: str,
    to_address: str,
    event_at: str,
    *,
    from_address: str,
    subject: str,
    setup_id: str,
    detail: Mapping[str, Any],
) -> Report:
    """The email was accepted for sending (the first event of its log)."""
    email_id = email_id_for(workspace_id, message_id, to_address)
    return Report(
        workspace_id=workspace_id,
        event_type=EventType.SENT,
        provider=PROVIDER,
        message_id=message_id,
        to_address=to_address,
        event_at=event_at,
        transport_key=f"{email_id}:sent",
        email_id=email_id,
        from_address=from_address,
        subject=subject,
        setup_id=setup_id,
        detail=dict(detail),
    )


def sender_report(
    origin: Report,
    event_type: EventKind,
    step: str,
    event_at: str,
    *,
    provider: str = PROVIDER,
    detail: Mapping[str, Any] | None = None,
) -> Report:
    """A report about the email `origin` (its Sent) made, at one step of its life."""
    return Report(
        workspace_id=origin.workspace_id,
        event_type=event_type,
        provider=provider,
        message_id=origin.message_id,
        to_address=origin.to_address,
        event_at=event_at,
        transport_key=f"{origin.target_email_id}:{step}",
        email_id=origin.target_email_id,
        detail=dict(detail or {}),
    )


def scheduled(origin: Report, send_at: str) -> Report:
    """The email waits until `send_at`."""
    return sender_report(
        origin,
        SendingEventType.SCHEDULED,
        "scheduled",
        origin.event_at,
        detail={"send_at": send_at},
    )


def dispatched(origin: Report, event_at: str, transport: str, **detail: str | None) -> Report:
    """The transport took the email."""
    return sender_report(
        origin,
        SendingEventType.DISPATCHED,
        "dispatched",
        event_at,
        detail={"transport": transport, **detail},
    )


def rejected(origin: Report, event_at: str, reason: str) -> Report:
    """mailledger refused to hand the email to a transport."""
    return sender_report(origin, EventType.REJECT, "rejected", event_at, detail={"reason": reason})


def canceled(origin: Report, event_at: str) -> Report:
    """The email was canceled while queued."""
    return sender_report(origin, SendingEventType.CANCELED, "canceled", event_at)


def failed(origin: Report, event_at: str, reason: str, reply: str | None) -> Report:
    """The transport kept refusing the email until the retry window closed."""
    return sender_report(
        origin,
        SendingEventType.FAILED,
        "failed",
        event_at,
        detail={"reason": reason, "smtp_response": reply},
    )


def relay_bounced(origin: Report, event_at: str, reply: str) -> Report:
    """The relay refused the recipient for good (a 5xx to RCPT TO): a hard bounce."""
    detail = {"bounce_type": "Permanent", "bounce_subtype": "General"}
    detail["diagnostic_code"] = f"smtp; {reply}"
    return sender_report(
        origin, EventType.BOUNCE, "smtp-bounce", event_at, provider=RELAY_PROVIDER, detail=detail
    )


def relay_delayed(origin: Report, attempt: int, event_at: str, until: str) -> Report:
    """The relay answered 4xx (or could not be reached): tried again later."""
    detail = {"delay_type": "TransientCommunicationFailure", "expiration_time": until}
    return sender_report(
        origin, EventType.DELIVERY_DELAY, f"smtp-attempt:{attempt}", event_at,
        provider=RELAY_PROVIDER, detail=detail,
    )  # fmt: skip


def to_json(report: Report) -> dict[str, Any]:
    """A report as JSON-native data, to keep in the outbox."""
    return {
        "workspace_id": report.workspace_id,
        "event_type": str(report.event_type),
        "provider": report.provider,
        "message_id": report.message_id,
        "to_address": report.to_address,
        "event_at": report.event_at,
        "transport_key": report.transport_key,
        "email_id": None if report.email_id is None else str(report.email_id),
        "from_address": report.from_address,
        "subject": report.subject,
        "setup_id": report.setup_id,
        "detail": dict(report.detail),
    }


def from_json(data: Mapping[str, Any]) -> Report:
    """A report kept by `to_json`."""
    fields = dict(data)
    if fields.get("email_id") is not None:
        fields["email_id"] = uuid.UUID(fields["email_id"])
    return Report(**fields)
