"""Admin resources (Workspace.admin): setups, use cases, keys, inbound endpoints."""

from __future__ import annotations

from adapters.http.api import Operation


def admin_operations() -> list[Operation]:
    """Every admin endpoint."""
    return []
