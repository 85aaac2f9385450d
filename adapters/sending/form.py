"""Reading the send form: multipart/form-data, streamed, refused as soon as it is too big.

Nothing is buffered past its limit: the parser sees each chunk as it arrives, and a
part or a request over its limit stops the read there (413), before the rest is sent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from adapters.sending.message import (
    MAX_ATTACHMENT,
    MAX_ATTACHMENTS,
    MAX_BODY,
    MB,
    Attachment,
    InvalidSendError,
    TooLargeError,
)

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

MAX_FIELD = 64 * 1024  # any text field but body_html
MAX_PARTS = 64
# Five full attachments, a full body, and room for the other fields and the framing.
MAX_REQUEST = MAX_ATTACHMENTS * MAX_ATTACHMENT + MAX_BODY + MB
FILE_FIELDS = frozenset({"attachments", "body_html"})


@dataclass
class Part:
    """One part of the form while it is read."""

    headers: dict[bytes, bytes] = field(default_factory=dict)
    name: str = ""
    filename: str | None = None
    data: bytearray = field(default_factory=bytearray)
    limit: int = MAX_FIELD


@dataclass
class Form:
    """The parts of a form: text fields by name (repeatable) and the attached files."""

    fields: dict[str, list[str]] = field(default_factory=dict)
    files: list[Attachment] = field(default_factory=list)

    def one(self, name: str, *, required: bool = True) -> str | None:
        """The single value of a field; 422 if repeated, or missing when required."""
        values = self.fields.get(name, [])
        if len(values) > 1:
            raise InvalidSendError(f"{name}: given more than once")
        if not values:
            if required:
                raise InvalidSendError(f"{name}: required")
            return None
        return values[0]


class _Reader:
    """python-multipart callbacks that collect the parts and enforce the limits."""

    def __init__(self) -> None:
        self.form = Form()
        self.part = Part()
        self.parts = 0
        self.ended = False
        self.header_name = bytearray()
        self.header_value = bytearray()

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self.on_part_begin,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
            "on_end": self.on_end,
        }

    def on_part_begin(self) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise InvalidSendError(f"the form has more than {MAX_PARTS} parts")
        self.part = Part()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name.extend(data[start:end])

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value.extend(data[start:end])

    def on_header_end(self) -> None:
        self.part.headers[bytes(self.header_name).lower()] = bytes(self.header_value)
        self.header_name.clear()
        self.header_value.clear()

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self.part.headers.get(b"content-disposition"))
        if b"name" not in options:
            raise InvalidSendError("a form part has no name")
        self.part.name = _text(options[b"name"], "a field name")
        if b"filename" in options:
            self._file_part(options[b"filename"])
        elif self.part.name == "body_html":
            self.part.limit = MAX_BODY

    def _file_part(self, raw_name: bytes) -> None:
        if self.part.name not in FILE_FIELDS:
            raise InvalidSendError(f"{self.part.name}: expected a text field, not a file")
        self.part.filename = _text(raw_name, "a filename")
        if self.part.name == "body_html":
            self.part.limit = MAX_BODY
            return
        self.part.limit = MAX_ATTACHMENT
        if len(self.form.files) >= MAX_ATTACHMENTS:
            raise InvalidSendError(f"attachments: at most {MAX_ATTACHMENTS} files")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if len(self.part.data) + (end - start) > self.part.limit:
            what = self.part.filename or self.part.name
            raise TooLargeError(f"{self.part.name}: {what!r} is larger than {_size(self.part)}")
        self.part.data.extend(data[start:end])

    def on_part_end(self) -> None:
        part = self.part
        if part.name == "attachments" and part.filename is not None:
            content_type = part.headers.get(b"content-type", b"").decode("latin-1")
            self.form.files.append(Attachment(part.filename, bytes(part.data), content_type))
            return
        value = _text(bytes(part.data), part.name)
        self.form.fields.setdefault(part.name, []).append(value)

    def on_end(self) -> None:
        self.ended = True


def _text(raw: bytes, what: str) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise InvalidSendError(f"{what}: not UTF-8 text") from None


def _size(part: Part) -> str:
    return f"{part.limit // MB} MB" if part.limit >= MB else f"{part.limit // 1024} KB"


async def read_form(headers: Mapping[str, str], stream: AsyncIterator[bytes]) -> Form:
    """Parse a multipart/form-data body chunk by chunk; 413 at the first byte over a
    limit (or at once when Content-Length says so), 422 for anything malformed."""
    media, options = parse_options_header(headers.get("content-type", ""))
    if media != b"multipart/form-data" or not options.get(b"boundary"):
        raise InvalidSendError("the body must be multipart/form-data with a boundary")
    declared = headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_REQUEST:
        raise TooLargeError(f"the request is larger than {MAX_REQUEST // MB} MB")
    reader = _Reader()
    parser = MultipartParser(options[b"boundary"], reader.callbacks())
    received = 0
    try:
        async for chunk in stream:
            received += len(chunk)
            if received > MAX_REQUEST:
                raise TooLargeError(f"the request is larger than {MAX_REQUEST // MB} MB")
            parser.write(chunk)
        parser.finalize()
    except FormParserError as error:
        raise InvalidSendError(f"the multipart body is malformed: {error}") from None
    if not reader.ended:
        raise InvalidSendError("the multipart body ends before its closing boundary")
    return reader.form
