"""What a send asks for, checked, and the MIME message built from it.

The form's fields become a `SendRequest` only if a message can be built from them:
a single recipient address, a one-line subject, safe and unique attachment names.
"""

from __future__ import annotations

import hashlib
import mimetypes
import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime

from adapters.dns import normalize_domain
from domain.reports import InvalidReportError, canonical_json, format_time, parse_time

MB = 1024 * 1024
MAX_SUBJECT = 998
MAX_BODY = 1 * MB
MAX_ATTACHMENTS = 5
MAX_ATTACHMENT = 5 * MB
MAX_MESSAGE = 39 * MB
MAX_SCHEDULE = timedelta(hours=72)

LOCAL_PART = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
MIME_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}")
# Characters no filename may hold: separators, and what Windows refuses.
UNSAFE_IN_NAME = frozenset('/\\:*?"<>|')
LINE_BREAKS = frozenset("\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")


class InvalidSendError(ValueError):
    """A send that cannot be built as asked (422)."""


class TooLargeError(ValueError):
    """A send, or a part of it, over its size limit (413)."""


@dataclass(frozen=True)
class Attachment:
    """One attached file."""

    filename: str
    content: bytes
    content_type: str

    @property
    def sha256(self) -> str:
        """The content's hash, its key in the blob store."""
        return hashlib.sha256(self.content).hexdigest()


@dataclass(frozen=True)
class SendRequest:
    """A checked send: every field parsed and normalized."""

    use_case_id: str
    to_address: str
    subject: str
    body_html: str
    attachments: tuple[Attachment, ...] = ()
    send_at: str | None = None

    @property
    def attachment_filenames(self) -> list[str]:
        """The attachments' names, in order."""
        return [a.filename for a in self.attachments]

    def fingerprint(self) -> str:
        """What "the same request" means for Idempotency-Key: the parsed values, the
        file names and contents; never the raw bytes (a retry has a new boundary), nor
        a file's declared type (a retry may label the same file differently)."""
        facts = {
            "use_case_id": self.use_case_id,
            "to_address": self.to_address,
            "subject": self.subject,
            "body_html": hashlib.sha256(self.body_html.encode()).hexdigest(),
            "send_at": self.send_at,
            "attachments": [[a.filename, a.sha256] for a in self.attachments],
        }
        return hashlib.sha256(canonical_json(facts)).hexdigest()


def check_address(value: str, name: str = "to_address") -> str:
    """One recipient addr-spec, lowercased, its domain in IDNA form (errors name the
    field `name`)."""
    local, at, domain = value.strip().rpartition("@")
    if not at or len(local) > 64 or not LOCAL_PART.fullmatch(local):
        raise InvalidSendError(f"{name}: not a single email address: {value!r}")
    try:
        address = f"{local}@{normalize_domain(domain)}".lower()
    except ValueError:
        raise InvalidSendError(f"{name}: not a valid domain: {value!r}") from None
    if len(address) > 254:
        raise InvalidSendError(f"{name}: longer than 254 characters")
    return address


def check_subject(value: str) -> str:
    """A subject of 1 to 998 characters on one line."""
    if not 1 <= len(value) <= MAX_SUBJECT:
        raise InvalidSendError(f"subject: must be 1 to {MAX_SUBJECT} characters")
    if any(char in LINE_BREAKS for char in value):
        raise InvalidSendError("subject: must not contain line breaks")
    if any(unicodedata.category(char) == "Cc" and char != "\t" for char in value):
        raise InvalidSendError("subject: must not contain control characters")
    return value


def check_filename(value: str) -> str:
    """A name safe to save a file under anywhere (NFC; no separators or controls)."""
    name = unicodedata.normalize("NFC", value)
    if not name or len(name.encode()) > 255:
        raise InvalidSendError("attachments: a filename must be 1 to 255 bytes")
    unsafe = any(
        char in UNSAFE_IN_NAME or unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp")
        for char in name
    )
    if unsafe or name.startswith(".") or name != name.strip():
        raise InvalidSendError(f"attachments: unsafe filename {value!r}")
    return name


def parse_send_at(value: str) -> str:
    """An RFC 3339 time in canonical form (where it lies is `check_send_window`'s)."""
    try:
        return format_time(parse_time(value))
    except InvalidReportError as error:
        raise InvalidSendError(f"send_at: {error}") from None


def check_send_window(send_at: str, now: datetime) -> None:
    """That a canonical `send_at` lies in the future, at most 72 hours ahead. Checked
    when a send is accepted, after a repeated Idempotency-Key is answered: the retry of
    a send whose time has come since gets the first answer, not this error."""
    moment = parse_time(send_at)
    if moment <= now:
        raise InvalidSendError("send_at: must be in the future")
    if moment > now + MAX_SCHEDULE:
        raise InvalidSendError("send_at: must be at most 72 hours ahead")


def content_type_of(declared: str | None, filename: str) -> str:
    """The attachment's media type: as declared when well-formed, else by its name."""
    media = (declared or "").split(";")[0].strip().lower()
    if MIME_TYPE.fullmatch(media) and media != "application/octet-stream":
        return media
    return mimetypes.guess_type(filename)[0] or "application/octet-stream"


def check_attachments(files: list[Attachment]) -> tuple[Attachment, ...]:
    """At most five non-empty files with unique safe names (compared case-folded)."""
    if len(files) > MAX_ATTACHMENTS:
        raise InvalidSendError(f"attachments: at most {MAX_ATTACHMENTS} files")
    seen: set[str] = set()
    checked = []
    for file in files:
        name = check_filename(file.filename)
        if not file.content:
            raise InvalidSendError(f"attachments: {name!r} is empty")
        if len(file.content) > MAX_ATTACHMENT:
            raise TooLargeError(f"attachments: {name!r} is larger than 5 MB")
        if name.casefold() in seen:
            raise InvalidSendError(f"attachments: {name!r} appears twice")
        seen.add(name.casefold())
        checked.append(Attachment(name, file.content, content_type_of(file.content_type, name)))
    return tuple(checked)


@dataclass(frozen=True)
class Envelope:
    """Who a message is from and to, and the headers only the sender knows."""

    from_address: str
    to_address: str
    message_id: str  # without angle brackets
    date: datetime


def build_message(envelope: Envelope, request: SendRequest) -> EmailMessage:
    """The MIME message: the HTML body and the attachments; 422 if it cannot be built."""
    message = EmailMessage(policy=SMTP)
    try:
        message["From"] = envelope.from_address
        message["To"] = envelope.to_address
        message["Subject"] = request.subject
        message["Date"] = format_datetime(envelope.date)
        message["Message-ID"] = f"<{envelope.message_id}>"
        message.set_content(request.body_html, subtype="html", charset="utf-8")
        for file in request.attachments:
            maintype, _, subtype = file.content_type.partition("/")
            message.add_attachment(
                file.content, maintype=maintype, subtype=subtype, filename=file.filename
            )
    except (ValueError, TypeError) as error:
        raise InvalidSendError(f"the message cannot be built: {error}") from None
    return message


def check_size(message: EmailMessage) -> int:
    """The message's size in bytes; 413 over 39 MB."""
    size = len(message.as_bytes())
    if size > MAX_MESSAGE:
        raise TooLargeError("the message is larger than 39 MB")
    return size
