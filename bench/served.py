"""The service under uvicorn in its own process, for benchmarks and end-to-end tests."""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import IO, Any
from urllib.parse import urlencode, urlsplit

import httpx2 as httpx
import orjson


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(
    url: str,
    port: int,
    options: Sequence[str] = (),
    *,
    env: Mapping[str, str] | None = None,
    log: IO[bytes] | None = None,
) -> subprocess.Popen[bytes]:
    """`mailledger serve` on `port` over the database `url`, with more `options` of the
    command, once /healthz answers; what it prints goes to `log` (else nowhere)."""
    output: IO[bytes] | int = subprocess.DEVNULL if log is None else log
    process = subprocess.Popen(
        [sys.executable, "-m", "app", "serve", "--port", str(port), *options],
        env={**os.environ, **(env or {}), "MAILLEDGER_DATABASE_URL": url},
        stdout=output,
        stderr=output,
    )
    for _ in range(200):
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return process
        except httpx.TransportError:
            if process.poll() is not None:
                break
            time.sleep(0.1)
    process.kill()
    process.wait(timeout=10)
    raise RuntimeError(f"the service on port {port} never answered /healthz")


@contextmanager
def served(url: str, options: Sequence[str] = (), **env: str) -> Iterator[str]:
    """The service on a free port for the length of the block; its base URL."""
    port = free_port()
    process = start(url, port, options, env=env)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)


class Client:
    """A minimal keep-alive HTTP/1.1 client (the standard library's) for latency
    figures: what is measured is the service, not a client library's own work."""

    def __init__(self, base: str, headers: dict[str, str]) -> None:
        parts = urlsplit(base)
        self._connection = http.client.HTTPConnection(parts.hostname or "", parts.port)
        self._headers = headers

    def get(self, path: str, params: dict[str, Any] | None = None) -> tuple[int, Any]:
        """(status, decoded JSON body) of a GET."""
        target = f"{path}?{urlencode(params)}" if params else path
        self._connection.request("GET", target, headers=self._headers)
        answer = self._connection.getresponse()
        return answer.status, orjson.loads(answer.read())

    def close(self) -> None:
        """Close the connection."""
        self._connection.close()


@contextmanager
def client(base: str, headers: dict[str, str]) -> Iterator[Client]:
    """A `Client` for the length of the block."""
    made = Client(base, headers)
    try:
        yield made
    finally:
        made.close()
