"""Bulk import of provider exports through the same parsers and idempotent path.

Formats: `ses-jsonl` (SES events, one JSON object a line, as Firehose or S3 write
them), `sendgrid-json` (a JSON array of Event Webhook events), `mailgun-events` (Events
API pages: `{"items": [...]}` objects, one a line or one per file), `generic-jsonl`
(mailledger's own event JSON, one a line). Reports are recorded in batches; importing
the same file again records nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from adapters.ingest import Directory, adopt
from adapters.providers import generic, mailgun, sendgrid, ses
from adapters.providers.base import Endpoint, Parsed, PayloadError
from adapters.sending.provider_ids import link_relay_ids
from adapters.storage import Storage
from domain.reports import Report

FORMATS = {
    "ses-jsonl": "ses",
    "sendgrid-json": "sendgrid",
    "mailgun-events": "mailgun",
    "generic-jsonl": "generic",
}


class ImportFileError(ValueError):
    """The file or the endpoint cannot be imported as asked."""


@dataclass
class ImportSummary:
    """What an import did: counts, and the items it could not parse, by line."""

    items: int = 0
    recorded: int = 0
    duplicates: int = 0
    ignored: int = 0
    unparseable: list[tuple[int, str]] = field(default_factory=list)


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


def import_file(
    storage: Storage,
    endpoint: Endpoint,
    path: Path,
    fmt: str,
    *,
    progress: Callable[[int], object] | None = None,
    batch: int = 1000,
) -> ImportSummary:
    """Parse every item of the file and record its reports, `batch` at a time."""
    if fmt not in FORMATS:
        raise ImportFileError(f"unknown format {fmt!r} (known: {', '.join(FORMATS)})")
    if FORMATS[fmt] != endpoint.provider:
        raise ImportFileError(
            f"format {fmt} is for {FORMATS[fmt]} endpoints, not {endpoint.provider}"
        )
    parse = _parser(fmt)
    directory = Directory(seconds=3600)
    summary = ImportSummary()
    pending: list[Report] = []
    since_progress = 0

    def flush() -> None:
        outcomes = storage.ledger.record(link_relay_ids(storage.engine, pending))
        recorded = sum(1 for o in outcomes if o.recorded)
        summary.recorded += recorded
        summary.duplicates += len(outcomes) - recorded
        pending.clear()

    for number, unit in _items(path, fmt):
        summary.items += 1
        since_progress += 1
        try:
            parsed = parse(unit, endpoint)
        except PayloadError as error:
            summary.unparseable.append((number, str(error)))
            continue
        summary.ignored += len(parsed.ignored)
        pending.extend(adopt(directory, storage.engine, endpoint, parsed.reports))
        if len(pending) >= batch:
            flush()
            if progress is not None:
                progress(since_progress)
                since_progress = 0
    if pending:
        flush()
    if progress is not None and since_progress:
        progress(since_progress)
    return summary
