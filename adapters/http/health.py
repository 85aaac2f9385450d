"""`GET /healthz`: 200 when the store answers, 503 otherwise; and the 503 every request
that needs the store gets while it is not open yet (`WhileClosed`)."""

from __future__ import annotations

import orjson
from sqlalchemy import Engine, text
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from adapters.http.errors import error_response


def _ping(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))


async def healthz(request: Request) -> Response:
    engine: Engine = request.app.state.storage.reader
    try:
        await run_in_threadpool(_ping, engine)
    except Exception:
        return error_response(503, "the database is unavailable")
    return Response(orjson.dumps({"status": "ok"}), media_type="application/json")


# Paths served without the store.
_STORELESS = ("/openapi.json", "/docs")


class WhileClosed:
    """Answers 503 (the JSON error) to every request that needs the store while it is
    not open: a worker of `serve --workers N` started while the database was away
    serves these until its store opens in the background."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["app"].state.storage is None
            and not scope["path"].startswith(_STORELESS)
        ):
            response = error_response(503, "the database is unavailable; retry later")
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
