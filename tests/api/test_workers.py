"""`serve --workers N`: a listening socket per worker, connections spread across the
workers, a worker that dies replaced, the address refused when something holds it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx2 as httpx
import orjson
import pytest

from adapters.http.workers import AddressInUseError, listening_sockets, run_workers
from bench.served import free_port, start
from domain.reports import email_id_for
from tests.api.live import deliveries, generic_hook, two_workers, workspace_on
from tests.unit.providers import signing


def test_sockets_share_one_port_and_each_takes_connections() -> None:
    sockets = listening_sockets("127.0.0.1", 0, 2)
    try:
        ports = {sock.getsockname()[1] for sock in sockets}
        assert len(ports) == 1
        (port,) = ports
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(32)]
        try:
            time.sleep(0.2)
            taken = []
            for sock in sockets:
                sock.setblocking(False)
                count = 0
                while True:
                    try:
                        conn, _ = sock.accept()
                    except BlockingIOError:
                        break
                    conn.close()
                    count += 1
                taken.append(count)
            # Every connection queued on one of the sockets, and (by the kernel's hash
            # of their addresses) on both: all 32 on one would have odds of 2 in 2**32.
            assert sum(taken) == 32
            assert min(taken) > 0, taken
        finally:
            for client in clients:
                client.close()
    finally:
        for sock in sockets:
            sock.close()


def test_an_address_something_listens_on_is_refused() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(AddressInUseError):
            listening_sockets("127.0.0.1", port, 2)
    # Nor is a port that another service's reusable sockets hold shared with it.
    first = listening_sockets("127.0.0.1", 0, 2)
    try:
        with pytest.raises(AddressInUseError):
            listening_sockets("127.0.0.1", first[0].getsockname()[1], 2)
    finally:
        for sock in first:
            sock.close()


def test_serve_on_an_address_in_use_says_so(postgres_url: str) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "app", "serve", "--workers", "2", "--port", str(port)],
            env={**os.environ, "MAILLEDGER_DATABASE_URL": postgres_url},
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert done.returncode == 1
    assert f"cannot listen on http://127.0.0.1:{port}: Address already in use" in done.stderr
    assert "listening on" not in done.stdout


def broken_app() -> None:
    """An app factory that fails (run by the workers of the test below)."""
    raise RuntimeError("no app today")


def test_a_worker_that_cannot_start_stops_the_service() -> None:
    sockets = listening_sockets("127.0.0.1", 0, 2)
    try:
        started = time.monotonic()
        status = run_workers(f"{__name__}:broken_app", sockets, {"log_level": "critical"})
    finally:
        for sock in sockets:
            sock.close()
    assert status == 1
    assert time.monotonic() - started < 30  # not started again and again


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _served_by(pids: list[int], port: int) -> Counter[int]:
    """How many established connections to `port` each process holds the server end of."""
    inodes: dict[str, int] = {}
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes[target[8:-1]] = pid
    held: Counter[int] = Counter()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].rsplit(":", 1)[1], 16)
        if local_port == port and fields[3] == "01" and fields[9] in inodes:  # ESTABLISHED
            held[inodes[fields[9]]] += 1
    return held


@pytest.fixture
def served(postgres_url: str, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    with two_workers(postgres_url, tmp_path) as running:
        yield running


def _workers_of(process: subprocess.Popen[bytes]) -> list[int]:
    # The supervisor's children: the workers and the projection process, which holds
    # no connection of the service's port.
    return _children(process.pid)


def test_connections_opened_together_are_served_by_both_workers(
    served: tuple[subprocess.Popen[bytes], int],
) -> None:
    process, port = served
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(16)]
    try:
        time.sleep(0.5)  # accepted by now
        held = _served_by(_workers_of(process), port)
        assert sum(held.values()) == 16
        assert len(held) == 2, held  # one of two workers taking all 16: 1 in 32,768
    finally:
        for client in clients:
            client.close()


def test_a_worker_that_dies_is_replaced(served: tuple[subprocess.Popen[bytes], int]) -> None:
    process, port = served
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(16)]
    time.sleep(0.5)
    held = _served_by(_workers_of(process), port)
    for client in clients:
        client.close()
    victim = max(held, key=lambda pid: held[pid])
    os.kill(victim, signal.SIGKILL)
    # Connections that arrive meanwhile wait in its socket's queue for the next one.
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
        answers = [http.get("/healthz", headers={"Connection": "close"}) for _ in range(16)]
    assert [a.status_code for a in answers] == [200] * 16
    workers = _workers_of(process)
    assert victim not in workers
    assert process.poll() is None


def _niceness(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


def _projection_process(supervisor: int) -> list[int]:
    # The supervisor's child of lower CPU priority. It lowers its own priority once its
    # interpreter has started, which can be after the workers answer: wait for it.
    for _ in range(300):
        niced = [pid for pid in _children(supervisor) if _niceness(pid) > 0]
        if niced:
            return niced
        time.sleep(0.1)
    return []


def test_a_projection_process_that_dies_is_replaced(postgres_url: str, tmp_path: Path) -> None:
    workspace_id, auth = workspace_on(postgres_url, "followers")
    with two_workers(postgres_url, tmp_path) as (process, port):
        base = f"http://127.0.0.1:{port}"
        (follower,) = _projection_process(process.pid)
        os.kill(follower, signal.SIGKILL)
        hook = generic_hook(base, workspace_id, auth)
        body = orjson.dumps(deliveries("followed", range(1)))
        headers = signing.generic_headers(body, "msg-followed", datetime.now(UTC))
        assert httpx.post(base + hook, content=body, headers=headers).json()["recorded"] == 1
        email_id = email_id_for(workspace_id, "followed-0", "rcpt@example.com")
        for _ in range(300):  # shown once another projection process has followed the log
            shown = httpx.get(f"{base}/v1/{workspace_id}/email/{email_id}", headers=auth)
            if shown.status_code == 200:
                break
            time.sleep(0.1)
        assert shown.status_code == 200, shown.text
        assert shown.json()["state"] == "delivered"
        (replaced,) = _projection_process(process.pid)
        assert replaced != follower


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGHUP])
def test_the_supervisor_stops_its_workers(postgres_url: str, stop: signal.Signals) -> None:
    port = free_port()
    process = start(postgres_url, port, ["--workers", "2", "--no-access-log"])
    children = _children(process.pid)
    assert len(children) >= 3  # two workers and the projection process
    process.send_signal(stop)
    assert process.wait(timeout=60) == 0
    time.sleep(0.5)
    assert [pid for pid in children if _running(pid)] == []


def _running(pid: int) -> bool:
    # Ended, whether or not reaped: an ended child of an ended parent belongs to
    # PID 1, which in a container may never reap it (a zombie, state Z).
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
