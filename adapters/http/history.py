"""The history endpoints."""

from __future__ import annotations

from adapters.http.api import Operation


def history_operations() -> list[Operation]:
    """Every history endpoint."""
    return []
