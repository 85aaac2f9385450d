"""A real database outage: the service, over a TCP proxy to PostgreSQL that the test
cuts and restores, answers 503 with the JSON error while the database is away and
serves again by itself, in the same process, once it is back (SPEC 4.2)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from urllib.parse import urlsplit, urlunsplit

import httpx2 as httpx
import orjson
import pytest
from starlette.testclient import TestClient

from adapters.settings import Settings, parse_database_url
from adapters.storage import open_storage
from app import create_app
from bench.served import free_port, start
from domain.reports import email_id_for
from tests.api.live import deliveries, generic_hook, workspace_on
from tests.unit.providers import signing


class Proxy:
    """Forwards TCP connections from a local port to the database server; `cut()`
    drops every open connection and refuses new ones until `restore()`."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.up = True
        self.open: set[socket.socket] = set()
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            if not self.up:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self.lock:
                self.open.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            self._drop(source, sink)

    def _drop(self, *sockets: socket.socket) -> None:
        with self.lock:
            for sock in sockets:
                self.open.discard(sock)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def cut(self) -> None:
        self.up = False
        with self.lock:
            dropped = list(self.open)
        self._drop(*dropped)

    def restore(self) -> None:
        self.up = True

    def close(self) -> None:
        self.cut()
        self.listener.close()


@pytest.fixture
def proxied(postgres_url: str) -> Iterator[tuple[Proxy, str]]:
    """A proxy to the test database's server, and the database's URL through it."""
    parts = urlsplit(postgres_url)
    proxy = Proxy((parts.hostname or "127.0.0.1", parts.port or 5432))
    through = parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}")
    try:
        yield proxy, urlunsplit(through)
    finally:
        proxy.close()


def answer_within(seconds: float, request: httpx.Request) -> httpx.Response:
    """The service's answer to the request, which must come within `seconds`."""
    started = time.monotonic()
    with httpx.Client(timeout=seconds + 5) as client:
        response = client.send(request)
    assert time.monotonic() - started < seconds, f"{request.url} took too long while down"
    return response


def once_served(request: httpx.Request) -> httpx.Response:
    """The first 200 answer to the request, asked again while it is 503 (for at most
    15 seconds), as a provider retries."""
    for _ in range(150):
        response = answer_within(30, request)
        if response.status_code == 200:
            return response
        assert response.status_code == 503, response.text
        time.sleep(0.1)
    pytest.fail(f"{request.url} was not served again")


@pytest.mark.parametrize("workers", ["1", "2"])
def test_requests_answer_503_while_the_database_is_away_and_serve_again_after(
    proxied: tuple[Proxy, str], workers: str
) -> None:
    proxy, url = proxied
    workspace_id, auth = workspace_on(url, "outage")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start(url, port, ["--workers", workers])
    try:
        hook = generic_hook(base, workspace_id, auth)
        # Two emails, so that recording them reads the ledger's stored events too.
        events = deliveries("outage", range(1, 3))
        body = orjson.dumps(events)

        def webhook(webhook_id: str) -> httpx.Request:
            headers = signing.generic_headers(body, webhook_id, datetime.now(UTC))
            return httpx.Request("POST", base + hook, content=body, headers=headers)

        email_id = email_id_for(workspace_id, "outage-1", "rcpt@example.com")
        email_url = f"{base}/v1/{workspace_id}/email/{email_id}"
        detail = httpx.Request("GET", email_url, headers=auth)
        health = httpx.Request("GET", f"{base}/healthz")

        proxy.cut()
        for request in (health, webhook("msg-outage-1"), detail):
            down = answer_within(30, request)
            assert down.status_code == 503, (request.url, down.text)
            assert down.json()["error"]["code"] == "unavailable"

        proxy.restore()
        # The provider retries the request that failed until it is acknowledged: each
        # process serves again by itself within seconds, and until then says 503.
        retried = once_served(webhook("msg-outage-1"))
        assert retried.json()["recorded"] == 2
        once_served(health)
        for _ in range(150):  # the projections follow again too
            shown = answer_within(30, detail)
            if shown.status_code == 200:
                break
            time.sleep(0.1)
        assert shown.status_code == 200, shown.text
        assert shown.json()["state"] == "delivered"
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_a_service_started_while_the_database_is_away_serves_once_it_is_back(
    proxied: tuple[Proxy, str],
) -> None:
    # As a worker of `serve --workers N` that starts during an outage: it does not die
    # (which would stop every worker), it answers 503 and opens the store once it can.
    proxy, url = proxied
    open_storage(parse_database_url(url)).close()  # the tables exist, as under `serve`
    proxy.cut()
    with TestClient(create_app(Settings(database_url=url), run_projections=False)) as client:
        down = client.get("/healthz")
        assert down.status_code == 503
        assert down.json()["error"]["code"] == "unavailable"
        assert client.get("/v1/any-workspace/email", params={"setup_id": "s"}).status_code == 503
        assert client.get("/openapi.json").status_code == 200  # needs no database
        proxy.restore()
        for _ in range(100):
            if client.get("/healthz").status_code == 200:
                break
            time.sleep(0.1)
        else:
            pytest.fail("the service never opened its store")
        assert client.get("/v1/any-workspace/email", params={"setup_id": "s"}).status_code == 401
