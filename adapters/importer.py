"""Bulk import of provider exports through the same parsers and idempotent path.

Formats: `ses-jsonl` (SES events, one JSON object a line, as Firehose or S3 write
them), `sendgrid-json` (a JSON array of Event Webhook events), `mailgun-events` (Events
API pages: `{"items": [...]}` objects, one a line or one per file), `generic-jsonl`
(mailledger's own event JSON, one a line). Reports are recorded in batches; importing
the same file again records nothing.

On PostgreSQL several processes parse and record at once (`jobs`: this one and
`jobs - 1` workers), each its own batches, one transaction each: the ledger's version
check keeps two batches that touch one email from both writing it (the loser reloads
the email and drops what the winner recorded), so the result is the same as one
process's.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain
from multiprocessing.pool import AsyncResult
from multiprocessing.util import Finalize
from pathlib import Path
from typing import Any

import orjson

from adapters.ingest import Directory, adopt
from adapters.providers import generic, mailgun, sendgrid, ses
from adapters.providers.base import Endpoint, Parsed, PayloadError
from adapters.sending.provider_ids import link_relay_ids
from adapters.settings import Database
from adapters.storage import Storage, open_storage
from domain.reports import Report

FORMATS = {
    "ses-jsonl": "ses",
    "sendgrid-json": "sendgrid",
    "mailgun-events": "mailgun",
    "generic-jsonl": "generic",
}


class ImportFileError(ValueError):
    """The file or the endpoint cannot be imported as asked."""


class ImportStoppedError(RuntimeError):
    """An import process failed (the database went away, say). What was recorded stays
    recorded; importing the file again records the rest and nothing twice."""


@dataclass
class ImportSummary:
    """What an import did: counts, and the items it could not parse, by line."""

    items: int = 0
    recorded: int = 0
    duplicates: int = 0
    ignored: int = 0
    unparseable: list[tuple[int, str]] = field(default_factory=list)

    def add(self, other: ImportSummary) -> None:
        """Count another part of the file in."""
        self.items += other.items
        self.recorded += other.recorded
        self.duplicates += other.duplicates
        self.ignored += other.ignored
        self.unparseable.extend(other.unparseable)


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    with path.open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            if line.strip():
                yield number, line


def _items(path: Path, fmt: str) -> Iterator[tuple[int, bytes]]:
    """(line or item number, one parseable unit) of the file."""
    if fmt in ("ses-jsonl", "generic-jsonl"):
        yield from _lines(path)
        return
    if fmt == "sendgrid-json":
        try:
            events = orjson.loads(path.read_bytes())
        except orjson.JSONDecodeError as error:
            raise ImportFileError(f"{path}: not a JSON array: {error}") from None
        if not isinstance(events, list):
            raise ImportFileError(f"{path}: expected a JSON array of events")
        for number, event in enumerate(events, start=1):
            yield number, orjson.dumps([event])
        return
    number = 0
    for line_number, line in _lines(path):
        try:
            page = orjson.loads(line)
        except orjson.JSONDecodeError:
            yield line_number, line  # reported as unparseable by the parser
            continue
        items = page.get("items") if isinstance(page, dict) else None
        for item in items if isinstance(items, list) else [page]:
            number += 1
            yield number, orjson.dumps({"event-data": item})


def _parser(fmt: str) -> Callable[[bytes, Endpoint], Parsed]:
    if fmt == "ses-jsonl":
        return ses.parse_event
    module: Any = {"sendgrid-json": sendgrid, "mailgun-events": mailgun, "generic-jsonl": generic}[
        fmt
    ]
    return lambda body, endpoint: module.parse(body, endpoint, None)


Item = tuple[int, bytes]  # (line or item number, one parseable unit)

# Items imported in this process before worker processes are started for the rest. A
# worker takes about a second to start (a new interpreter, its imports, its
# connections), during which this process goes on importing, so a bigger file loses
# nothing to the start; a smaller one is done before a worker could help, and does not
# wait for one to start and stop.
ALONE_UP_TO = 5_000


def default_jobs(database: Database) -> int:
    """Processes an import uses unless told: one per core on PostgreSQL (at most 8);
    one on SQLite, which takes one writer at a time."""
    return 1 if database.kind == "sqlite" else max(1, min(os.cpu_count() or 1, 8))


class _Importer:
    """Parses items and records their reports, one batch of items at a time."""

    def __init__(self, storage: Storage, endpoint: Endpoint, fmt: str) -> None:
        self.storage, self.endpoint, self.fmt = storage, endpoint, fmt
        self.parse = _parser(fmt)
        self.directory = Directory(seconds=3600)

    def run(self, items: Sequence[Item]) -> ImportSummary:
        """Parse the items and record what they report in one transaction."""
        summary = ImportSummary(items=len(items))
        pending: list[Report] = []
        # Its lookups (setups by domain, relay message ids) are single reads: on the
        # autocommit engine, one round trip each, where the writing engine's
        # transaction adds a BEGIN and a ROLLBACK.
        engine = self.storage.reader
        for number, unit in items:
            try:
                parsed = self.parse(unit, self.endpoint)
            except PayloadError as error:
                summary.unparseable.append((number, str(error)))
                continue
            summary.ignored += len(parsed.ignored)
            pending.extend(parsed.reports)
        if pending:
            adopted = adopt(self.directory, engine, self.endpoint, pending)
            outcomes = self.storage.ledger.record(link_relay_ids(engine, adopted))
            summary.recorded = sum(1 for o in outcomes if o.recorded)
            summary.duplicates = len(outcomes) - summary.recorded
        return summary


def _chunks(items: Iterable[Item], size: int) -> Iterator[list[Item]]:
    chunk: list[Item] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def import_file(
    storage: Storage,
    endpoint: Endpoint,
    path: Path,
    fmt: str,
    *,
    progress: Callable[[int], object] | None = None,
    batch: int = 1000,
    jobs: int = 1,
    alone: int = ALONE_UP_TO,
) -> ImportSummary:
    """Parse every item of the file and record its reports, `batch` items at a time:
    the first `alone` items in this process, the rest (if any) in this one and `jobs -
    1` worker processes (more than one process needs PostgreSQL)."""
    if fmt not in FORMATS:
        raise ImportFileError(f"unknown format {fmt!r} (known: {', '.join(FORMATS)})")
    if FORMATS[fmt] != endpoint.provider:
        raise ImportFileError(
            f"format {fmt} is for {FORMATS[fmt]} endpoints, not {endpoint.provider}"
        )
    if jobs > 1 and storage.database.kind == "sqlite":
        raise ImportFileError(
            f"{jobs} import processes need PostgreSQL; SQLite takes one writer at a time"
        )
    chunks = _chunks(_items(path, fmt), batch)
    summary = ImportSummary()
    importer = _Importer(storage, endpoint, fmt)
    for chunk in chunks:
        summary.add(importer.run(chunk))
        if progress is not None:
            progress(len(chunk))
        if jobs > 1 and summary.items >= alone:
            # The rest of the file, if there is any, goes to the worker processes.
            following = next(chunks, None)
            if following is not None:
                rest = chain([following], chunks)
                summary.add(_in_processes(importer, rest, jobs=jobs, progress=progress))
            break
    summary.unparseable.sort()
    return summary


# The importer of a worker process (see `_in_processes`), or why it could not be made.
_worker: _Importer | str | None = None


def _open_worker(database: Database, endpoint: Endpoint, fmt: str) -> None:
    global _worker  # noqa: PLW0603 (one per process, made by the pool's initializer)
    try:
        storage = open_storage(database)
    except Exception as error:
        # Said by the first batch this process is given: a pool whose initializer
        # raises starts a new process in its place, forever.
        _worker = f"{type(error).__name__}: {error}"
        return
    _worker = _Importer(storage, endpoint, fmt)
    # Closed when the pool lets the process end, so its connections end cleanly.
    Finalize(None, storage.close, exitpriority=10)


def _run_worker(chunk: list[Item]) -> ImportSummary:
    if not isinstance(_worker, _Importer):
        raise ImportStoppedError(f"a worker process could not open the database: {_worker}")
    try:
        return _worker.run(chunk)
    except Exception as error:
        # Raised again in the parent, which may not be able to rebuild every error
        # type from a pickle: a plain message travels.
        first = chunk[0][0]
        raise ImportStoppedError(f"at item {first}: {type(error).__name__}: {error}") from None


def _in_processes(
    importer: _Importer,
    chunks: Iterable[list[Item]],
    *,
    jobs: int,
    progress: Callable[[int], object] | None,
) -> ImportSummary:
    # `jobs - 1` worker processes and this one import the batches: a worker has two
    # batches handed to it at any time (so it never waits for this process to finish
    # one of its own), and this process records the batches no worker has room for.
    # It holds no more of the file than the batches in flight.
    summary = ImportSummary()
    storage, workers = importer.storage, jobs - 1
    context = multiprocessing.get_context("spawn")
    initargs = (storage.database, importer.endpoint, importer.fmt)
    with context.Pool(workers, initializer=_open_worker, initargs=initargs) as pool:
        flight: deque[tuple[int, AsyncResult[ImportSummary]]] = deque()

        def collect(*, wait: bool) -> None:
            while flight and (wait or flight[0][1].ready()):
                size, result = flight.popleft()
                summary.add(result.get())
                if progress is not None:
                    progress(size)

        for chunk in chunks:
            collect(wait=False)
            if len(flight) < 2 * workers:
                flight.append((len(chunk), pool.apply_async(_run_worker, (chunk,))))
                continue
            summary.add(importer.run(chunk))
            if progress is not None:
                progress(len(chunk))
        collect(wait=True)
        pool.close()
        pool.join()
    return summary
