"""The Amazon SNS HTTP(S) envelope: its message types and its RSA signature.

SES publishes through SNS, so `ses.verify` is this module's `verify_envelope` plus the
endpoint's topic ARNs. The signature covers a canonical text of a few envelope fields
(`Key\\nValue\\n` in key order); versions 1 and 2 differ only in the digest.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from collections.abc import Collection, Mapping
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from adapters.providers.base import (
    CertificateSource,
    ForbiddenSourceError,
    SignatureError,
    lower_headers,
)

# Checked before the URL is used at all. A looser check (any `*.amazonaws.com` host)
# let anyone with a bucket on S3 serve a certificate and sign messages (django-ses #284).
CERT_URL = re.compile(
    r"https://sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/SimpleNotificationService-[a-z0-9]+\.pem"
)

NOTIFICATION = "Notification"
SUBSCRIPTION_CONFIRMATION = "SubscriptionConfirmation"
UNSUBSCRIBE_CONFIRMATION = "UnsubscribeConfirmation"

# The fields each message type signs, in byte order of their names.
_CONFIRMATION_FIELDS = (
    "Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type",
)  # fmt: skip
SIGNED_FIELDS: dict[str, tuple[str, ...]] = {
    NOTIFICATION: ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    SUBSCRIPTION_CONFIRMATION: _CONFIRMATION_FIELDS,
    UNSUBSCRIBE_CONFIRMATION: _CONFIRMATION_FIELDS,
}
OPTIONAL_FIELDS = frozenset({"Subject"})

DIGESTS: dict[str, type[hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}


def check_cert_url(url: object) -> str:
    """The signing certificate URL if it is on an SNS host; SignatureError otherwise."""
    if not isinstance(url, str) or CERT_URL.fullmatch(url) is None:
        raise SignatureError(f"SigningCertURL is not an Amazon SNS certificate URL: {url!r}")
    return url


def string_to_sign(message: Mapping[str, Any]) -> bytes:
    """The canonical text SNS signed for this message."""
    kind = message.get("Type")
    names = SIGNED_FIELDS.get(kind) if isinstance(kind, str) else None
    if names is None:
        raise SignatureError(f"not an SNS message type: {kind!r}")
    lines: list[str] = []
    for name in names:
        value = message.get(name)
        if value is None and name in OPTIONAL_FIELDS:
            continue
        if not isinstance(value, str):
            raise SignatureError(f"the SNS message has no {name}")
        lines.append(f"{name}\n{value}\n")
    return "".join(lines).encode()


def verify_envelope(
    message: Any,
    headers: Mapping[str, str],
    topic_arns: Collection[str],
    certificates: CertificateSource,
) -> None:
    """Check an SNS message: its type, its topic, then its signature."""
    if not isinstance(message, dict):
        raise SignatureError("the body is not a signed SNS message")
    signed = string_to_sign(message)
    header_type = lower_headers(headers).get("x-amz-sns-message-type")
    if header_type is not None and header_type != message["Type"]:
        raise SignatureError("x-amz-sns-message-type does not match the message Type")
    digest = DIGESTS.get(str(message.get("SignatureVersion")))
    if digest is None:
        raise SignatureError(f"unknown SNS SignatureVersion {message.get('SignatureVersion')!r}")
    url = check_cert_url(message.get("SigningCertURL"))
    # The topic is checked before any certificate is fetched: a message for a topic
    # this endpoint does not follow is refused whatever its signature.
    if message["TopicArn"] not in topic_arns:
        raise ForbiddenSourceError(f"topic {message['TopicArn']} is not one of this endpoint's")
    key = _public_key(certificates.pem_for(url))
    try:
        key.verify(_signature(message), signed, padding.PKCS1v15(), digest())
    except InvalidSignature:
        raise SignatureError("the SNS signature does not match") from None


def _signature(message: Mapping[str, Any]) -> bytes:
    text = message.get("Signature")
    if not isinstance(text, str):
        raise SignatureError("the SNS message has no Signature")
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error:
        raise SignatureError("the SNS Signature is not base64") from None


@functools.lru_cache(maxsize=64)  # one certificate signs a great many messages
def _public_key(pem: bytes) -> rsa.RSAPublicKey:
    try:
        key = x509.load_pem_x509_certificate(pem).public_key()
    except ValueError:
        raise SignatureError("the SNS signing certificate cannot be read") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise SignatureError("the SNS signing certificate has no RSA key")
    return key
