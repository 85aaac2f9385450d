"""Ingest: reports recorded through the application, as `EmailLedger.record` takes them.

The stream: batches of 1,000 reports, about 5 events per email, half of the stream's
events for emails that already exist (seeded first, by another process, so they are
not in the recording process's cache), and about 10% redeliveries of reports the
stream already holds.

It is recorded twice, into two databases:

- by one process (`ingest_one_process_events_per_s`);
- by a process per core (`ingest_events_per_s`), each recording the reports of its
  share of the emails (by email id), in batches of 1,000 of its own. That is how a
  bulk load uses the machine: every process runs the same `record` path, and each
  keeps its own emails in its cache, so the ledger's version check never has to make
  one process reload what another wrote. (Batches of one stream dealt out to processes
  in turn would touch the same emails from both at once; see docs/benchmarks.md.)
"""

from __future__ import annotations

import multiprocessing
import os
import random
import time
import uuid
from collections.abc import Sequence
from multiprocessing.synchronize import Barrier
from typing import Any

from adapters.settings import parse_database_url
from adapters.storage import open_storage
from domain.reports import EventType, Report

WORKSPACE = "bench-workspace"
BATCH = 1000

KINDS = [
    EventType.DELIVERY,
    EventType.OPEN,
    EventType.CLICK,
    EventType.DELIVERY_DELAY,
    EventType.BOUNCE,
]
DETAIL: dict[EventType, dict[str, Any]] = {
    EventType.DELIVERY: {"smtp_response": "250 2.0.0 OK"},
    EventType.OPEN: {"ip": "192.0.2.1", "user_agent": "Mozilla/5.0", "machine_open": False},
    EventType.CLICK: {"link": "https://shop.example/offer", "ip": "192.0.2.1"},
    EventType.DELIVERY_DELAY: {"delay_type": "MailboxFull"},
    EventType.BOUNCE: {"bounce_type": "Transient", "bounce_subtype": "MailboxFull"},
}


def make_report(email: int, n: int) -> Report:
    """The `n`th report of email number `email`."""
    kind = KINDS[n % len(KINDS)]
    return Report(
        workspace_id=WORKSPACE,
        event_type=kind,
        provider="ses",
        message_id=f"msg-{email:08d}",
        to_address=f"recipient-{email:08d}@example.com",
        event_at=f"2025-03-14T19:{n // 60 % 60:02d}:{n % 60:02d}.{email % 1_000_000:06d}Z",
        transport_key=str(uuid.UUID(int=email * 64 + n)),
        detail=DETAIL[kind],
    )


def workload(events: int) -> tuple[list[Report], list[Report]]:
    """(seed, stream): seed creates the pre-existing emails; stream is what is timed.

    About 5 events per email; half of the stream's events are for seeded emails;
    about 10% of the stream are redeliveries of reports it already holds. The same
    `events` always gives the same lists (each process makes its own).
    """
    rng = random.Random(42)
    emails = max(events // 5, 2)
    seed = [make_report(e, 0) for e in range(emails // 2)]
    distinct = [make_report(e, n) for e in range(emails) for n in range(1, 6)]
    stream = distinct[: int(events * 0.9)]
    stream += rng.sample(stream, events - len(stream))
    rng.shuffle(stream)
    return seed, stream


def seed(url: str, events: int) -> None:
    """Record the workload's seed (the emails that exist before the stream)."""
    store = open_storage(parse_database_url(url))
    try:
        first, _ = workload(events)
        for start in range(0, len(first), BATCH):
            store.ledger.record(first[start : start + BATCH])
    finally:
        store.close()


def _record(url: str, reports: Sequence[Report], start: Barrier | None) -> tuple[int, float]:
    """Record the reports in batches with a cold cache: (events recorded, the moment
    the last batch was committed)."""
    store = open_storage(parse_database_url(url))
    try:
        if start is not None:
            start.wait()  # every process has opened the store: the clock starts
        recorded = 0
        for begin in range(0, len(reports), BATCH):
            outcomes = store.ledger.record(reports[begin : begin + BATCH])
            recorded += sum(1 for o in outcomes if o.recorded)
        return recorded, time.perf_counter()
    finally:
        store.close()


def one_process(url: str, events: int) -> tuple[float, float]:
    """(recorded events per second, reports per second), one process recording."""
    _, stream = workload(events)
    started = time.perf_counter()
    recorded, finished = _record(url, stream, None)
    return recorded / (finished - started), len(stream) / (finished - started)


# The barrier a worker process waits at before it starts recording (set by the pool's
# initializer: a barrier cannot travel as an argument).
_start: Barrier | None = None


def _keep(start: Barrier) -> None:
    global _start  # noqa: PLW0603 (one per worker process)
    _start = start


def _share(url: str, events: int, part: int, parts: int) -> tuple[int, float]:
    _, stream = workload(events)
    mine = [report for report in stream if report.target_email_id.int % parts == part]
    return _record(url, mine, _start)


def in_processes(url: str, events: int, processes: int | None = None) -> float:
    """Recorded events per second, a process per core each recording its share."""
    parts = processes or os.cpu_count() or 1
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(parts + 1)
    with context.Pool(parts, initializer=_keep, initargs=(start,)) as pool:
        results = [pool.apply_async(_share, (url, events, p, parts)) for p in range(parts)]
        start.wait()
        started = time.perf_counter()
        done = [result.get() for result in results]
    recorded = sum(count for count, _ in done)
    return recorded / (max(finished for _, finished in done) - started)
