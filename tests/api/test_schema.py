"""schemathesis against the served /openapi.json: no 5xx, no answer off its schema."""

from __future__ import annotations

import json
import os
import subprocess
import sys
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

from bench.served import served as service

ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The real service under uvicorn on a temporary SQLite database, and a workspace."""
    url = f"sqlite:///{tmp_path_factory.mktemp('schema') / 'served.db'}"
    made = subprocess.run(
        [sys.executable, "-m", "app", "workspace", "create", "Schema", "--json"],
        env=dict(os.environ, MAILLEDGER_DATABASE_URL=url),
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    with service(url) as base:
        yield {"base": base, **json.loads(made.stdout)}


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
    hook = document["paths"]["/hooks/{provider}/{endpoint_id}"]["post"]
    assert {"200", "401", "404", "413", "503"} <= set(hook["responses"])
    assert hook["parameters"][0]["schema"]["enum"] == [
        "generic", "mailgun", "postmark", "sendgrid", "ses"
    ]  # fmt: skip
    docs = httpx.get(f"{served['base']}/docs")
    assert docs.status_code == 200
    assert "/docs/assets/swagger-ui-bundle.js" in docs.text
    asset = httpx.get(f"{served['base']}/docs/assets/swagger-ui-bundle.js")
    assert asset.status_code == 200
    assert len(asset.content) > 100_000
