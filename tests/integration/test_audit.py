"""`mailledger audit verify`: a healthy ledger passes, a tampered event is named."""

from __future__ import annotations

import io
import sqlite3
import uuid
from typing import Any

import psycopg
import pytest

from adapters import cli
from adapters.audit import verify_ledger
from adapters.storage import Storage
from domain.reports import Report
from tests.factories import report

OTHER_WORKSPACE = "6f1f2a4e-0000-4000-8000-000000000002"


def tamper(storage: Storage, email_id: uuid.UUID, *, version: int, old: bytes, new: bytes) -> None:
    """Change a stored event behind the ledger's back, as someone with database access
    could."""
    if storage.database.kind == "postgresql":
        with psycopg.connect(storage.database.conninfo, autocommit=True) as conn:
            changed = conn.execute(
                "UPDATE mailledger_events SET state = replace(state::text, %s, %s)::bytea "
                "WHERE originator_id = %s AND originator_version = %s",
                (old.hex(), new.hex(), email_id, version),
            ).rowcount
        assert changed == 1
        return
    assert storage.database.path is not None
    with sqlite3.connect(storage.database.path) as conn:
        (state,) = conn.execute(
            "SELECT state FROM stored_events WHERE originator_id = ? AND originator_version = ?",
            (email_id.hex, version),
        ).fetchone()
        assert old in bytes(state)
        conn.execute(
            "UPDATE stored_events SET state = ? WHERE originator_id = ? AND originator_version = ?",
            (bytes(state).replace(old, new), email_id.hex, version),
        )


def lifecycle(message_id: str, workspace_id: str | None = None) -> list[Report]:
    """Sent, Delivery, a Permanent Bounce and an Open of one email."""
    where: dict[str, Any] = {"message_id": message_id}
    if workspace_id is not None:
        where["workspace_id"] = workspace_id
    return [
        report("Sent", event_at="2025-03-14T19:00:00Z", use_case_id="uc-1", **where),
        report("Delivery", event_at="2025-03-14T19:00:01Z", **where),
        report("Bounce", event_at="2025-03-14T19:00:02Z", bounce_type="Permanent", **where),
        report("Open", event_at="2025-03-14T19:00:03Z", machine_open=False, **where),
    ]


def run_verify(
    monkeypatch: pytest.MonkeyPatch, storage: Storage, *argv: str
) -> tuple[int, str, str]:
    monkeypatch.setenv("MAILLEDGER_DATABASE_URL", storage.database.describe())
    out = io.StringIO()
    errors = io.StringIO()
    monkeypatch.setattr("sys.stderr", errors)
    status = cli.run(["audit", "verify", *argv], serve=lambda *_: None, out=out)
    return status, out.getvalue(), errors.getvalue()


def seed(storage: Storage, emails: int = 30) -> list[uuid.UUID]:
    """`emails` healthy emails, recorded in several batches (their events interleave)."""
    ids: list[uuid.UUID] = []
    for start in range(0, emails, 7):
        batch = [r for i in range(start, min(start + 7, emails)) for r in lifecycle(f"m-{i}")]
        outcomes = storage.ledger.record(batch)
        ids.extend(dict.fromkeys(o.email_id for o in outcomes))
    return ids


def test_a_healthy_ledger_verifies_with_exit_0(
    monkeypatch: pytest.MonkeyPatch, storage: Storage
) -> None:
    seed(storage)
    status, out, err = run_verify(monkeypatch, storage)
    assert status == 0
    assert "checked 120 events of 30 emails: every chain holds" in out
    assert "BROKEN" not in out
    assert "audit verify" in err  # the progress bar goes to stderr


def test_a_tampered_event_is_reported_with_exit_1(
    monkeypatch: pytest.MonkeyPatch, storage: Storage
) -> None:
    ids = seed(storage)
    victim = ids[11]
    before = {e.originator_version: e.hash for e in storage.ledger.get_history(victim)}
    tamper(storage, victim, version=3, old=b"Permanent", new=b"Transient")

    status, out, _ = run_verify(monkeypatch, storage)

    assert status == 1
    (line,) = [line for line in out.splitlines() if line.startswith("BROKEN")]
    assert line.startswith(f"BROKEN email {victim} version 3: expected ")
    assert line.endswith(f"found {before[3]}")
    assert "1 broken" in out


def test_each_broken_email_is_reported_once_at_its_first_broken_link(storage: Storage) -> None:
    ids = seed(storage, emails=10)
    tamper(storage, ids[2], version=2, old=b"19:00:01", new=b"19:00:09")
    tamper(storage, ids[2], version=4, old=b"19:00:03", new=b"19:00:08")
    tamper(storage, ids[7], version=1, old=b"uc-1", new=b"uc-9")

    result = verify_ledger(storage.ledger, page=3)

    assert not result.ok
    assert sorted((b.email_id, b.version) for b in result.broken) == sorted(
        [(ids[2], 2), (ids[7], 1)]
    )
    assert storage.ledger.find_broken_link(ids[2]) == next(
        (b.version, b.expected, b.found) for b in result.broken if b.email_id == ids[2]
    )


def test_a_removed_event_breaks_the_link_of_the_next_one(storage: Storage) -> None:
    (email_id,) = seed(storage, emails=1)
    history = storage.ledger.get_history(email_id)
    if storage.database.kind == "postgresql":
        with psycopg.connect(storage.database.conninfo, autocommit=True) as conn:
            conn.execute(
                "DELETE FROM mailledger_events WHERE originator_id = %s AND originator_version = 2",
                (email_id,),
            )
    else:
        assert storage.database.path is not None
        with sqlite3.connect(storage.database.path) as conn:
            conn.execute(
                "DELETE FROM stored_events WHERE originator_id = ? AND originator_version = 2",
                (email_id.hex,),
            )

    (broken,) = verify_ledger(storage.ledger).broken

    assert (broken.version, broken.expected, broken.found) == (
        3,
        history[0].hash,
        history[1].hash,
    )


def test_workspace_option_checks_only_that_workspace(
    monkeypatch: pytest.MonkeyPatch, storage: Storage
) -> None:
    ids = seed(storage, emails=3)
    (theirs,) = dict.fromkeys(
        o.email_id for o in storage.ledger.record(lifecycle("x", OTHER_WORKSPACE))
    )
    tamper(storage, theirs, version=2, old=b"19:00:01", new=b"19:00:05")
    workspace = storage.ledger.get_history(ids[0])[0].workspace_id

    status, out, _ = run_verify(monkeypatch, storage, "--workspace", workspace)
    assert status == 0
    assert f"checked 12 events of 3 emails of workspace {workspace}" in out

    status, out, _ = run_verify(monkeypatch, storage, "--workspace", OTHER_WORKSPACE)
    assert status == 1
    assert f"BROKEN email {theirs} version 2" in out

    status, out, _ = run_verify(monkeypatch, storage)
    assert status == 1
    assert "checked 14 events of 4 emails: 1 broken" in out


def test_an_event_that_no_longer_decodes_is_reported(
    monkeypatch: pytest.MonkeyPatch, storage: Storage
) -> None:
    ids = seed(storage, emails=4)
    tamper(storage, ids[1], version=2, old=b'"workspace_id":', new=b'"workspace_id:')

    status, out, _ = run_verify(monkeypatch, storage)

    assert status == 1
    assert f"BROKEN email {ids[1]} version 2: expected -, found undecodable event" in out
    assert "checked 13 events of 4 emails: 1 broken" in out
