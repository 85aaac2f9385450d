"""A load generator in its own process: `python -m bench.loadgen PLAN.json`.

The plan names the base URL, the concurrency and the requests (path, headers, base64
body). Requests are sent with at most `concurrency` in flight, over that many
keep-alive HTTP/1.1 connections; every answer must be 2xx. Prints one JSON object:
requests, seconds, p50/p99 latency in milliseconds.

The requests are written as bytes ahead of time and the answers read with the least
parsing HTTP/1.1 allows (status line, Content-Length or chunks): on a 2-core machine
the load generator shares the CPU with the service, and a full HTTP client would spend
about a millisecond of it per request, which the service would then not have.
"""

from __future__ import annotations

import asyncio
import base64
import statistics
import sys
import time
from typing import Any
from urllib.parse import urlsplit

import orjson


def _request_bytes(host: str, request: dict[str, Any]) -> bytes:
    body = base64.b64decode(request["body"])
    lines = [f"POST {request['path']} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in request["headers"].items()]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """The status and body of one HTTP/1.1 answer."""
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    status = int(status_line.split(" ", 2)[1])
    headers = {}
    for line in header_lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        return status, await reader.readexactly(int(headers["content-length"]))
    if headers.get("transfer-encoding", "").lower() != "chunked":
        raise RuntimeError(f"an answer without a length: {head!r}")
    body = b""
    while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
        body += (await reader.readexactly(size + 2))[:-2]
    await reader.readuntil(b"\r\n")  # the empty trailer
    return status, body


async def _run(plan: dict[str, Any]) -> dict[str, float]:
    base = urlsplit(plan["base"])
    host, port = base.hostname or "127.0.0.1", base.port or 80
    pending = [_request_bytes(base.netloc, request) for request in plan["requests"]]
    pending.reverse()
    latencies: list[float] = []
    failures: list[str] = []

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while pending:
                request = pending.pop()
                started = time.perf_counter()
                writer.write(request)
                status, body = await _answer(reader)
                latencies.append(time.perf_counter() - started)
                if status >= 300:
                    failures.append(f"{status} {body[:200]!r}")
        finally:
            writer.close()
            await writer.wait_closed()

    started = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(int(plan["concurrency"]))))
    seconds = time.perf_counter() - started
    if failures:
        raise SystemExit(f"{len(failures)} requests failed, first: {failures[0]}")
    return {
        "requests": len(latencies),
        "seconds": seconds,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": statistics.quantiles(latencies, n=100)[98] * 1000,
    }


def main() -> None:
    with open(sys.argv[1], "rb") as plan_file:
        plan = orjson.loads(plan_file.read())
    print(orjson.dumps(asyncio.run(_run(plan))).decode())


if __name__ == "__main__":
    main()
