"""`GET /healthz`: 200 when the store answers, 503 otherwise."""

from __future__ import annotations

import orjson
from sqlalchemy import Engine, text
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

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
