"""The small declarative layer every /v1 endpoint goes through.

An `Operation` names its method, path, permission and the pydantic models of its
query, body and answer. The same declaration validates requests, checks the key, and
writes the operation into /openapi.json, so the code and the document cannot drift.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, get_args, get_origin

import orjson
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from adapters.storage import Storage
from adapters.workspaces import ApiKey, find_key
from domain.reports import InvalidReportError, normalize_time

MAX_JSON_BODY = 1024 * 1024
T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


class ApiError(Exception):
    """An answer other than success: status, machine code and a message for people."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


def rfc3339_time(value: str | None) -> str | None:
    """A query's optional RFC 3339 time, in the canonical form (a pydantic validator:
    `field_validator(name)(rfc3339_time)`)."""
    if value is None:
        return None
    try:
        return normalize_time(value)
    except InvalidReportError as error:
        raise ValueError(str(error)) from None


def not_found(what: str) -> ApiError:
    """404 for anything missing or belonging to another workspace (never says which)."""
    return ApiError(404, f"{what} not found")


def json_response(data: Any, status: int = 200) -> Response:
    """A JSON answer (orjson)."""
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def dump(model: BaseModel) -> Any:
    """A response model as JSON-native data."""
    return model.model_dump(mode="json")


def _validation_message(error: ValidationError, where: str) -> str:
    first = error.errors()[0]
    name = ".".join(str(part) for part in first["loc"]) or where
    message = str(first["msg"]).removeprefix("Value error, ")
    return f"{name}: {message}"


@dataclass
class Call:
    """One authenticated, validated request, as an endpoint sees it."""

    request: Request
    storage: Storage
    workspace_id: str
    key: ApiKey
    query: Any = None
    body: Any = None

    def path(self, name: str) -> str:
        """A path parameter."""
        return str(self.request.path_params[name])

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        """Run blocking database work in the threadpool."""
        return await run_in_threadpool(function, *args)


Handler = Callable[[Call], Awaitable[Response]]


@dataclass(frozen=True)
class Operation:
    """One endpoint: how to call it, who may, what it answers."""

    method: str
    path: str
    handler: Handler
    summary: str
    permission: str
    tag: str
    query: type[BaseModel] | None = None
    body: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    errors: Sequence[int] = field(default_factory=tuple)
    description: str = ""
    # Documentation only: a multipart form the handler reads itself, and request
    # headers it honors (e.g. Idempotency-Key).
    form: type[BaseModel] | None = None
    headers: Sequence[str] = field(default_factory=tuple)

    async def handle(self, request: Request) -> Response:
        """Authenticate, validate, then run the handler."""
        storage: Storage = request.app.state.storage
        key = await authenticate(request, storage, self.permission)
        call = Call(request, storage, str(request.path_params["workspace_id"]), key)
        if self.query is not None:
            call.query = parse_query(request, self.query)
        if self.body is not None:
            call.body = await parse_body(request, self.body)
        return await self.handler(call)

    def route(self) -> Route:
        """The starlette route of this operation."""

        async def endpoint(request: Request) -> Response:
            return await self.handle(request)

        endpoint.__name__ = self.handler.__name__
        return Route(self.path, endpoint, methods=[self.method])


async def authenticate(request: Request, storage: Storage, permission: str) -> ApiKey:
    """The caller's key: 401 without a valid one, 403 for another workspace or a
    missing permission. Looked up on every request, so a deleted key stops at once."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "send an API key as 'Authorization: Bearer <key>'")
    key = await run_in_threadpool(find_key, storage.reader, token.strip())
    if key is None:
        raise ApiError(401, "the API key is not valid")
    if key.workspace_id != request.path_params.get("workspace_id"):
        raise ApiError(403, "the API key belongs to another workspace")
    if permission not in key.permissions:
        raise ApiError(403, f"the API key lacks the {permission} permission")
    return key


def parse_query(request: Request, model: type[M]) -> M:
    """Validate the query string against `model`; list fields are repeatable."""
    values: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        key = info.alias or name
        if key not in request.query_params:
            continue
        if _is_list(info.annotation):
            values[key] = request.query_params.getlist(key)
        else:
            values[key] = request.query_params[key]
    try:
        return model.model_validate(values)
    except ValidationError as error:
        raise ApiError(422, _validation_message(error, "query")) from None


def _is_list(annotation: Any) -> bool:
    if get_origin(annotation) is list:
        return True
    return any(get_origin(arg) is list for arg in get_args(annotation))


async def read_body(request: Request, limit: int) -> bytes:
    """The request's body; 413 as soon as it is declared or read beyond `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"the body is larger than {limit} bytes")
    raw = bytearray()
    async for chunk in request.stream():
        raw.extend(chunk)
        if len(raw) > limit:
            raise ApiError(413, f"the body is larger than {limit} bytes")
    return bytes(raw)


async def parse_body(request: Request, model: type[M]) -> M:
    """Read and validate a JSON body: 413 too large, 400 not JSON, 422 invalid."""
    raw = await read_body(request, MAX_JSON_BODY)
    try:
        data = orjson.loads(raw or b"null")
    except orjson.JSONDecodeError as error:
        raise ApiError(400, f"the body is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise ApiError(422, "body: expected a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise ApiError(422, _validation_message(error, "body")) from None
