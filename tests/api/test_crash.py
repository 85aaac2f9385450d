"""A worker killed in the middle of a batch loses nothing once the provider retries."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import httpx2 as httpx

from adapters.settings import parse_database_url
from adapters.storage import open_storage
from bench.served import free_port, start
from tests.api.live import deliveries, generic_hook, workspace_on
from tests.unit.providers import signing

ROOT = Path(__file__).parents[2]


def test_killed_mid_batch_then_retried_records_every_event_once(database_url: str) -> None:
    workspace_id, auth = workspace_on(database_url, "crash")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start(database_url, port)
    try:
        url = generic_hook(base, workspace_id, auth)
        events = deliveries("crash", range(20_000))
        body = json.dumps(events).encode()
        answers: list[int] = []

        def post() -> None:
            from datetime import UTC, datetime

            headers = signing.generic_headers(body, timestamp=datetime.now(UTC))
            try:
                answers.append(
                    httpx.post(base + url, content=body, headers=headers, timeout=60).status_code
                )
            except httpx.TransportError:
                answers.append(0)

        sender = threading.Thread(target=post)
        sender.start()
        time.sleep(0.3)  # the request is in flight: parsing or recording its batch
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=10)
        sender.join(timeout=60)
        assert answers in ([0], [200])  # killed before answering, or done just before

        server = start(database_url, port)
        post()  # the provider retries the same delivery
        assert answers[-1] == 200
    finally:
        server.kill()
        server.wait(timeout=10)

    store = open_storage(parse_database_url(database_url))
    try:
        assert store.ledger.head_position() == 20_000
    finally:
        store.close()
