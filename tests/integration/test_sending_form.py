"""The send form reader: streamed, refused at the first byte over a limit; the checks
of names, addresses and subjects; the download headers."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from urllib.parse import unquote

import pytest

from adapters.sending.downloads import content_disposition
from adapters.sending.form import MAX_REQUEST, Form, read_form
from adapters.sending.message import (
    MAX_ATTACHMENT,
    MAX_ATTACHMENTS,
    MAX_BODY,
    MAX_MESSAGE,
    MB,
    Attachment,
    Envelope,
    InvalidSendError,
    SendRequest,
    TooLargeError,
    build_message,
    check_address,
    check_filename,
    check_send_window,
    check_size,
    check_subject,
    parse_send_at,
)
from domain.reports import format_time, utc_now

BOUNDARY = "----mailledger-test-boundary"
CHUNK = 64 * 1024


def part(name: str, value: bytes, filename: str | None = None, kind: str = "") -> bytes:
    disposition = f'form-data; name="{name}"'
    if filename is not None:
        disposition += f'; filename="{filename}"'
    head = f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n"
    if kind:
        head += f"Content-Type: {kind}\r\n"
    return head.encode() + b"\r\n" + value + b"\r\n"


def body(*parts: bytes) -> bytes:
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


class Stream:
    """A request body arriving in chunks; counts how many were read."""

    def __init__(self, data: bytes) -> None:
        self.chunks = [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]
        self.read = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            self.read += 1
            yield chunk


HEADERS = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}


def read(data: bytes, headers: dict[str, str] | None = None) -> tuple[Form, Stream]:
    stream = Stream(data)
    form = asyncio.run(read_form(headers or HEADERS, stream.__aiter__()))
    return form, stream


def test_fields_and_files_are_read() -> None:
    form, _ = read(
        body(
            part("to_address", b"ann@example.com"),
            part("subject", "Grüße".encode()),
            part("body_html", b"<p>file body</p>", filename="page.html", kind="text/html"),
            part("attachments", b"%PDF", filename="a.pdf", kind="application/pdf"),
        )
    )
    assert form.fields == {
        "to_address": ["ann@example.com"],
        "subject": ["Grüße"],
        "body_html": ["<p>file body</p>"],
    }
    ((name, content, kind),) = [(f.filename, f.content, f.content_type) for f in form.files]
    assert (name, content, kind) == ("a.pdf", b"%PDF", "application/pdf")


def test_an_oversized_attachment_stops_the_read_where_it_passes_the_limit() -> None:
    data = body(part("attachments", b"\0" * (8 * MB), filename="big.bin"))
    stream = Stream(data)
    with pytest.raises(TooLargeError):
        asyncio.run(read_form(HEADERS, stream.__aiter__()))
    assert stream.read == 5 * MB // CHUNK + 1
    assert stream.read < len(stream.chunks)


def test_an_oversized_html_body_stops_the_read() -> None:
    stream = Stream(body(part("body_html", b"x" * (3 * MB))))
    with pytest.raises(TooLargeError):
        asyncio.run(read_form(HEADERS, stream.__aiter__()))
    assert stream.read < len(stream.chunks) // 2


def test_a_declared_length_over_the_limit_is_refused_before_reading() -> None:
    stream = Stream(body(part("subject", b"Hi")))
    headers = {**HEADERS, "content-length": str(MAX_REQUEST + 1)}
    with pytest.raises(TooLargeError):
        asyncio.run(read_form(headers, stream.__aiter__()))
    assert stream.read == 0


def test_a_request_over_the_total_limit_is_refused_while_streaming() -> None:
    files = [part("attachments", b"\1" * (5 * MB), filename=f"f{i}.bin") for i in range(5)]
    many_fields = [part(f"extra{i}", b"y" * (60 * 1024)) for i in range(40)]
    stream = Stream(body(*files, *many_fields))
    with pytest.raises(TooLargeError):
        asyncio.run(read_form(HEADERS, stream.__aiter__()))
    assert stream.read < len(stream.chunks)


def test_a_sixth_file_is_refused_at_its_headers() -> None:
    files = [part("attachments", b"x", filename=f"f{i}.txt") for i in range(6)]
    with pytest.raises(InvalidSendError, match="at most 5"):
        read(body(*files))


@pytest.mark.parametrize(
    "data",
    [
        body(part("subject", b"Hi"))[:-10],  # no closing boundary
        b"--not-the-boundary\r\n\r\n",
        body(part("subject", b"\xff\xfe not utf-8")),
        body(part("subject", b"x" * (65 * 1024))),
        body(part("notes", b"x", filename="notes.txt")),
    ],
    ids=["truncated", "wrong-boundary", "not-utf8", "long-field", "file-in-text-field"],
)
def test_malformed_forms_are_refused(data: bytes) -> None:
    with pytest.raises((InvalidSendError, TooLargeError)):
        read(data)


def test_a_body_that_is_not_multipart_is_refused() -> None:
    with pytest.raises(InvalidSendError, match="multipart"):
        read(b"to_address=a%40b.example", {"content-type": "application/x-www-form-urlencoded"})


@pytest.mark.parametrize(
    "name",
    ["", ".", "..", "../x", "a/b", "a\\b", "evil\x00.txt", "tab\tname.txt", "rtl\u202etxt.exe",
     " padded.txt", "a:b", "what?.txt", "x" * 256, "é" * 128],
)  # fmt: skip
def test_unsafe_filenames_are_refused(name: str) -> None:
    with pytest.raises(InvalidSendError):
        check_filename(name)


def test_filenames_are_kept_in_nfc() -> None:
    assert check_filename("Re\u0301sume\u0301 東京.pdf") == "Résumé 東京.pdf"


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("Ann@Example.COM", "ann@example.com"),
        ("bounce+run42@simulator.test", "bounce+run42@simulator.test"),
        ("jo@bücher.example", "jo@xn--bcher-kva.example"),
    ],
)
def test_addresses_are_normalized(given: str, kept: str) -> None:
    assert check_address(given) == kept


@pytest.mark.parametrize(
    "given", ["", "ann", "ann@", "@example.com", "a b@example.com", "ann@example", "a@1.2.3.4"]
)
def test_bad_addresses_are_refused(given: str) -> None:
    with pytest.raises(InvalidSendError):
        check_address(given)


@pytest.mark.parametrize("subject", ["", "x" * 999, "a\rb", "a\u2028b", "bell\x07"])
def test_bad_subjects_are_refused(subject: str) -> None:
    with pytest.raises(InvalidSendError):
        check_subject(subject)


def test_send_at_must_be_ahead_but_not_too_far() -> None:
    now = utc_now()
    ahead = format_time(now + timedelta(hours=72))
    assert parse_send_at(ahead.replace("Z", "+00:00")) == ahead
    check_send_window(ahead, now)
    for wrong in (format_time(now), format_time(now + timedelta(hours=72, seconds=1))):
        with pytest.raises(InvalidSendError):
            check_send_window(parse_send_at(wrong), now)


def test_the_download_names_the_file_for_every_client() -> None:
    header = content_disposition('Ré"sumé 東京.pdf')
    plain, extended = header.split("; filename*=UTF-8''")
    assert plain == 'attachment; filename="Re_sume .pdf"'
    assert unquote(extended) == 'Ré"sumé 東京.pdf'
    assert content_disposition("東京").startswith('attachment; filename="attachment"')


# The 39 MB message limit -----------------------------------------------------------------

ENVELOPE = Envelope("billing@mail.acme.example", "ann@example.com", "m1@mail.acme.example",
                    datetime(2025, 3, 14, 19, 4, tzinfo=UTC))  # fmt: skip


def files(count: int, size: int = MAX_ATTACHMENT) -> tuple[Attachment, ...]:
    # Random bytes: base64 in the message, nothing compresses or shortens them.
    return tuple(
        Attachment(f"f{i}.bin", os.urandom(size), "application/octet-stream") for i in range(count)
    )


def test_the_largest_form_builds_a_message_under_39_mb() -> None:
    # Five full attachments and a full body, encoded (base64, line breaks, headers),
    # come to about 35.6 MB: the form's own limits cannot reach 39 MB.
    body_html = "\u00e9" * (MAX_BODY // 2)  # 1 MB of two-byte characters
    request = SendRequest("uc", "ann@example.com", "s" * 998, body_html, files(MAX_ATTACHMENTS))
    size = check_size(build_message(ENVELOPE, request))
    assert 35 * MB < size < MAX_MESSAGE


def test_a_message_over_39_mb_is_refused_as_too_large() -> None:
    # Past the form's limits (eight full attachments, about 54 MB once encoded), as a
    # caller other than the form could build it: the message check still refuses it,
    # and TooLargeError is the API's 413 (see tests/api/test_sending.py).
    request = SendRequest("uc", "ann@example.com", "Hi", "<p>Hi</p>", files(8))
    with pytest.raises(TooLargeError, match="larger than 39 MB"):
        check_size(build_message(ENVELOPE, request))
    just_over = SendRequest("uc", "ann@example.com", "Hi", "<p>Hi</p>", files(6, 5 * MB + MB // 2))
    message = build_message(ENVELOPE, just_over)
    assert len(message.as_bytes()) > MAX_MESSAGE
    with pytest.raises(TooLargeError):
        check_size(message)
