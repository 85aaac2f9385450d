"""/openapi.json, generated from the operations and their pydantic models, and /docs.

Swagger UI's files come from the swagger-ui-bundle package and are served by the
service itself, so the docs work offline.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from adapters.http.api import Operation, json_response
from adapters.providers import PROVIDERS

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "description": "A stable machine-readable code."},
                "message": {"type": "string", "description": "What went wrong, for people."},
            },
        }
    },
}
ERROR_TEXT = {
    400: "Malformed request (bad JSON, a continuation token not issued for this query).",
    401: "No valid API key.",
    403: "The key lacks the permission, or the path names another workspace.",
    404: "Not found (or another workspace's).",
    409: "Conflicts with the resource's current state.",
    413: "The body is too large.",
    422: "A parameter or field is invalid; the message names it.",
    503: "The database is unavailable; retry.",
}


class _Schemas:
    def __init__(self) -> None:
        self.components: dict[str, Any] = {"Error": ERROR_SCHEMA}

    def ref(self, model: type[BaseModel]) -> dict[str, str]:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        self.components.update(schema.pop("$defs", {}))
        self.components[model.__name__] = schema
        return {"$ref": f"#/components/schemas/{model.__name__}"}


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    options = schema.get("anyOf")
    if options:
        kept = [o for o in options if o.get("type") != "null"]
        if len(kept) == 1:
            merged = {k: v for k, v in schema.items() if k != "anyOf"}
            merged.update(kept[0])
            return merged
    return schema


def _parameters(op: Operation) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in re.findall(r"{(\w+)}", op.path)
    ]
    if op.query is None:
        return params
    properties = op.query.model_json_schema()["properties"]
    for name, schema in properties.items():
        clean = _without_null(schema)
        param: dict[str, Any] = {
            "name": name,
            "in": "query",
            "required": False,
            "schema": {k: v for k, v in clean.items() if k not in ("title", "description")},
        }
        if "description" in clean:
            param["description"] = clean["description"]
        if clean.get("type") == "array":
            param.update(style="form", explode=True)
        params.append(param)
    return params


def _responses(op: Operation, schemas: _Schemas) -> dict[str, Any]:
    success: dict[str, Any] = {"description": "Success."}
    if op.response is not None:
        success["content"] = {"application/json": {"schema": schemas.ref(op.response)}}
    return {str(op.status): success, **_error_answers(*sorted({401, 403, *op.errors, 503}))}


def openapi_document(operations: Sequence[Operation]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every operation."""
    schemas = _Schemas()
    paths: dict[str, Any] = {}
    for op in operations:
        entry: dict[str, Any] = {
            "operationId": op.handler.__name__.removesuffix("_endpoint"),
            "summary": op.summary,
            "description": (op.description + "\n\n" if op.description else "")
            + f"Permission: `{op.permission}`.",
            "tags": [op.tag],
            "parameters": _parameters(op),
            "responses": _responses(op, schemas),
            "security": [{"bearerAuth": []}],
        }
        if op.body is not None:
            entry["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": schemas.ref(op.body)}},
            }
        if op.form is not None:
            entry["requestBody"] = {
                "required": True,
                "content": {"multipart/form-data": {"schema": schemas.ref(op.form)}},
            }
        entry["parameters"].extend(
            {"name": name, "in": "header", "required": False, "schema": {"type": "string"}}
            for name in op.headers
        )
        paths.setdefault(op.path, {})[op.method.lower()] = entry
    paths["/hooks/{provider}/{endpoint_id}"] = _webhook_path()
    paths["/healthz"] = {
        "get": {
            "operationId": "healthz",
            "summary": "Whether the service and its database answer",
            "tags": ["service"],
            "responses": {
                "200": {
                    "description": "The store answers.",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["status"],
                                "properties": {"status": {"type": "string", "const": "ok"}},
                            }
                        }
                    },
                },
                **_error_answers(503),
            },
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "mailledger",
            "version": "1",
            "description": "Event-sourced email delivery tracking. Every error answers "
            '`{"error": {"code", "message"}}`; times are RFC 3339 UTC; ids are UUIDs.',
        },
        "paths": paths,
        "components": {
            "schemas": schemas.components,
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        },
    }


def _error_answers(*statuses: int) -> dict[str, Any]:
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    return {
        str(status): {"description": ERROR_TEXT.get(status, "Error."), "content": error}
        for status in statuses
    }


def _webhook_path() -> dict[str, Any]:
    """The provider webhook URL: the one a provider's console is given."""
    counts = {
        "type": "object",
        "required": ["received", "recorded", "duplicates", "ignored"],
        "properties": {
            "received": {"type": "integer", "description": "Events found in the request."},
            "recorded": {"type": "integer", "description": "Appended to their emails' logs."},
            "duplicates": {"type": "integer", "description": "Already held: not counted."},
            "ignored": {"type": "integer", "description": "Without meaning here (kept)."},
        },
    }
    answers = _error_answers(400, 404, 413, 503)
    answers["401"] = {
        "description": "The signature (or basic auth, or Mailgun token) does not verify.",
        "content": answers["400"]["content"],
    }
    answers["403"] = {
        "description": "Another provider's request, or an SNS topic the endpoint does not take.",
        "content": answers["400"]["content"],
    }
    return {
        "post": {
            "operationId": "receive_hook",
            "summary": "A provider's webhook: verified, deduplicated, recorded, kept",
            "description": "The URL an inbound endpoint answers with (`POST /v1/{workspace_id}"
            "/email/inbound`). The body is the provider's own (SNS envelope, SendGrid "
            "array, Mailgun object, Postmark record, mailledger event JSON), authenticated "
            "by the provider's signature scheme rather than an API key. Every request is "
            "kept verbatim in the receipts. See docs/providers.md.",
            "tags": ["webhooks"],
            "parameters": [
                {
                    "name": "provider",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "enum": sorted(PROVIDERS)},
                },
                {
                    "name": "endpoint_id",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "format": "uuid"},
                },
            ],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {}}}},
            "responses": {
                "200": {
                    "description": "Recorded (or a retry, answered with zero counts).",
                    "content": {"application/json": {"schema": counts}},
                },
                **answers,
            },
            "security": [],
        }
    }


DOCS_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>mailledger API</title>
<link rel="stylesheet" href="/docs/assets/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script src="/docs/init.js"></script>
</body>
</html>
"""

DOCS_INIT = """window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui"});
"""


def openapi_endpoint(document: dict[str, Any]) -> Any:
    """The handler serving a prepared document."""

    async def openapi_json(_request: Request) -> Response:
        return json_response(document)

    return openapi_json


async def docs_page(_request: Request) -> Response:
    return HTMLResponse(DOCS_PAGE)


async def docs_init(_request: Request) -> Response:
    return Response(DOCS_INIT, media_type="text/javascript")
