"""Benchmarks against the local PostgreSQL, all in one run.

- raw: the fastest plain insert of comparable rows an ordered append-only log can use
  (1,000 rows per transaction, INSERT ... SELECT unnest(...) under a table lock, the
  arrays sent in binary); the same with text parameters is reported beside it;
- ingest: reports recorded through the application in batches of 1,000, about 10%
  duplicates, about 5 events per email, half of them for emails that already exist
  but are not in the cache; by a process per core, each its share of the emails, and
  by one process (bench/ingest.py);
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
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import orjson
import psycopg
from psycopg import sql

from adapters.settings import parse_database_url
from adapters.storage import Storage, open_storage
from bench import audit_stats, hooks, importing, queries
from bench import ingest as ingest_bench
from bench.ingest import BATCH, WORKSPACE

SERVER = os.environ.get("MAILLEDGER_BENCH_PG", "postgresql://postgres@127.0.0.1:5432")
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


def bench_rebuild(store: Storage, events: int) -> float:
    """Events per second to rebuild every projection from position 0."""
    started = time.perf_counter()
    store.runner.rebuild_together(list(store.runner.projections))
    return events / (time.perf_counter() - started)


def log_stages(sizes: dict[str, int]) -> dict[str, float]:
    """raw, ingest (one process and a process per core), rebuild and audit, over one log."""
    with fresh_database() as url:
        log(f"raw: {sizes['raw']} rows")
        settle()
        raw = bench_raw(url, sizes["raw"])
        settle()
        raw_text = bench_raw(url, sizes["raw"] // 2, binary=False)
        log(f"ingest: {sizes['ingest']} reports, one process")
        with fresh_database("ingest") as alone:
            ingest_bench.seed(alone, sizes["ingest"])
            settle()
            ingest_one, reports = ingest_bench.one_process(alone, sizes["ingest"])
        log(f"ingest: {sizes['ingest']} reports, a process per core")
        ingest_bench.seed(url, sizes["ingest"])
        settle()
        ingest = ingest_bench.in_processes(url, sizes["ingest"])
        store = open_storage(parse_database_url(url))
        head = store.ledger.head_position()
        log(f"rebuild: {head} events, every projection")
        settle()
        rebuild = bench_rebuild(store, head)
        store.close()
        log(f"audit verify: {head} events")
        settle()
        audit = audit_stats.bench_audit(url)
    return {
        "raw": raw,
        "raw_text": raw_text,
        "ingest": ingest,
        "ingest_one": ingest_one,
        "reports": reports,
        "rebuild": rebuild,
        "audit": audit,
        "head": head,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, about a minute")
    parser.add_argument("--json", action="store_true", help="print one JSON object last")
    args = parser.parse_args()
    sizes = SIZES["quick" if args.quick else "full"]

    stages = log_stages(sizes)
    raw = stages["raw"]

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
        "raw_insert_text_params_rows_per_s": round(stages["raw_text"]),
        "ingest_events_per_s": round(stages["ingest"]),
        "ingest_one_process_events_per_s": round(stages["ingest_one"]),
        "ingest_one_process_reports_per_s": round(stages["reports"]),
        "rebuild_events_per_s": round(stages["rebuild"]),
        "ingest_vs_raw": round(stages["ingest"] / raw, 3),
        "ingest_one_process_vs_raw": round(stages["ingest_one"] / raw, 3),
        "rebuild_vs_raw": round(stages["rebuild"] / raw, 3),
        "audit_verify_events_per_s": round(stages["audit"]),
        "audit_vs_raw": round(stages["audit"] / raw, 3),
        **latency,
        **stats,
        **throughput,
        **imported,
        "import_vs_raw": round(imported["import_events_per_s"] / raw, 3),
        "http_batch_vs_raw": round(throughput["http_batch_events_per_s"] / raw, 3),
        "events": round(stages["head"]),
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
