"""A test client on the real app over the test store, and keys for it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from starlette.testclient import TestClient

from adapters.settings import Settings
from adapters.storage import Storage
from adapters.workspaces import api_keys, create_workspace, hash_key
from app import create_app


@dataclass(frozen=True)
class Tenant:
    """A workspace and a key holding every permission."""

    workspace_id: str
    key: str

    def headers(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.key}"}


def make_tenant(storage: Storage, name: str = "Acme") -> Tenant:
    made = create_workspace(storage.engine, name)
    return Tenant(made.workspace_id, made.api_key)


def add_key(storage: Storage, workspace_id: str, permissions: list[str]) -> str:
    """A key with only these permissions, stored as the service stores keys."""
    key = f"mlk_test_{uuid.uuid4().hex}"
    with storage.engine.begin() as conn:
        conn.execute(
            api_keys.insert().values(
                id=str(uuid.uuid4()),
                workspace_id=workspace_id,
                name="limited",
                key_hash=hash_key(key),
                permissions=permissions,
                created_at="2025-01-01T00:00:00.000000Z",
            )
        )
    return key


@contextmanager
def client_for(storage: Storage) -> Iterator[TestClient]:
    settings = Settings(database_url="sqlite:///unused.db")
    with TestClient(create_app(settings, storage, run_projections=False)) as client:
        yield client
