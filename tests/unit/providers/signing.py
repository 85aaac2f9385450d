"""Payload files and the keys that sign them, as each provider would.

Keys are made once per run (functools.cache), not at import, and never leave the
process. Plain functions rather than fixtures, so hypothesis tests can use them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from adapters.providers import sns
from adapters.providers.base import Endpoint, MemoryReplayGuard, VerifyContext

PAYLOADS = Path(__file__).parents[2] / "payloads"
NOW = datetime(2025, 3, 14, 19, 10, tzinfo=UTC)
WORKSPACE = "6f1f2a4e-0000-4000-8000-000000000001"
SETUP = "8d6c1c0a-5b1e-4f2a-9e3d-7c4b2a1f0e9d"
RECEIPT = "rcpt-0001"
EMAIL_ID = uuid.UUID("3f2b6a1e-9c4d-4e8f-b7a2-5d1c0e9f8a76")

TOPIC = "arn:aws:sns:us-east-1:123456789012:ses-events"
CERT_URL = (
    "https://sns.us-east-1.amazonaws.com/"
    "SimpleNotificationService-9c6465fa7f48f5cacd23014631ec1136.pem"
)
MAILGUN_KEY = "4c3f2e1d0b9a8f7e6d5c4b3a29180f7e"
POSTMARK_USER, POSTMARK_PASSWORD = "postmark-hooks", "c0rrect horse: battery staple"
GENERIC_SECRET = "whsec_" + base64.b64encode(b"mailledger-generic-test-secret!!").decode()


def payload(provider: str, kind: str) -> bytes:
    """The raw bytes of tests/payloads/<provider>/<kind>.json."""
    return (PAYLOADS / provider / f"{kind}.json").read_bytes()


def payload_json(provider: str, kind: str) -> Any:
    return json.loads(payload(provider, kind))


def endpoint(provider: str, setup_id: str | None = SETUP, **config: Any) -> Endpoint:
    """An endpoint of `provider` with the test credentials, or those given."""
    defaults: dict[str, dict[str, Any]] = {
        "ses": {"sns_topic_arns": [TOPIC]},
        "sendgrid": {"public_key": sendgrid_public_key(sendgrid_key())},
        "mailgun": {"signing_key": MAILGUN_KEY},
        "postmark": {"username": POSTMARK_USER, "password": POSTMARK_PASSWORD},
        "generic": {"secret": GENERIC_SECRET},
    }
    return Endpoint(
        id=f"ep-{provider}",
        workspace_id=WORKSPACE,
        provider=provider,
        setup_id=setup_id,
        config=defaults[provider] | config,
    )


class StaticCertificates:
    """A certificate source holding one PEM, which records every URL asked for."""

    def __init__(self, pem: bytes) -> None:
        self.pem = pem
        self.asked: list[str] = []

    def pem_for(self, url: str) -> bytes:
        self.asked.append(url)
        return self.pem


def context(certificates: Any = None, now: datetime = NOW) -> VerifyContext:
    """A fresh context: its own replay guard, the SNS test certificate by default."""
    return VerifyContext(
        now=now,
        replay_guard=MemoryReplayGuard(),
        certificates=certificates or StaticCertificates(sns_certificate_pem()),
    )


# SNS ------------------------------------------------------------------------------


@cache
def sns_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@cache
def other_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def certificate(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    subject: str,
    issuer_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | None = None,
    issuer: str | None = None,
    *,
    ca: bool = False,
    issuer_url: str | None = None,
) -> x509.Certificate:
    """A certificate for `key`, self-signed unless an issuer is given."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer or subject)])
    signer = issuer_key or key
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), False
        )
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    else:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(subject)]), critical=False
        )
    if issuer_url:
        builder = builder.add_extension(
            x509.AuthorityInformationAccess(
                [
                    x509.AccessDescription(
                        x509.oid.AuthorityInformationAccessOID.CA_ISSUERS,
                        x509.UniformResourceIdentifier(issuer_url),
                    )
                ]
            ),
            critical=False,
        )
    return builder.sign(signer, hashes.SHA256())


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@cache
def sns_certificate_pem() -> bytes:
    return pem(certificate(sns_key(), "sns.amazonaws.com"))


def sign_sns(
    message: dict[str, Any], version: str = "1", key: rsa.RSAPrivateKey | None = None
) -> dict[str, Any]:
    """`message` with SignatureVersion and a Signature made as SNS makes them."""
    signed = dict(message, SignatureVersion=version)
    digest = hashes.SHA1() if version == "1" else hashes.SHA256()
    signature = (key or sns_key()).sign(sns.string_to_sign(signed), padding.PKCS1v15(), digest)
    signed["Signature"] = base64.b64encode(signature).decode()
    return signed


def sns_notification(ses_event: dict[str, Any] | str, **envelope: Any) -> dict[str, Any]:
    """The SNS envelope file around an SES event (or any Message text), unsigned."""
    message = ses_event if isinstance(ses_event, str) else json.dumps(ses_event)
    envelope_file: dict[str, Any] = payload_json("ses", "sns_notification")
    return envelope_file | {"Message": message} | envelope


def sns_body(
    ses_kind: str, version: str = "1", key: rsa.RSAPrivateKey | None = None, **envelope: Any
) -> bytes:
    """A signed SNS notification carrying tests/payloads/ses/<ses_kind>.json."""
    message = sns_notification(payload_json("ses", ses_kind), **envelope)
    return json.dumps(sign_sns(message, version, key)).encode()


# SendGrid -------------------------------------------------------------------------


@cache
def sendgrid_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@cache
def other_ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def sendgrid_public_key(key: ec.EllipticCurvePrivateKey) -> str:
    """The base64 DER SubjectPublicKeyInfo SendGrid shows in its settings."""
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


def sendgrid_headers(
    body: bytes,
    timestamp: datetime = NOW - timedelta(seconds=5),
    key: ec.EllipticCurvePrivateKey | None = None,
) -> dict[str, str]:
    stamp = str(int(timestamp.timestamp()))
    signature = (key or sendgrid_key()).sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {
        "Content-Type": "application/json",
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": stamp,
    }


# Mailgun --------------------------------------------------------------------------


def mailgun_signature(timestamp: str, token: str, key: str = MAILGUN_KEY) -> str:
    return hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()


def mailgun_body(
    kind: str,
    timestamp: datetime = NOW - timedelta(seconds=5),
    token: str = "651869375b9df3c98fc15c4889b102119add1235c38fc92824",
    key: str = MAILGUN_KEY,
) -> bytes:
    """tests/payloads/mailgun/<kind>.json with a fresh signature block."""
    data = payload_json("mailgun", kind)
    stamp = str(int(timestamp.timestamp()))
    data["signature"] = {
        "timestamp": stamp,
        "token": token,
        "signature": mailgun_signature(stamp, token, key),
    }
    return json.dumps(data).encode()


# Postmark -------------------------------------------------------------------------


def basic_auth(username: str = POSTMARK_USER, password: str = POSTMARK_PASSWORD) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


# Generic (Standard Webhooks) ------------------------------------------------------


def generic_headers(
    body: bytes,
    webhook_id: str = "msg_2dE5Hq9bN7xK1vP0",
    timestamp: datetime = NOW - timedelta(seconds=5),
    secret: str = GENERIC_SECRET,
) -> dict[str, str]:
    stamp = str(int(timestamp.timestamp()))
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{webhook_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": stamp,
        "webhook-signature": "v1," + base64.b64encode(digest).decode(),
    }
