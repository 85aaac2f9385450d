"""The registry and `handle`: the right provider, verified, then parsed."""

from __future__ import annotations

import json

import pytest

from adapters.providers import PROVIDERS, handle
from adapters.providers.base import ForbiddenSourceError, PayloadError, SignatureError
from domain.reports import EventType
from tests.unit.providers.signing import (
    RECEIPT,
    basic_auth,
    context,
    endpoint,
    generic_headers,
    mailgun_body,
    payload,
    sendgrid_headers,
    sns_body,
)


def signed_request(provider: str) -> tuple[bytes, dict[str, str]]:
    """A delivery as each provider would post it, with its signature."""
    if provider == "ses":
        return sns_body("delivery"), {"x-amz-sns-message-type": "Notification"}
    if provider == "sendgrid":
        body = payload("sendgrid", "delivered")
        return body, sendgrid_headers(body)
    if provider == "mailgun":
        return mailgun_body("delivered"), {"Content-Type": "application/json"}
    if provider == "postmark":
        return payload("postmark", "delivery"), {"Authorization": basic_auth()}
    body = payload("generic", "delivery")
    return body, generic_headers(body)


def test_every_provider_of_the_spec_is_registered() -> None:
    assert sorted(PROVIDERS) == ["generic", "mailgun", "postmark", "sendgrid", "ses"]


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
def test_a_signed_delivery_is_verified_then_parsed(provider: str) -> None:
    body, headers = signed_request(provider)
    parsed = handle(provider, body, headers, endpoint(provider), context(), RECEIPT)
    assert [(r.event_type, r.provider, r.receipt_id) for r in parsed.reports] == [
        (EventType.DELIVERY, provider, RECEIPT)
    ]


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
def test_an_unsigned_request_is_refused_before_parsing(provider: str) -> None:
    with pytest.raises(SignatureError):
        handle(provider, b"{not json", {}, endpoint(provider), context(), RECEIPT)


def test_a_request_for_another_provider_than_the_endpoints_is_forbidden() -> None:
    body, headers = signed_request("sendgrid")
    with pytest.raises(ForbiddenSourceError, match="takes mailgun webhooks"):
        handle("sendgrid", body, headers, endpoint("mailgun"), context(), RECEIPT)


def test_an_unknown_provider_is_forbidden() -> None:
    with pytest.raises(ForbiddenSourceError):
        handle("resend", b"{}", {}, endpoint("generic"), context(), RECEIPT)


@pytest.mark.parametrize(
    ("provider", "sender"),
    [("mailgun", "sendgrid"), ("postmark", "ses"), ("generic", "sendgrid"), ("ses", "generic")],
)
def test_a_request_that_is_clearly_another_providers_is_forbidden(
    provider: str, sender: str
) -> None:
    body, headers = signed_request(sender)
    with pytest.raises(ForbiddenSourceError, match=f"a {sender} request"):
        handle(provider, body, headers, endpoint(provider), context(), RECEIPT)


def test_a_verified_body_that_cannot_be_understood_is_a_payload_error() -> None:
    body = json.dumps([{"event": "delivered"}]).encode()
    with pytest.raises(PayloadError, match="neither sg_message_id nor smtp-id"):
        handle("sendgrid", body, sendgrid_headers(body), endpoint("sendgrid"), context(), RECEIPT)


def test_an_endpoint_without_a_setup_files_reports_under_none() -> None:
    body, headers = signed_request("generic")
    parsed = handle("generic", body, headers, endpoint("generic", setup_id=None), context(), None)
    assert [(r.setup_id, r.receipt_id) for r in parsed.reports] == [(None, None)]
