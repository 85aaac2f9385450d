"""The message an outbox row stands for, rebuilt from the blob store and signed.

Besides the HTML and the attachments, the message carries mailledger's email id under
each provider's own custom-argument header, so a provider's webhook that does not know
mailledger's Message-ID still finds the email (SPEC 4.3).
"""

from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import Engine, RowMapping

from adapters import admin_store
from adapters.providers.base import EMAIL_ID_ARG
from adapters.sending import dkimsign
from adapters.sending.blobs import get_blob
from adapters.sending.message import Attachment, Envelope, SendRequest, build_message
from domain.reports import parse_time


class MissingContentError(LookupError):
    """A blob the outbox row names is not in the store."""


def _blob(engine: Engine, key: str) -> bytes:
    content = get_blob(engine, key)
    if content is None:
        raise MissingContentError(key)
    return content


def correlation_headers(email_id: str) -> dict[str, str]:
    """mailledger's email id as SES tags, SendGrid unique args, Mailgun variables and
    Postmark metadata, and under its own name."""
    return {
        "X-Mailledger-Email-Id": email_id,
        "X-SES-MESSAGE-TAGS": f"{EMAIL_ID_ARG}={email_id}",
        "X-SMTPAPI": json.dumps({"unique_args": {EMAIL_ID_ARG: email_id}}),
        "X-Mailgun-Variables": json.dumps({EMAIL_ID_ARG: email_id}),
        f"X-PM-Metadata-{EMAIL_ID_ARG}": email_id,
    }


def compose(engine: Engine, row: RowMapping, setup: admin_store.Setup | None) -> bytes:
    """The bytes to hand to a relay, DKIM-signed with the setup's key when there is one."""
    request = SendRequest(
        use_case_id=row["use_case_id"],
        to_address=row["to_address"],
        subject=row["subject"],
        body_html=_blob(engine, row["body_sha256"]).decode(),
        attachments=tuple(
            Attachment(a["filename"], _blob(engine, a["sha256"]), a["content_type"])
            for a in row["attachments"]
        ),
    )
    date: datetime = parse_time(row["accepted_at"])
    envelope = Envelope(row["from_address"], row["to_address"], row["message_id"], date)
    message = build_message(envelope, request)
    for name, value in correlation_headers(row["email_id"]).items():
        message[name] = value
    raw = message.as_bytes()
    if setup is None:
        return raw
    return dkimsign.sign(raw, setup.domain, setup.dkim_selector, setup.dkim_private_key)
