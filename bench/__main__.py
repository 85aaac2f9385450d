"""Benchmarks against the local PostgreSQL, all in one run.

- raw: the fastest plain insert of comparable rows an ordered append-only log can use
  (1,000 rows per transaction, INSERT ... SELECT unnest(...) under a table lock, the
  arrays sent in binary); the same with text parameters is reported beside it;
- ingest: reports recorded through the application in batches of 1,000, about 10%
  duplicates, about 5 events per email, half of them for emails that already exist
  but are not in the cache;
- rebuild: every projection rebuilt from position 0 over what ingest wrote;
- audit: `audit verify` over what ingest wrote; stats: a 30-day window grouped by day
  (bench/audit_stats.py).

Before each timed stage PostgreSQL writes out what earlier stages left in its buffers
(CHECKPOINT), so that none is timed while the server flushes another's writes.

`--quick` uses small sizes (about a minute); `--json` prints one JSON object last.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import psycopg
from psycopg import sql

from adapters.settings import parse_database_url
from adapters.storage import Storage, open_storage
from bench import audit_stats, hooks, importing, queries
from domain.reports import EventType, Report

SERVER = os.environ.get("MAILLEDGER_BENCH_PG", "postgresql://postgres@127.0.0.1:5432")
WORKSPACE = "bench-workspace"
BATCH = 1000
SIZES = {
    "quick": {
        "raw": 100_000,
        "ingest": 40_000,
        "emails": 50_000,
        "requests": 500,
        "batches": 8,
        "singles": 2000,
    },
    "full": {
        "raw": 1_000_000,
        "ingest": 1_000_000,
        "emails": 1_000_000,
        "requests": 2000,
        "batches": 60,
        "singles": 20_000,
    },
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextmanager
def fresh_database(purpose: str = "log") -> Iterator[str]:
    """A new database for this run, dropped afterwards."""
    name = f"mailledger_bench_{purpose}_{os.getpid()}"
    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield f"{SERVER}/{name}"
    finally:
        with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def settle() -> None:
    """Have PostgreSQL write out what earlier stages left in its buffers (CHECKPOINT),
    so that no stage, the raw baseline included, is timed while the server flushes
    another's writes."""
    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as admin:
        admin.execute("CHECKPOINT")


def sample_state() -> bytes:
    """A stored event's state as the ledger writes it, so raw rows are comparable."""
    return orjson.dumps(
        {
            "timestamp": "2025-03-14T19:04:01.160250+00:00",
            "workspace_id": WORKSPACE,
            "message_id": "0100018e3e6b1c2a-5c1d2e3f-4a5b-6c7d-8e9f-0a1b2c3d4e5f-000000",
            "to_address": "recipient-000123@example.com",
            "event_at": "2025-03-14T19:04:01.160250Z",
            "received_at": "2025-03-14T19:04:02.000000Z",
            "provider": "ses",
            "transport_key": "ses:4a5b6c7d-8e9f-0a1b-2c3d-4e5f60718293",
            "semantic_key": "9" * 64,
            "receipt_id": None,
            "from_address": None,
            "subject": None,
            "sent_at": None,
            "setup_id": None,
            "prev_hash": "a" * 64,
            "hash": "b" * 64,
            "smtp_response": "250 2.0.0 OK",
            "remote_mta": None,
        }
    )


def bench_raw(url: str, rows: int, *, binary: bool = True) -> float:
    """Rows per second of the raw baseline (parameters sent in binary, or as text)."""
    state = sample_state()
    table = "raw_log" if binary else "raw_log_text"
    mark = "%b" if binary else "%s"
    with psycopg.connect(url) as conn:
        conn.execute(
            f"CREATE TABLE {table} (originator_id uuid NOT NULL, originator_version bigint "
            "NOT NULL, topic text, state bytea, notification_id bigserial, "
            "PRIMARY KEY (originator_id, originator_version))"
        )
        conn.execute(f"CREATE UNIQUE INDEX {table}_notification ON {table} (notification_id)")
        conn.commit()
        started = time.perf_counter()
        for start in range(0, rows, BATCH):
            count = min(BATCH, rows - start)
            ids = [uuid.uuid4() for _ in range(count)]
            with conn.transaction():
                conn.execute(f"LOCK TABLE {table} IN EXCLUSIVE MODE")
                conn.execute(
                    f"INSERT INTO {table} (originator_id, originator_version, topic, state) "
                    f"SELECT * FROM unnest({mark}::uuid[], {mark}::bigint[], {mark}::text[], "
                    f"{mark}::bytea[])",
                    (ids, [1] * count, ["domain.events:Delivery"] * count, [state] * count),
                )
        return rows / (time.perf_counter() - started)


KINDS = [
    EventType.DELIVERY,
    EventType.OPEN,
    EventType.CLICK,
    EventType.DELIVERY_DELAY,
    EventType.BOUNCE,
]
DETAIL: dict[EventType, dict[str, Any]] = {
    EventType.DELIVERY: {"smtp_response": "250 2.0.0 OK"},
    EventType.OPEN: {"ip": "192.0.2.1", "user_agent": "Mozilla/5.0", "machine_open": False},
    EventType.CLICK: {"link": "https://shop.example/offer", "ip": "192.0.2.1"},
    EventType.DELIVERY_DELAY: {"delay_type": "MailboxFull"},
    EventType.BOUNCE: {"bounce_type": "Transient", "bounce_subtype": "MailboxFull"},
}


