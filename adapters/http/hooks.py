"""`POST /hooks/{provider}/{endpoint_id}`: provider webhooks in.

Status codes carry meaning to providers: 2xx only once the events are durable (a
duplicate is 2xx too), 401 for a signature that does not verify, 400 for a verified
body that cannot be parsed (kept as a dead letter), 403 for a request meant for
another provider or topic, 404 for an unknown endpoint, 413 for a body over the
limit, 503 when the database (or an SNS certificate) cannot be had: the provider
retries. Every request that names a known endpoint is kept as a receipt.
"""

from __future__ import annotations

import re
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

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
    Endpoint,
    ForbiddenSourceError,
    NeedsIOError,
    Parsed,
    PayloadError,
    SignatureError,
    VerifyContext,
)
from adapters.receipts import Outcome, Receipt
from adapters.storage import Storage
from domain.reports import Report, format_time, utc_now

MAX_HOOK_BODY = 10 * 1024 * 1024
# A body up to this size is verified and parsed on the event loop when that needs
# nothing but memory: a hop to a worker thread and back costs more CPU (about 0.2 ms,
# mostly handing the GIL over) than the work itself. Bigger bodies, and requests that
# need the database or the network, are interpreted in a worker thread.
INLINE_BODY = 16 * 1024
SUBSCRIBE_URL = re.compile(r"https://sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/")


@dataclass
class PendingKeys:
    """A `ReplayGuard` for one request: a key counts as used only once the request's
    events are committed, so a request that fails (5xx) can be retried with it."""

    engine: Engine
    offline: bool = False  # NeedsIOError instead of asking the database
    keys: list[str] = field(default_factory=list)

    def first_use(self, key: str) -> bool:
        if key in self.keys:
            return False
        if self.offline:
            raise NeedsIOError("a single-use key is looked up in the database")
        if receipts.was_used(self.engine, key):
            return False
        self.keys.append(key)
        return True


class RememberedCertificates:
    """A `CertificateSource` that keeps what its source gave, so that a request signed
    with a certificate seen before can be verified from memory (`offline`)."""

    def __init__(self, source: CertificateSource) -> None:
        self._source = source
        self._known: dict[str, bytes] = {}

    def pem_for(self, url: str) -> bytes:
        pem = self._source.pem_for(url)
        self._known[url] = pem
        return pem

    def offline(self) -> CertificateSource:
        """A source answering from memory only (NeedsIOError for any other URL)."""
        return _Offline(self._known)


@dataclass(frozen=True)
class _Offline:
    known: dict[str, bytes]

    def pem_for(self, url: str) -> bytes:
        pem = self.known.get(url)
        if pem is None:
            raise NeedsIOError(f"the certificate {url} is not in memory")
        return pem


@dataclass(frozen=True)
class Hooks:
    """What the webhook receiver needs besides the storage."""

    committer: GroupCommitter
    certificates: RememberedCertificates
    confirm_subscription: Callable[[str], None]
    directory: Directory = field(default_factory=Directory)


def confirm_over_https(url: str) -> None:
    """Confirm an SNS subscription by fetching its SubscribeURL (already checked to be
    on an SNS host)."""
    if not SUBSCRIBE_URL.match(url):
        raise ValueError(f"not an SNS SubscribeURL: {url}")
    with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310 (https, SNS host)
        answer.read(65536)


@dataclass(frozen=True)
class HookRequest:
    """One webhook request to a known endpoint, as it is kept and interpreted."""

    storage: Storage
    hooks: Hooks
    provider: str
    endpoint: Endpoint
    body: bytes
    headers: dict[str, str]
    now: datetime = field(default_factory=utc_now)
    receipt_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def receipt(self, verified: bool) -> Receipt:
        """The request as it is kept."""
        return Receipt(
            self.receipt_id,
            self.endpoint.id,
            self.endpoint.workspace_id,
            self.endpoint.provider,
            format_time(self.now),
            receipts.kept_headers(self.headers),
            self.body,
            verified,
        )

    async def keep(self, verified: bool, outcome: str, status: int, message: str) -> None:
        """Keep the receipt of a request that records nothing, with its outcome."""
        done = Outcome(self.receipt_id, format_time(self.now), outcome, status, message=message)
        job = Job(self.receipt(verified), [], outcome=done)
        await self.hooks.committer.commit(job)

    async def refuse(self, status: int, outcome: str, message: str, verified: bool) -> Response:
        """Keep the receipt, then answer `status`."""
        await self.keep(verified, outcome, status, message)
        raise ApiError(status, message)

    async def interpreted(self) -> tuple[Parsed, list[Report], PendingKeys]:
        """Verified, parsed and filed: on the event loop when memory is enough."""
        if len(self.body) <= INLINE_BODY:
            try:
                return self.interpret(offline=True)
            except NeedsIOError:
                pass
        return await run_in_threadpool(self.interpret, False)

    def interpret(self, offline: bool) -> tuple[Parsed, list[Report], PendingKeys]:
        """Verified, parsed and filed; `offline`, NeedsIOError rather than any I/O."""
        reader, hooks = self.storage.reader, self.hooks
        guard = PendingKeys(reader, offline)
        certificates = hooks.certificates.offline() if offline else hooks.certificates
        context = VerifyContext(self.now, guard, certificates)
        parsed = handle(
            self.provider, self.body, self.headers, self.endpoint, context, self.receipt_id
        )
        reports = adopt(hooks.directory, reader, self.endpoint, parsed.reports, offline=offline)
        return parsed, reports, guard


async def receive_hook(request: Request) -> Response:
    """Verify, parse and record one provider webhook request."""
    storage: Storage = request.app.state.storage
    hooks: Hooks = request.app.state.hooks
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
    hook = HookRequest(
        storage, hooks, str(request.path_params["provider"]), endpoint, body, dict(request.headers)
    )
    try:
        parsed, reports, guard = await hook.interpreted()
    except AlreadyReceivedError as error:
        await hook.keep(True, "duplicate", 200, str(error))
        return json_response(_tally(0, 0, 0, 0))
    except ForbiddenSourceError as error:
        return await hook.refuse(403, "forbidden", str(error), verified=False)
    except SignatureError as error:
        return await hook.refuse(401, "refused", f"signature: {error}", verified=False)
    except CertificateUnavailableError as error:
        raise ApiError(503, f"the signing certificate is unavailable: {error}") from None
    except PayloadError as error:
        return await hook.refuse(400, "dead_letter", str(error), verified=True)

    if parsed.subscribe_url is not None:
        if not SUBSCRIBE_URL.match(parsed.subscribe_url):
            return await hook.refuse(400, "dead_letter", "SubscribeURL is not on SNS", True)
        try:
            await run_in_threadpool(hooks.confirm_subscription, parsed.subscribe_url)
        except OSError as error:  # URLError, timeouts, refused connections
            # Kept, and 503: SNS sends the confirmation again.
            reason = f"the subscription could not be confirmed: {error}"
            return await hook.refuse(503, "unconfirmed", reason, verified=True)

    job = Job(hook.receipt(True), reports, ignored=len(parsed.ignored), used_keys=guard.keys)
    tally = await hooks.committer.commit(job)
    return json_response(_tally(len(reports), tally.recorded, tally.duplicates, tally.ignored))


def _tally(received: int, recorded: int, duplicates: int, ignored: int) -> dict[str, int]:
    return {
        "received": received,
        "recorded": recorded,
        "duplicates": duplicates,
        "ignored": ignored,
    }
