"""The sending endpoints: send, cancel, body, attachments, the suppression list.

The send form is multipart, which the declarative layer does not read: the handler
streams it through `adapters.sending.form`, which refuses a part or a request over its
limit as soon as the limit is passed. Everything that touches the database runs in the
threadpool; the transport is the send worker's business, never the request's.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from adapters.http import tokens
from adapters.http.api import ApiError, Call, Operation, json_response, not_found
from adapters.http.emails import DETAIL_FIELDS, EmailDetail, email_key
from adapters.sending import accept, downloads, outbox, suppression
from adapters.sending.blobs import get_blob
from adapters.sending.form import Form, read_form
from adapters.sending.message import (
    InvalidSendError,
    SendRequest,
    TooLargeError,
    check_address,
    check_attachments,
    check_subject,
    parse_send_at,
)
from adapters.sending.tier import TierCache
from adapters.sending.worker import SendWorker
from adapters.storage import Storage, service_secret
from adapters.workspaces import ApiKey
from domain.email import EmailView
from domain.reports import utc_now

SEND = "Channel.send"
VIEW = "Channel.view"
ADMIN = "Workspace.admin"
TAG = "sending"
PREFIX = "/v1/{workspace_id}/email"
MAX_IDEMPOTENCY_KEY = 255

ERRORS: dict[type[Exception], int] = {
    InvalidSendError: 422,
    accept.IdempotencyMismatchError: 422,
    TooLargeError: 413,
    accept.UseCaseNotFoundError: 404,
    accept.EmailMissingError: 404,
    accept.SetupNotVerifiedError: 409,
    accept.NotQueuedError: 409,
}
MESSAGES = {
    accept.UseCaseNotFoundError: "use case not found",
    accept.EmailMissingError: "email not found",
    accept.SetupNotVerifiedError: "the use case's setup is not DNS verified; verify it first",
    accept.NotQueuedError: "the email is not queued (it has left, or was never scheduled)",
}


@contextmanager
def _answers() -> Iterator[None]:
    """The sending errors as the API's JSON errors."""
    try:
        yield
    except tuple(ERRORS) as error:
        kind = type(error)
        raise ApiError(ERRORS[kind], MESSAGES.get(kind, str(error))) from None


class SendForm(BaseModel):
    """The send form (multipart/form-data), as documented; read while streaming."""

    use_case_id: str = Field(description="An email use case of the workspace.")
    to_address: str = Field(description="One recipient address.")
    subject: str = Field(min_length=1, max_length=998, description="One line.")
    body_html: str = Field(description="The HTML body, at most 1 MB.")
    attachments: list[bytes] = Field(
        default_factory=list, description="0 to 5 files, 5 MB each, unique safe names."
    )
    send_at: str | None = Field(
        None, description="RFC 3339, in the future, at most 72 hours ahead: queued until then."
    )


class SendAnswer(BaseModel):
    """An accepted send."""

    id: str = Field(description="The email's id.")
    message_id: str = Field(description="Its Message-ID header, without angle brackets.")
    sent_at: str = Field(description="When it was accepted (RFC 3339 UTC).")
    attachment_filenames: list[str]


class SuppressionQuery(BaseModel):
    """Filters of the suppression list."""

    model_config = ConfigDict(extra="ignore")

    address: str | None = Field(None, description="Only this address.")
    limit: int = Field(50, ge=1, le=200, description="Page size, 1 to 200.")
    continuation_token: str | None = Field(
        None, description="From the previous page, to get the next one."
    )


class SuppressionEntry(BaseModel):
    """An address the workspace no longer sends to."""

    address: str
    cause: str = Field(description="`Bounce` (hard), `Complaint` or `manual`.")
    since: str = Field(description="When the suppressing event happened (RFC 3339 UTC).")
    email_id: str | None = Field(description="The email that bounced or was complained of.")


ENTRY_FIELDS = tuple(SuppressionEntry.model_fields)
MAX_ADDED = 1000


class SuppressionAdd(BaseModel):
    """Addresses to put on the list by hand."""

    model_config = ConfigDict(extra="forbid")

    addresses: list[str] = Field(
        min_length=1, max_length=MAX_ADDED, description="1 to 1,000 email addresses."
    )

    @field_validator("addresses")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        try:
            return [check_address(address, "addresses") for address in value]
        except InvalidSendError as error:
            raise ValueError(str(error).removeprefix("addresses: ")) from None


class SuppressionAdded(BaseModel):
    """The entries of the addresses added, as the list now shows them."""

    suppressions: list[SuppressionEntry]


class SuppressionList(BaseModel):
    """One page of the suppression list, newest first."""

    suppressions: list[SuppressionEntry]
    has_more: bool
    continuation_token: str | None


