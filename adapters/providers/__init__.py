"""Provider webhooks: one module per provider, each with `verify` and `parse`.

`handle` is what an inbound endpoint does with a request: refuse one that is not for
this endpoint's provider (ForbiddenSourceError, 403), verify it (SignatureError, 401;
CertificateUnavailableError, 503), then parse it (PayloadError, 400).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from adapters.providers import generic, mailgun, postmark, sendgrid, ses
from adapters.providers.base import (
    Endpoint,
    ForbiddenSourceError,
    Parsed,
    VerifyContext,
    lower_headers,
)


class Provider(Protocol):
    """What a provider module offers."""

    def verify(
        self, body: bytes, headers: Mapping[str, str], endpoint: Endpoint, context: VerifyContext
    ) -> None: ...

    def parse(self, body: bytes, endpoint: Endpoint, receipt_id: str | None) -> Parsed: ...


PROVIDERS: dict[str, Provider] = {
    "ses": ses,
    "sendgrid": sendgrid,
    "mailgun": mailgun,
    "postmark": postmark,
    "generic": generic,
}

# A header only one provider sends: a request carrying another provider's and none of
# the endpoint's own was sent to the wrong endpoint. Mailgun signs in the body.
SOURCE_HEADERS: dict[str, str] = {
    "ses": "x-amz-sns-message-type",
    "sendgrid": "x-twilio-email-event-webhook-signature",
    "postmark": "x-pm-webhook-trace-id",
    "generic": "webhook-signature",
}


def check_source(provider: str, headers: Mapping[str, str], endpoint: Endpoint) -> None:
    """ForbiddenSourceError unless the request is for, and looks like, this endpoint's."""
    if provider != endpoint.provider or provider not in PROVIDERS:
        raise ForbiddenSourceError(f"this endpoint takes {endpoint.provider} webhooks")
    found = lower_headers(headers)
    senders = {name for name, header in SOURCE_HEADERS.items() if header in found}
    if senders and provider not in senders:
        raise ForbiddenSourceError(
            f"a {', '.join(sorted(senders))} request sent to a {provider} endpoint"
        )


def handle(  # noqa: PLR0917 - the call shape the HTTP layer was promised
    provider: str,
    body: bytes,
    headers: Mapping[str, str],
    endpoint: Endpoint,
    context: VerifyContext,
    receipt_id: str | None,
) -> Parsed:
    """Check the source, verify, then parse one inbound request."""
    check_source(provider, headers, endpoint)
    module = PROVIDERS[provider]
    module.verify(body, headers, endpoint, context)
    return module.parse(body, endpoint, receipt_id)
