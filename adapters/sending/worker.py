"""The send worker: takes accepted emails from the outbox to their transport.

One thread per process. Each pass leases the due rows, decides what becomes of each
(suppressed: `Reject`; sandbox: `Dispatched`, then the simulator's events one by one;
smtp://: the pass's messages go to their relays concurrently), records all of it
through the ledger in one batch, then moves the rows on. Everything
it records has a fixed transport key, so a pass repeated after a crash records nothing
twice; a row leased by a worker that died is taken over once its lease runs out.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import RowMapping

from adapters import admin_store
from adapters.sending import lifecycle, outbox, provider_ids, sandbox
from adapters.sending.relay import RelayJob, deliver_all, prepare, settle
from adapters.sending.smtp import SmtpSettings
from adapters.sending.suppression import SuppressionFollower, is_suppressed
from adapters.sending.tier import TierCache
from adapters.storage import Storage
from domain.reports import Report, format_time, parse_time, utc_now

log = logging.getLogger(__name__)

POLL = 0.25  # seconds between looks at the outbox when nothing is due sooner
LEASE = timedelta(minutes=5)
BATCH = 200
PURGE_EVERY = timedelta(hours=1)
Worked = tuple[list[Report], outbox.Advance]


class SendWorker:
    """Moves outbox rows along; `run_once` is one pass, `start` runs passes in a thread."""

    def __init__(
        self,
        storage: Storage,
        *,
        clock: Callable[[], datetime] = utc_now,
        poll: float = POLL,
        lease: timedelta = LEASE,
        smtp: SmtpSettings | None = None,
        follow_when_idle: bool = True,
    ) -> None:
        """`follow_when_idle=False` when the projections follow the log in the
        background: the list is then brought up to date only by a pass that has rows
        to work. (Following it in every pass had each serving process of `serve
        --workers N` apply a burst of webhook events to the list at full priority,
        beside the projection process meant to: about an eighth of a serving process's
        CPU in the webhook benchmark, with nothing to send.)"""
        self.storage = storage
        self.follow_when_idle = follow_when_idle
        self.smtp = smtp or SmtpSettings()
        self.clock = clock
        self.poll = poll
        self.lease = lease
        self.suppressions = SuppressionFollower(storage)
        self.tiers = TierCache()  # shared with the process's requests (see Sender)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="send-worker", daemon=True)
        self._purged: datetime | None = None

    def start(self) -> None:
        """Start working in the background."""
        self._thread.start()

    def stop(self) -> None:
        """Finish the pass under way, then stop."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def wake(self) -> None:
        """Look at the outbox now (a send was just accepted)."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                worked = self.run_once()
            except Exception as error:  # the database is away: try again on the next pass
                log.warning("send worker paused: %s", error)
                worked = 0
            if not worked:
                self._wake.wait(self._idle_wait())
            self._wake.clear()

    def _idle_wait(self) -> float:
        try:
            due = outbox.next_due(self.storage.reader)
        except Exception:
            return self.poll
        if due is None:
            return self.poll
        wait = (parse_time(due) - self.clock()).total_seconds()
        return min(max(wait, 0.01), self.poll)

    def run_once(self) -> int:
        """One pass: follow the suppression list, then work every due row; how many."""
        if self.follow_when_idle:
            self.suppressions.follow()
        now = self.clock()
        self._purge(now)
        due = outbox.next_due(self.storage.reader)
        if due is None or due > format_time(now):
            return 0  # nothing to lease: no write transaction (SQLite's lock stays free)
        if not self.follow_when_idle:
            self.suppressions.follow()  # sends are checked against the list as of now
        rows = outbox.claim(self.storage.engine, now, self.lease, BATCH)
        if not rows:
            return 0
        reports: list[Report] = []
        moves: list[outbox.Advance] = []
        jobs: list[RelayJob] = []
        for row in rows:
            worked = self._work(row, now)
            if isinstance(worked, RelayJob):
                jobs.append(worked)
                continue
            reports.extend(worked[0])
            moves.append(worked[1])
        for job, attempt in zip(jobs, deliver_all(jobs, self.smtp), strict=True):
            found, move = settle(job, attempt, self.clock(), self.smtp)
            reports.extend(found)
            moves.append(move)
        try:
            self.storage.ledger.record(reports)
        except Exception:
            outbox.release(self.storage.engine, [(m.email_id, m.lease) for m in moves])
            raise
        outbox.advance(self.storage.engine, moves)
        if any(r.detail.get("provider_message_id") for r in reports):
            # A relay's events may come back under its own id at once: know it now.
            self.storage.runner.catch_up(provider_ids.NAME)
        return len(rows)

    def _work(self, row: RowMapping, now: datetime) -> Worked | RelayJob:
        accepted = [lifecycle.from_json(r) for r in row["reports"]]
        origin, at = accepted[0], format_time(now)

        def move(status: str, step: int = 0, due: datetime = now) -> outbox.Advance:
            return outbox.Advance(
                row["email_id"], row["lease_until"], status, step, format_time(due)
            )

        if row["status"] == outbox.SANDBOX:
            step = row["step"]
            report = sandbox.step_report(origin, step, at)
            steps = sandbox.timeline(origin.to_address)
            if step + 1 < len(steps):
                return [report], move(outbox.SANDBOX, step + 1, now + steps[step + 1].after)
            return [report], move(outbox.DONE, step + 1)
        if is_suppressed(self.storage.reader, row["workspace_id"], row["to_address"]):
            return [*accepted, lifecycle.rejected(origin, at, "suppressed")], move(outbox.REJECTED)
        use_case = admin_store.get_use_case(
            self.storage.reader, row["workspace_id"], row["use_case_id"]
        )
        if use_case is not None and use_case.transport.startswith("smtp://"):
            return prepare(self.storage, row, accepted, use_case)
        first = sandbox.timeline(origin.to_address)[0].after
        handed = lifecycle.dispatched(origin, at, "sandbox")
        return [*accepted, handed], move(outbox.SANDBOX, 0, now + first)

    def _purge(self, now: datetime) -> None:
        if self._purged is None or now - self._purged > PURGE_EVERY:
            outbox.purge_idempotency(self.storage.engine, now)
            self._purged = now
