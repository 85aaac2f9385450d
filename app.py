"""The composition root: `create_app(settings)` and the `mailledger` command."""

from __future__ import annotations

import sys
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.routing import Route

from adapters import cli
from adapters.http.errors import exception_handlers
from adapters.http.health import healthz
from adapters.settings import Settings
from adapters.storage import Storage, open_storage


def create_app(
    settings: Settings, storage: Storage | None = None, *, run_projections: bool = True
) -> Starlette:
    """The HTTP service. Opens `storage` at start-up unless one is given."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        store = storage
        if store is None:
            store = await run_in_threadpool(
                open_storage, settings.database, batch_size=settings.projection_batch_size
            )
        app.state.storage = store
        stop = threading.Event()
        follower = threading.Thread(
            target=store.runner.run,
            args=(stop, settings.projection_interval),
            name="projections",
            daemon=True,
        )
        if run_projections:
            follower.start()
        try:
            yield
        finally:
            stop.set()
            if follower.is_alive():
                follower.join(timeout=30)
            if storage is None:
                store.close()

    return Starlette(
        routes=[Route("/healthz", healthz)],
        exception_handlers=exception_handlers(),
        lifespan=lifespan,
    )


def _serve(settings: Settings, storage: Storage, host: str, port: int) -> None:
    print(
        f"mailledger listening on http://{host}:{port} (database {settings.database.describe()})",
        flush=True,
    )
    uvicorn.run(create_app(settings, storage), host=host, port=port, log_level="info")


def main() -> None:
    """Entry point of the `mailledger` command."""
    sys.exit(cli.run(sys.argv[1:], serve=_serve))


if __name__ == "__main__":
    main()
