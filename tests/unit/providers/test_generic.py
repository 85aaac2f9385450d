"""Generic: mailledger's own event JSON, signed per Standard Webhooks."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook

from adapters.providers import generic
from adapters.providers.base import Parsed, PayloadError, SignatureError
from domain.reports import EventType, Report
from tests.unit.providers.signing import (
    EMAIL_ID,
    GENERIC_SECRET,
    NOW,
    RECEIPT,
    SETUP,
    WORKSPACE,
    context,
    endpoint,
    generic_headers,
    payload,
)

MESSAGE_ID = "20250314190401.4f8a2c@relay.example.net"
SENT_AT = "2025-03-14T19:04:01.160250Z"


def parse(body: bytes) -> Parsed:
    return generic.parse(body, endpoint("generic"), RECEIPT)


def generic_report(
    event_type: EventType, event_at: str, transport_key: str, **detail: Any
) -> Report:
    return Report(
        workspace_id=WORKSPACE,
        event_type=event_type,
        provider="generic",
        message_id=MESSAGE_ID,
        to_address="jane.doe@example.com",
        event_at=event_at,
        transport_key=transport_key,
        email_id=EMAIL_ID,
        receipt_id=RECEIPT,
        from_address="billing@example.net",
        subject="Your March invoice",
        sent_at=SENT_AT,
        setup_id=SETUP,
        detail=detail,
    )


# Signature ------------------------------------------------------------------------


def test_a_signed_event_verifies() -> None:
    body = payload("generic", "delivery")
    generic.verify(body, generic_headers(body), endpoint("generic"), context())


def test_a_signature_made_by_the_standardwebhooks_library_verifies() -> None:
    body = payload("generic", "bounce")
    signature = Webhook(GENERIC_SECRET).sign("msg_lib", NOW, body.decode())
    headers = {
        "Webhook-Id": "msg_lib",
        "Webhook-Timestamp": str(int(NOW.timestamp())),
        "Webhook-Signature": signature,
    }
    generic.verify(body, headers, endpoint("generic"), context())


def test_one_matching_signature_among_several_is_enough() -> None:
    body = payload("generic", "delivery")
    headers = generic_headers(body)
    good = headers["webhook-signature"]
    headers["webhook-signature"] = f"v1,AAAA v2,{good[3:]} v1,%%% garbage {good}"
    generic.verify(body, headers, endpoint("generic"), context())


def test_a_signature_of_another_version_does_not_count() -> None:
    body = payload("generic", "delivery")
    headers = generic_headers(body)
    headers["webhook-signature"] = headers["webhook-signature"].replace("v1,", "v1a,")
    with pytest.raises(SignatureError, match="no webhook-signature matches"):
        generic.verify(body, headers, endpoint("generic"), context())


def test_an_event_signed_with_another_secret_is_refused() -> None:
    body = payload("generic", "delivery")
    other = "whsec_" + base64.b64encode(b"another secret entirely").decode()
    with pytest.raises(SignatureError, match="no webhook-signature matches"):
        generic.verify(body, generic_headers(body, secret=other), endpoint("generic"), context())


def test_the_webhook_id_is_signed_too() -> None:
    body = payload("generic", "delivery")
    headers = generic_headers(body)
    headers["webhook-id"] = "msg_other"
    with pytest.raises(SignatureError):
        generic.verify(body, headers, endpoint("generic"), context())


@pytest.mark.parametrize("offset", [timedelta(minutes=-6), timedelta(minutes=6)])
def test_a_timestamp_more_than_five_minutes_from_now_is_refused(offset: timedelta) -> None:
    body = payload("generic", "delivery")
    with pytest.raises(SignatureError, match="5 minutes"):
        generic.verify(
            body, generic_headers(body, timestamp=NOW + offset), endpoint("generic"), context()
        )


@pytest.mark.parametrize(
    ("header", "value", "message"),
    [
        ("webhook-id", None, "missing"),
        ("webhook-timestamp", None, "missing"),
        ("webhook-signature", None, "missing"),
        ("webhook-timestamp", "1.5e9", "not a unix time"),
        ("webhook-signature", "v1", "no webhook-signature matches"),
    ],
)
def test_headers_that_cannot_be_checked_are_refused(
    header: str, value: str | None, message: str
) -> None:
    body = payload("generic", "delivery")
    headers = generic_headers(body)
    if value is None:
        del headers[header]
    else:
        headers[header] = value
    with pytest.raises(SignatureError, match=message):
        generic.verify(body, headers, endpoint("generic"), context())


@pytest.mark.parametrize("secret", ["", "whsec_", "whsec_!!!not base64"])
def test_an_endpoint_without_a_usable_secret_verifies_nothing(secret: str) -> None:
    body = payload("generic", "delivery")
    with pytest.raises(SignatureError, match="secret"):
        generic.verify(body, generic_headers(body), endpoint("generic", secret=secret), context())


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_any_change_to_the_body_breaks_the_signature(data: st.DataObject) -> None:
    body = payload("generic", "batch")
    headers = generic_headers(body)
    position = data.draw(st.integers(0, len(body) - 1))
    replacement = data.draw(st.binary(max_size=3))
    tampered = body[:position] + replacement + body[position + 1 :]
    if tampered == body:
        return
    with pytest.raises(SignatureError):
        generic.verify(tampered, headers, endpoint("generic"), context())


# Parsing --------------------------------------------------------------------------


def test_a_delivery_names_every_field() -> None:
    assert parse(payload("generic", "delivery")) == Parsed(
        [
            generic_report(
                EventType.DELIVERY,
                "2025-03-14T19:04:02.380000Z",
                "evt_01HS0A1B2C3D4E5F6G7H8J9K0B",
                smtp_response="250 2.0.0 OK id=1rkq2x-000Abc-3f",
                remote_mta="mx1.example.com",
            )
        ]
    )


@pytest.mark.parametrize(
    ("kind", "event_type", "event_at", "event_id", "detail"),
    [
        (
            "sent",
            EventType.SENT,
            SENT_AT,
            "evt_01HS0A1B2C3D4E5F6G7H8J9K0A",
            {
                "email_type": "transactional",
                "attachment_filenames": ["invoice-2025-03.pdf"],
                "has_attachment": True,
                "tags": {"customer": "acme"},
            },
        ),
        (
            "bounce",
            EventType.BOUNCE,
            "2025-03-14T19:04:02Z",
            "evt_01HS0A1B2C3D4E5F6G7H8J9K0C",
            {
                "bounce_type": "Permanent",
                "bounce_subtype": "NoEmail",
                "diagnostic_code": (
                    "smtp; 550 5.1.1 <jane.doe@example.com>: Recipient address rejected: "
                    "User unknown"
                ),
            },
        ),
        (
            "complaint",
            EventType.COMPLAINT,
            "2025-03-14T21:17:45Z",
            "evt_01HS0A1B2C3D4E5F6G7H8J9K0D",
            {"feedback_type": "abuse"},
        ),
        (
            "reject",
            EventType.REJECT,
            "2025-03-14T19:04:01.2Z",
            "evt_01HS0A1B2C3D4E5F6G7H8J9K0E",
            {"reason": "Message rejected: virus found in attachment"},
        ),
        (
            "delivery_delay",
            EventType.DELIVERY_DELAY,
            "2025-03-14T19:34:05Z",
            "evt_01HS0A1B2C3D4E5F6G7H8J9K0F",
            {"delay_type": "MailboxFull", "expiration_time": "2025-03-15T09:04:01.000000Z"},
        ),
        (
            "open",
            EventType.OPEN,
            "2025-03-14T19:15:22.518Z",
            "evt_01HS0A1B2C3D4E5F6G7H8J9K0G",
            {"ip": "17.58.101.2", "user_agent": "Mozilla/5.0", "machine_open": True},
        ),
        (
            "click",
            EventType.CLICK,
            "2025-03-14T19:16:03Z",
            "evt_01HS0A1B2C3D4E5F6G7H8J9K0H",
            {
                "link": "https://billing.example.net/invoices/2025-03",
                "ip": "192.0.2.55",
                "user_agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/124.0",
            },
        ),
    ],
)
def test_each_event_type_carries_its_own_fields(
    kind: str, event_type: EventType, event_at: str, event_id: str, detail: dict[str, Any]
) -> None:
    assert parse(payload("generic", kind)) == Parsed(
        [generic_report(event_type, event_at, event_id, **detail)]
    )


def test_an_array_gives_reports_in_order_and_lists_unknown_types() -> None:
    parsed = parse(payload("generic", "batch"))
    assert parsed.reports == [
        Report(
            workspace_id=WORKSPACE,
            event_type=EventType.DELIVERY,
            provider="generic",
            message_id=MESSAGE_ID,
            to_address="jane.doe@example.com",
            event_at="2025-03-14T19:04:02Z",
            receipt_id=RECEIPT,
            setup_id=SETUP,
        ),
        Report(
            workspace_id=WORKSPACE,
            event_type=EventType.DELIVERY,
            provider="generic",
            message_id=MESSAGE_ID,
            to_address="richard.roe@example.com",
            event_at="2025-03-14T19:04:03Z",
            transport_key="evt_01HS0A1B2C3D4E5F6G7H8J9K0J",
            receipt_id=RECEIPT,
            setup_id=SETUP,
        ),
    ]
    assert parsed.ignored == ["generic:Unsubscribe"]


def test_fields_of_other_event_types_are_not_taken() -> None:
    event = json.loads(payload("generic", "delivery")) | {"bounce_type": "Permanent"}
    assert "bounce_type" not in parse(json.dumps(event).encode()).reports[0].detail


def test_a_sent_cannot_name_a_use_case_or_a_tier() -> None:
    # Only an API send knows those (SPEC 4.3: an email made from a webhook has no use
    # case; SPEC 5: the tier comes from the setup's rates at send time).
    event = json.loads(payload("generic", "sent")) | {"use_case_id": "uc-9", "tier": "gold"}
    detail = parse(json.dumps(event).encode()).reports[0].detail
    assert "use_case_id" not in detail
    assert "tier" not in detail
    assert detail["attachment_filenames"] == ["invoice-2025-03.pdf"]


def test_the_workspace_is_the_endpoints_whatever_the_body_says() -> None:
    event = json.loads(payload("generic", "delivery")) | {"workspace_id": "someone-else"}
    assert parse(json.dumps(event).encode()).reports[0].workspace_id == WORKSPACE


def event_with(change: Any, kind: str = "delivery") -> bytes:
    event = json.loads(payload("generic", kind))
    change(event)
    return json.dumps(event).encode()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{", "the body is not valid JSON"),
        (b'"Delivery"', "the event must be a JSON object"),
        (b"[{}, 1]", r"event\[0\]\.event_type is required"),
        (event_with(lambda e: e.pop("message_id")), r"the event\.message_id is required"),
        (event_with(lambda e: e.pop("to_address")), r"the event\.to_address is required"),
        (event_with(lambda e: e.pop("event_at")), r"the event\.event_at is required"),
        (event_with(lambda e: e.update(event_at="2025-03-14T19:04:02")), "zone"),
        (event_with(lambda e: e.update(sent_at="March 14th")), "not an RFC 3339 time"),
        (event_with(lambda e: e.update(smtp_response=250)), "wrong type"),
        (
            event_with(lambda e: e.update(bounce_type="Hard"), "bounce"),
            "bounce_type must be one of",
        ),
        (
            event_with(lambda e: e.update(expiration_time="tomorrow"), "delivery_delay"),
            "expiration_time",
        ),
    ],
)
def test_a_body_that_cannot_be_understood_is_a_payload_error(body: bytes, message: str) -> None:
    with pytest.raises(PayloadError, match=message):
        parse(body)
