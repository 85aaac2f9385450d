"""`POST /hooks/{provider}/{endpoint_id}`: provider webhooks in.

Status codes carry meaning to providers: 2xx only once the events are durable (a
duplicate is 2xx too), 401 for a signature that does not verify, 400 for a verified
body that cannot be parsed (kept as a dead letter), 403 for a request meant for
another provider or topic, 404 for an unknown endpoint, 413 for a body over the
limit, 503 when the database (or an SNS certificate) cannot be had: the provider
retries. Every request that names a known endpoint is kept as a receipt.
"""

from __future__ import annotations

import asyncio
import re
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from adapters import receipts
from adapters.http.api import ApiError, json_response, not_found, read_body
from adapters.ingest import Directory, GroupCommitter, Job, adopt
from adapters.providers import handle
from adapters.providers.base import (
    AlreadyReceivedError,
    CertificateSource,
    CertificateUnavailableError,
    ForbiddenSourceError,
    Parsed,
    PayloadError,
    SignatureError,
    VerifyContext,
)
from adapters.receipts import Outcome, Receipt
from adapters.storage import Storage
from domain.reports import Report, format_time, utc_now

MAX_HOOK_BODY = 10 * 1024 * 1024
SUBSCRIBE_URL = re.compile(r"https://sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/")


@dataclass
class PendingKeys:
    """A `ReplayGuard` for one request: a key counts as used only once the request's
    events are committed, so a request that fails (5xx) can be retried with it."""

    engine: Engine
    keys: list[str] = field(default_factory=list)

    def first_use(self, key: str) -> bool:
        if key in self.keys or receipts.was_used(self.engine, key):
            return False
        self.keys.append(key)
        return True


@dataclass(frozen=True)
class Hooks:
    """What the webhook receiver needs besides the storage."""

    committer: GroupCommitter
    certificates: CertificateSource
    confirm_subscription: Callable[[str], None]
    directory: Directory = field(default_factory=Directory)


def confirm_over_https(url: str) -> None:
    """Confirm an SNS subscription by fetching its SubscribeURL (already checked to be
    on an SNS host)."""
    if not SUBSCRIBE_URL.match(url):
        raise ValueError(f"not an SNS SubscribeURL: {url}")
    with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310 (https, SNS host)
        answer.read(65536)


async def receive_hook(request: Request) -> Response:
    """Verify, parse and record one provider webhook request."""
    storage: Storage = request.app.state.storage
    hooks: Hooks = request.app.state.hooks
    provider = str(request.path_params["provider"])
    try:
        endpoint_id = str(uuid.UUID(str(request.path_params["endpoint_id"])))
    except ValueError:
        raise not_found("inbound endpoint") from None
    known, endpoint = hooks.directory.fresh(("endpoint", endpoint_id))
    if not known:
        endpoint = await run_in_threadpool(hooks.directory.endpoint, storage.reader, endpoint_id)
    if endpoint is None:
        raise not_found("inbound endpoint")
    body = await read_body(request, MAX_HOOK_BODY)
    headers = dict(request.headers)
    now = utc_now()
    receipt_id = str(uuid.uuid4())
    guard = PendingKeys(storage.reader)
    context = VerifyContext(now, guard, hooks.certificates)

    def receipt(verified: bool) -> Receipt:
        return Receipt(
            receipt_id,
            endpoint.id,
            endpoint.workspace_id,
            endpoint.provider,
            format_time(now),
            receipts.kept_headers(headers),
            body,
            verified,
        )

    async def refuse(status: int, outcome: str, message: str, verified: bool) -> Response:
        done = Outcome(receipt_id, format_time(now), outcome, status, message=message)
        job = Job(receipt(verified), [], outcome=done)
        await asyncio.wrap_future(hooks.committer.submit(job))
        raise ApiError(status, message)

    def interpret() -> tuple[Parsed, list[Report]]:
        parsed = handle(provider, body, headers, endpoint, context, receipt_id)
        return parsed, adopt(hooks.directory, storage.reader, endpoint, parsed.reports)

    try:
        parsed, reports = await run_in_threadpool(interpret)
    except AlreadyReceivedError as error:
        done = Outcome(receipt_id, format_time(now), "duplicate", 200, message=str(error))
        await asyncio.wrap_future(hooks.committer.submit(Job(receipt(True), [], outcome=done)))
        return json_response(_tally(0, 0, 0, 0))
    except ForbiddenSourceError as error:
        return await refuse(403, "forbidden", str(error), verified=False)
    except SignatureError as error:
        return await refuse(401, "refused", f"signature: {error}", verified=False)
    except CertificateUnavailableError as error:
        raise ApiError(503, f"the signing certificate is unavailable: {error}") from None
    except PayloadError as error:
        return await refuse(400, "dead_letter", str(error), verified=True)

    if parsed.subscribe_url is not None:
        if not SUBSCRIBE_URL.match(parsed.subscribe_url):
            return await refuse(400, "dead_letter", "SubscribeURL is not on SNS", verified=True)
        try:
            await run_in_threadpool(hooks.confirm_subscription, parsed.subscribe_url)
        except OSError as error:  # URLError, timeouts, refused connections
            # Kept, and 503: SNS sends the confirmation again.
            reason = f"the subscription could not be confirmed: {error}"
            return await refuse(503, "unconfirmed", reason, verified=True)

    job = Job(receipt(True), reports, ignored=len(parsed.ignored), used_keys=guard.keys)
    tally = await asyncio.wrap_future(hooks.committer.submit(job))
    return json_response(_tally(len(reports), tally.recorded, tally.duplicates, tally.ignored))


def _tally(received: int, recorded: int, duplicates: int, ignored: int) -> dict[str, int]:
    return {
        "received": received,
        "recorded": recorded,
        "duplicates": duplicates,
        "ignored": ignored,
    }
