"""Every error the service answers has the same JSON shape, never a stack trace."""

from __future__ import annotations

import logging
from http import HTTPStatus

import orjson
from eventsourcing.persistence import PersistenceError
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ExceptionHandler

from adapters.http.api import ApiError

log = logging.getLogger(__name__)

CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    422: "unprocessable_entity",
    500: "internal_error",
    503: "unavailable",
}


def error_response(status: int, message: str, code: str | None = None) -> Response:
    """`{"error": {"code", "message"}}` with the given status."""
    body = {"error": {"code": code or CODES.get(status, "error"), "message": message}}
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return Response(
        orjson.dumps(body), status_code=status, media_type="application/json", headers=headers
    )


async def api_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.message, exc.code)


async def http_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = exc.detail if exc.detail else HTTPStatus(exc.status_code).phrase
    return error_response(exc.status_code, str(message))


async def database_error(_request: Request, exc: Exception) -> Response:
    log.warning("database unavailable: %s", exc)
    return error_response(503, "the database is unavailable; retry later")


async def unexpected_error(_request: Request, exc: Exception) -> Response:
    log.exception("unexpected error", exc_info=exc)
    return error_response(500, "internal error")


def exception_handlers() -> dict[int | type[Exception], ExceptionHandler]:
    """The handlers `create_app` installs."""
    return {
        ApiError: api_error,
        HTTPException: http_error,
        DBAPIError: database_error,
        PersistenceError: database_error,
        Exception: unexpected_error,
    }
