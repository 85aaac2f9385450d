"""The ledger application: record reports, read emails and their logs."""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, ClassVar, cast
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application, Cache
from eventsourcing.persistence import (
    ApplicationRecorder,
    IntegrityError,
    Transcoder,
)

from domain.email import Email, EmailView, verify_chain, view_of
from domain.events import EmailEvent
from domain.reports import Report, utc_now

# How often a batch is retried after losing an optimistic-concurrency race. Each retry
# reloads the emails it touched, so the loser sees the winner's events and drops
# what the winner already recorded.
MAX_ATTEMPTS = 20

# Emails a ledger keeps in memory unless told otherwise (MAILLEDGER_CACHE_SIZE). One
# holds its keys and last hash: about 1 KB for an email of one event, 2 KB for one of
# five. An email that is not cached costs a read of its stored events when a report
# for it comes; events of one email come over hours and days (delivery, then opens),
# so the cache is sized for many emails, and fills only as far as they come.
DEFAULT_CACHE_SIZE = 100_000

# How long after losing a version race a ledger checks the cached emails of each batch
# against the store before using them (see `EmailLedger._preload`).
RACE_SECONDS = 60.0

# One stored event of an email: (email id, version, its decoded state).
Head = tuple[UUID, int, Mapping[str, Any]]
# Reads the stored events of many emails in one query, in (email, version) order.
LoadHeads = Callable[[ApplicationRecorder, Sequence[UUID]], Sequence[Head]]
# Reads the version of many emails' newest stored events in one query (an email with
# none is left out).
LoadVersions = Callable[[ApplicationRecorder, Sequence[UUID]], Mapping[UUID, int]]
# A block in which no other writer can append to the log, and what this one appends
# commits at its end (see `EmailLedger._retrying`).
HoldLog = Callable[[ApplicationRecorder], AbstractContextManager[object]]


class EmailNotFoundError(LookupError):
    """No email has this id."""

    def __init__(self, email_id: UUID) -> None:
        super().__init__(f"email {email_id} not found")
        self.email_id = email_id


class ConcurrencyError(RuntimeError):
    """A batch kept losing version races; nothing of it was recorded."""


@dataclass(frozen=True)
class Outcome:
    """What became of one report: its email, and the version it was recorded at
    (None when the email already held it)."""

    email_id: UUID
    version: int | None

    @property
    def recorded(self) -> bool:
        """Whether the report became a new event."""
        return self.version is not None


