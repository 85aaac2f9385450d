"""The reputation tier a send is recorded with: the setup's recent bounce and complaint
rates, read from the emails view. It is information for analysis; it never blocks.

Thresholds follow what mailbox providers and SES watch: hard bounces under 2% and
complaints under 0.1% are `good`; up to 5% and 0.5% is `warning`; beyond is `poor`.
A setup with too few recent emails to judge is `new`.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta

from sqlalchemy import Engine, case, func, select

from domain.reports import format_time
from projections.emails import emails

WINDOW = timedelta(days=7)
MIN_SAMPLE = 100
GOOD = (0.02, 0.001)  # hard-bounce rate, complaint rate below which a setup is good
WARNING = (0.05, 0.005)
CACHE_SECONDS = 60.0


def tier_of(sent: int, hard_bounces: int, complaints: int) -> str:
    """The tier for these counts over the window."""
    if sent < MIN_SAMPLE:
        return "new"
    bounce_rate, complaint_rate = hard_bounces / sent, complaints / sent
    if bounce_rate < GOOD[0] and complaint_rate < GOOD[1]:
        return "good"
    if bounce_rate < WARNING[0] and complaint_rate < WARNING[1]:
        return "warning"
    return "poor"


def recent_counts(
    engine: Engine, workspace_id: str, setup_id: str, now: datetime
) -> tuple[int, int, int]:
    """(sent, hard bounces, complaints) of the setup's emails sent in the window."""
    c = emails.c
    query = select(
        func.count(),
        func.coalesce(func.sum(case((c.bounce_type == "Permanent", 1), else_=0)), 0),
        func.coalesce(func.sum(case((c.complained_at.is_not(None), 1), else_=0)), 0),
    ).where(
        c.workspace_id == workspace_id,
        c.setup_id == setup_id,
        c.sent_at >= format_time(now - WINDOW),
    )
    with engine.connect() as conn:
        sent, hard, complained = conn.execute(query).one()
    return int(sent), int(hard), int(complained)


class TierCache:
    """Each setup's tier, recomputed at most once a minute per process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._known: dict[tuple[str, str], tuple[float, str]] = {}

    def tier(self, engine: Engine, workspace_id: str, setup_id: str, now: datetime) -> str:
        """The setup's tier now (possibly a minute old)."""
        key = (workspace_id, setup_id)
        with self._lock:
            found = self._known.get(key)
        if found is not None and time.monotonic() - found[0] < CACHE_SECONDS:
            return found[1]
        value = tier_of(*recent_counts(engine, workspace_id, setup_id, now))
        with self._lock:
            self._known[key] = (time.monotonic(), value)
        return value
