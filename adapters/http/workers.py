"""The serving processes of `mailledger serve --workers N`.

Each worker listens on a socket of its own, all bound to the one address with
SO_REUSEPORT, so the kernel spreads new connections across the workers by their
addresses. With one socket shared by every worker (uvicorn's own `workers=N`), each
new connection goes to whichever worker accepts first, and a worker woken by several
at once accepts them all: a client that opened four connections together had all
four served by one of two workers in about half of the runs, at half the throughput.

The supervisor (this process) keeps every socket open while it runs: connections
that arrive for a worker that died wait in its socket's queue for its replacement.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import socket
import sys
import threading
from collections.abc import Callable, Mapping
from multiprocessing.context import SpawnProcess
from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE

log = logging.getLogger(__name__)

BACKLOG = 2048  # uvicorn's default length of a socket's queue of new connections
STOP_WAIT_S = 30.0  # how long a worker has to finish what it accepted, once told to stop


class AddressInUseError(OSError):
    """Something else listens on the address already."""


def listening_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """`count` sockets listening on host:port, each with its own queue (SO_REUSEPORT).

    An address that anything already listens on is refused (AddressInUseError), as a
    single socket's would be, rather than shared with it: a second `mailledger serve`
    on the same port would otherwise silently take half of the first one's traffic.
    Port 0 means a free port, the same for every socket.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if port:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as error:
                raise AddressInUseError(error.errno, error.strerror) from None
    made: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM)
            made.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            sock.listen(BACKLOG)
            port = sock.getsockname()[1]  # port 0: the one the first socket got
    except BaseException:
        for sock in made:
            sock.close()
        raise
    return made


def _serve_one(app: str, sock: socket.socket, options: Mapping[str, Any]) -> None:
    # A worker process: uvicorn serving the app (an import string of a factory) on
    # its socket, until SIGTERM or SIGINT. A worker that cannot start ends with
    # STARTUP_FAILURE (uvicorn's own code for an app it cannot load), so that the
    # supervisor does not start it again and again.
    server = uvicorn.Server(uvicorn.Config(app, factory=True, **options))
    try:
        server.run(sockets=[sock])
    except Exception:
        if server.started:
            raise
        log.exception("a worker could not start")
        sys.exit(STARTUP_FAILURE)


def run_workers(
    app: str,
    sockets: list[socket.socket],
    options: Mapping[str, Any],
    *,
    tick: Callable[[], object] | None = None,
) -> int:
    """Serve the app in a process per socket until SIGINT, SIGTERM or SIGHUP; a worker
    that dies is replaced on its socket, and `tick` is called twice a second (to look
    after other processes). The exit status: 0, or 1 when a worker could not start
    (the next one would fail the same way)."""
    context = multiprocessing.get_context("spawn")

    def spawn(sock: socket.socket) -> SpawnProcess:
        process = context.Process(target=_serve_one, args=(app, sock, dict(options)))
        process.start()
        return process

    stopping = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stopping.set()) for sig in _STOP_SIGNALS}
    workers = [spawn(sock) for sock in sockets]
    status = 0
    try:
        while not stopping.wait(0.5):
            if tick is not None:
                tick()
            for n, worker in enumerate(workers):
                if worker.exitcode is None:
                    continue
                if worker.exitcode == STARTUP_FAILURE:
                    log.error("a worker could not start; stopping the service")
                    status = 1
                    stopping.set()
                    break
                log.warning(
                    "worker %s ended (exit code %s); starting another", worker.pid, worker.exitcode
                )
                workers[n] = spawn(sockets[n])
    finally:
        _stop(workers)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return status


# SIGHUP too (a closed terminal): by default it would end this process alone and leave
# the workers serving with no supervisor.
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _stop(workers: list[SpawnProcess]) -> None:
    # SIGTERM: each finishes the requests it accepted (uvicorn's graceful shutdown).
    for worker in workers:
        if worker.exitcode is None and worker.pid is not None:
            worker.terminate()
    for worker in workers:
        worker.join(STOP_WAIT_S)
        if worker.exitcode is None:
            worker.kill()
            worker.join()
