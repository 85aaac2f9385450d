"""Webhook throughput through uvicorn, from a load generator in another process.

- batch: SendGrid-style bodies of 1,000 signed events each (ECDSA P-256), four per
  worker in flight at once;
- single: SNS-style requests, one SES Delivery notification each (RSA-signed, the
  certificate pinned in MAILLEDGER_SNS_CERT_DIR), 64 in flight at once.

Every request carries events for new emails, so every event is recorded. The service
runs as it would be deployed for throughput: a worker process per core and no access
log (`mailledger serve --workers N --no-access-log`), whose projections follow the log
in one process of lower CPU priority; after the last answer the stage also measures
how long they take to catch up (`http_read_models_current_after_s`).
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx2 as httpx
import orjson
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from adapters.providers.sns import string_to_sign
from adapters.settings import parse_database_url
from adapters.storage import open_storage
from adapters.workspaces import create_workspace
from bench.served import served

TOPIC = "arn:aws:sns:us-east-1:123456789012:bench"
CERT_NAME = "SimpleNotificationService-0123456789abcdef0123456789abcdef.pem"
CERT_URL = f"https://sns.us-east-1.amazonaws.com/{CERT_NAME}"


# Batches in flight at once: four per worker, each on a connection of its own. The
# kernel hands each connection to one worker by a hash of its addresses (each worker
# has a listening socket of its own): with two per worker, all four connections went
# to one of two workers one run in eight, at about two thirds of the throughput; with
# four per worker, one run in 128. (With one socket shared by the workers, the first
# to wake took them all in most runs.)
BATCH_CONCURRENCY = 4 * (os.cpu_count() or 1)


def serve_options() -> list[str]:
    """How the service is started: a worker process per core, no line per request."""
    return ["--workers", str(os.cpu_count() or 1), "--no-access-log"]


def _certificate(key: rsa.RSAPrivateKey) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def _sns_request(key: rsa.RSAPrivateKey, n: int) -> tuple[bytes, dict[str, str]]:
    message_id = f"bench-single-{n:08d}"
    ses_event = {
        "eventType": "Delivery",
        "mail": {
            "timestamp": "2025-03-14T19:04:01.160Z",
            "source": "news@shop.example",
            "messageId": message_id,
            "destination": [f"single{n}@example.com"],
        },
        "delivery": {
            "timestamp": "2025-03-14T19:04:02.380Z",
            "recipients": [f"single{n}@example.com"],
            "smtpResponse": "250 2.0.0 OK",
        },
    }
    message = {
        "Type": "Notification",
        "MessageId": str(uuid.UUID(int=n)),
        "TopicArn": TOPIC,
        "Message": orjson.dumps(ses_event).decode(),
        "Timestamp": "2025-03-14T19:04:03.212Z",
        "SignatureVersion": "2",
        "SigningCertURL": CERT_URL,
        "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe",
    }
    signature = key.sign(string_to_sign(message), padding.PKCS1v15(), hashes.SHA256())
    message["Signature"] = base64.b64encode(signature).decode()
    return orjson.dumps(message), {"x-amz-sns-message-type": "Notification"}


def _sendgrid_request(
    key: ec.EllipticCurvePrivateKey, n: int, size: int
) -> tuple[bytes, dict[str, str]]:
    events = [
        {
            "email": f"batch{n}-{i}@example.com",
            "timestamp": 1710443042 + i,
            "event": "delivered",
            "sg_event_id": f"bench-{n}-{i}",
            "sg_message_id": f"bench{n}x{i}.filter-1",
            "response": "250 2.0.0 OK",
        }
        for i in range(size)
    ]
    body = orjson.dumps(events)
    stamp = str(int(time.time()))
    signature = key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return body, {
        "Content-Type": "application/json",
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": stamp,
    }


def _load(
    base: str, path: str, requests: list[tuple[bytes, dict[str, str]]], concurrency: int
) -> dict[str, float]:
    plan = {
        "base": base,
        "concurrency": concurrency,
        "requests": [
            {"path": path, "headers": headers, "body": base64.b64encode(body).decode()}
            for body, headers in requests
        ],
    }
    with tempfile.NamedTemporaryFile("wb", suffix=".json", delete=False) as plan_file:
        plan_file.write(orjson.dumps(plan))
    try:
        result = subprocess.run(
            [sys.executable, "-m", "bench.loadgen", plan_file.name],
            capture_output=True, text=True, check=True, timeout=1800,
        )  # fmt: skip
    finally:
        os.unlink(plan_file.name)
    figures: dict[str, float] = orjson.loads(result.stdout.strip().splitlines()[-1])
    return figures


def measure(url: str, batches: int, singles: int) -> dict[str, float]:
    """http_batch_events_per_s, http_single_requests_per_s and http_single_p99_ms, and
    how long the read models took to be current after the last answer."""
    store = open_storage(parse_database_url(url))
    made = create_workspace(store.engine, "bench-hooks")
    store.close()
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    public = ec_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with tempfile.TemporaryDirectory() as cert_dir:
        Path(cert_dir, CERT_NAME).write_bytes(_certificate(rsa_key))
        with served(url, serve_options(), MAILLEDGER_SNS_CERT_DIR=cert_dir) as base:
            with httpx.Client(
                base_url=base, headers={"Authorization": f"Bearer {made.api_key}"}
            ) as client:
                inbound = f"/v1/{made.workspace_id}/email/inbound"
                sendgrid = client.post(
                    inbound,
                    json={"provider": "sendgrid", "public_key": base64.b64encode(public).decode()},
                ).json()["url"]
                ses = client.post(
                    inbound, json={"provider": "ses", "sns_topic_arns": [TOPIC]}
                ).json()["url"]
            bodies = [_sendgrid_request(ec_key, n, 1000) for n in range(batches)]
            batch = _load(base, sendgrid, bodies, BATCH_CONCURRENCY)
            single = _load(base, ses, [_sns_request(rsa_key, n) for n in range(singles)], 64)
            behind = _catch_up_seconds(url)
    return {
        "http_batch_events_per_s": round(batches * 1000 / batch["seconds"]),
        "http_single_requests_per_s": round(singles / single["seconds"]),
        "http_single_p50_ms": round(single["p50_ms"], 2),
        "http_single_p99_ms": round(single["p99_ms"], 2),
        "http_read_models_current_after_s": round(behind, 2),
    }


def _catch_up_seconds(url: str) -> float:
    """How long after the last answer the service's projections reach the head of the
    log (they run at a lower priority than the workers, see `app.FOLLOWER_NICENESS`)."""
    store = open_storage(parse_database_url(url))
    started = time.perf_counter()
    try:
        while any(status.lag for status in store.runner.status()):
            if time.perf_counter() - started > 600:
                raise RuntimeError("the projections did not catch up within 10 minutes")
            time.sleep(0.05)
    finally:
        store.close()
    return time.perf_counter() - started
