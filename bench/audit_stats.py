"""Audit and analytics figures: `audit verify` throughput, and stats latency.

- audit: `verify_ledger` over the log the ingest stage wrote (every chain recomputed),
  in events per second, to compare with the raw insert baseline;
- stats: a 30-day window of one use case grouped by day, through uvicorn from another
  process. The analytics table is filled directly with COPY (as bench/queries.py does
  for the emails table), with its rows' shapes and realistic outcome rates: emails
  spread evenly over 90 days, four use cases, two setups, twenty recipient domains.
"""

from __future__ import annotations

import random
import statistics
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from adapters.audit import verify_ledger
from adapters.settings import parse_database_url
from adapters.storage import open_storage
from adapters.workspaces import create_workspace
from bench.served import client as client_for
from bench.served import served
from projections.analytics import DAILY_DOMAINS, HOURLY, SUMS, Rollup, email_analytics

USE_CASES = [str(uuid.UUID(int=i + 1)) for i in range(4)]
SETUPS = [str(uuid.UUID(int=i + 101)) for i in range(2)]
DOMAINS = [f"mail{i}.example" for i in range(18)] + ["gmail.com", "outlook.com"]
DAYS = 90
START = datetime(2025, 1, 1, tzinfo=UTC)


def bench_audit(url: str) -> float:
    """Events per second of `audit verify` over the whole log."""
    store = open_storage(parse_database_url(url))
    try:
        started = time.perf_counter()
        result = verify_ledger(store.ledger)
        elapsed = time.perf_counter() - started
    finally:
        store.close()
    assert result.ok, result.broken[:3]
    return result.events / elapsed


def _time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _row(i: int, count: int, workspace_id: str, rng: random.Random) -> dict[str, Any]:
    sent = _time(START + timedelta(seconds=i * DAYS * 86_400 / count))
    address = f"user{i % 100_000}@{DOMAINS[i % len(DOMAINS)]}"
    bounced = rng.random() < 0.05
    delivered = not bounced and rng.random() < 0.95
    opens = rng.choice((0, 0, 1, 1, 2, 3)) if delivered else 0
    clicks = rng.choice((0,) * 9 + (1,)) if opens else 0
    hard = bounced and rng.random() < 0.6
    return {
        "id": str(uuid.UUID(int=i + 2_000_000_000)),
        "workspace_id": workspace_id,
        "use_case_id": USE_CASES[i % len(USE_CASES)],
        "setup_id": SETUPS[i % len(SETUPS)],
        "sent_at": sent,
        "recipient_domain": address.rpartition("@")[2],
        "delivered": int(delivered),
        "bounced": int(bounced),
        "bounced_hard": int(hard),
        "bounced_soft": int(bounced and not hard),
        "complained": int(delivered and rng.random() < 0.001),
        "rejected": int(not delivered and not bounced),
        "delayed": int(rng.random() < 0.03),
        "opened": int(opens > 0 and rng.random() < 0.8),
        "clicked": int(clicks > 0),
        "opens": opens,
        "clicks": clicks,
        "to_address": address,
        "id_rank": f"0{sent}{i:064x}",
        "origin_rank": f"0{sent}{i:064x}",
        "origin_sent_at": sent,
        "first_event_at": sent,
    }


def _rows(count: int, workspace_id: str) -> Iterator[list[Any]]:
    rng = random.Random(11)
    names = [c.name for c in email_analytics.columns]
    for i in range(count):
        row = _row(i, count, workspace_id, rng)
        yield [row[n] for n in names]


def _rollup_fill(rollup: Rollup) -> str:
    """The rollup's rows, summed from the per-email rows (what the projection keeps)."""
    keys = ["workspace_id", "coalesce(use_case_id, '')", "coalesce(setup_id, '')"]
    keys.append(f"substr(sent_at, 1, {rollup.width})")
    if rollup.by_domain:
        keys.append("recipient_domain")
    sums = ["count(*)", *(f"sum({name})" for name in SUMS[1:])]
    columns = ", ".join(f'"{name}"' for name in (*rollup.key_names, *SUMS))
    return (
        f'INSERT INTO "{rollup.table.name}" ({columns}) SELECT {", ".join(keys + sums)} '
        f'FROM "{email_analytics.name}" GROUP BY {", ".join(keys)}'
    )


def fill_analytics(url: str, count: int) -> tuple[str, str]:
    """Fill the analytics table with `count` emails; the workspace id and its key."""
    store = open_storage(parse_database_url(url))
    made = create_workspace(store.engine, "bench-stats")
    store.close()
    columns = ", ".join(f'"{c.name}"' for c in email_analytics.columns)
    with psycopg.connect(url) as conn:
        statement = f'COPY "{email_analytics.name}" ({columns}) FROM STDIN'
        with conn.cursor().copy(statement) as copy:
            for row in _rows(count, made.workspace_id):
                copy.write_row(row)
        for rollup in (HOURLY, DAILY_DOMAINS):
            conn.execute(_rollup_fill(rollup))
        conn.commit()
    with psycopg.connect(url, autocommit=True) as conn:
        for table in (email_analytics, HOURLY.table, DAILY_DOMAINS.table):
            conn.execute(f'VACUUM ANALYZE "{table.name}"')  # as autovacuum would
    return made.workspace_id, made.api_key


def measure_stats(url: str, workspace_id: str, key: str, requests: int) -> dict[str, float]:
    """p50/p99 of a 30-day window of one use case grouped by day, through uvicorn."""
    rng = random.Random(5)
    samples: list[float] = []
    headers = {"Authorization": f"Bearer {key}"}
    with served(url) as base, client_for(base, headers) as client:
        for n in range(requests + 20):
            first = START + timedelta(days=rng.randrange(DAYS - 30))
            params = {
                "use_case_id": rng.choice(USE_CASES),
                "from": _time(first),
                "to": _time(first + timedelta(days=30)),
                "group_by": "day",
            }
            started = time.perf_counter()
            status, answer = client.get(f"/v1/{workspace_id}/email/stats", params)
            elapsed = time.perf_counter() - started
            assert status == 200, answer
            assert len(answer["groups"]) == 30
            if n >= 20:
                samples.append(elapsed)
    return {
        "stats_p50_ms": round(statistics.median(samples) * 1000, 2),
        "stats_p99_ms": round(statistics.quantiles(samples, n=100)[98] * 1000, 2),
    }
