"""The sending endpoints."""

from __future__ import annotations

from adapters.http.api import Operation


def sending_operations() -> list[Operation]:
    """Every sending endpoint."""
    return []
