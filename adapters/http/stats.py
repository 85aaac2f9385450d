"""The stats endpoints."""

from __future__ import annotations

from adapters.http.api import Operation


def stats_operations() -> list[Operation]:
    """Every stats endpoint."""
    return []
