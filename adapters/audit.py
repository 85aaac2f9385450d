"""`mailledger audit verify`: recompute every email's hash chain over the whole log.

The stored events are read in bulk, in log (notification) order, a page at a time; an
email's events appear there in version order, so each email's chain is checked as its
events stream past, keeping only the last hash per email. That is one query per page,
not one per email.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TextIO
from uuid import UUID

import orjson
from tqdm import tqdm

from adapters.storage import LogRow, event_class, read_log
from domain.application import EmailLedger
from domain.events import GENESIS_HASH, link_error

PAGE = 10_000
Progress = Callable[[int], object]


@dataclass(frozen=True)
class BrokenLink:
    """The first event of an email whose chain does not hold."""

    email_id: UUID
    version: int
    expected: str
    found: str


@dataclass
class AuditResult:
    """What a walk over the log found."""

    events: int = 0
    emails: int = 0
    broken: list[BrokenLink] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether every checked chain holds."""
        return not self.broken


# Per email (by its id): the hash its next event must name as prev_hash, or None once
# the email is known broken (or, with a workspace filter, belongs to another workspace).
# A million emails take about 300 MB.
Chains = dict[str, str | None]


def _pages(ledger: EmailLedger, page: int) -> Iterator[list[LogRow]]:
    """The log a page at a time; the next page is read while the caller checks this one
    (the database's work and ours overlap)."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-read") as reader:
        pending = reader.submit(read_log, ledger.recorder, 0, page)
        while rows := pending.result():
            pending = reader.submit(read_log, ledger.recorder, rows[-1][0], page)
            yield rows


def _walk(
    row: LogRow,
    chains: Chains,
    result: AuditResult,
    workspace_id: str | None,
) -> None:
    _, email_id, version, topic, state = row
    first = email_id not in chains
    last = GENESIS_HASH if first else chains[email_id]
    if last is None:
        return  # already reported, or another workspace's
    try:
        cls = event_class(topic)
        values = orjson.loads(state)
        values["originator_version"] = version
        # The email's first event says whose it is.
        if first and workspace_id is not None and values["workspace_id"] != workspace_id:
            chains[email_id] = None
            return
        broken = link_error(cls, values, email_id, last)
    except Exception as error:  # a tampered state may not even decode
        chains[email_id] = None
        found = f"undecodable event ({type(error).__name__})"
        result.broken.append(BrokenLink(UUID(email_id), version, "", found))
        return
    if first:
        result.emails += 1
    result.events += 1
    if broken is not None:
        result.broken.append(BrokenLink(UUID(email_id), version, *broken))
        chains[email_id] = None
    else:
        chains[email_id] = values["hash"]


def verify_ledger(
    ledger: EmailLedger,
    workspace_id: str | None = None,
    progress: Progress | None = None,
    page: int = PAGE,
) -> AuditResult:
    """Recompute every chain (one workspace's, or all); the first broken link of each
    failing email, in the order they were found."""
    result = AuditResult()
    chains: Chains = {}
    for rows in _pages(ledger, page):
        for row in rows:
            _walk(row, chains, result, workspace_id)
        if progress is not None:
            progress(len(rows))
    return result


def verify_command(ledger: EmailLedger, workspace_id: str | None, out: TextIO) -> int:
    """`mailledger audit verify`: 0 when every chain holds, 1 otherwise."""
    head = ledger.head_position()
    with tqdm(total=head, desc="audit verify", unit="ev", file=sys.stderr) as bar:
        result = verify_ledger(ledger, workspace_id, progress=bar.update)
    for link in result.broken:
        out.write(
            f"BROKEN email {link.email_id} version {link.version}: "
            f"expected {link.expected or '-'}, found {link.found}\n"
        )
    scope = f" of workspace {workspace_id}" if workspace_id else ""
    verdict = "every chain holds" if result.ok else f"{len(result.broken)} broken"
    out.write(f"checked {result.events} events of {result.emails} emails{scope}: {verdict}\n")
    return 0 if result.ok else 1
