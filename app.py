"""The composition root: `create_app(settings)` and the `mailledger` command."""

from __future__ import annotations

import asyncio
import gc
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

from adapters import cli
from adapters.http.admin import admin_operations
from adapters.http.api import Operation
from adapters.http.emails import email_operations
from adapters.http.errors import exception_handlers
from adapters.http.health import WhileClosed, healthz
from adapters.http.history import history_operations
from adapters.http.hooks import (
    Hooks,
    RememberedCertificates,
    confirm_over_https,
    receive_hook,
)
from adapters.http.openapi import docs_init, docs_page, openapi_document, openapi_endpoint
from adapters.http.sending import sending_operations
from adapters.http.stats import stats_operations
from adapters.http.workers import listening_sockets, run_workers
from adapters.ingest import GroupCommitter
from adapters.providers.base import CertificateSource
from adapters.providers.sns_certs import SnsCertificates
from adapters.sending.worker import SendWorker
from adapters.settings import Settings
from adapters.storage import Storage, StorageUnavailableError, open_configured
from projections.runner import Stop

log = logging.getLogger(__name__)


def create_app(
    settings: Settings,
    storage: Storage | None = None,
    *,
    run_projections: bool = True,
    projections_elsewhere: bool = False,
    certificates: CertificateSource | None = None,
    confirm_subscription: Callable[[str], None] = confirm_over_https,
) -> Starlette:
    """The HTTP service. Opens `storage` at start-up unless one is given; if the
    database is away then, the service answers 503 (`WhileClosed`) and opens it in the
    background as soon as it answers. The projections follow the log in a thread of
    its own (`run_projections`), in another process (`projections_elsewhere`: the
    serving processes of `serve --workers N`), or not at all (tests)."""

    def start(app: Starlette, store: Storage) -> Running:
        background = run_projections or projections_elsewhere
        return Running.start(app, store, settings, certificates, confirm_subscription,
                             run_projections=run_projections,
                             projections_in_background=background)  # fmt: skip

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.storage = None
        running: list[Running] = []
        opener: asyncio.Task[None] | None = None
        closing = threading.Event()
        if storage is not None:
            running.append(start(app, storage))
        else:
            try:
                running.append(start(app, await run_in_threadpool(open_configured, settings)))
            except StorageUnavailableError as error:
                log.warning("the database is away, answering 503 until it is back: %s", error)

                async def open_when_back() -> None:
                    store = await run_in_threadpool(_open_when_back, settings, closing, 1.0)
                    if store is not None:
                        running.append(start(app, store))
                        log.info("the database is back: serving")

                opener = asyncio.create_task(open_when_back())
        try:
            yield
        finally:
            closing.set()
            if opener is not None:
                await opener
            for started in running:
                await started.stop(close=storage is None)

    return Starlette(
        routes=routes(),
        middleware=[Middleware(WhileClosed)],
        exception_handlers=exception_handlers(),
        lifespan=lifespan,
    )


def _open_when_back(settings: Settings, stop: Stop, interval: float) -> Storage | None:
    """After an attempt to open the store failed: try again every `interval` seconds
    until it opens (None if `stop` is set first). The projection process of `serve
    --workers N` and a worker that started during an outage both wait this way."""
    while not stop.wait(interval):
        try:
            return open_configured(settings)
        except StorageUnavailableError as error:
            log.warning("still waiting for the database: %s", error)
    return None


@dataclass
class Running:
    """What serves requests over an opened store: the group commit of webhooks, the
    send worker and (unless another process runs them) the projections."""

    store: Storage
    committer: GroupCommitter
    sender: SendWorker
    stop_projections: threading.Event
    follower: threading.Thread

    @classmethod
    def start(
        cls,
        app: Starlette,
        store: Storage,
        settings: Settings,
        certificates: CertificateSource | None,
        confirm_subscription: Callable[[str], None],
        *,
        run_projections: bool,
        projections_in_background: bool,
    ) -> Running:
        """Start them, and make the store the app's (requests are served from then on).
        With no projections following the log in the background, the send worker keeps
        the suppression list current itself."""
        committer = GroupCommitter(store)
        app.state.hooks = Hooks(
            committer,
            RememberedCertificates(certificates or SnsCertificates(settings.sns_cert_dir)),
            confirm_subscription,
        )
        sender = SendWorker(store, follow_when_idle=not projections_in_background)
        sender.start()
        app.state.sender = sender
        stop = threading.Event()
        follower = threading.Thread(
            target=store.runner.run,
            args=(stop, settings.projection_interval),
            name="projections",
            daemon=True,
        )
        if run_projections:
            follower.start()
        app.state.storage = store
        return cls(store, committer, sender, stop, follower)

    async def stop(self, *, close: bool) -> None:
        """Finish what was accepted, stop the workers, and close the store if asked."""
        await self.committer.drain()
        self.sender.stop()
        self.stop_projections.set()
        if self.follower.is_alive():
            self.follower.join(timeout=30)
        if close:
            self.store.close()


