"""`mailledger audit verify`: recompute every email's hash chain over the whole log.

The stored events are read in bulk, in log (notification) order, a page at a time; an
email's events appear there in version order, so each email's chain is checked as its
events stream past, keeping only the last hash per email. That is one query per page,
not one per email.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TextIO, cast
from uuid import UUID

from eventsourcing.persistence import Notification
from tqdm import tqdm

from domain.application import EmailLedger
from domain.events import GENESIS_HASH, EmailEvent

PAGE = 10_000
GENESIS = bytes.fromhex(GENESIS_HASH)
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


# Per email (by its id's 16 bytes): the hash its next event must name as prev_hash (as
# 32 bytes: a million emails take about 200 MB), or None once the email is known broken
# (or, with a workspace filter, belongs to another workspace).
Chains = dict[bytes, bytes | None]


def _pages(ledger: EmailLedger, page: int) -> Iterator[Sequence[Notification]]:
    position = 0
    while notifications := ledger.recorder.select_notifications(
        start=position, limit=page, inclusive_of_start=False
    ):
        yield notifications
        position = notifications[-1].id


def _check(event: EmailEvent, prev: str) -> BrokenLink | None:
    if event.prev_hash != prev:
        return BrokenLink(event.originator_id, event.originator_version, prev, event.prev_hash)
    expected = event.computed_hash()
    if expected != event.hash:
        return BrokenLink(event.originator_id, event.originator_version, expected, event.hash)
    return None


def _walk(
    ledger: EmailLedger,
    notification: Notification,
    chains: Chains,
    result: AuditResult,
    workspace_id: str | None,
) -> None:
    email_id = notification.originator_id
    assert isinstance(email_id, UUID)
    key = email_id.bytes
    last = chains.get(key, GENESIS)
    if last is None:
        return  # already reported, or another workspace's
    try:
        event = cast("EmailEvent", ledger.mapper.to_domain_event(notification))
    except Exception as error:  # a tampered state may not even decode
        chains[key] = None
        found = f"undecodable event ({type(error).__name__})"
        result.broken.append(BrokenLink(email_id, notification.originator_version, "", found))
        return
    if last is GENESIS:
        # The email's first event says whose it is.
        if workspace_id is not None and event.workspace_id != workspace_id:
            chains[key] = None
            return
        result.emails += 1
    result.events += 1
    broken = _check(event, last.hex())
    if broken is not None:
        result.broken.append(broken)
        chains[key] = None
    else:
        chains[key] = bytes.fromhex(event.hash)


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
    for notifications in _pages(ledger, page):
        for notification in notifications:
            _walk(ledger, notification, chains, result, workspace_id)
        if progress is not None:
            progress(len(notifications))
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
