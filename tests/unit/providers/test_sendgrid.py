"""SendGrid Event Webhook: ECDSA over timestamp + body, a JSON array of events."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.providers import sendgrid
from adapters.providers.base import Parsed, PayloadError, SignatureError
from domain.reports import EventType, Report
from tests.unit.providers.signing import (
    EMAIL_ID,
    NOW,
    RECEIPT,
    SETUP,
    WORKSPACE,
    context,
    endpoint,
    other_ec_key,
    payload,
    sendgrid_headers,
    sendgrid_public_key,
)

MESSAGE_ID = "W86EgYT6SQKk0lRflfLRsA"


def parse(body: bytes) -> Parsed:
    return sendgrid.parse(body, endpoint("sendgrid"), RECEIPT)


def sendgrid_report(
    event_type: EventType, event_at: str, transport_key: str, **detail: Any
) -> Report:
    return Report(
        workspace_id=WORKSPACE,
        event_type=event_type,
        provider="sendgrid",
        message_id=MESSAGE_ID,
        to_address="jane.doe@example.com",
        event_at=event_at,
        transport_key=transport_key,
        email_id=EMAIL_ID,
        receipt_id=RECEIPT,
        from_address=None,
        subject=None,
        sent_at=None,
        setup_id=SETUP,
        detail=detail,
    )


# Signature ------------------------------------------------------------------------


def test_a_signed_batch_verifies() -> None:
    body = payload("sendgrid", "batch")
    sendgrid.verify(body, sendgrid_headers(body), endpoint("sendgrid"), context())


def test_header_names_are_matched_whatever_their_case() -> None:
    body = payload("sendgrid", "delivered")
    headers = {name.upper(): value for name, value in sendgrid_headers(body).items()}
    sendgrid.verify(body, headers, endpoint("sendgrid"), context())


def test_a_batch_signed_with_another_key_is_refused() -> None:
    body = payload("sendgrid", "delivered")
    with pytest.raises(SignatureError, match="does not match"):
        sendgrid.verify(
            body, sendgrid_headers(body, key=other_ec_key()), endpoint("sendgrid"), context()
        )


def test_the_timestamp_is_signed_too() -> None:
    body = payload("sendgrid", "delivered")
    headers = sendgrid_headers(body)
    headers["X-Twilio-Email-Event-Webhook-Timestamp"] = str(int(NOW.timestamp()))
    with pytest.raises(SignatureError, match="does not match"):
        sendgrid.verify(body, headers, endpoint("sendgrid"), context())


@pytest.mark.parametrize("offset", [timedelta(minutes=-11), timedelta(minutes=11)])
def test_a_timestamp_more_than_ten_minutes_from_now_is_refused(offset: timedelta) -> None:
    body = payload("sendgrid", "delivered")
    headers = sendgrid_headers(body, timestamp=NOW + offset)
    with pytest.raises(SignatureError, match="too far from now"):
        sendgrid.verify(body, headers, endpoint("sendgrid"), context())


def test_a_timestamp_nine_minutes_old_is_still_accepted() -> None:
    body = payload("sendgrid", "delivered")
    headers = sendgrid_headers(body, timestamp=NOW - timedelta(minutes=9))
    sendgrid.verify(body, headers, endpoint("sendgrid"), context())


@pytest.mark.parametrize(
    ("header", "value", "message"),
    [
        ("X-Twilio-Email-Event-Webhook-Signature", None, "missing"),
        ("X-Twilio-Email-Event-Webhook-Timestamp", None, "missing"),
        ("X-Twilio-Email-Event-Webhook-Timestamp", "yesterday", "not a unix time"),
        ("X-Twilio-Email-Event-Webhook-Signature", "%%%", "does not match"),
    ],
)
def test_signature_headers_that_cannot_be_checked_are_refused(
    header: str, value: str | None, message: str
) -> None:
    body = payload("sendgrid", "delivered")
    headers = sendgrid_headers(body)
    if value is None:
        del headers[header]
    else:
        headers[header] = value
    with pytest.raises(SignatureError, match=message):
        sendgrid.verify(body, headers, endpoint("sendgrid"), context())


def test_an_endpoint_key_that_is_not_p256_verifies_nothing() -> None:
    key = ec.generate_private_key(ec.SECP384R1()).public_key()
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    body = payload("sendgrid", "delivered")
    for public_key in (base64.b64encode(der).decode(), "bm90IGEga2V5", "***"):
        with pytest.raises(SignatureError, match="public_key"):
            sendgrid.verify(
                body,
                sendgrid_headers(body),
                endpoint("sendgrid", public_key=public_key),
                context(),
            )


def test_the_right_key_of_another_endpoint_does_not_verify() -> None:
    body = payload("sendgrid", "delivered")
    other = endpoint("sendgrid", public_key=sendgrid_public_key(other_ec_key()))
    with pytest.raises(SignatureError):
        sendgrid.verify(body, sendgrid_headers(body), other, context())


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_any_change_to_the_body_breaks_the_signature(data: st.DataObject) -> None:
    body = payload("sendgrid", "batch")
    headers = sendgrid_headers(body)
    position = data.draw(st.integers(0, len(body) - 1))
    replacement = data.draw(st.binary(max_size=3))
    tampered = body[:position] + replacement + body[position + 1 :]
    if tampered == body:
        return
    with pytest.raises(SignatureError):
        sendgrid.verify(tampered, headers, endpoint("sendgrid"), context())


# Parsing --------------------------------------------------------------------------


def test_a_delivered_event_names_every_field() -> None:
    assert parse(payload("sendgrid", "delivered")) == Parsed(
        [
            sendgrid_report(
                EventType.DELIVERY,
                "2024-03-14T19:04:02Z",
                "ZGVsaXZlcmVkLTAtNDk2MTA2NDktVzg2RWdZVDZTUUtrMGxSZmxmTFJzQS0w",
                smtp_response=(
                    "250 2.0.0 OK  1710443042 d75a77b69052e-430e1bd2b0asi1234567qtb.123 - gsmtp"
                ),
            )
        ]
    )


def test_a_bounce_is_permanent() -> None:
    assert parse(payload("sendgrid", "bounce")).reports == [
        sendgrid_report(
            EventType.BOUNCE,
            "2024-03-14T19:04:03Z",
            "Ym91bmNlLTAtNDk2MTA2NDktVzg2RWdZVDZTUUtrMGxSZmxmTFJzQS0w",
            bounce_type="Permanent",
            bounce_subtype="Invalid Address",
            diagnostic_code=(
                "550 5.1.1 The email account that you tried to reach does not exist. Please try "
                "double-checking the recipient's email address for typos or unnecessary spaces."
            ),
        )
    ]


def test_a_blocked_bounce_is_transient() -> None:
    assert parse(payload("sendgrid", "blocked")).reports == [
        sendgrid_report(
            EventType.BOUNCE,
            "2024-03-14T19:04:04Z",
            "YmxvY2tlZC0wLTQ5NjEwNjQ5LVc4NkVnWVQ2U1FLazBsUmZsZkxSc0EtMA",
            bounce_type="Transient",
            bounce_subtype="Reputation",
            diagnostic_code=(
                "550 5.7.1 Service unavailable; Client host [149.72.123.24] blocked using Spamhaus."
            ),
        )
    ]


def test_an_asynchronous_bounce_is_filed_under_its_message_id_header() -> None:
    assert parse(payload("sendgrid", "bounce_async")).reports == [
        Report(
            workspace_id=WORKSPACE,
            event_type=EventType.BOUNCE,
            provider="sendgrid",
            message_id="W86EgYT6SQKk0lRflfLRsA@geopod-ismtpd-5",
            to_address="jane.doe@example.com",
            event_at="2024-03-14T20:05:00Z",
            transport_key="YXN5bmMtYm91bmNlLTQ5NjEwNjQ5LVc4NkVnWVQ2U1FLazBsUmZsZkxSc0EtMA",
            email_id=None,
            receipt_id=RECEIPT,
            setup_id=SETUP,
            detail={
                "bounce_type": "Permanent",
                "bounce_subtype": "Mailbox Unavailable",
                "diagnostic_code": (
                    "550 5.2.1 The email account that you tried to reach is disabled."
                ),
            },
        )
    ]


def test_a_deferral_is_a_delivery_delay() -> None:
    assert parse(payload("sendgrid", "deferred")).reports == [
        sendgrid_report(
            EventType.DELIVERY_DELAY,
            "2024-03-14T19:05:00Z",
            "ZGVmZXJyZWQtMy00OTYxMDY0OS1XODZFZ1lUNlNRS2swbFJmbGZMUnNBLTA",
        )
    ]


def test_a_spam_report_is_a_complaint() -> None:
    assert parse(payload("sendgrid", "spamreport")).reports == [
        sendgrid_report(
            EventType.COMPLAINT,
            "2024-03-14T21:00:00Z",
            "c3BhbXJlcG9ydC00OTYxMDY0OS1XODZFZ1lUNlNRS2swbFJmbGZMUnNBLTA",
        )
    ]


def test_a_drop_is_a_reject_with_its_reason() -> None:
    assert parse(payload("sendgrid", "dropped")).reports == [
        sendgrid_report(
            EventType.REJECT,
            "2024-03-14T19:04:01Z",
            "ZHJvcHBlZC00OTYxMDY0OS1XODZFZ1lUNlNRS2swbFJmbGZMUnNBLTA",
            reason="Bounced Address",
        )
    ]


def test_an_apple_privacy_open_is_a_machine_open() -> None:
    assert parse(payload("sendgrid", "open")).reports == [
        sendgrid_report(
            EventType.OPEN,
            "2024-03-14T19:20:00Z",
            "b3Blbi00OTYxMDY0OS1XODZFZ1lUNlNRS2swbFJmbGZMUnNBLTA",
            ip="17.58.101.2",
            user_agent=(
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
                "(KHTML, like Gecko)"
            ),
            machine_open=True,
        )
    ]


def test_a_click_carries_its_url() -> None:
    assert parse(payload("sendgrid", "click")).reports == [
        sendgrid_report(
            EventType.CLICK,
            "2024-03-14T19:21:40Z",
            "Y2xpY2stNDk2MTA2NDktVzg2RWdZVDZTUUtrMGxSZmxmTFJzQS0w",
            link="https://billing.example.net/invoices/2025-03?utm_source=email",
            ip="203.0.113.44",
            user_agent=(
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
                "(KHTML, like Gecko) Chrome/122.0.0.0 Safari/537.36"
            ),
        )
    ]


@pytest.mark.parametrize("kind", ["processed", "unsubscribe", "group_unsubscribe"])
def test_events_without_meaning_here_are_acknowledged_only(kind: str) -> None:
    assert parse(payload("sendgrid", kind)) == Parsed([], ignored=[f"sendgrid:{kind}"])


def test_a_batch_gives_its_reports_in_order_and_lists_what_it_ignored() -> None:
    parsed = parse(payload("sendgrid", "batch"))
    assert [(r.event_type, r.to_address, r.email_id) for r in parsed.reports] == [
        (EventType.DELIVERY, "jane.doe@example.com", EMAIL_ID),
        (
            EventType.DELIVERY,
            "richard.roe@example.com",
            uuid.UUID("9a7c3e51-2b4d-4f6a-8c1e-0d2f3b4a5c6e"),
        ),
        (EventType.OPEN, "jane.doe@example.com", EMAIL_ID),
    ]
    assert {r.message_id for r in parsed.reports} == {MESSAGE_ID}
    assert parsed.ignored == ["sendgrid:processed", "sendgrid:unsubscribe"]


def test_a_custom_arg_that_is_not_a_uuid_is_ignored() -> None:
    event = json.loads(payload("sendgrid", "delivered"))[0]
    event["mailledger_email_id"] = "order-42"
    assert parse(json.dumps([event]).encode()).reports[0].email_id is None


def event_with(change: Any) -> bytes:
    event = json.loads(payload("sendgrid", "delivered"))[0]
    change(event)
    return json.dumps([event]).encode()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[{", "the SendGrid body is not valid JSON"),
        (b'{"event": "delivered"}', "must be a JSON array"),
        (b"[42]", r"event\[0\] must be a JSON object"),
        (event_with(lambda e: e.pop("event")), r"event\[0\]\.event is required"),
        (event_with(lambda e: e.pop("email")), r"event\[0\]\.email is required"),
        (event_with(lambda e: e.pop("timestamp")), r"event\[0\]\.timestamp is required"),
        (event_with(lambda e: e.update(timestamp="soon")), "unix timestamp"),
        (event_with(lambda e: e.update(timestamp=1e20)), "not a representable time"),
        (
            event_with(lambda e: [e.pop("sg_message_id"), e.pop("smtp-id")]),
            "neither sg_message_id nor smtp-id",
        ),
    ],
)
def test_a_body_that_cannot_be_understood_is_a_payload_error(body: bytes, message: str) -> None:
    with pytest.raises(PayloadError, match=message):
        parse(body)
