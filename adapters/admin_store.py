"""Admin resources' tables: email setups, use cases and inbound endpoints."""

from __future__ import annotations
