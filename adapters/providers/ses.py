"""Amazon SES through SNS: event publishing (`eventType`) and classic notifications
(`notificationType`), inside a signed SNS envelope.

SES has no per-event id: the transport key is the SNS `MessageId` (kept across SNS
retries) with the recipient, since one SES event can name several recipients and
becomes one report for each.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping

import orjson

from adapters.providers import sns
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
    correlation_id,
    load_json,
    reading,
    rfc3339,
)
from domain.reports import EventType, Report

PROVIDER = "ses"

# SES event kind -> (mailledger event, the SES object that describes it). Kinds not
# here (Send, Subscription, AmazonSnsSubscriptionSucceeded, ...) are acknowledged only.
EVENT_TYPES: dict[str, tuple[EventType, str]] = {
    "Delivery": (EventType.DELIVERY, "delivery"),
    "Bounce": (EventType.BOUNCE, "bounce"),
    "DeliveryDelay": (EventType.DELIVERY_DELAY, "deliveryDelay"),
    "Complaint": (EventType.COMPLAINT, "complaint"),
    "Reject": (EventType.REJECT, "reject"),
    "Rendering Failure": (EventType.REJECT, "failure"),
    "Open": (EventType.OPEN, "open"),
    "Click": (EventType.CLICK, "click"),
}

# mailledger detail field <- field of the SES event object.
DETAIL_SOURCES: dict[str, dict[str, str]] = {
    # reportingMTA is SES's own sending host; remoteMtaIp is the receiving one.
    "delivery": {"smtp_response": "smtpResponse", "remote_mta": "remoteMtaIp"},
    "bounce": {"bounce_type": "bounceType", "bounce_subtype": "bounceSubType"},
    "complaint": {"feedback_type": "complaintFeedbackType"},
    "deliveryDelay": {"delay_type": "delayType", "expiration_time": "expirationTime"},
    "reject": {"reason": "reason"},
    "failure": {"reason": "errorMessage"},
    "open": {"ip": "ipAddress", "user_agent": "userAgent"},
    "click": {"link": "link", "ip": "ipAddress", "user_agent": "userAgent"},
}
# mailledger detail field <- field of one recipient's entry.
RECIPIENT_DETAIL_SOURCES: dict[str, dict[str, str]] = {
    "bounce": {"diagnostic_code": "diagnosticCode"},
}
# The recipients an SES event object lists: objects with `emailAddress`, or plain
# addresses for a delivery. An event without such a list (Open, Click, Reject...)
# concerns every destination of the mail.
RECIPIENT_LISTS = {
    "bounce": "bouncedRecipients",
    "complaint": "complainedRecipients",
    "deliveryDelay": "delayedRecipients",
    "delivery": "recipients",
}

# What SES publishes once when an SNS topic is set as an event destination.
TOPIC_VALIDATION = "Successfully validated SNS topic"


def verify(
    body: bytes, headers: Mapping[str, str], endpoint: Endpoint, context: VerifyContext
) -> None:
    """Check the SNS signature and that the topic is one of the endpoint's."""
    try:
        message = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise SignatureError("the body is not a signed SNS message") from None
    topic_arns = endpoint.config.get("sns_topic_arns")
    if not isinstance(topic_arns, list | tuple):
        raise SignatureError("the endpoint has no sns_topic_arns to verify requests with")
    sns.verify_envelope(message, headers, topic_arns, context.certificates)


def parse(body: bytes, endpoint: Endpoint, receipt_id: str | None) -> Parsed:
    """The reports of one SNS message."""
    envelope = JsonObject.of(load_json(body, "the SNS message"), "the SNS message")
    kind = envelope.text("Type")
    if kind == sns.SUBSCRIPTION_CONFIRMATION:
        topic = envelope.text("TopicArn")
        return Parsed(
            [], subscribe_url=envelope.text("SubscribeURL"), note=f"SNS subscription to {topic}"
        )
    if kind == sns.UNSUBSCRIBE_CONFIRMATION:
        return Parsed([], note=f"SNS unsubscribed from {envelope.text('TopicArn')}")
    if kind != sns.NOTIFICATION:
        raise PayloadError(f"unknown SNS message Type {kind!r}")
    text = envelope.text("Message")
    if text.startswith(TOPIC_VALIDATION):
        return Parsed([], ignored=["ses:TopicValidation"], note=text)
    event = JsonObject.of(load_json(text.encode(), "the SNS Message"), "Message")
    return _parse_event(event, envelope.text("MessageId"), endpoint, receipt_id)