# Send ---------------------------------------------------------------------------------


def _send_request(form: Form) -> SendRequest:
    if "attachments" in form.fields:
        raise InvalidSendError("attachments: must be files")
    send_at = form.one("send_at", required=False)
    return SendRequest(
        use_case_id=str(form.one("use_case_id")).strip(),
        to_address=check_address(str(form.one("to_address"))),
        subject=check_subject(str(form.one("subject"))),
        body_html=str(form.one("body_html")),
        attachments=check_attachments(form.files),
        send_at=parse_send_at(send_at) if send_at else None,
    )


def _idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    key = key.strip()
    if not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY or not key.isascii() or not key.isprintable():
        raise ApiError(422, "Idempotency-Key: 1 to 255 printable ASCII characters")
    return key


async def send_email(call: Call) -> Response:
    with _answers():
        form = await read_form(call.request.headers, call.request.stream())
        request = _send_request(form)
        key = _idempotency_key(call.request)
        worker: SendWorker | None = getattr(call.request.app.state, "sender", None)
        tiers = TierCache() if worker is None else worker.tiers
        sender = accept.Sender(call.storage, tiers=tiers)
        answer = await call.run(sender.accept, call.workspace_id, request, key)
    if worker is not None:
        worker.wake()
    return json_response(answer, 201)


# Cancel, body, attachments -------------------------------------------------------------


def shape_detail(view: EmailView) -> dict[str, Any]:
    """The email detail answer (as GET /email/{id} gives it) from a folded view."""
    row = view.as_row()
    shaped = {name: row[name] for name in DETAIL_FIELDS}
    shaped["ses_use_case_id"] = row["use_case_id"]
    return shaped


async def cancel_email(call: Call) -> Response:
    email_id = email_key(call.path("email_id"))
    with _answers():
        view = await call.run(accept.Sender(call.storage).cancel, call.workspace_id, email_id)
    return json_response(shape_detail(view))


async def _sent_row(call: Call) -> Any:
    email_id = email_key(call.path("email_id"))
    row = await call.run(outbox.get_row, call.storage.reader, call.workspace_id, email_id)
    if row is None:
        raise not_found("email")
    return row


async def get_body(call: Call) -> Response:
    row = await _sent_row(call)
    body = await call.run(get_blob, call.storage.reader, row["body_sha256"])
    if body is None:
        raise not_found("body")
    headers = {
        "Content-Security-Policy": "sandbox",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }
    return Response(body, media_type="text/html; charset=utf-8", headers=headers)


def _attachment(row: Any, filename: str) -> dict[str, Any]:
    for attachment in row["attachments"]:
        if attachment["filename"] == filename:
            found: dict[str, Any] = attachment
            return found
    raise not_found("attachment")


async def get_attachment(call: Call) -> Response:
    row = await _sent_row(call)
    attachment = _attachment(row, call.path("filename"))
    secret = await call.run(service_secret, call.storage.engine, "downloads")
    url = downloads.signed_url(
        secret, call.workspace_id, row["email_id"], attachment["filename"], utc_now()
    )
    return RedirectResponse(url, status_code=307, headers={"Cache-Control": "no-store"})


async def download_attachment(call: Call) -> Response:
    email_id = email_key(call.path("email_id"))
    filename = call.path("filename")
    secret = await call.run(service_secret, call.storage.engine, "downloads")
    valid = downloads.check_signature(
        secret,
        call.workspace_id,
        email_id,
        filename,
        expires=call.request.query_params.get("expires", ""),
        signature=call.request.query_params.get("signature", ""),
        now=utc_now(),
    )
    if not valid:
        raise ApiError(403, "the download link is not valid or has expired")
    row = await _sent_row(call)
    attachment = _attachment(row, filename)
    content = await call.run(get_blob, call.storage.reader, attachment["sha256"])
    if content is None:
        raise not_found("attachment")
    headers = {
        "Content-Disposition": downloads.content_disposition(attachment["filename"]),
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "sandbox",
        "Cache-Control": "private, no-store",
    }
    return Response(content, media_type=attachment["content_type"], headers=headers)


@dataclass(frozen=True)
class SignedOperation(Operation):
    """An operation reached by a signed URL instead of an API key."""

    async def handle(self, request: Request) -> Response:
        storage: Storage = request.app.state.storage
        workspace_id = str(request.path_params["workspace_id"])
        anonymous = ApiKey("", workspace_id, "signed URL", ())
        return await self.handler(Call(request, storage, workspace_id, anonymous))


# Suppression --------------------------------------------------------------------------


