"""From verified webhook bodies to committed events: adoption, group commit, replay.

Concurrent requests hand their receipts and reports to one `GroupCommitter`, which
stores the receipts of all waiting requests, records every report of the group in one
ledger transaction, then stores each request's outcome; each request hears back only
after that. So a provider that posts one event per request (SNS) costs a transaction per
group, not per request, and nothing is acknowledged before it is durable.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from adapters import admin_store, receipts
from adapters.providers import PROVIDERS
from adapters.providers.base import Endpoint, NeedsIOError, PayloadError
from adapters.receipts import Outcome, Receipt
from adapters.sending.provider_ids import link_relay_ids
from adapters.storage import Storage
from domain.reports import Report, format_time, utc_now

log = logging.getLogger(__name__)


def as_endpoint(stored: admin_store.InboundEndpoint) -> Endpoint:
    """The provider layer's view of a stored inbound endpoint."""
    return Endpoint(stored.id, stored.workspace_id, stored.provider, stored.setup_id, stored.config)


class Directory:
    """Inbound endpoints and setups by domain, each kept a few seconds: every webhook
    request needs them, they change rarely, and a request that needs no database
    round trip of its own leaves the connections to the group commit."""

    def __init__(self, seconds: float = 5.0) -> None:
        self._seconds = seconds
        self._found: dict[tuple[str, ...], tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def fresh(self, key: tuple[str, ...]) -> tuple[bool, Any]:
        """(True, value) while a looked-up value is fresh; no database involved."""
        with self._lock:
            hit = self._found.get(key)
        if hit is not None and time.monotonic() - hit[0] < self._seconds:
            return True, hit[1]
        return False, None

    def _cached(self, key: tuple[str, ...], load: Callable[[], Any], offline: bool) -> Any:
        known, value = self.fresh(key)
        if known:
            return value
        if offline:
            raise NeedsIOError(f"{key[0]} not looked up lately")
        now = time.monotonic()
        value = load()
        with self._lock:
            if len(self._found) > 10_000:
                self._found.clear()
            self._found[key] = (now, value)
        return value

    def endpoint(self, engine: Engine, endpoint_id: str) -> Endpoint | None:
        """The inbound endpoint of this id, if there is one."""

        def load() -> Endpoint | None:
            stored = admin_store.get_endpoint(engine, endpoint_id)
            return None if stored is None else as_endpoint(stored)

        found: Endpoint | None = self._cached(("endpoint", endpoint_id), load, offline=False)
        return found

    def setup_for_domain(
        self, engine: Engine, workspace_id: str, domain: str, *, offline: bool = False
    ) -> str | None:
        """The id of the workspace's setup for a sending domain, if it has one;
        `offline`, only from memory (NeedsIOError when it would take a query)."""

        def load() -> str | None:
            setup = admin_store.find_setup_by_domain(engine, workspace_id, domain)
            return None if setup is None else setup.id

        found: str | None = self._cached(("setup", workspace_id, domain), load, offline)
        return found


def adopt(
    directory: Directory,
    engine: Engine,
    endpoint: Endpoint,
    reports: Sequence[Report],
    *,
    offline: bool = False,
) -> list[Report]:
    """File reports under a setup (SPEC 4.3): the endpoint's, else the workspace's setup
    for the sender's domain, else none. `offline`: NeedsIOError rather than a query."""
    if endpoint.setup_id is not None:
        return [r if r.setup_id else replace(r, setup_id=endpoint.setup_id) for r in reports]

    def setup_for(report: Report) -> str | None:
        domain = (report.from_address or "").rpartition("@")[2].lower()
        if report.setup_id is not None or not domain:
            return report.setup_id
        return directory.setup_for_domain(engine, endpoint.workspace_id, domain, offline=offline)

    return [
        r if (setup := setup_for(r)) == r.setup_id else replace(r, setup_id=setup) for r in reports
    ]


@dataclass(frozen=True)
class Tally:
    """What became of one request's reports."""

    recorded: int
    duplicates: int
    ignored: int


@dataclass
class Job:
    """One request waiting for the group commit."""

    receipt: Receipt
    reports: list[Report]
    ignored: int = 0
    outcome: Outcome | None = None  # set when the request records nothing (401, 400)
    used_keys: list[str] = field(default_factory=list)


def _outcome_of(job: Job, recorded: int, duplicates: int, now: str, replay: bool) -> Outcome:
    if recorded:
        name = "recorded"
    elif duplicates:
        name = "duplicate"
    else:
        name = "ignored"
    return Outcome(job.receipt.id, now, name, 200, recorded, duplicates, job.ignored, None, replay)


def commit(storage: Storage, jobs: Sequence[Job], *, replay: bool = False) -> list[Tally]:
    """Store the jobs' receipts, record all their reports in one transaction, store
    their outcomes. Raises (and stores no outcome) when the database fails."""
    new = [] if replay else [job.receipt for job in jobs]
    # One query for the whole group finds the emails that relays' own ids stand for.
    everything = link_relay_ids(storage.reader, [r for job in jobs for r in job.reports])
    if new:
        # Unflushed only when the ledger's flushed commit follows and covers it.
        receipts.save(storage.engine, new, [], flush=not everything)
    results = storage.ledger.record(everything) if everything else []
    now = format_time(utc_now())
    tallies, outcomes, start = [], [], 0
    for job in jobs:
        mine = results[start : start + len(job.reports)]
        start += len(job.reports)
        recorded = sum(1 for r in mine if r.recorded)
        tallies.append(Tally(recorded, len(mine) - recorded, job.ignored))
        outcomes.append(
            job.outcome or _outcome_of(job, recorded, len(mine) - recorded, now, replay)
        )
    # When the ledger committed (and flushed), an outcome lost in a crash leaves its
    # receipt without one, which replay finds; otherwise this commit is the flush.
    receipts.save(storage.engine, [], outcomes, flush=not any(t.recorded for t in tallies))
    receipts.mark_used(storage.engine, [k for job in jobs for k in job.used_keys], now)
    return tallies


class GroupCommitter:
    """Commits the jobs of concurrent requests together, one group at a time.

    It lives on the event loop: requests hand in jobs there, and each group goes to a
    worker thread in one hop, so a request costs no thread handoff of its own (a hop
    per request cost more CPU than the rest of answering it).
    """

    def __init__(self, storage: Storage, max_reports: int = 5000) -> None:
        self._storage = storage
        self._max_reports = max_reports
        self._waiting: list[tuple[Job, asyncio.Future[Tally]]] = []
        self._committing: asyncio.Task[None] | None = None

    async def commit(self, job: Job) -> Tally:
        """What became of the job's reports, once the job is committed (raises what the
        database raised when it could not be)."""
        done: asyncio.Future[Tally] = asyncio.get_running_loop().create_future()
        self._waiting.append((job, done))
        if self._committing is None:
            self._committing = asyncio.create_task(self._commit_waiting())
        return await done

    async def drain(self) -> None:
        """Wait until the jobs already handed in are committed."""
        if self._committing is not None:
            await asyncio.shield(self._committing)

    async def _commit_waiting(self) -> None:
        try:
            while self._waiting:
                await self._commit_group(self._next_group())
        finally:
            self._committing = None

    def _next_group(self) -> list[tuple[Job, asyncio.Future[Tally]]]:
        size, taken = 0, 0
        for job, _ in self._waiting:
            if taken and size + len(job.reports) > self._max_reports:
                break
            size, taken = size + len(job.reports), taken + 1
        group, self._waiting = self._waiting[:taken], self._waiting[taken:]
        return group

    async def _commit_group(self, group: list[tuple[Job, asyncio.Future[Tally]]]) -> None:
        jobs = [job for job, _ in group]
        try:
            tallies = await run_in_threadpool(commit, self._storage, jobs)
        except Exception as error:  # every request of the group answers 5xx and is retried
            log.warning("group commit of %d requests failed: %s", len(group), error)
            for _, done in group:
                if not done.done():
                    done.set_exception(error)
            return
        for (_, done), tally in zip(group, tallies, strict=True):
            if not done.done():  # a request whose client went away is not waiting
                done.set_result(tally)


@dataclass
class ReplaySummary:
    """What a replay did."""

    receipts: int = 0
    recorded: int = 0
    duplicates: int = 0
    dead_letters: int = 0


def replay(
    storage: Storage,
    stored: Iterable[Receipt],
    progress: Callable[[int], object] | None = None,
    batch: int = 200,
) -> ReplaySummary:
    """Re-parse stored receipts with today's parsers and record them through the same
    idempotent path; verified receipts only (their signatures were checked on arrival)."""
    summary = ReplaySummary()
    directory = Directory(seconds=3600)
    jobs: list[Job] = []
    for receipt in stored:
        endpoint = directory.endpoint(storage.engine, receipt.endpoint_id)
        if endpoint is None:
            continue
        jobs.append(_replay_job(directory, storage.engine, endpoint, receipt, summary))
        if len(jobs) >= batch:
            _replay_batch(storage, jobs, summary, progress)
            jobs = []
    if jobs:
        _replay_batch(storage, jobs, summary, progress)
    return summary


def _replay_job(
    directory: Directory,
    engine: Engine,
    endpoint: Endpoint,
    receipt: Receipt,
    summary: ReplaySummary,
) -> Job:
    now = format_time(utc_now())
    try:
        parsed = PROVIDERS[endpoint.provider].parse(receipt.body, endpoint, receipt.id)
    except PayloadError as error:
        summary.dead_letters += 1
        outcome = Outcome(receipt.id, now, "dead_letter", 400, message=str(error), replay=True)
        return Job(receipt, [], outcome=outcome)
    reports = adopt(directory, engine, endpoint, parsed.reports)
    return Job(receipt, reports, ignored=len(parsed.ignored))


def _replay_batch(
    storage: Storage,
    jobs: list[Job],
    summary: ReplaySummary,
    progress: Callable[[int], object] | None,
) -> None:
    for tally in commit(storage, jobs, replay=True):
        summary.recorded += tally.recorded
        summary.duplicates += tally.duplicates
    summary.receipts += len(jobs)
    if progress is not None:
        progress(len(jobs))