def parse_event(body: bytes, endpoint: Endpoint, receipt_id: str | None = None) -> Parsed:
    """The reports of a bare SES event (a line of a Firehose or S3 export): no SNS
    envelope, so no transport key; the semantic key still catches repeats."""
    event = JsonObject.of(load_json(body, "the SES event"), "the SES event")
    return _parse_event(event, None, endpoint, receipt_id)


def _parse_event(
    event: JsonObject, sns_id: str | None, endpoint: Endpoint, receipt_id: str | None
) -> Parsed:
    kind = event.maybe_text("eventType") or event.maybe_text("notificationType")
    if kind is None:
        raise PayloadError("Message has neither an eventType nor a notificationType")
    if kind not in EVENT_TYPES:
        return Parsed([], ignored=[f"{PROVIDER}:{kind}"])
    event_type, name = EVENT_TYPES[kind]
    mail, facts = event.child("mail"), event.child(name)
    message_id = mail.text("messageId")
    event_at = facts.time("timestamp") if "timestamp" in facts.data else mail.time("timestamp")
    common = mail.maybe_child("commonHeaders")
    from_address = address(mail.maybe_text("source")) or address(
        next(iter(common.texts("from")), None)
    )
    sent_at = mail.time("timestamp") if "timestamp" in mail.data else None
    detail = _detail(name, facts)
    reports = []
    for recipient, entry in _recipients(name, mail, facts):
        with reading(f"SES {kind} for {recipient}"):
            reports.append(
                Report(
                    workspace_id=endpoint.workspace_id,
                    event_type=event_type,
                    provider=PROVIDER,
                    message_id=message_id,
                    to_address=recipient,
                    event_at=event_at,
                    transport_key=None
                    if sns_id is None
                    else f"{sns_id}:{recipient.strip().lower()}",
                    email_id=_email_id(mail),
                    receipt_id=receipt_id,
                    from_address=from_address,
                    subject=common.maybe_text("subject"),
                    sent_at=sent_at,
                    setup_id=endpoint.setup_id,
                    detail=detail | _recipient_detail(name, entry),
                )
            )
    return Parsed(reports)


def _email_id(mail: JsonObject) -> uuid.UUID | None:
    """mailledger's email id from the mail's tags, when the mail has one recipient.

    An email is one recipient's: the tag of a mail sent to several would file every
    recipient's events under one email, so it is not used then.
    """
    if len(mail.texts("destination")) > 1:
        return None
    return correlation_id(mail.maybe_child("tags").data.get(EMAIL_ID_ARG))


def _recipients(
    name: str, mail: JsonObject, facts: JsonObject
) -> list[tuple[str, JsonObject | None]]:
    """Each recipient the event is about, with its own entry when the event has one."""
    list_name = RECIPIENT_LISTS.get(name)
    if list_name is None or list_name not in facts.data:
        found: list[tuple[str, JsonObject | None]] = [
            (to, None) for to in mail.texts("destination")
        ]
    elif name == "delivery":
        found = [(to, None) for to in facts.texts(list_name)]
    else:
        found = [(entry.text("emailAddress"), entry) for entry in facts.children(list_name)]
    if not found:
        raise PayloadError(f"the SES {name} names no recipient")
    return found


def _detail(name: str, facts: JsonObject) -> dict[str, object]:
    detail = {ours: facts.maybe_text(theirs) for ours, theirs in DETAIL_SOURCES[name].items()}
    if detail.get("expiration_time") is not None:
        detail["expiration_time"] = rfc3339(str(detail["expiration_time"]), "expirationTime")
    if name == "failure":
        detail["reason"] = _rendering_failure(facts.maybe_text("templateName"), detail["reason"])
    return compact(detail)


def _rendering_failure(template: str | None, message: str | None) -> str:
    """A Reject reason that says it was a rendering failure, of what, and why."""
    of_template = f" of template {template}" if template else ""
    because = f": {message}" if message else ""
    return f"Rendering Failure{of_template}{because}"


def _recipient_detail(name: str, entry: JsonObject | None) -> dict[str, object]:
    sources = RECIPIENT_DETAIL_SOURCES.get(name, {})
    if entry is None:
        return {}
    return compact({ours: entry.maybe_text(theirs) for ours, theirs in sources.items()})
