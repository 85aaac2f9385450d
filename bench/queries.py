"""The query side: list and detail latency through uvicorn, from another process.

The read-model tables are filled directly with COPY (1M emails and 5M events at full
size would take the ledger's ingest far longer than a benchmark should); the rows
have the shapes and distributions the projections write: a few use cases and setups,
states in realistic proportions, five events per email.
"""

from __future__ import annotations

import random
import statistics
import time
import uuid
from typing import Any

import orjson
import psycopg
from sqlalchemy import JSON

from adapters.settings import parse_database_url
from adapters.storage import open_storage
from adapters.workspaces import create_workspace
from bench.served import client as client_for
from bench.served import served
from domain.email import EmailView
from projections.emails import emails
from projections.events import email_events

USE_CASES = [str(uuid.UUID(int=i + 1)) for i in range(4)]
SETUPS = [str(uuid.UUID(int=i + 101)) for i in range(2)]
STATES = ["delivered"] * 80 + ["bounced"] * 8 + ["sent"] * 6 + ["rejected"] * 4 + ["complained"] * 2
KINDS = ["Delivery", "Open", "Click", "DeliveryDelay", "Bounce"]


def _time(seconds: int) -> str:
    day, rest = divmod(seconds, 86_400)
    hour, rest = divmod(rest, 3600)
    minute, second = divmod(rest, 60)
    return (
        f"2025-{1 + day // 28:02d}-{1 + day % 28:02d}T{hour:02d}:{minute:02d}:{second:02d}.000000Z"
    )


def _email_row(i: int, workspace_id: str, rng: random.Random) -> dict[str, Any]:
    sent = _time(i * 7 % (300 * 86_400))
    state = rng.choice(STATES)
    later = _time(i * 7 % (300 * 86_400) + 30)
    email_id = str(uuid.UUID(int=i + 1_000_000_000))
    # Every column the view has, at its default; then what this email says.
    return EmailView(id=email_id, workspace_id=workspace_id).as_row() | {
        "message_id": f"bench-{i}",
        "to_address": f"user{i % 50_000}@example{i % 7}.com",
        "from_address": "news@shop.example",
        "subject": f"Your order {i}",
        "setup_id": SETUPS[i % len(SETUPS)],
        "use_case_id": USE_CASES[i % len(USE_CASES)],
        "email_type": "transactional",
        "tier": "good",
        "attachment_filenames": [],
        "has_attachment": False,
        "tags": {},
        "state": state,
        "sent_at": sent,
        "id_rank": f"0{sent}",
        "origin_rank": f"0{sent}",
        "origin_sent_at": sent,
        "first_event_at": sent,
        "delivered_at": later if state in ("delivered", "complained") else None,
        "bounced_at": later if state == "bounced" else None,
        "bounce_type": "Permanent" if state == "bounced" else None,
        "bounce_subtype": "General" if state == "bounced" else None,
        "bounce_rank": None,
        "complained_at": later if state == "complained" else None,
        "rejected_at": later if state == "rejected" else None,
        "delivery_delay_at": None,
        "first_open_at": later,
        "last_open_at": later,
        "open_count": 1,
        "human_open_count": 1,
        "first_click_at": None,
        "last_click_at": None,
        "click_count": 0,
        "updated_at": later,
    }


def _copy(conn: psycopg.Connection[Any], table: Any, rows: Any) -> None:
    names = [c.name for c in table.columns]
    as_json = {c.name for c in table.columns if isinstance(c.type, JSON)}
    columns = ", ".join(f'"{n}"' for n in names)
    with conn.cursor().copy(f'COPY "{table.name}" ({columns}) FROM STDIN') as copy:
        for row in rows:
            copy.write_row(
                [orjson.dumps(row[n]).decode() if n in as_json else row[n] for n in names]
            )


def fill(url: str, email_count: int, events_per_email: int) -> tuple[str, str, list[str]]:
    """Fill the read models; the workspace id, its key and some email ids."""
    store = open_storage(parse_database_url(url))
    made = create_workspace(store.engine, "bench")
    store.close()
    rng = random.Random(7)
    with psycopg.connect(url) as conn:
        _copy(conn, emails, (_email_row(i, made.workspace_id, rng) for i in range(email_count)))
        _copy(
            conn,
            email_events,
            (
                {
                    "position": i * events_per_email + n + 1,
                    "id": str(uuid.UUID(int=(i * events_per_email + n) + 5_000_000_000)),
                    "email_id": str(uuid.UUID(int=i + 1_000_000_000)),
                    "workspace_id": made.workspace_id,
                    "version": n + 1,
                    "event_type": KINDS[n % len(KINDS)],
                    "event_at": _time(i * 7 % (300 * 86_400) + 60 * (n + 1)),
                    "received_at": _time(i * 7 % (300 * 86_400) + 60 * (n + 1) + 1),
                    "provider": "ses",
                    "transport_key": f"ses:{i}:{n}",
                    "semantic_key": f"{i:032x}{n:032x}",
                    "receipt_id": None,
                    "message_id": f"bench-{i}",
                    "to_address": f"user{i % 50_000}@example{i % 7}.com",
                    "detail": {},
                }
                for i in range(email_count)
                for n in range(events_per_email)
            ),
        )
        conn.execute("ANALYZE emails")
        conn.execute("ANALYZE email_events")
        conn.commit()
    ids = [str(uuid.UUID(int=rng.randrange(email_count) + 1_000_000_000)) for _ in range(2000)]
    return made.workspace_id, made.api_key, ids


def _p99(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100)[98] * 1000


def measure(
    url: str, workspace_id: str, key: str, ids: list[str], requests: int
) -> dict[str, float]:
    """p50/p99 of list (page of 50, state filter) and detail, through uvicorn."""
    rng = random.Random(3)
    with (
        served(url) as base,
        client_for(base, {"Authorization": f"Bearer {key}"}) as client,
    ):
        lists: list[float] = []
        details: list[float] = []
        for n in range(requests + 50):
            params: dict[str, str | int] = {
                "use_case_id": rng.choice(USE_CASES),
                "state": rng.choice(STATES),
                "limit": 50,
            }
            started = time.perf_counter()
            status, answer = client.get(f"/v1/{workspace_id}/email", params)
            elapsed = time.perf_counter() - started
            assert status == 200, answer
            if n >= 50:
                lists.append(elapsed)
            started = time.perf_counter()
            status, answer = client.get(f"/v1/{workspace_id}/email/{ids[n % len(ids)]}")
            elapsed = time.perf_counter() - started
            assert status == 200, answer
            if n >= 50:
                details.append(elapsed)
    return {
        "list_p50_ms": round(statistics.median(lists) * 1000, 2),
        "list_p99_ms": round(_p99(lists), 2),
        "detail_p50_ms": round(statistics.median(details) * 1000, 2),
        "detail_p99_ms": round(_p99(details), 2),
    }
