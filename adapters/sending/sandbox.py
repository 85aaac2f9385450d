"""The sandbox transport: messages stay on the machine, a mailbox simulator answers.

Like SES's simulator, the local part of an address on `simulator.test` names what
happens (`bounce+run42@simulator.test` bounces too, while being an address of its own);
any other address is delivered. Each outcome is a timeline of events the worker records
a few hundred milliseconds apart, as a real provider's webhooks would arrive.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from adapters.sending.lifecycle import sender_report
from domain.reports import EventType, Report

PROVIDER = "sandbox"
SIMULATOR_DOMAIN = "simulator.test"
SOON = timedelta(milliseconds=300)
REMOTE_MTA = "sandbox.mailledger.invalid"
DELIVERED = {"smtp_response": "250 2.0.0 OK (mailledger sandbox)", "remote_mta": REMOTE_MTA}


@dataclass(frozen=True)
class Step:
    """One simulated event, `after` the one before it (or after the hand-off)."""

    event_type: EventType
    detail: Mapping[str, Any] = field(default_factory=dict)
    after: timedelta = SOON


TIMELINES: dict[str, tuple[Step, ...]] = {
    "success": (Step(EventType.DELIVERY, DELIVERED),),
    "bounce": (
        Step(
            EventType.BOUNCE,
            {
                "bounce_type": "Permanent",
                "bounce_subtype": "General",
                "diagnostic_code": "smtp; 550 5.1.1 user unknown (mailledger sandbox)",
            },
        ),
    ),
    "complaint": (
        Step(EventType.DELIVERY, DELIVERED),
        Step(EventType.COMPLAINT, {"feedback_type": "abuse"}),
    ),
    "ooto": (
        Step(
            EventType.DELIVERY,
            {
                "smtp_response": "250 2.0.0 OK; the mailbox answered with an out-of-office "
                "auto-reply (mailledger sandbox)",
                "remote_mta": REMOTE_MTA,
            },
        ),
    ),
    "suppressed": (
        Step(
            EventType.BOUNCE,
            {
                "bounce_type": "Permanent",
                "bounce_subtype": "Suppressed",
                "diagnostic_code": "the simulator's suppression list holds this address",
            },
        ),
    ),
    "delay": (
        Step(EventType.DELIVERY_DELAY, {"delay_type": "TransientCommunicationFailure"}),
        Step(EventType.DELIVERY, DELIVERED, after=timedelta(milliseconds=700)),
    ),
}


def behaviour(address: str) -> str:
    """What the simulator does with mail to `address` (a TIMELINES key)."""
    local, _, domain = address.lower().rpartition("@")
    kind = local.partition("+")[0]
    if domain == SIMULATOR_DOMAIN and kind in TIMELINES:
        return kind
    return "success"


def timeline(address: str) -> tuple[Step, ...]:
    """The events mail to `address` gets, in order."""
    return TIMELINES[behaviour(address)]


def step_report(origin: Report, index: int, event_at: str) -> Report:
    """The simulator's `index`-th event about the email `origin` is the Sent of."""
    step = timeline(origin.to_address)[index]
    return sender_report(
        origin,
        step.event_type,
        f"sandbox:{index}",
        event_at,
        provider=PROVIDER,
        detail=step.detail,
    )