def operations() -> list[Operation]:
    """Every /v1 operation, static paths before parameterized ones that could match
    them (`/email/event` before `/email/{email_id}`)."""
    found = [
        *admin_operations(),
        *email_operations(),
        *history_operations(),
        *stats_operations(),
        *sending_operations(),
    ]
    return sorted(found, key=lambda op: [part.startswith("{") for part in op.path.split("/")])


def routes() -> list[BaseRoute]:
    """The service's routes, the API's documentation included."""
    ops = operations()
    return [
        Route("/healthz", healthz),
        Route("/hooks/{provider}/{endpoint_id}", receive_hook, methods=["POST"]),
        Route("/openapi.json", openapi_endpoint(openapi_document(ops))),
        Route("/docs", docs_page),
        Route("/docs/init.js", docs_init),
        Mount("/docs/assets", StaticFiles(directory=str(swagger_ui_path))),
        *(op.route() for op in ops),
    ]


def worker_app() -> Starlette:
    """The app of one of several serving processes (`serve --workers N`): each reads the
    same environment, opens its own connections and runs its own group commit and send
    worker; the database keeps them apart (the ledger's version check, the outbox's
    leases). The projections follow the log in a process of their own (`_follow`)."""
    cli.configure_logging()
    app = create_app(Settings.from_env(), run_projections=False, projections_elsewhere=True)
    _freeze_startup_heap()
    return app


def _freeze_startup_heap() -> None:
    # What a serving process holds once started (modules, the app) lives as long as
    # the process: kept out of the garbage collector's full passes, which otherwise
    # walk it all again every few seconds under load and hold every request meanwhile.
    gc.collect()
    gc.freeze()


# How much lower the CPU priority of the projection process of `serve --workers N` is
# than the workers' (a nice value): under a burst of webhooks the workers answer
# first and the read models catch up after (`mailledger projections status` shows
# the lag); a machine that stays saturated falls further behind.
FOLLOWER_NICENESS = 10


def _follow(settings: Settings, stop: Stop) -> None:
    """The projection process of a multi-worker service, until `stop` is set."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the supervisor, which stops us
    os.nice(FOLLOWER_NICENESS)
    cli.configure_logging()
    try:
        storage = open_configured(settings)
    except StorageUnavailableError as error:  # away when the service starts: wait for it
        log.warning("projections waiting for the database: %s", error)
        waited = _open_when_back(settings, stop, max(settings.projection_interval, 1.0))
        if waited is None:
            return
        storage = waited
    try:
        storage.runner.run(stop, settings.projection_interval)
    finally:
        storage.close()


class _Follower:
    """The projection process of `serve --workers N`, started again when it dies (the
    read models would otherwise stand still until the service restarts)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._context = multiprocessing.get_context("spawn")
        self._start()

    def _start(self) -> None:
        # An event of its own: one that a killed process was holding the lock of (in
        # `is_set` or `wait`) would block whoever sets it next.
        self._stop = self._context.Event()
        self._process = self._context.Process(
            target=_follow, args=(self._settings, self._stop), name="projections"
        )
        self._process.start()
        self._started = time.monotonic()

    def keep_alive(self) -> None:
        """Start another projection process if this one died (at most one start in
        RESTART_WAIT_S seconds, so one that cannot run does not take the CPU)."""
        ended = self._process.exitcode
        if ended is None:
            return
        if time.monotonic() - self._started < RESTART_WAIT_S:
            return
        log.warning("the projection process ended (exit code %s); starting another", ended)
        self._start()

    def stop(self) -> None:
        """Stop it after its current step (a step is one transaction)."""
        if self._process.exitcode is not None:
            return  # died: its event may be locked for good, and there is nothing to stop
        self._stop.set()
        self._process.join(timeout=60)
        if self._process.is_alive():
            self._process.terminate()  # an unfinished step rolls back
            self._process.join()


# The least time between two starts of the projection process.
RESTART_WAIT_S = 5.0


def _serve(settings: Settings, storage: Storage, options: cli.ServeOptions) -> None:
    where = f"http://{options.host}:{options.port}"
    common: dict[str, Any] = {
        "host": options.host,
        "port": options.port,
        "log_level": "info",
        "access_log": options.access_log,
    }
    if options.workers == 1:
        _say_listening(where, settings, "")
        app = create_app(settings, storage)
        _freeze_startup_heap()
        uvicorn.run(app, **common)
        return
    try:
        sockets = listening_sockets(options.host, options.port, options.workers)
    except OSError as error:
        log.error("cannot listen on %s: %s", where, error.strerror)
        raise SystemExit(1) from None
    try:
        _say_listening(where, settings, f", {options.workers} workers")
        # The tables exist by now (`storage` made them), so the workers only open them.
        follower = _Follower(settings)
        try:
            status = run_workers("app:worker_app", sockets, common, tick=follower.keep_alive)
        finally:
            follower.stop()
    finally:
        for sock in sockets:
            sock.close()
    if status:
        raise SystemExit(status)


def _say_listening(where: str, settings: Settings, processes: str) -> None:
    database = settings.database.describe()
    print(f"mailledger listening on {where} (database {database}{processes})", flush=True)


def main() -> None:
    """Entry point of the `mailledger` command."""
    sys.exit(cli.run(sys.argv[1:], serve=_serve))


if __name__ == "__main__":
    main()
