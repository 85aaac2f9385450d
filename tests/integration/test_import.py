"""Bulk import: every format through the same parsers, idempotent, with line numbers."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import orjson
import pytest
from sqlalchemy import text

from adapters import admin_store
from adapters.importer import ImportFileError, ImportStoppedError, import_file
from adapters.ingest import as_endpoint
from adapters.providers.base import Endpoint
from adapters.settings import parse_database_url
from adapters.storage import Storage, open_storage
from adapters.workspaces import create_workspace
from tests.unit.providers import signing


def endpoint_for(storage: Storage, provider: str, config: dict[str, object]) -> Endpoint:
    workspace = create_workspace(storage.engine, "importer")
    stored = admin_store.create_endpoint(storage.engine, workspace.workspace_id, provider, config)
    return as_endpoint(stored)


def test_a_100k_line_generic_file_imports_once_then_records_nothing(
    storage: Storage, tmp_path: Path
) -> None:
    endpoint = endpoint_for(storage, "generic", {"secret": signing.GENERIC_SECRET})
    path = tmp_path / "events.jsonl"
    kinds = ["Delivery", "Open", "Click", "DeliveryDelay", "Bounce"]
    with path.open("wb") as out:
        for n in range(100_000):
            if n in (17, 50_001):
                out.write(b'{"event_type": "Delivery", "message_id": "broken"\n')
                continue
            event = {
                "event_type": kinds[n % 5],
                "message_id": f"import-{n // 5}",
                "to_address": f"rcpt{n // 5}@example.com",
                "event_at": f"2025-03-14T19:{n % 60:02d}:{n % 59:02d}Z",
                "event_id": f"evt-{n}",
            }
            if kinds[n % 5] == "Bounce":
                event["bounce_type"] = "Transient"
            out.write(orjson.dumps(event) + b"\n")
    seen: list[int] = []
    first = import_file(storage, endpoint, path, "generic-jsonl", progress=seen.append)
    assert (first.items, first.recorded, first.duplicates) == (100_000, 99_998, 0)
    assert [line for line, _ in first.unparseable] == [18, 50_002]
    assert sum(seen) == 100_000
    head = storage.ledger.head_position()

    second = import_file(storage, endpoint, path, "generic-jsonl")
    assert (second.recorded, second.duplicates) == (0, 99_998)
    assert storage.ledger.head_position() == head


def test_ses_lines_import_through_the_ses_parser(storage: Storage, tmp_path: Path) -> None:
    endpoint = endpoint_for(storage, "ses", {"sns_topic_arns": [signing.TOPIC]})
    path = tmp_path / "ses.jsonl"
    kinds = ["delivery", "bounce", "complaint", "open", "send"]
    path.write_text("\n".join(json.dumps(signing.payload_json("ses", k)) for k in kinds) + "\n")
    summary = import_file(storage, endpoint, path, "ses-jsonl")
    assert summary.recorded > 0
    assert summary.ignored == 1  # the Send event
    again = import_file(storage, endpoint, path, "ses-jsonl")
    assert again.recorded == 0


def test_sendgrid_array_and_mailgun_pages(storage: Storage, tmp_path: Path) -> None:
    key = signing.sendgrid_public_key(signing.sendgrid_key())
    sendgrid = endpoint_for(storage, "sendgrid", {"public_key": key})
    array = tmp_path / "sendgrid.json"
    array.write_bytes(signing.payload("sendgrid", "batch"))
    assert import_file(storage, sendgrid, array, "sendgrid-json").recorded > 0

    mailgun = endpoint_for(storage, "mailgun", {"signing_key": signing.MAILGUN_KEY})
    page = tmp_path / "mailgun.jsonl"
    items = [signing.payload_json("mailgun", k)["event-data"] for k in ("delivered", "opened")]
    page.write_text(json.dumps({"items": items, "paging": {}}) + "\n")
    summary = import_file(storage, mailgun, page, "mailgun-events")
    assert (summary.items, summary.recorded) == (2, 2)


def test_a_format_for_another_provider_is_refused(storage: Storage, tmp_path: Path) -> None:
    endpoint = endpoint_for(storage, "generic", {"secret": signing.GENERIC_SECRET})
    path = tmp_path / "x.jsonl"
    path.write_text("{}\n")
    with pytest.raises(ImportFileError, match="ses endpoints"):
        import_file(storage, endpoint, path, "ses-jsonl")
    with pytest.raises(ImportFileError, match="unknown format"):
        import_file(storage, endpoint, path, "csv")


def test_several_processes_import_what_one_would(postgres_url: str, tmp_path: Path) -> None:
    # Each email's five events lie far apart in the file, so batches recorded at the
    # same moment by different processes keep touching the same emails. The first
    # 1,000 items are imported before the worker processes start, as a big file's are.
    emails, kinds = 1500, ["Delivery", "Open", "Click", "DeliveryDelay", "Bounce"]
    path = tmp_path / "spread.jsonl"
    with path.open("wb") as out:
        for n in range(5 * emails):
            if n == 4321:
                out.write(b"not json\n")
            email, kind = n % emails, kinds[n // emails]
            event = {
                "event_type": kind,
                "message_id": f"spread-{email}",
                "to_address": f"rcpt{email}@example.com",
                "event_at": f"2025-03-14T19:{n % 60:02d}:00Z",
                "event_id": f"spread-{n}",
            }
            if kind == "Bounce":
                event["bounce_type"] = "Permanent"
            out.write(orjson.dumps(event) + b"\n")
            if n % 100 == 0:  # a redelivery, a few lines later in the file
                out.write(orjson.dumps(event) + b"\n")
    store = open_storage(parse_database_url(postgres_url))
    try:
        endpoint = endpoint_for(store, "generic", {"secret": signing.GENERIC_SECRET})
        seen: list[int] = []
        first = import_file(
            store, endpoint, path, "generic-jsonl", batch=200, jobs=3, alone=1000,
            progress=seen.append,
        )  # fmt: skip
        assert (first.recorded, first.duplicates) == (5 * emails, 5 * emails // 100)
        assert [line for line, _ in first.unparseable] == [4321 + 4321 // 100 + 1 + 1]
        assert sum(seen) == first.items == 5 * emails + 5 * emails // 100 + 1
        store.runner.catch_up_all()
        with store.engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM email_events")).scalar() == 5 * emails
            states = conn.execute(text("SELECT state, count(*) FROM emails GROUP BY state"))
            assert dict(states.all()) == {"bounced": emails}
        again = import_file(store, endpoint, path, "generic-jsonl", batch=200, jobs=3, alone=0)
        assert (again.recorded, again.duplicates) == (0, first.recorded + first.duplicates)
    finally:
        store.close()


def test_several_processes_need_postgresql(storage: Storage, tmp_path: Path) -> None:
    endpoint = endpoint_for(storage, "generic", {"secret": signing.GENERIC_SECRET})
    path = tmp_path / "x.jsonl"
    path.write_text("{}\n")
    if storage.database.kind == "sqlite":
        with pytest.raises(ImportFileError, match="need PostgreSQL"):
            import_file(storage, endpoint, path, "generic-jsonl", jobs=2)
    else:
        assert import_file(storage, endpoint, path, "generic-jsonl", jobs=2).items == 1


def test_worker_processes_that_cannot_open_the_database_stop_the_import(
    postgres_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "two-batches.jsonl"
    lines = [
        {"event_type": "Delivery", "message_id": f"m{n}", "to_address": "a@x.test",
         "event_at": "2025-03-14T19:04:02Z", "event_id": f"e{n}"}
        for n in range(4)
    ]  # fmt: skip
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    store = open_storage(parse_database_url(postgres_url))
    try:
        endpoint = endpoint_for(store, "generic", {"secret": signing.GENERIC_SECRET})
        gone = parse_database_url(postgres_url.rsplit("/", 1)[0] + "/mailledger_no_such_db")
        # The first batch is recorded here; the workers, which would take the rest,
        # cannot open their database: the import stops and says so (it used to be
        # able to wait forever, as a pool restarts workers that fail to start).
        with pytest.raises(ImportStoppedError, match="could not open the database"):
            import_file(replace(store, database=gone), endpoint, path, "generic-jsonl",
                        batch=2, jobs=2, alone=0)  # fmt: skip
        assert store.ledger.head_position() == 2
    finally:
        store.close()
