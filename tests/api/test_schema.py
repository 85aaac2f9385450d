"""schemathesis against the served /openapi.json: no 5xx, no answer off its schema."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

ROOT = Path(__file__).parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The real service under uvicorn on a temporary SQLite database, and a workspace."""
    database = tmp_path_factory.mktemp("schema") / "served.db"
    env = dict(os.environ, MAILLEDGER_DATABASE_URL=f"sqlite:///{database}")
    made = subprocess.run(
        [sys.executable, "-m", "app", "workspace", "create", "Schema", "--json"],
        env=env, cwd=ROOT, capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    workspace = json.loads(made.stdout)
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "app", "serve", "--port", str(port)],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                httpx.get(f"{base}/healthz", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        yield {"base": base, **workspace}
    finally:
        process.terminate()
        process.wait(timeout=20)


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def test_api_answers_match_the_schema(served: dict[str, str]) -> None:
    schema = schemathesis.openapi.from_url(f"{served['base']}/openapi.json")
    headers = {"Authorization": f"Bearer {served['api_key']}"}
    tried = 0
    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]

        @given(case=operation.as_strategy())
        @settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
        def check(case: Any) -> None:
            if "workspace_id" in (case.path_parameters or {}):
                case.path_parameters["workspace_id"] = served["workspace_id"]
            case.call_and_validate(headers=headers, checks=CHECKS)

        check()
        tried += 1
    assert tried >= 4


def test_the_document_lists_every_route(served: dict[str, str]) -> None:
    document = httpx.get(f"{served['base']}/openapi.json").json()
    from app import operations

    for op in operations():
        assert op.method.lower() in document["paths"][op.path], op.path
    docs = httpx.get(f"{served['base']}/docs")
    assert docs.status_code == 200
    assert "/docs/assets/swagger-ui-bundle.js" in docs.text
    asset = httpx.get(f"{served['base']}/docs/assets/swagger-ui-bundle.js")
    assert asset.status_code == 200
    assert len(asset.content) > 100_000
