"""The HTTP service: health, the error shape, outages."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx2 as httpx
import pytest
from starlette.testclient import TestClient

import app
from adapters.settings import Settings, parse_database_url
from adapters.storage import Storage, make_engine, open_storage
from app import create_app
from bench.served import free_port
from domain.reports import email_id_for
from tests.api.apiclient import Tenant, make_tenant
from tests.api.live import two_workers
from tests.unit.providers import signing


@pytest.fixture
def client(storage: Storage) -> Iterator[TestClient]:
    settings = Settings(database_url="sqlite:///unused.db")
    with TestClient(create_app(settings, storage, run_projections=False)) as test_client:
        yield test_client


@pytest.mark.parametrize(
    ("run_projections", "projections_elsewhere", "worker_follows"),
    [
        (True, False, False),  # `serve`: a projection thread keeps the list
        (False, True, False),  # `serve --workers N`: the projection process does
        (False, False, True),  # nothing else follows the log
    ],
)
def test_the_send_worker_keeps_the_suppression_list_only_when_nothing_else_does(
    storage: Storage, run_projections: bool, projections_elsewhere: bool, worker_follows: bool
) -> None:
    settings = Settings(database_url="sqlite:///unused.db")
    served = create_app(
        settings,
        storage,
        run_projections=run_projections,
        projections_elsewhere=projections_elsewhere,
    )
    with TestClient(served):
        assert served.state.sender.follow_when_idle is worker_follows


def test_healthz_answers_ok(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_unknown_route_is_a_json_404(client: TestClient) -> None:
    response = client.get("/nowhere")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"error": {"code": "not_found", "message": "Not Found"}}


def test_wrong_method_is_a_json_405(client: TestClient) -> None:
    response = client.post("/healthz")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_healthz_is_503_while_the_database_is_down_and_recovers(
    storage: Storage, client: TestClient
) -> None:
    working = storage.reader
    gone = parse_database_url("postgresql://postgres@127.0.0.1:9/gone")
    storage.reader = make_engine(gone, reads_only=True)
    try:
        response = client.get("/healthz")
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "unavailable"
    finally:
        storage.reader.dispose()
        storage.reader = working
    assert client.get("/healthz").status_code == 200


def test_serve_listens_and_says_where(tmp_path: Path) -> None:
    port = free_port()
    env = dict(os.environ, MAILLEDGER_DATABASE_URL=f"sqlite:///{tmp_path / 'served.db'}")
    process = subprocess.Popen(
        [sys.executable, "-m", "app", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        first_line = process.stdout.readline()
        assert f"http://127.0.0.1:{port}" in first_line
        for _ in range(100):
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            pytest.fail("the service never answered /healthz")
        assert response.json() == {"status": "ok"}
    finally:
        process.terminate()
        process.wait(timeout=20)
        if process.stdout is not None:
            process.stdout.close()


def test_two_workers_on_postgresql_answer_and_record_a_webhook_once(
    postgres_url: str, tmp_path: Path
) -> None:
    store = open_storage(parse_database_url(postgres_url))
    tenant = make_tenant(store)
    store.close()
    with two_workers(postgres_url, tmp_path) as (_, port):
        _answer_and_record_once(tenant, f"http://127.0.0.1:{port}")


def _answer_and_record_once(tenant: Tenant, base: str) -> None:
    url = httpx.post(
        f"{base}/v1/{tenant.workspace_id}/email/inbound",
        json={"provider": "generic", "secret": signing.GENERIC_SECRET},
        headers=tenant.headers(),
    ).json()["url"]
    event = {
        "event_type": "Delivery",
        "message_id": "relay-1",
        "to_address": "rcpt@example.com",
        "event_at": "2025-03-14T19:00:00Z",
        "event_id": "evt-1",
    }
    body = json.dumps([event]).encode()
    answers = []
    # A new connection each time, so that both processes are likely to answer:
    # the same event again, under new webhook-ids, is a duplicate whichever does.
    for n in range(6):
        headers = signing.generic_headers(body, webhook_id=f"msg_{n}", timestamp=datetime.now(UTC))
        answer = httpx.post(f"{base}{url}", content=body, headers=headers)
        assert answer.status_code == 200, answer.text
        answers.append(answer.json())
    assert [a["recorded"] for a in answers] == [1, 0, 0, 0, 0, 0]
    assert [a["duplicates"] for a in answers] == [0, 1, 1, 1, 1, 1]
    email_id = email_id_for(tenant.workspace_id, "relay-1", "rcpt@example.com")
    detail = f"{base}/v1/{tenant.workspace_id}/email/{email_id}"
    for _ in range(100):  # one of the workers' projection followers fills the view
        shown = httpx.get(detail, headers=tenant.headers())
        if shown.status_code == 200:
            break
        time.sleep(0.1)
    assert shown.status_code == 200, shown.text
    assert shown.json()["state"] == "delivered"


def test_the_projection_process_waits_for_a_database_that_is_away(pg_server_url: str) -> None:
    # `serve --workers N` starts it beside the workers; when the database does not
    # answer yet, it waits (and stops when told) rather than dying, which would leave
    # the read models behind for as long as the service runs.
    away = Settings(database_url=pg_server_url.rsplit("/", 1)[0] + "/mailledger_not_yet")
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    follower = context.Process(target=app._follow, args=(away, stop))
    follower.start()
    try:
        time.sleep(3)  # several failed attempts to open the database
        assert follower.is_alive()
    finally:
        stop.set()
        follower.join(timeout=30)
    assert follower.exitcode == 0
