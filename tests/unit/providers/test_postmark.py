"""Postmark webhooks: basic credentials, one record per request by RecordType."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.providers import postmark
from adapters.providers.base import Parsed, PayloadError, SignatureError
from domain.reports import BOUNCE_TYPES, EventType, Report
from tests.unit.providers.signing import (
    EMAIL_ID,
    POSTMARK_PASSWORD,
    POSTMARK_USER,
    RECEIPT,
    SETUP,
    WORKSPACE,
    basic_auth,
    context,
    endpoint,
    payload,
    payload_json,
)

MESSAGE_ID = "883953f4-6105-42a2-a16a-77a8eac79483"
SAFARI = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)"


def parse(body: bytes) -> Parsed:
    return postmark.parse(body, endpoint("postmark"), RECEIPT)


def postmark_report(
    event_type: EventType,
    event_at: str,
    transport_key: str | None = None,
    *,
    bounce_fields: bool = False,
    **detail: Any,
) -> Report:
    return Report(
        workspace_id=WORKSPACE,
        event_type=event_type,
        provider="postmark",
        message_id=MESSAGE_ID,
        to_address="jane.doe@example.com",
        event_at=event_at,
        transport_key=transport_key,
        email_id=EMAIL_ID,
        receipt_id=RECEIPT,
        from_address="billing@mail.example.net" if bounce_fields else None,
        subject="Your March invoice" if bounce_fields else None,
        sent_at=None,
        setup_id=SETUP,
        detail=detail,
    )


# Credentials ----------------------------------------------------------------------


def test_the_right_credentials_verify_whatever_the_header_case() -> None:
    body = payload("postmark", "delivery")
    postmark.verify(body, {"Authorization": basic_auth()}, endpoint("postmark"), context())
    postmark.verify(body, {"authorization": basic_auth()}, endpoint("postmark"), context())


@pytest.mark.parametrize(
    ("authorization", "message"),
    [
        (None, "no basic credentials"),
        ("", "no basic credentials"),
        ("Bearer abc", "no basic credentials"),
        ("Basic", "no basic credentials"),
        ("Basic !!!", "not base64"),
        ("Basic " + base64.b64encode(POSTMARK_USER.encode()).decode(), "no password"),
        (basic_auth(POSTMARK_USER, "wrong"), "do not match"),
        (basic_auth("someone", POSTMARK_PASSWORD), "do not match"),
        (basic_auth(POSTMARK_USER, POSTMARK_PASSWORD + "x"), "do not match"),
        (basic_auth("", ""), "do not match"),
    ],
)
def test_missing_or_wrong_credentials_are_refused(authorization: str | None, message: str) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    with pytest.raises(SignatureError, match=message):
        postmark.verify(payload("postmark", "delivery"), headers, endpoint("postmark"), context())


def test_a_password_with_a_colon_is_split_at_the_first_one() -> None:
    assert ":" in POSTMARK_PASSWORD
    postmark.verify(b"{}", {"Authorization": basic_auth()}, endpoint("postmark"), context())


def test_an_endpoint_without_credentials_verifies_nothing() -> None:
    with pytest.raises(SignatureError, match="password"):
        postmark.verify(
            b"{}", {"Authorization": basic_auth()}, endpoint("postmark", password=None), context()
        )


@settings(max_examples=60, deadline=None)
@given(username=st.text(), password=st.text())
def test_any_other_credentials_are_refused(username: str, password: str) -> None:
    if f"{username}:{password}" == f"{POSTMARK_USER}:{POSTMARK_PASSWORD}":
        return
    with pytest.raises(SignatureError):
        postmark.verify(
            b"{}",
            {"Authorization": basic_auth(username, password)},
            endpoint("postmark"),
            context(),
        )


# Parsing --------------------------------------------------------------------------


def test_a_delivery_names_every_field() -> None:
    assert parse(payload("postmark", "delivery")) == Parsed(
        [
            postmark_report(
                EventType.DELIVERY,
                "2025-03-14T19:04:02.527073Z",
                smtp_response=(
                    "smtp;250 2.0.0 OK  1710443042 d75a77b69052e-430e1bd2b0asi1234567qtb.123 "
                    "- gsmtp"
                ),
            )
        ]
    )


def test_a_hard_bounce_is_permanent_and_keyed_by_its_id() -> None:
    assert parse(payload("postmark", "bounce")).reports == [
        postmark_report(
            EventType.BOUNCE,
            "2025-03-14T19:04:03.907025Z",
            "4323372036854775807",
            bounce_fields=True,
            bounce_type="Permanent",
            bounce_subtype="HardBounce",
            diagnostic_code=(
                "smtp;550 5.1.1 The email account that you tried to reach does not exist."
            ),
        )
    ]


def test_a_soft_bounce_is_transient_and_its_time_zone_is_honoured() -> None:
    assert parse(payload("postmark", "bounce_soft")).reports == [
        postmark_report(
            EventType.BOUNCE,
            "2025-03-14T19:34:05.123456Z",
            "4323372036854775808",
            bounce_fields=True,
            bounce_type="Transient",
            bounce_subtype="SoftBounce",
            diagnostic_code=(
                "smtp;452 4.2.2 The email account that you tried to reach is over quota."
            ),
        )
    ]


def test_a_spam_complaint_is_a_complaint() -> None:
    assert parse(payload("postmark", "spam_complaint")).reports == [
        postmark_report(
            EventType.COMPLAINT, "2025-03-14T21:17:45Z", "4323372036854775810", bounce_fields=True
        )
    ]


def test_an_open_carries_its_ip_and_user_agent() -> None:
    assert parse(payload("postmark", "open")).reports == [
        postmark_report(EventType.OPEN, "2025-03-14T19:15:22Z", ip="192.0.2.55", user_agent=SAFARI)
    ]


def test_a_click_carries_its_link() -> None:
    assert parse(payload("postmark", "click")).reports == [
        postmark_report(
            EventType.CLICK,
            "2025-03-14T19:16:03Z",
            link="https://billing.example.net/invoices/2025-03",
            ip="192.0.2.55",
            user_agent=SAFARI,
        )
    ]


@pytest.mark.parametrize(
    ("kind", "name"),
    [
        ("subscription_change", "postmark:SubscriptionChange"),
        ("bounce_autoresponder", "postmark:Bounce/AutoResponder"),
    ],
)
def test_records_without_meaning_here_are_acknowledged_only(kind: str, name: str) -> None:
    assert parse(payload("postmark", kind)) == Parsed([], ignored=[name])


@pytest.mark.parametrize(("bounce_type", "expected"), sorted(postmark.BOUNCE_TYPES.items()))
def test_every_postmark_bounce_type_has_a_meaning(bounce_type: str, expected: str | None) -> None:
    record = payload_json("postmark", "bounce") | {"Type": bounce_type}
    parsed = parse(json.dumps(record).encode())
    if expected is None:
        assert parsed == Parsed([], ignored=[f"postmark:Bounce/{bounce_type}"])
    else:
        assert expected in BOUNCE_TYPES
        assert [r.detail["bounce_type"] for r in parsed.reports] == [expected]


def test_an_unlisted_bounce_type_is_undetermined() -> None:
    record = payload_json("postmark", "bounce") | {"Type": "SomethingNew"}
    assert parse(json.dumps(record).encode()).reports[0].detail["bounce_type"] == "Undetermined"


def record_with(change: Any, kind: str = "delivery") -> bytes:
    record = payload_json("postmark", kind)
    change(record)
    return json.dumps(record).encode()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "the Postmark body is not valid JSON"),
        (b"[]", "the Postmark record must be a JSON object"),
        (record_with(lambda r: r.pop("RecordType")), r"RecordType is required"),
        (record_with(lambda r: r.pop("MessageID")), r"MessageID is required"),
        (record_with(lambda r: r.pop("Recipient")), r"Recipient is required"),
        (record_with(lambda r: r.pop("Email"), "bounce"), r"Email is required"),
        (record_with(lambda r: r.update(DeliveredAt="2025-03-14 19:04")), "zone"),
        (record_with(lambda r: r.update(ReceivedAt=None), "open"), r"ReceivedAt is required"),
    ],
)
def test_a_body_that_cannot_be_understood_is_a_payload_error(body: bytes, message: str) -> None:
    with pytest.raises(PayloadError, match=message):
        parse(body)
