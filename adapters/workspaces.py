"""Workspaces and their API keys (stored hashed; a key is shown once)."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass

from sqlalchemy import (
    JSON,
    Column,
    Engine,
    ForeignKey,
    MetaData,
    String,
    Table,
    bindparam,
    delete,
    select,
)

from domain.reports import format_time, utc_now

PERMISSIONS = ("Channel.send", "Channel.view", "Workspace.admin")
KEY_PREFIX = "mlk_"

admin_metadata = MetaData()

workspaces = Table(
    "workspaces",
    admin_metadata,
    Column("id", String(36), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("created_at", String(27), nullable=False),
)

api_keys = Table(
    "api_keys",
    admin_metadata,
    Column("id", String(36), primary_key=True),
    Column("workspace_id", String(36), ForeignKey("workspaces.id"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("permissions", JSON, nullable=False),
    Column("created_at", String(27), nullable=False),
)


@dataclass(frozen=True)
class ApiKey:
    """A stored key: whose it is and what it may do (never the key itself)."""

    id: str
    workspace_id: str
    name: str
    permissions: tuple[str, ...]


@dataclass(frozen=True)
class NewWorkspace:
    """A workspace just made, with its admin key (the only time it is shown)."""

    workspace_id: str
    api_key: str


@dataclass(frozen=True)
class KeySummary:
    """A key as listed: never the key nor its hash."""

    id: str
    name: str
    permissions: tuple[str, ...]
    created_at: str


@dataclass(frozen=True)
class NewKey:
    """A key just made, with its secret (the only time it is shown)."""

    id: str
    name: str
    permissions: tuple[str, ...]
    api_key: str
    created_at: str


def hash_key(api_key: str) -> str:
    """The stored form of a key. Keys are 256 random bits, so a plain SHA-256 is enough."""
    return hashlib.sha256(api_key.encode()).hexdigest()


def _new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def create_workspace(engine: Engine, name: str) -> NewWorkspace:
    """Make a workspace and its first key, holding every permission."""
    if not name.strip():
        raise ValueError("a workspace needs a name")
    workspace_id = str(uuid.uuid4())
    api_key = _new_key()
    now = format_time(utc_now())
    with engine.begin() as conn:
        conn.execute(workspaces.insert().values(id=workspace_id, name=name, created_at=now))
        conn.execute(
            api_keys.insert().values(
                id=str(uuid.uuid4()),
                workspace_id=workspace_id,
                name="admin",
                key_hash=hash_key(api_key),
                permissions=list(PERMISSIONS),
                created_at=now,
            )
        )
    return NewWorkspace(workspace_id, api_key)


# Built once: every API request runs it, and a statement built anew per call costs
# more Python than the database's answer takes.
_KEY_BY_HASH = select(api_keys).where(api_keys.c.key_hash == bindparam("digest"))


def find_key(engine: Engine, api_key: str) -> ApiKey | None:
    """The stored key matching `api_key`, looked up by its hash."""
    digest = hash_key(api_key)
    with engine.connect() as conn:
        row = conn.execute(_KEY_BY_HASH, {"digest": digest}).mappings().first()
    if row is None or not secrets.compare_digest(row["key_hash"], digest):
        return None
    return ApiKey(row["id"], row["workspace_id"], row["name"], tuple(row["permissions"]))


def create_key(engine: Engine, workspace_id: str, name: str, permissions: list[str]) -> NewKey:
    """Make a key of the workspace holding `permissions` (a non-empty subset of
    PERMISSIONS, kept in their canonical order); it is stored hashed."""
    held = tuple(p for p in PERMISSIONS if p in permissions)
    unknown = set(permissions) - set(PERMISSIONS)
    if unknown or not held:
        raise ValueError(f"permissions must be a non-empty subset of {', '.join(PERMISSIONS)}")
    if not name.strip():
        raise ValueError("a key needs a name")
    key = NewKey(str(uuid.uuid4()), name, held, _new_key(), format_time(utc_now()))
    with engine.begin() as conn:
        conn.execute(
            api_keys.insert().values(
                id=key.id,
                workspace_id=workspace_id,
                name=name,
                key_hash=hash_key(key.api_key),
                permissions=list(held),
                created_at=key.created_at,
            )
        )
    return key


def list_keys(engine: Engine, workspace_id: str) -> list[KeySummary]:
    """The workspace's keys, oldest first."""
    query = (
        select(api_keys.c.id, api_keys.c.name, api_keys.c.permissions, api_keys.c.created_at)
        .where(api_keys.c.workspace_id == workspace_id)
        .order_by(api_keys.c.created_at, api_keys.c.id)
    )
    with engine.connect() as conn:
        return [
            KeySummary(row.id, row.name, tuple(row.permissions), row.created_at)
            for row in conn.execute(query)
        ]


def delete_key(engine: Engine, workspace_id: str, key_id: str) -> bool:
    """Delete the workspace's key; False when it has none with this id. The key stops
    working at once, since every request looks its key up."""
    with engine.begin() as conn:
        result = conn.execute(
            delete(api_keys).where(api_keys.c.id == key_id, api_keys.c.workspace_id == workspace_id)
        )
    return result.rowcount > 0
