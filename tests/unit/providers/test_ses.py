"""Amazon SES through SNS: the signed envelope, and SES events made into reports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.providers import ses, sns
from adapters.providers.base import (
    ForbiddenSourceError,
    Parsed,
    PayloadError,
    SignatureError,
)
from adapters.providers.sns_certs import SnsCertificates
from domain.reports import EventType, Report
from tests.unit.providers.signing import (
    CERT_URL,
    EMAIL_ID,
    RECEIPT,
    SETUP,
    TOPIC,
    WORKSPACE,
    StaticCertificates,
    context,
    endpoint,
    other_rsa_key,
    payload_json,
    sign_sns,
    sns_body,
    sns_certificate_pem,
    sns_notification,
)

MESSAGE_ID = "0100018e3e5c2a14-8f1b0c55-3b7e-4d1a-9f3c-2a6d7e8b9c01-000000"
SNS_ID = "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324"
SENT_AT = "2025-03-14T19:04:01.160Z"
SUBJECT = "Your March invoice"
SENDER = "billing@mail.example.net"
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_3_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Mobile/15E148"
)


def parse(body: bytes) -> Parsed:
    return ses.parse(body, endpoint("ses"), RECEIPT)


def ses_report(
    event_type: EventType,
    event_at: str,
    to_address: str = "jane.doe@example.com",
    email_id: Any = EMAIL_ID,
    **detail: Any,
) -> Report:
    """What every SES report of the payload files shares, spelled out."""
    return Report(
        workspace_id=WORKSPACE,
        event_type=event_type,
        provider="ses",
        message_id=MESSAGE_ID,
        to_address=to_address,
        event_at=event_at,
        transport_key=f"{SNS_ID}:{to_address.lower()}",
        email_id=email_id,
        receipt_id=RECEIPT,
        from_address=SENDER,
        subject=SUBJECT,
        sent_at=SENT_AT,
        setup_id=SETUP,
        detail=detail,
    )


# Signature ------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1", "2"])
def test_a_notification_signed_with_either_version_verifies_against_a_pinned_certificate(
    version: str, tmp_path: Path
) -> None:
    (tmp_path / CERT_URL.rsplit("/", 1)[1]).write_bytes(sns_certificate_pem())
    body = sns_body("delivery", version=version)
    ses.verify(
        body,
        {"x-amz-sns-message-type": "Notification"},
        endpoint("ses"),
        context(SnsCertificates(tmp_path)),
    )


def test_the_string_to_sign_is_key_newline_value_newline_in_key_order() -> None:
    message = {
        "Type": "Notification",
        "MessageId": "m-1",
        "TopicArn": TOPIC,
        "Subject": "S",
        "Message": '{"a": 1}\nline',
        "Timestamp": "2025-03-14T19:04:03.212Z",
        "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe",
    }
    assert sns.string_to_sign(message) == (
        b'Message\n{"a": 1}\nline\nMessageId\nm-1\nSubject\nS\n'
        b"Timestamp\n2025-03-14T19:04:03.212Z\nTopicArn\n" + TOPIC.encode() + b"\n"
        b"Type\nNotification\n"
    )


def test_a_subject_when_present_is_signed_too() -> None:
    message = sign_sns(sns_notification(payload_json("ses", "delivery"), Subject="Hello"))
    ses.verify(json.dumps(message).encode(), {}, endpoint("ses"), context())
    message["Subject"] = "Hullo"
    with pytest.raises(SignatureError, match="does not match"):
        ses.verify(json.dumps(message).encode(), {}, endpoint("ses"), context())


def test_a_subscription_confirmation_signs_its_token_and_subscribe_url() -> None:
    signed = sign_sns(payload_json("ses", "sns_subscription_confirmation"), version="2")
    ses.verify(json.dumps(signed).encode(), {}, endpoint("ses"), context())
    signed["SubscribeURL"] = "https://sns.us-east-1.amazonaws.com/?Action=Other"
    with pytest.raises(SignatureError):
        ses.verify(json.dumps(signed).encode(), {}, endpoint("ses"), context())


def test_a_tampered_message_is_refused() -> None:
    message = json.loads(sns_body("delivery"))
    message["Message"] = message["Message"].replace("jane.doe", "mallory")
    with pytest.raises(SignatureError, match="does not match"):
        ses.verify(json.dumps(message).encode(), {}, endpoint("ses"), context())


def test_a_message_signed_with_another_key_is_refused() -> None:
    body = sns_body("delivery", key=other_rsa_key())
    with pytest.raises(SignatureError, match="does not match"):
        ses.verify(body, {}, endpoint("ses"), context())


def test_a_v1_signature_presented_as_v2_is_refused() -> None:
    message = json.loads(sns_body("delivery", version="1"))
    message["SignatureVersion"] = "2"
    with pytest.raises(SignatureError):
        ses.verify(json.dumps(message).encode(), {}, endpoint("ses"), context())


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("SignatureVersion", "3", "SignatureVersion"),
        ("Signature", "not base64 at all!", "base64"),
        ("Type", "Notice", "message type"),
        ("MessageId", None, "MessageId"),
    ],
)
def test_an_envelope_that_cannot_be_checked_is_refused(field: str, value: Any, error: str) -> None:
    message = json.loads(sns_body("delivery"))
    message[field] = value
    with pytest.raises(SignatureError, match=error):
        ses.verify(json.dumps(message).encode(), {}, endpoint("ses"), context())


def test_a_body_that_is_not_json_is_not_a_signed_message() -> None:
    with pytest.raises(SignatureError, match="not a signed SNS message"):
        ses.verify(b"<xml/>", {}, endpoint("ses"), context())


def test_the_message_type_header_must_match_the_body_type_whatever_its_case() -> None:
    body = sns_body("delivery")
    ses.verify(body, {"X-Amz-Sns-Message-Type": "Notification"}, endpoint("ses"), context())
    with pytest.raises(SignatureError, match="x-amz-sns-message-type"):
        ses.verify(
            body,
            {"X-Amz-Sns-Message-Type": "SubscriptionConfirmation"},
            endpoint("ses"),
            context(),
        )


def test_a_topic_not_configured_on_the_endpoint_is_forbidden_before_any_certificate() -> None:
    certificates = StaticCertificates(sns_certificate_pem())
    body = sns_body("delivery", TopicArn="arn:aws:sns:us-east-1:999999999999:someone-else")
    with pytest.raises(ForbiddenSourceError, match="someone-else"):
        ses.verify(body, {}, endpoint("ses"), context(certificates))
    assert certificates.asked == []


def test_an_endpoint_without_topics_verifies_nothing() -> None:
    with pytest.raises(SignatureError, match="sns_topic_arns"):
        ses.verify(sns_body("delivery"), {}, endpoint("ses", sns_topic_arns=None), context())


BAD_CERT_URLS = [
    "https://sns.us-east-1.amazonaws.com.evil.com/SimpleNotificationService-abc.pem",
    "http://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
    "https://evil.example.com/SimpleNotificationService-abc.pem",
    "https://s3.amazonaws.com/SimpleNotificationService-abc.pem",
    "https://sns.us-east-1.amazonaws.com@evil.com/SimpleNotificationService-abc.pem",
    "https://sns.us-east-1.amazonaws.com:8443/SimpleNotificationService-abc.pem",
    "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem?x=1",
    "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem\n",
    "https://sns.us-east-1.amazonaws.com/../evil/SimpleNotificationService-abc.pem",
    "https://sns.us-east-1.amazonaws.com/other.pem",
    "https://SNS.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
    "",
]


@pytest.mark.parametrize("url", BAD_CERT_URLS)
def test_a_signing_certificate_url_off_the_sns_hosts_is_refused_before_any_certificate(
    url: str,
) -> None:
    certificates = StaticCertificates(sns_certificate_pem())
    body = sns_body("delivery", SigningCertURL=url)
    with pytest.raises(SignatureError, match="SigningCertURL"):
        ses.verify(body, {}, endpoint("ses"), context(certificates))
    assert certificates.asked == []


@pytest.mark.parametrize(
    "url",
    [
        CERT_URL,
        "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-3242f0b7b5e7ba4a.pem",
    ],
)
def test_sns_certificate_urls_of_every_partition_pass_the_check(url: str) -> None:
    assert sns.check_cert_url(url) == url


SIGNED_FIELDS = ["Message", "MessageId", "Timestamp", "TopicArn"]


@settings(max_examples=40, deadline=None)
@given(field=st.sampled_from(SIGNED_FIELDS), text=st.text(min_size=1, max_size=40))
def test_any_change_to_a_signed_field_breaks_the_signature(field: str, text: str) -> None:
    message = json.loads(sns_body("delivery", version="2"))
    message[field] = message[field] + text
    with pytest.raises((SignatureError, ForbiddenSourceError)):
        ses.verify(json.dumps(message).encode(), {}, endpoint("ses"), context())


# Parsing --------------------------------------------------------------------------


def test_a_delivery_names_every_field() -> None:
    parsed = parse(sns_body("delivery"))
    assert parsed == Parsed(
        [
            ses_report(
                EventType.DELIVERY,
                "2025-03-14T19:04:02.380Z",
                smtp_response=(
                    "250 2.0.0 OK  1710443042 d75a77b69052e-430e1bd2b0asi1234567qtb.123 - gsmtp"
                ),
                remote_mta="142.250.27.26",
            )
        ]
    )
    assert parsed.reports[0].event_at == "2025-03-14T19:04:02.380000Z"
    assert parsed.reports[0].sent_at == "2025-03-14T19:04:01.160000Z"


def test_a_bounce_of_three_recipients_is_three_reports() -> None:
    diagnostic = "smtp; 550 5.1.1 <{}>: Recipient address rejected: User unknown"
    at = "2025-03-14T19:04:02.917Z"
    common = {"bounce_type": "Permanent", "bounce_subtype": "General"}
    assert parse(sns_body("bounce")).reports == [
        ses_report(
            EventType.BOUNCE,
            at,
            "jane.doe@example.com",
            email_id=None,
            diagnostic_code=diagnostic.format("jane.doe@example.com"),
            **common,
        ),
        ses_report(
            EventType.BOUNCE,
            at,
            "richard.roe@example.com",
            email_id=None,
            diagnostic_code=diagnostic.format("Richard.Roe@Example.com"),
            **common,
        ),
        ses_report(
            EventType.BOUNCE,
            at,
            "ops@example.org",
            email_id=None,
            diagnostic_code=(
                "smtp; 550 5.2.1 The email account that you tried to reach is disabled."
            ),
            **common,
        ),
    ]


def test_a_complaint_carries_its_feedback_type() -> None:
    assert parse(sns_body("complaint")).reports == [
        ses_report(EventType.COMPLAINT, "2025-03-14T21:17:45.000Z", feedback_type="abuse")
    ]


def test_a_delivery_delay_carries_its_type_and_expiration() -> None:
    assert parse(sns_body("delivery_delay")).reports == [
        ses_report(
            EventType.DELIVERY_DELAY,
            "2025-03-14T19:34:05.000Z",
            delay_type="MailboxFull",
            expiration_time="2025-03-15T09:04:01.160000Z",
        )
    ]


def test_a_reject_happens_at_send_time_with_its_reason() -> None:
    assert parse(sns_body("reject")).reports == [
        ses_report(EventType.REJECT, SENT_AT, reason="Bad content")
    ]


def test_a_rendering_failure_is_a_reject_that_says_so() -> None:
    assert parse(sns_body("rendering_failure")).reports == [
        ses_report(
            EventType.REJECT,
            SENT_AT,
            reason=(
                "Rendering Failure of template MonthlyInvoice: "
                "Attribute 'customer_name' is not present in the rendering data."
            ),
        )
    ]


def test_an_open_carries_ip_and_user_agent() -> None:
    assert parse(sns_body("open")).reports == [
        ses_report(EventType.OPEN, "2025-03-14T19:15:22.518Z", ip="192.0.2.55", user_agent=IPHONE)
    ]


def test_a_click_carries_its_link() -> None:
    assert parse(sns_body("click")).reports == [
        ses_report(
            EventType.CLICK,
            "2025-03-14T19:16:03.001Z",
            link="https://billing.example.net/invoices/2025-03",
            ip="192.0.2.55",
            user_agent=IPHONE,
        )
    ]


def test_classic_bounce_notification() -> None:
    assert parse(sns_body("notification_bounce")).reports == [
        ses_report(
            EventType.BOUNCE,
            "2025-03-15T09:04:05.000Z",
            email_id=None,
            bounce_type="Transient",
            bounce_subtype="MailboxFull",
            diagnostic_code="smtp; 552 4.2.2 Mailbox full",
        )
    ]


def test_classic_complaint_notification() -> None:
    assert parse(sns_body("notification_complaint")).reports == [
        ses_report(
            EventType.COMPLAINT, "2025-03-14T21:17:45.000Z", email_id=None, feedback_type="abuse"
        )
    ]


def test_classic_delivery_notification_of_two_recipients() -> None:
    detail = {"smtp_response": "250 ok:  Message 64111812 accepted"}
    at = "2025-03-14T19:04:02.380Z"
    assert parse(sns_body("notification_delivery")).reports == [
        ses_report(EventType.DELIVERY, at, "jane.doe@example.com", email_id=None, **detail),
        ses_report(EventType.DELIVERY, at, "richard.roe@example.com", email_id=None, **detail),
    ]


@pytest.mark.parametrize(
    ("kind", "name"),
    [
        ("send", "ses:Send"),
        ("subscription", "ses:Subscription"),
        ("subscription_succeeded", "ses:AmazonSnsSubscriptionSucceeded"),
    ],
)
def test_events_without_meaning_here_are_acknowledged_only(kind: str, name: str) -> None:
    assert parse(sns_body(kind)) == Parsed([], ignored=[name])


def test_the_topic_validation_message_is_acknowledged_only() -> None:
    text = "Successfully validated SNS topic for Amazon SES event publishing."
    body = json.dumps(sign_sns(sns_notification(text))).encode()
    ses.verify(body, {}, endpoint("ses"), context())
    assert parse(body) == Parsed([], ignored=["ses:TopicValidation"], note=text)


def test_a_subscription_confirmation_gives_the_url_to_confirm() -> None:
    body = json.dumps(sign_sns(payload_json("ses", "sns_subscription_confirmation"))).encode()
    parsed = parse(body)
    assert parsed.reports == []
    assert parsed.ignored == []
    assert (
        parsed.subscribe_url == payload_json("ses", "sns_subscription_confirmation")["SubscribeURL"]
    )
    assert parsed.note == f"SNS subscription to {TOPIC}"


def test_an_unsubscribe_confirmation_is_noted() -> None:
    body = json.dumps(sign_sns(payload_json("ses", "sns_unsubscribe_confirmation"))).encode()
    assert parse(body) == Parsed([], note=f"SNS unsubscribed from {TOPIC}")


def test_the_email_id_tag_of_a_mail_to_several_recipients_is_not_used() -> None:
    event = payload_json("ses", "delivery")
    event["mail"]["destination"].append("richard.roe@example.com")
    body = json.dumps(sign_sns(sns_notification(event))).encode()
    assert [report.email_id for report in parse(body).reports] == [None]


def test_an_email_id_tag_that_is_not_a_uuid_is_ignored() -> None:
    event = payload_json("ses", "delivery")
    event["mail"]["tags"]["mailledger_email_id"] = ["not-a-uuid"]
    body = json.dumps(sign_sns(sns_notification(event))).encode()
    assert parse(body).reports[0].email_id is None


# Payload errors -------------------------------------------------------------------


def mutated(kind: str, change: Any) -> bytes:
    event = payload_json("ses", kind)
    change(event)
    return json.dumps(sns_notification(event)).encode()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "the SNS message is not valid JSON"),
        (json.dumps(sns_notification("{broken")).encode(), "the SNS Message is not valid JSON"),
        (json.dumps(sns_notification("[1, 2]")).encode(), "Message must be a JSON object"),
        (mutated("delivery", lambda e: e.pop("eventType")), "neither an eventType"),
        (mutated("delivery", lambda e: e.pop("delivery")), r"Message\.delivery is required"),
        (
            mutated("delivery", lambda e: e["mail"].pop("messageId")),
            r"Message\.mail\.messageId is required",
        ),
        (
            mutated("delivery", lambda e: e["delivery"].update(timestamp="yesterday")),
            "not an RFC 3339 time",
        ),
        (
            mutated("bounce", lambda e: e["bounce"].update(bounceType="Hard")),
            "bounce_type must be one of",
        ),
        (
            mutated("bounce", lambda e: e["bounce"].update(bouncedRecipients=[])),
            "names no recipient",
        ),
        (
            mutated("bounce", lambda e: e["bounce"]["bouncedRecipients"][0].pop("emailAddress")),
            r"bouncedRecipients\[0\]\.emailAddress is required",
        ),
    ],
)
def test_a_body_that_cannot_be_understood_is_a_payload_error(body: bytes, message: str) -> None:
    with pytest.raises(PayloadError, match=message):
        parse(body)
