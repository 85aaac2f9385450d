"""Settings, read once from the environment into a frozen object."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

from domain.application import DEFAULT_CACHE_SIZE

DEFAULT_DATABASE_URL = "sqlite:///var/mailledger.db"


class SettingsError(ValueError):
    """A setting that cannot be used; the message says which and why."""


@dataclass(frozen=True)
class Database:
    """Where the event store and the read models live."""

    kind: Literal["sqlite", "postgresql"]
    sqlalchemy_url: str
    eventsourcing_env: Mapping[str, str]
    path: Path | None = None
    conninfo: str = ""

    def describe(self) -> str:
        """A human-readable name of the database, without any password."""
        if self.path is not None:
            return f"sqlite:///{self.path}"
        env = self.eventsourcing_env
        return (
            f"postgresql://{env['POSTGRES_USER']}@{env['POSTGRES_HOST']}:"
            f"{env['POSTGRES_PORT']}/{env['POSTGRES_DBNAME']}"
        )


def parse_database_url(url: str) -> Database:
    """Turn `MAILLEDGER_DATABASE_URL` into the settings of both database layers."""
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        return _sqlite(url, parts.path)
    if parts.scheme in ("postgresql", "postgres", "postgresql+psycopg"):
        return _postgres(url)
    raise SettingsError(
        f"MAILLEDGER_DATABASE_URL: unsupported database URL {url!r} "
        "(use sqlite:///PATH or postgresql://USER@HOST:PORT/DBNAME)"
    )


def _sqlite(url: str, raw_path: str) -> Database:
    if not url.startswith("sqlite:///") or len(url) <= len("sqlite:///"):
        raise SettingsError(f"MAILLEDGER_DATABASE_URL: expected sqlite:///PATH, got {url!r}")
    path = Path(unquote(url[len("sqlite:///") :]))
    env = {
        "PERSISTENCE_MODULE": "eventsourcing.sqlite",
        "SQLITE_DBNAME": str(path),
        "SQLITE_LOCK_TIMEOUT": "30",
    }
    return Database("sqlite", f"sqlite+pysqlite:///{path}", env, path=path)


def _postgres(url: str) -> Database:
    try:
        parts = urlsplit(url)
        port = parts.port or 5432
    except ValueError as error:
        raise SettingsError(f"MAILLEDGER_DATABASE_URL: {error}") from None
    dbname = unquote(parts.path.lstrip("/"))
    if not parts.hostname or not dbname:
        raise SettingsError(
            f"MAILLEDGER_DATABASE_URL: expected postgresql://USER@HOST:PORT/DBNAME, got {url!r}"
        )
    user = unquote(parts.username or "postgres")
    password = unquote(parts.password or "")
    env = {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": dbname,
        "POSTGRES_HOST": parts.hostname,
        "POSTGRES_PORT": str(port),
        "POSTGRES_USER": user,
        "POSTGRES_PASSWORD": password,
        "POSTGRES_CONNECT_TIMEOUT": "5",
        # No ping per checkout: the library retries a statement on a dead connection.
        "POSTGRES_PRE_PING": "n",
        "POSTGRES_POOL_SIZE": "4",
        "POSTGRES_MAX_OVERFLOW": "8",
        "POSTGRES_LOCK_TIMEOUT": "10",
        # One round trip per batch (typed arrays through unnest(), see adapters/eventstore).
        "POSTGRES_ENABLE_DB_FUNCTIONS": "y",
        "APPLICATION_RECORDER_TOPIC": "adapters.eventstore:ArrayInsertRecorder",
    }
    auth = user if not password else f"{user}:{parts.password}"
    sa_url = f"postgresql+psycopg://{auth}@{parts.hostname}:{port}/{parts.path.lstrip('/')}"
    conninfo = f"postgresql://{auth}@{parts.hostname}:{port}/{parts.path.lstrip('/')}"
    return Database("postgresql", sa_url, env, conninfo=conninfo)


@dataclass(frozen=True)
class Settings:
    """Everything the service reads from its environment."""

    database_url: str = DEFAULT_DATABASE_URL
    projection_interval: float = 0.2
    projection_batch_size: int = 1000
    cache_size: int = DEFAULT_CACHE_SIZE
    sns_cert_dir: Path | None = None
    database: Database = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "database", parse_database_url(self.database_url))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the settings from the environment (os.environ by default)."""
        env = os.environ if environ is None else environ
        return cls(
            database_url=env.get("MAILLEDGER_DATABASE_URL") or DEFAULT_DATABASE_URL,
            projection_interval=_number(env, "MAILLEDGER_PROJECTION_INTERVAL", 0.2),
            projection_batch_size=int(_number(env, "MAILLEDGER_PROJECTION_BATCH_SIZE", 1000)),
            cache_size=int(_number(env, "MAILLEDGER_CACHE_SIZE", DEFAULT_CACHE_SIZE)),
            sns_cert_dir=Path(env["MAILLEDGER_SNS_CERT_DIR"])
            if env.get("MAILLEDGER_SNS_CERT_DIR")
            else None,
        )


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    text = env.get(name)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise SettingsError(f"{name}: expected a number, got {text!r}") from None
    if value <= 0:
        raise SettingsError(f"{name}: must be positive, got {text!r}")
    return value
