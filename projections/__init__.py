"""Read models built from the email event log, each with exactly-once tracking."""

from __future__ import annotations

from projections.analytics import AnalyticsProjection
from projections.base import Projection
from projections.emails import EmailsProjection
from projections.events import EventsProjection


def default_projections() -> list[Projection]:
    """Every read model the service keeps."""
    return [EmailsProjection(), EventsProjection(), AnalyticsProjection()]
