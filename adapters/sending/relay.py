"""Outbox rows bound for an smtp:// relay: compose, hand over (concurrently), and turn
each conversation's outcome into the events to record and the row's next state."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import RowMapping

from adapters import admin_store
from adapters.sending import lifecycle, outbox
from adapters.sending.compose import MissingContentError, compose
from adapters.sending.smtp import Attempt, Relay, SmtpSettings, deliver
from adapters.storage import Storage
from domain.reports import RELAY_REJECT_PREFIX, Report, format_time, parse_time


@dataclass(frozen=True)
class RelayJob:
    """One leased row's message, ready for its relay (or why it cannot be sent)."""

    row: RowMapping
    accepted: list[Report]
    relay: Relay | None
    message: bytes
    problem: str | None = None


def prepare(
    storage: Storage, row: RowMapping, accepted: list[Report], use_case: admin_store.UseCase
) -> RelayJob:
    """Compose and sign the row's message for the use case's relay."""
    try:
        relay = Relay.parse(use_case.transport)
        setup = admin_store.get_setup(storage.reader, row["workspace_id"], use_case.setup_id)
        return RelayJob(row, accepted, relay, compose(storage.reader, row, setup))
    except (ValueError, MissingContentError) as error:
        return RelayJob(row, accepted, None, b"", f"the message cannot be sent: {error}")


async def _deliver(job: RelayJob, settings: SmtpSettings) -> Attempt:
    if job.relay is None:
        return Attempt("rejected", job.problem or "no relay")
    sender = job.row["from_address"]
    return await deliver(job.relay, sender, job.row["to_address"], job.message, settings)


def deliver_all(jobs: Sequence[RelayJob], settings: SmtpSettings) -> list[Attempt]:
    """Hand every job to its relay at once; the outcomes, in order."""

    async def everything() -> list[Attempt]:
        return list(await asyncio.gather(*(_deliver(job, settings) for job in jobs)))

    return asyncio.run(everything()) if jobs else []


def settle(
    job: RelayJob, attempt: Attempt, now: datetime, settings: SmtpSettings
) -> tuple[list[Report], outbox.Advance]:
    """The events an attempt's outcome records and where the row goes next."""
    row, accepted = job.row, job.accepted
    origin, at = accepted[0], format_time(now)

    def move(status: str, step: int, due: datetime = now) -> outbox.Advance:
        return outbox.Advance(row["email_id"], row["lease_until"], status, step, format_time(due))

    tries = row["step"] + 1
    if attempt.kind == "sent":
        handed = lifecycle.dispatched(
            origin,
            at,
            "smtp",
            provider_message_id=attempt.provider_message_id,
            smtp_response=attempt.reply,
        )
        return [*accepted, handed], move(outbox.DONE, tries)
    if attempt.kind == "bounced":
        return [*accepted, lifecycle.relay_bounced(origin, at, attempt.reply)], move(
            outbox.REJECTED, tries
        )
    if attempt.kind == "rejected":
        reason = f"{RELAY_REJECT_PREFIX}{attempt.reply}"
        return [*accepted, lifecycle.rejected(origin, at, reason)], move(outbox.REJECTED, tries)
    deadline = parse_time(row["send_at"] or row["accepted_at"]) + settings.retry_window
    if now >= deadline:
        reason = f"the relay did not take the email within {settings.retry_window}"
        gave_up = lifecycle.failed(origin, at, reason, attempt.reply)
        return [*accepted, gave_up], move(outbox.FAILED, tries)
    delayed = lifecycle.relay_delayed(origin, tries, at, format_time(deadline))
    return [*accepted, delayed], move(outbox.PENDING, tries, settings.retry_at(tries, now))
