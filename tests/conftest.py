"""Shared fixtures: a store on SQLite and on the real PostgreSQL server.

PostgreSQL tests use one fresh database per run (dropped afterwards) and empty it
before each test. Without a server they skip with the reason, except under CI=true,
where a missing server fails the run.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from hypothesis import settings as hypothesis_settings
from psycopg import sql

from adapters.settings import parse_database_url
from adapters.storage import Storage, open_storage

PG_SERVER = os.environ.get("MAILLEDGER_TEST_PG", "postgresql://postgres@127.0.0.1:5432")

# Locally, property tests draw new examples on every run, to keep finding bugs; in CI
# they draw the same ones, so a submission's verdict does not depend on luck.
hypothesis_settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI") == "true":
    hypothesis_settings.load_profile("ci")


def _admin() -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True, connect_timeout=3)


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test run."""
    try:
        admin = _admin()
    except psycopg.OperationalError as error:
        reason = f"no PostgreSQL server at {PG_SERVER}: {error}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    name = f"mailledger_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield f"{PG_SERVER}/{name}"
    finally:
        with _admin() as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def empty_postgres(url: str) -> None:
    """Remove every row of every table, so each test starts from nothing."""
    with psycopg.connect(url, autocommit=True) as conn:
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            ).fetchall()
        ]
        if tables:
            names = sql.SQL(", ").join(sql.Identifier(t) for t in tables)
            conn.execute(sql.SQL("TRUNCATE {} RESTART IDENTITY CASCADE").format(names))


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty database, once on each store."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'mailledger.db'}"
    url: str = request.getfixturevalue("pg_server_url")
    empty_postgres(url)
    return url


@pytest.fixture
def postgres_url(pg_server_url: str) -> str:
    """An empty PostgreSQL database (for the tests that need a real server)."""
    empty_postgres(pg_server_url)
    return pg_server_url


@pytest.fixture
def storage(database_url: str) -> Iterator[Storage]:
    """The opened store on each database."""
    store = open_storage(parse_database_url(database_url), batch_size=7)
    try:
        yield store
    finally:
        store.close()