class EmailLedger(Application[UUID]):
    """Every email's deduplicated, append-only, hash-chained event log."""

    name = "mailledger"
    env: ClassVar[dict[str, str]] = {
        "AGGREGATE_CACHE_MAXSIZE": str(DEFAULT_CACHE_SIZE),
        # A stale cached email is caught by the version check on save, and reloaded:
        # no query per cached email on the hot path (only for a while after a lost
        # race, one per batch: `_evict_stale`).
        "AGGREGATE_CACHE_FASTFORWARD": "n",
        # Recording holds the ledger's lock, so cached emails are used in place, not
        # copied; a batch that fails forgets every email it touched.
        "DEEPCOPY_FROM_AGGREGATE_CACHE": "n",
    }

    def __init__(
        self,
        env: dict[str, str] | None = None,
        *,
        transcoder: Transcoder | None = None,
        clock: Callable[[], datetime] = utc_now,
        load_heads: LoadHeads | None = None,
        load_versions: LoadVersions | None = None,
        hold_log: HoldLog | None = None,
    ) -> None:
        self._transcoder = transcoder
        self._clock = clock
        self._load_heads = load_heads
        self._load_versions = load_versions
        self._hold_log = hold_log
        # Until when cached emails are checked before use (a race was lost lately).
        self._racing_until = 0.0
        self._lock = threading.Lock()
        super().__init__(env)

    def construct_transcoder(self) -> Transcoder:
        if self._transcoder is not None:
            return self._transcoder
        return super().construct_transcoder()

    def record(self, reports: Sequence[Report]) -> list[Outcome]:
        """Record a batch of reports for any emails in one transaction.

        A report either of whose keys its email already holds is dropped. Losing a
        version race to another writer reloads the emails and tries again. Batches of
        one process are recorded one at a time (other processes race as above).
        """
        with self._lock:
            return self._record_batch(reports)

    def _record_batch(self, reports: Sequence[Report]) -> list[Outcome]:
        for attempt in range(MAX_ATTEMPTS):
            emails: dict[UUID, Email] = {}
            try:
                with self._retrying() if attempt else contextlib.nullcontext():
                    outcomes = self._apply(reports, emails)
                    self._save_changed(emails.values())
            except IntegrityError:
                self._forget(emails)
                self._racing_until = time.monotonic() + RACE_SECONDS
                time.sleep(random.uniform(0, 0.005 * (attempt + 1)))  # noqa: S311
                continue
            except BaseException:
                self._forget(emails)
                raise
            return outcomes
        raise ConcurrencyError(f"gave up after {MAX_ATTEMPTS} version conflicts")

    def _retrying(self) -> AbstractContextManager[object]:
        # A retry holds the log, where the store can, from before it loads its emails
        # until it has inserted: no other writer can append to them in between, so it
        # cannot lose again. Without it, a batch could lose race after race (two
        # processes recording batches of 1,000 of the same emails at once: each batch
        # touches hundreds of emails, and the other process commits some of them while
        # it is recorded), and one that lost MAX_ATTEMPTS times failed.
        if self._hold_log is None:
            return contextlib.nullcontext()
        return self._hold_log(self.recorder)

    def _save_changed(self, emails: Iterable[Email]) -> None:
        # What Application.save() does for a batch, without what it costs per event
        # and we do not use: checks of every object against runtime protocols, and a
        # recording object per stored event for followers this application has none of.
        changed = [email for email in emails if email.pending_events]
        stored = [
            self.mapper.to_stored_event(event)
            for email in changed
            for event in email.collect_events()
        ]
        if not stored:
            return
        self.recorder.insert_events(stored)
        cache = self.repository.cache
        if cache is not None:
            for email in changed:
                cache.put(email.id, email)

    def _apply(self, reports: Sequence[Report], emails: dict[UUID, Email]) -> list[Outcome]:
        received_at = self._clock()
        emails.update(self._preload({r.target_email_id for r in reports}, received_at))
        outcomes = []
        for report in reports:
            email = self._email_for(report, emails, received_at)
            if email.version and email.workspace_id != report.workspace_id:
                # An echoed email id of another workspace's email: never write there;
                # the report names its email by message id and recipient instead.
                report = replace(report, email_id=None)  # noqa: PLW2901
                email = self._email_for(report, emails, received_at)
            email_id = email.id
            recorded = email.record(report, received_at)
            outcomes.append(Outcome(email_id, email.version if recorded else None))
        return outcomes

    def _email_for(self, report: Report, emails: dict[UUID, Email], now: datetime) -> Email:
        email_id = report.target_email_id
        email = emails.get(email_id)
        if email is None:
            email = emails[email_id] = self._load(email_id, now)
        return email

    def _preload(self, email_ids: set[UUID], now: datetime) -> dict[UUID, Email]:
        # One query for every email of the batch that is not cached, instead of one each;
        # an email the query does not find is new.
        cache = self.repository.cache
        missing = [i for i in email_ids if cache is None or i not in cache.cache]
        if cache is not None and time.monotonic() < self._racing_until:
            missing += self._evict_stale(cache, [i for i in email_ids if i in cache.cache])
        if self._load_heads is None or len(missing) < 2:
            return {}
        logs: dict[UUID, list[tuple[int, Mapping[str, Any]]]] = {}
        for email_id, version, state in self._load_heads(self.recorder, missing):
            logs.setdefault(email_id, []).append((version, state))
        return {
            email_id: Email.from_heads(email_id, now, logs.get(email_id, ()))
            for email_id in missing
        }

    def _evict_stale(self, cache: Cache[UUID, Any], cached: list[UUID]) -> list[UUID]:
        """Evict and name the cached emails another writer has appended to since.

        Each process keeps its own cache, and a version check on save catches a stale
        email only after the whole batch was recorded, to be recorded again. Where
        writers take turns on the same emails (the workers of `serve --workers N`),
        nearly every batch then ran twice: two processes recording batches of 30 events
        for 20,000 emails recorded about 6,500 events/s, against 12,000 with no cache.
        So once a race is lost, a batch first reads the newest versions of its cached
        emails (one query) for a while (RACE_SECONDS); a process that writes alone never
        pays for it."""
        if self._load_versions is None or not cached:
            return []
        held = {email_id: cache.get(email_id).version for email_id in cached}
        stored = self._load_versions(self.recorder, cached)
        stale = [i for i, version in held.items() if stored.get(i, 0) > version]
        for email_id in stale:
            cache.get(email_id, evict=True)
        return stale

    def _load(self, email_id: UUID, now: datetime) -> Email:
        try:
            return cast("Email", self.repository.get(email_id))
        except AggregateNotFoundError:
            return Email.blank(email_id, now)

    def _forget(self, emails: dict[UUID, Email]) -> None:
        cache = self.repository.cache
        if cache is None:
            return
        for email_id in emails:
            with contextlib.suppress(KeyError):
                cache.get(email_id, evict=True)

    def view_email(self, email_id: UUID) -> EmailView:
        """The email's summary and detail as its stored log stands now."""
        return view_of(self.get_history(email_id))

    def get_history(self, email_id: UUID) -> list[EmailEvent]:
        """Every stored event of the email, in log order."""
        events = [cast("EmailEvent", e) for e in self.events.get(email_id)]
        if not events:
            raise EmailNotFoundError(email_id)
        return events

    def read_history(self, email_id: UUID) -> tuple[list[EmailEvent], bool]:
        """Every stored event of the email that still reads as one, in log order, and
        whether all of them did (a stored event changed behind the ledger's back may no
        longer decode, or may lack a field)."""
        stored = self.recorder.select_events(email_id)
        if not stored:
            raise EmailNotFoundError(email_id)
        events: list[EmailEvent] = []
        for record in stored:
            with contextlib.suppress(Exception):  # whatever tampered bytes make it raise
                event = self.mapper.to_domain_event(record)
                if isinstance(event, EmailEvent) and event.is_whole():
                    events.append(event)
        return events, len(events) == len(stored)

    def find_broken_link(self, email_id: UUID) -> tuple[int, str, str] | None:
        """The first event whose chain hash does not hold, or None."""
        return verify_chain(self.get_history(email_id))

    def head_position(self) -> int:
        """The position of the newest event in the application's log (0 if none)."""
        return int(self.recorder.max_notification_id() or 0)

    def describe(self) -> dict[str, Any]:
        """Where the event store lives, for status output."""
        return {"persistence": self.env.get("PERSISTENCE_MODULE", "popo")}
