"""A load generator in its own process: `python -m bench.loadgen PLAN.json`.

The plan names the base URL, the concurrency and the requests (path, headers, base64
body). Requests are sent with at most `concurrency` in flight; every answer must be
2xx. Prints one JSON object: requests, seconds, p50/p99 latency in milliseconds.
"""

from __future__ import annotations

import asyncio
import base64
import statistics
import sys
import time
from typing import Any

import httpx2 as httpx
import orjson


async def _run(plan: dict[str, Any]) -> dict[str, float]:
    requests = plan["requests"]
    concurrency = int(plan["concurrency"])
    latencies: list[float] = []
    failures: list[str] = []
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for request in requests:
        queue.put_nowait(request)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=plan["base"], limits=limits, timeout=120) as client:

        async def worker() -> None:
            while not queue.empty():
                request = queue.get_nowait()
                body = base64.b64decode(request["body"])
                started = time.perf_counter()
                answer = await client.post(
                    request["path"], content=body, headers=request["headers"]
                )
                latencies.append(time.perf_counter() - started)
                if answer.status_code >= 300:
                    failures.append(f"{answer.status_code} {answer.text[:200]}")

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
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