def _suppression_page(storage: Storage, workspace_id: str, q: SuppressionQuery) -> Any:
    query = tokens.fingerprint("suppressions", {"w": workspace_id, "address": q.address})
    after = None
    if q.continuation_token is not None:
        since, address = tokens.read(storage.token_secret, q.continuation_token, query)
        after = (str(since), str(address))
    where = suppression.SuppressionFilter(workspace_id, q.address)
    rows = suppression.list_suppressions(storage.reader, where, after, q.limit + 1)
    has_more = len(rows) > q.limit
    rows = rows[: q.limit]
    token = None
    if has_more:
        token = tokens.issue(storage.token_secret, query, [rows[-1]["since"], rows[-1]["address"]])
    return {
        "suppressions": [{name: row[name] for name in ENTRY_FIELDS} for row in rows],
        "has_more": has_more,
        "continuation_token": token,
    }


async def list_suppressions(call: Call) -> Response:
    page = await call.run(_suppression_page, call.storage, call.workspace_id, call.query)
    return json_response(page)


def _add_suppressions(storage: Storage, workspace_id: str, body: SuppressionAdd) -> Any:
    suppression.add(storage.engine, workspace_id, body.addresses, utc_now())
    where = suppression.SuppressionFilter(workspace_id, addresses=tuple(body.addresses))
    rows = suppression.list_suppressions(storage.engine, where, None, len(body.addresses))
    return {"suppressions": [{name: row[name] for name in ENTRY_FIELDS} for row in rows]}


async def add_suppressions(call: Call) -> Response:
    added = await call.run(_add_suppressions, call.storage, call.workspace_id, call.body)
    return json_response(added, status=201)


async def delete_suppression(call: Call) -> Response:
    address = call.path("address").strip()
    await call.run(suppression.remove, call.storage.engine, call.workspace_id, address, utc_now())
    return Response(status_code=204)


def sending_operations() -> list[Operation]:
    """Every sending endpoint."""
    auth = (401, 403)
    return [
        Operation(
            "POST",
            PREFIX + "/send",
            send_email,
            "Send an email",
            SEND,
            TAG,
            response=SendAnswer,
            status=201,
            errors=(*auth, 404, 409, 413, 422),
            form=SendForm,
            headers=("Idempotency-Key",),
            description="A multipart/form-data body: `use_case_id`, `to_address`, `subject` "
            "(1-998 characters, one line), `body_html` (at most 1 MB), up to five "
            "`attachments` files (5 MB each, unique safe names) and an optional `send_at` "
            "(RFC 3339, in the future, at most 72 hours ahead). Honors `Idempotency-Key` "
            "for 24 hours. A send to a suppressed address answers 201 and records a "
            "`Reject` (reason `suppressed`).",
        ),
        Operation(
            "GET",
            PREFIX + "/suppression",
            list_suppressions,
            "List suppressed addresses, newest first",
            VIEW,
            TAG,
            query=SuppressionQuery,
            response=SuppressionList,
            errors=(*auth, 400, 422),
        ),
        Operation(
            "POST",
            PREFIX + "/suppression",
            add_suppressions,
            "Add addresses to the suppression list by hand",
            ADMIN,
            TAG,
            body=SuppressionAdd,
            response=SuppressionAdded,
            status=201,
            errors=(*auth, 400, 413, 422),
            description="Each address is listed with cause `manual` from now on (an "
            "address a bounce or complaint already suppresses keeps that entry). Adding "
            "an address again changes nothing; `DELETE` takes it off.",
        ),
        Operation(
            "DELETE",
            PREFIX + "/suppression/{address}",
            delete_suppression,
            "Remove an address from the suppression list",
            ADMIN,
            TAG,
            status=204,
            errors=auth,
        ),
        Operation(
            "POST",
            PREFIX + "/{email_id}/cancel",
            cancel_email,
            "Cancel a queued email",
            SEND,
            TAG,
            response=EmailDetail,
            errors=(*auth, 404, 409),
            description="Only an email scheduled with send_at and still queued; "
            "canceling it again answers the same; 409 once it has left.",
        ),
        Operation(
            "GET",
            PREFIX + "/{email_id}/body",
            get_body,
            "The HTML body of an email sent through the API",
            VIEW,
            TAG,
            errors=(*auth, 404),
            description="text/html, sandboxed by Content-Security-Policy.",
        ),
        Operation(
            "GET",
            PREFIX + "/{email_id}/attachment/{filename}",
            get_attachment,
            "Redirect to a short-lived download URL of an attachment",
            VIEW,
            TAG,
            status=307,
            errors=(*auth, 404),
        ),
        SignedOperation(
            "GET",
            PREFIX + "/{email_id}/attachment/{filename}/download",
            download_attachment,
            "Download an attachment (signed URL)",
            "none (the URL's signature)",
            TAG,
            errors=(403, 404),
            description="The URL comes from the attachment's 307; it works for five minutes.",
        ),
    ]