def make_report(email: int, n: int) -> Report:
    kind = KINDS[n % len(KINDS)]
    return Report(
        workspace_id=WORKSPACE,
        event_type=kind,
        provider="ses",
        message_id=f"msg-{email:08d}",
        to_address=f"recipient-{email:08d}@example.com",
        event_at=f"2025-03-14T19:{n // 60 % 60:02d}:{n % 60:02d}.{email % 1_000_000:06d}Z",
        transport_key=str(uuid.UUID(int=email * 64 + n)),
        detail=DETAIL[kind],
    )


def workload(events: int) -> tuple[list[Report], list[Report]]:
    """(seed, stream): seed creates the pre-existing emails; stream is what is timed.

    About 5 events per email; half of the stream's events are for seeded emails;
    about 10% of the stream are redeliveries of reports it already holds.
    """
    rng = random.Random(42)
    emails = max(events // 5, 2)
    seed = [make_report(e, 0) for e in range(emails // 2)]
    distinct = [make_report(e, n) for e in range(emails) for n in range(1, 6)]
    stream = distinct[: int(events * 0.9)]
    stream += rng.sample(stream, events - len(stream))
    rng.shuffle(stream)
    return seed, stream


def bench_ingest(url: str, events: int) -> tuple[float, float, int]:
    """(recorded events per second, reports per second, events in the log)."""
    seed, stream = workload(events)
    seeding = open_storage(parse_database_url(url))
    for start in range(0, len(seed), BATCH):
        seeding.ledger.record(seed[start : start + BATCH])
    seeding.close()

    store = open_storage(parse_database_url(url))  # a cold cache: seeded emails are not in it
    recorded = 0
    started = time.perf_counter()
    for start in range(0, len(stream), BATCH):
        outcomes = store.ledger.record(stream[start : start + BATCH])
        recorded += sum(o.recorded for o in outcomes)
    elapsed = time.perf_counter() - started
    head = store.ledger.head_position()
    store.close()
    return recorded / elapsed, len(stream) / elapsed, head


def bench_rebuild(store: Storage, events: int) -> float:
    """Events per second to rebuild every projection from position 0."""
    started = time.perf_counter()
    store.runner.rebuild_together(list(store.runner.projections))
    return events / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, about a minute")
    parser.add_argument("--json", action="store_true", help="print one JSON object last")
    args = parser.parse_args()
    sizes = SIZES["quick" if args.quick else "full"]

    with fresh_database() as url:
        log(f"raw: {sizes['raw']} rows")
        settle()
        raw = bench_raw(url, sizes["raw"])
        settle()
        raw_text = bench_raw(url, sizes["raw"] // 2, binary=False)
        log(f"ingest: {sizes['ingest']} reports")
        settle()
        ingest, reports, head = bench_ingest(url, sizes["ingest"])
        log(f"rebuild: {head} events, every projection")
        store = open_storage(parse_database_url(url))
        settle()
        rebuild = bench_rebuild(store, head)
        store.close()
        log(f"audit verify: {head} events")
        settle()
        audit = audit_stats.bench_audit(url)

    with fresh_database("queries") as url:
        log(f"queries: {sizes['emails']} emails, {5 * sizes['emails']} events")
        workspace_id, key, ids = queries.fill(url, sizes["emails"], 5)
        settle()
        latency = queries.measure(url, workspace_id, key, ids, sizes["requests"])

    with fresh_database("stats") as url:
        log(f"stats: {sizes['emails']} emails in the analytics view")
        stats_workspace, stats_key = audit_stats.fill_analytics(url, sizes["emails"])
        settle()
        stats = audit_stats.measure_stats(url, stats_workspace, stats_key, sizes["requests"])

    with fresh_database("import") as url:
        log(f"import: {sizes['ingest'] // 2} lines")
        settle()
        imported = importing.measure(url, sizes["ingest"] // 2)

    with fresh_database("hooks") as url:
        log(f"webhooks: {sizes['batches']} batches of 1000, {sizes['singles']} single requests")
        settle()
        throughput = hooks.measure(url, sizes["batches"], sizes["singles"])

    figures = {
        "raw_insert_rows_per_s": round(raw),
        "raw_insert_text_params_rows_per_s": round(raw_text),
        "ingest_events_per_s": round(ingest),
        "ingest_reports_per_s": round(reports),
        "rebuild_events_per_s": round(rebuild),
        "ingest_vs_raw": round(ingest / raw, 3),
        "rebuild_vs_raw": round(rebuild / raw, 3),
        "audit_verify_events_per_s": round(audit),
        "audit_vs_raw": round(audit / raw, 3),
        **latency,
        **stats,
        **throughput,
        **imported,
        "import_vs_raw": round(imported["import_events_per_s"] / raw, 3),
        "http_batch_vs_raw": round(throughput["http_batch_events_per_s"] / raw, 3),
        "events": head,
        "query_emails": sizes["emails"],
        "mode": "quick" if args.quick else "full",
    }
    if args.json:
        print(orjson.dumps(figures).decode())
        return
    width = max(map(len, figures))
    for name, value in figures.items():
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
