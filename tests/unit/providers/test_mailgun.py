"""Mailgun webhooks: HMAC of timestamp + token, single-use tokens, event-data mapped."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.providers import mailgun
from adapters.providers.base import MemoryReplayGuard, Parsed, PayloadError, SignatureError
from domain.reports import EventType, Report
from tests.unit.providers.signing import (
    EMAIL_ID,
    NOW,
    RECEIPT,
    SETUP,
    WORKSPACE,
    context,
    endpoint,
    mailgun_body,
    mailgun_signature,
    payload_json,
)

MESSAGE_ID = "20250314190401.1.A2B3C4D5E6F70819@mg.example.net"
CHROME = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/122.0.0.0 Safari/537.36"
)


def parse(body: bytes) -> Parsed:
    return mailgun.parse(body, endpoint("mailgun"), RECEIPT)


def mailgun_report(
    event_type: EventType,
    event_at: str,
    transport_key: str,
    *,
    headers: bool = True,
    **detail: Any,
) -> Report:
    return Report(
        workspace_id=WORKSPACE,
        event_type=event_type,
        provider="mailgun",
        message_id=MESSAGE_ID,
        to_address="jane.doe@example.com",
        event_at=event_at,
        transport_key=transport_key,
        email_id=EMAIL_ID,
        receipt_id=RECEIPT,
        from_address="billing@mg.example.net" if headers else None,
        subject="Your March invoice" if headers else None,
        sent_at=None,
        setup_id=SETUP,
        detail=detail,
    )


# Signature ------------------------------------------------------------------------


def test_a_signed_webhook_verifies() -> None:
    mailgun.verify(mailgun_body("delivered"), {}, endpoint("mailgun"), context())


def test_a_token_is_accepted_once() -> None:
    shared = context()
    body = mailgun_body("delivered")
    mailgun.verify(body, {}, endpoint("mailgun"), shared)
    with pytest.raises(SignatureError, match="already used"):
        mailgun.verify(body, {}, endpoint("mailgun"), shared)
    mailgun.verify(mailgun_body("delivered", token="a" * 50), {}, endpoint("mailgun"), shared)


def test_a_refused_request_does_not_use_the_token_up() -> None:
    shared = context()
    with pytest.raises(SignatureError):
        mailgun.verify(mailgun_body("delivered", key="wrong"), {}, endpoint("mailgun"), shared)
    mailgun.verify(mailgun_body("delivered"), {}, endpoint("mailgun"), shared)


def test_a_webhook_signed_with_another_key_is_refused() -> None:
    with pytest.raises(SignatureError, match="does not match"):
        mailgun.verify(
            mailgun_body("delivered", key="another-signing-key"),
            {},
            endpoint("mailgun"),
            context(),
        )


@pytest.mark.parametrize("offset", [timedelta(minutes=-6), timedelta(minutes=6)])
def test_a_timestamp_more_than_five_minutes_from_now_is_refused(offset: timedelta) -> None:
    body = mailgun_body("delivered", timestamp=NOW + offset)
    with pytest.raises(SignatureError, match="too far from now"):
        mailgun.verify(body, {}, endpoint("mailgun"), context())


def test_the_parent_signature_of_a_subaccount_event_verifies_with_the_primary_key() -> None:
    data = json.loads(mailgun_body("delivered", key="the-subaccount-key"))
    signature = data["signature"]
    signature["parent-signature"] = mailgun_signature(signature["timestamp"], signature["token"])
    mailgun.verify(json.dumps(data).encode(), {}, endpoint("mailgun"), context())


def signature_with(change: Any) -> bytes:
    data = json.loads(mailgun_body("delivered"))
    change(data["signature"])
    return json.dumps(data).encode()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json", "not a signed Mailgun webhook"),
        (b"[]", "not a signed Mailgun webhook"),
        (json.dumps({"event-data": {}}).encode(), "not a signed Mailgun webhook"),
        (signature_with(lambda s: s.pop("token")), "no timestamp or token"),
        (signature_with(lambda s: s.pop("timestamp")), "no timestamp or token"),
        (signature_with(lambda s: s.pop("signature")), "does not match"),
        (signature_with(lambda s: s.update(signature="é" * 64)), "does not match"),
        (signature_with(lambda s: s.update(signature=s["signature"].upper())), "does not match"),
    ],
)
def test_a_signature_that_cannot_be_checked_is_refused(body: bytes, message: str) -> None:
    with pytest.raises(SignatureError, match=message):
        mailgun.verify(body, {}, endpoint("mailgun"), context())


def test_an_endpoint_without_a_signing_key_verifies_nothing() -> None:
    with pytest.raises(SignatureError, match="signing_key"):
        mailgun.verify(
            mailgun_body("delivered"), {}, endpoint("mailgun", signing_key=""), context()
        )


@settings(max_examples=60, deadline=None)
@given(field=st.sampled_from(["timestamp", "token", "signature"]), text=st.text(min_size=1))
def test_any_change_to_the_signature_block_is_refused(field: str, text: str) -> None:
    # Mailgun signs timestamp + token only, not event-data: the freshness window and
    # single-use tokens are what stop a replayed or altered request.
    data = json.loads(mailgun_body("delivered"))
    data["signature"][field] += text
    with pytest.raises(SignatureError):
        mailgun.verify(json.dumps(data).encode(), {}, endpoint("mailgun"), context())


def test_the_memory_replay_guard_remembers_each_key() -> None:
    guard = MemoryReplayGuard()
    assert guard.first_use("mailgun:a")
    assert not guard.first_use("mailgun:a")
    assert guard.first_use("mailgun:b")


# Parsing --------------------------------------------------------------------------


def test_a_delivered_event_names_every_field() -> None:
    assert parse(mailgun_body("delivered")) == Parsed(
        [
            mailgun_report(
                EventType.DELIVERY,
                "2024-03-14T19:04:02.169349Z",
                "CPgfbmQMTCKtHW6uIWtuVe",
                smtp_response="250 OK",
                remote_mta="smtp-in.example.com",
            )
        ]
    )


def test_a_permanent_failure_is_a_permanent_bounce() -> None:
    assert parse(mailgun_body("failed_permanent")).reports == [
        mailgun_report(
            EventType.BOUNCE,
            "2024-03-14T19:04:03.389832Z",
            "G9Bn5sl1TC6nu79C8C0bwg",
            bounce_type="Permanent",
            bounce_subtype="bounce",
            diagnostic_code=(
                "550 5.1.1 The email account that you tried to reach does not exist. Please "
                "try 5.1.1 double-checking the recipient's email address for typos"
            ),
        )
    ]


def test_a_temporary_failure_is_a_delivery_delay() -> None:
    assert parse(mailgun_body("failed_temporary")).reports == [
        mailgun_report(
            EventType.DELIVERY_DELAY,
            "2024-03-14T19:05:00.659519Z",
            "Fs7-5t81S2ms-j-3dnBJ4g",
            delay_type="greylisted",
        )
    ]


def test_an_open_carries_ip_and_user_agent() -> None:
    assert parse(mailgun_body("opened")).reports == [
        mailgun_report(
            EventType.OPEN,
            "2024-03-14T19:20:00.089676Z",
            "-Agny091SquKnsrW2NEKUA",
            headers=False,
            ip="192.0.2.55",
            user_agent=CHROME,
        )
    ]


def test_a_click_carries_its_url() -> None:
    assert parse(mailgun_body("clicked")).reports == [
        mailgun_report(
            EventType.CLICK,
            "2024-03-14T19:21:40.092100Z",
            "Ase7i2zsRYeDXztHGENqRA",
            headers=False,
            link="https://billing.example.net/invoices/2025-03",
            ip="192.0.2.55",
            user_agent=CHROME,
        )
    ]


def test_a_complaint() -> None:
    assert parse(mailgun_body("complained")).reports == [
        mailgun_report(EventType.COMPLAINT, "2024-03-14T21:00:00.049634Z", "ncV2XwymRUKbPek_MIM-Gw")
    ]


def test_a_rejection_takes_its_recipient_from_the_to_header() -> None:
    assert parse(mailgun_body("rejected")).reports == [
        mailgun_report(
            EventType.REJECT,
            "2024-03-14T19:04:01.104692Z",
            "Bej6lm7KRWaDx6bKpwYAqw",
            reason=(
                "Sandbox subdomains are for test purposes only. Please add your own domain or "
                "add the address to authorized recipients in Account Settings."
            ),
        )
    ]


@pytest.mark.parametrize("kind", ["accepted", "unsubscribed"])
def test_events_without_meaning_here_are_acknowledged_only(kind: str) -> None:
    assert parse(mailgun_body(kind)) == Parsed([], ignored=[f"mailgun:{kind}"])


def test_a_failure_of_unknown_severity_is_acknowledged_only() -> None:
    data = payload_json("mailgun", "failed_permanent")
    data["event-data"]["severity"] = "catastrophic"
    assert parse(json.dumps(data).encode()) == Parsed([], ignored=["mailgun:failed/catastrophic"])


def event_with(change: Any, kind: str = "delivered") -> bytes:
    data = payload_json("mailgun", kind)
    change(data["event-data"])
    return json.dumps(data).encode()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{", "the Mailgun body is not valid JSON"),
        (b"[]", "the Mailgun body must be a JSON object"),
        (b'{"signature": {}}', r"event-data is required"),
        (event_with(lambda e: e.pop("event")), r"event-data\.event is required"),
        (
            event_with(lambda e: e["message"]["headers"].pop("message-id")),
            r"headers\.message-id is required",
        ),
        (event_with(lambda e: e.pop("message")), r"headers\.message-id is required"),
        (event_with(lambda e: e.pop("timestamp")), "unix timestamp"),
        (
            event_with(lambda e: e["message"]["headers"].update(to="a@x.com, b@y.com"), "rejected"),
            r"event-data\.recipient is required",
        ),
    ],
)
def test_a_body_that_cannot_be_understood_is_a_payload_error(body: bytes, message: str) -> None:
    with pytest.raises(PayloadError, match=message):
        parse(body)
