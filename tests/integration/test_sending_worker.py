"""The outbox and the send worker: restarts, leases, repeats; idempotency races;
the suppression projection's rebuild."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from adapters import admin_store
from adapters.dns import DkimKey
from adapters.sending import outbox
from adapters.sending.accept import NotQueuedError, Sender
from adapters.sending.message import SendRequest
from adapters.sending.suppression import SuppressionFilter as Where
from adapters.sending.suppression import SuppressionFollower, list_suppressions, remove
from adapters.sending.tables import send_outbox
from adapters.sending.tier import recent_counts, tier_of
from adapters.sending.worker import SendWorker
from adapters.storage import Storage
from adapters.workspaces import create_workspace
from domain.reports import EventType, Report, format_time, utc_now

FAKE_KEY = DkimKey("s1", "unused-private-key", "unused-public-key")


def sandbox_use_case(storage: Storage) -> admin_store.UseCase:
    workspace = create_workspace(storage.engine, "Acme").workspace_id
    setup = admin_store.create_setup(storage.engine, workspace, "mail.acme.example", FAKE_KEY, "x")
    return admin_store.create_use_case(
        storage.engine,
        workspace,
        name="receipts",
        channel="email",
        setup_id=setup.id,
        from_address="billing@mail.acme.example",
        email_type="transactional",
        transport="sandbox",
    )


def request(use_case: admin_store.UseCase, to: str = "success@simulator.test", **kw: Any) -> Any:
    return SendRequest(use_case.id, to, "Hello", "<p>Hi</p>", **kw)


def kinds(storage: Storage, email_id: str) -> list[str]:
    return [str(e.event_type) for e in storage.ledger.get_history(uuid.UUID(email_id))]


def status(storage: Storage, email_id: str) -> str:
    with storage.engine.connect() as conn:
        found: str = conn.execute(
            select(send_outbox.c.status).where(send_outbox.c.email_id == email_id)
        ).scalar_one()
    return found


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = utc_now()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def run_until_idle(worker: SendWorker, clock: Clock, passes: int = 10) -> None:
    """Run passes, moving the clock past each simulator delay."""
    for _ in range(passes):
        worker.run_once()
        clock.advance(seconds=1)


def test_a_send_accepted_before_a_restart_is_handed_over_by_the_next_worker(
    storage: Storage,
) -> None:
    use_case = sandbox_use_case(storage)
    answer = Sender(storage).accept(use_case.workspace_id, request(use_case))
    assert kinds(storage, answer["id"]) == ["Sent"]
    assert status(storage, answer["id"]) == outbox.PENDING

    clock = Clock()
    run_until_idle(SendWorker(storage, clock=clock), clock)

    assert kinds(storage, answer["id"]) == ["Sent", "Dispatched", "Delivery"]
    assert status(storage, answer["id"]) == outbox.DONE


def test_an_accepted_row_whose_sent_was_lost_gets_it_from_the_worker(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_case = sandbox_use_case(storage)

    def database_gone(_reports: Any) -> Any:
        raise RuntimeError("the process died here")

    with monkeypatch.context() as patch:
        patch.setattr(storage.ledger, "record", database_gone)
        with pytest.raises(RuntimeError):
            Sender(storage).accept(use_case.workspace_id, request(use_case), "retry-me")
    with storage.engine.connect() as conn:
        (row,) = conn.execute(send_outbox.select()).mappings().all()

    clock = Clock()
    run_until_idle(SendWorker(storage, clock=clock), clock)
    assert kinds(storage, row["email_id"]) == ["Sent", "Dispatched", "Delivery"]


def test_a_retry_after_a_lost_sent_records_it_and_answers_the_first_response(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_case = sandbox_use_case(storage)
    real_record: Callable[..., Any] = storage.ledger.record
    calls: list[int] = []

    def fails_once(reports: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("database gone")
        return real_record(reports)

    monkeypatch.setattr(storage.ledger, "record", fails_once)
    with pytest.raises(RuntimeError):
        Sender(storage).accept(use_case.workspace_id, request(use_case), "k")
    answer = Sender(storage).accept(use_case.workspace_id, request(use_case), "k")
    assert kinds(storage, answer["id"]) == ["Sent"]


def test_a_lease_of_a_dead_worker_is_taken_over_when_it_runs_out(storage: Storage) -> None:
    use_case = sandbox_use_case(storage)
    answer = Sender(storage).accept(use_case.workspace_id, request(use_case))
    clock = Clock()
    (leased,) = outbox.claim(storage.engine, clock(), timedelta(minutes=5), 10)  # then dies

    worker = SendWorker(storage, clock=clock)
    assert worker.run_once() == 0
    assert kinds(storage, answer["id"]) == ["Sent"]
    clock.advance(minutes=6)
    run_until_idle(worker, clock)
    assert kinds(storage, answer["id"]) == ["Sent", "Dispatched", "Delivery"]
    assert leased["email_id"] == answer["id"]


def test_a_pass_repeated_after_a_crash_records_nothing_twice(storage: Storage) -> None:
    use_case = sandbox_use_case(storage)
    answer = Sender(storage).accept(use_case.workspace_id, request(use_case, "someone@x.test"))
    clock = Clock()
    worker = SendWorker(storage, clock=clock)
    worker.run_once()
    before = kinds(storage, answer["id"])
    # the worker died after recording, before moving its row on: the row is pending again
    with storage.engine.begin() as conn:
        conn.execute(update(send_outbox).values(status=outbox.PENDING, step=0))
    run_until_idle(worker, clock)
    assert before == ["Sent", "Dispatched"]
    assert kinds(storage, answer["id"]) == ["Sent", "Dispatched", "Delivery"]


def test_a_claimed_email_can_no_longer_be_canceled(storage: Storage) -> None:
    use_case = sandbox_use_case(storage)
    clock = Clock()
    sender = Sender(storage, clock=clock)
    send_at = format_time(clock() + timedelta(minutes=1))
    answer = sender.accept(use_case.workspace_id, request(use_case, send_at=send_at))
    clock.advance(minutes=2)
    assert outbox.claim(storage.engine, clock(), timedelta(minutes=5), 10)
    with pytest.raises(NotQueuedError):
        sender.cancel(use_case.workspace_id, answer["id"])


def test_a_key_raced_by_another_request_answers_the_winners_response(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_case = sandbox_use_case(storage)
    first = Sender(storage).accept(use_case.workspace_id, request(use_case), "raced")
    real = outbox.find_idempotent
    looks: list[int] = []

    def not_yet_stored(*args: Any) -> Any:
        looks.append(1)
        return None if len(looks) == 1 else real(*args)

    monkeypatch.setattr(outbox, "find_idempotent", not_yet_stored)
    again = Sender(storage).accept(use_case.workspace_id, request(use_case), "raced")
    assert again == first
    with storage.engine.connect() as conn:
        assert len(conn.execute(send_outbox.select()).all()) == 1


def test_a_key_is_forgotten_after_24_hours(storage: Storage) -> None:
    use_case = sandbox_use_case(storage)
    clock = Clock()
    sender = Sender(storage, clock=clock)
    first = sender.accept(use_case.workspace_id, request(use_case), "daily")
    clock.advance(hours=25)
    later = sender.accept(use_case.workspace_id, request(use_case), "daily")
    assert later["id"] != first["id"]


def bounce(workspace_id: str, to: str, at: str, kind: str = "Permanent") -> Report:
    return Report(
        workspace_id=workspace_id,
        event_type=EventType.BOUNCE,
        provider="sendgrid",
        message_id=f"m-{to}-{at}",
        to_address=to,
        event_at=at,
        detail={"bounce_type": kind},
    )


def test_the_suppression_projection_rebuilds_to_the_same_list_and_keeps_removals(
    storage: Storage,
) -> None:
    ws = "6f1f2a4e-0000-4000-8000-000000000001"
    follower = SuppressionFollower(storage)
    storage.ledger.record(
        [
            bounce(ws, "a@example.com", "2025-03-14T10:00:00Z"),
            bounce(ws, "a@example.com", "2025-03-14T09:00:00Z"),
            bounce(ws, "b@example.com", "2025-03-14T11:00:00Z"),
            bounce(ws, "c@example.com", "2025-03-14T12:00:00Z", "Transient"),
        ]
    )
    follower.follow()
    remove(storage.engine, ws, "b@example.com", utc_now())
    storage.ledger.record([bounce("another-workspace", "b@example.com", "2025-03-15T00:00:00Z")])
    follower.follow()

    def listed() -> list[tuple[str, str]]:
        rows = list_suppressions(storage.engine, Where(ws), None, 50)
        return [(row["address"], row["since"]) for row in rows]

    incremental = listed()
    assert incremental == [("a@example.com", "2025-03-14T09:00:00.000000Z")]
    storage.runner.rebuild("suppressions")  # as `projections rebuild suppressions` does
    assert listed() == incremental
    assert follower.follow() == 0


def test_beside_background_projections_the_worker_follows_the_list_only_to_send(
    storage: Storage,
) -> None:
    # As in each serving process of `serve --workers N`: the projection process keeps
    # the list, and a pass with nothing to send leaves it alone.
    use_case = sandbox_use_case(storage)
    ws, clock = use_case.workspace_id, Clock()
    worker = SendWorker(storage, clock=clock, follow_when_idle=False)
    storage.ledger.record([bounce(ws, "gone@example.com", "2025-03-14T10:00:00Z")])
    assert worker.run_once() == 0
    assert list_suppressions(storage.engine, Where(ws), None, 50) == []

    sent = Sender(storage, clock=clock).accept(ws, request(use_case, "gone@example.com"))
    assert worker.run_once() == 1
    # The send was checked against the list as the log stood when it was worked.
    assert kinds(storage, str(sent["id"])) == ["Sent", "Reject"]
    assert storage.ledger.get_history(uuid.UUID(str(sent["id"])))[-1].detail() == {
        "reason": "suppressed"
    }
    listed = list_suppressions(storage.engine, Where(ws), None, 50)
    assert [row["address"] for row in listed] == ["gone@example.com"]


def test_tier_thresholds() -> None:
    assert tier_of(99, 50, 50) == "new"
    assert tier_of(1000, 19, 0) == "good"
    assert tier_of(1000, 20, 0) == "warning"
    assert tier_of(1000, 0, 1) == "warning"
    assert tier_of(1000, 49, 4) == "warning"
    assert tier_of(1000, 50, 0) == "poor"
    assert tier_of(1000, 0, 5) == "poor"


def test_a_send_records_its_setups_recent_tier(storage: Storage) -> None:
    use_case = sandbox_use_case(storage)
    ws, setup = use_case.workspace_id, use_case.setup_id
    recent = format_time(utc_now() - timedelta(days=1))
    history = []
    for i in range(120):
        common: dict[str, Any] = {"workspace_id": ws, "provider": "ses", "message_id": f"old-{i}"}
        common |= {"to_address": f"r{i}@example.com", "event_at": recent}
        history.append(Report(event_type=EventType.SENT, setup_id=setup, **common))
        if i < 10:
            history.append(
                Report(event_type=EventType.BOUNCE, detail={"bounce_type": "Permanent"}, **common)
            )
    storage.ledger.record(history)
    storage.runner.catch_up_all()

    answer = Sender(storage).accept(ws, request(use_case))

    (sent, *_) = storage.ledger.get_history(uuid.UUID(answer["id"]))
    assert sent.detail()["tier"] == "poor"  # 10 hard bounces in 120: over 5%
    assert recent_counts(storage.reader, ws, setup, utc_now()) == (120, 10, 0)
