"""The HTTP service: health, the error shape, outages."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest
from starlette.testclient import TestClient

from adapters.settings import Settings, parse_database_url
from adapters.storage import Storage, make_engine
from app import create_app
from bench.served import free_port


@pytest.fixture
def client(storage: Storage) -> Iterator[TestClient]:
    settings = Settings(database_url="sqlite:///unused.db")
    with TestClient(create_app(settings, storage, run_projections=False)) as test_client:
        yield test_client


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
