"""Bulk import speed: a generic JSON-lines export through `import_file`, with as many
processes as `mailledger import` uses by default."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import orjson

from adapters import admin_store
from adapters.importer import default_jobs, import_file
from adapters.ingest import as_endpoint
from adapters.settings import parse_database_url
from adapters.storage import open_storage
from adapters.workspaces import create_workspace

KINDS = ["Delivery", "Open", "Click", "DeliveryDelay", "Bounce"]


def measure(url: str, lines: int) -> dict[str, float]:
    """import_events_per_s over a file of `lines` events, about five per email."""
    store = open_storage(parse_database_url(url))
    try:
        workspace = create_workspace(store.engine, "bench-import")
        stored = admin_store.create_endpoint(
            store.engine,
            workspace.workspace_id,
            "generic",
            {"secret": "whsec_YmVuY2hiZW5jaGJlbmNoYmVuY2g="},
        )
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder, "export.jsonl")
            with path.open("wb") as out:
                for n in range(lines):
                    kind = KINDS[n % 5]
                    event = {
                        "event_type": kind,
                        "message_id": f"export-{n // 5}",
                        "to_address": f"rcpt{n // 5}@example.com",
                        "event_at": f"2025-03-14T{n // 3600 % 24:02d}:{n // 60 % 60:02d}:"
                        f"{n % 60:02d}Z",
                        "event_id": f"export-{n}",
                    }
                    if kind == "Bounce":
                        event["bounce_type"] = "Transient"
                    out.write(orjson.dumps(event) + b"\n")
            started = time.perf_counter()
            jobs = default_jobs(store.database)
            summary = import_file(store, as_endpoint(stored), path, "generic-jsonl", jobs=jobs)
            elapsed = time.perf_counter() - started
        return {"import_events_per_s": round(summary.recorded / elapsed)}
    finally:
        store.close()
