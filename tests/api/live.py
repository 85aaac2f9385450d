"""A workspace with a generic inbound endpoint on a service running in its own process
(`bench.served.start`), for the tests that stop or cut what is under it."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from adapters.settings import parse_database_url
from adapters.storage import open_storage
from adapters.workspaces import create_workspace
from bench.served import free_port, start
from tests.unit.providers import signing


def workspace_on(url: str, name: str) -> tuple[str, dict[str, str]]:
    """A new workspace in the database at `url`: its id and its admin key's headers."""
    store = open_storage(parse_database_url(url))
    try:
        made = create_workspace(store.engine, name)
    finally:
        store.close()
    return made.workspace_id, {"Authorization": f"Bearer {made.api_key}"}


def generic_hook(base: str, workspace_id: str, auth: dict[str, str]) -> str:
    """The path of a new generic inbound endpoint of the workspace, made through the API."""
    made = httpx.post(
        f"{base}/v1/{workspace_id}/email/inbound",
        json={"provider": "generic", "secret": signing.GENERIC_SECRET},
        headers=auth,
    )
    assert made.status_code == 201, made.text
    return str(made.json()["url"])


def deliveries(prefix: str, numbers: range) -> list[dict[str, Any]]:
    """Generic Delivery events, one per number, each for an email of its own."""
    return [
        {
            "event_type": "Delivery",
            "message_id": f"{prefix}-{n}",
            "to_address": "rcpt@example.com",
            "event_at": "2025-03-14T19:04:02Z",
            "event_id": f"evt-{prefix}-{n}",
        }
        for n in numbers
    ]


@contextmanager
def two_workers(url: str, folder: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """`serve --workers 2` over the database at `url` once both workers have started:
    the service's process and port. What it printed is shown when the block fails."""
    port = free_port()
    log_path = folder / "serve.log"
    with log_path.open("wb") as log:
        process = start(url, port, ["--workers", "2", "--no-access-log"], log=log)
    try:
        # /healthz answered from one process; both have started once each said so.
        for _ in range(300):
            if log_path.read_text(errors="replace").count("Application startup complete") >= 2:
                break
            time.sleep(0.1)
        else:
            pytest.fail("the two workers never both finished starting")
        yield process, port
    except BaseException:
        # What the service printed (a worker that died, and why) is in the report.
        print(log_path.read_text(errors="replace")[-5000:])
        raise
    finally:
        process.terminate()
        process.wait(timeout=60)
