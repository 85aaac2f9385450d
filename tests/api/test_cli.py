"""The command line: workspace create, projections, and clear failures."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from adapters import cli
from adapters.settings import parse_database_url
from adapters.storage import Storage, open_storage
from adapters.workspaces import api_keys, find_key
from tests.factories import report


def never_serve(*_: object) -> None:
    raise AssertionError("serve is not expected here")


def run(monkeypatch: pytest.MonkeyPatch, url: str, *argv: str) -> tuple[int, str]:
    monkeypatch.setenv("MAILLEDGER_DATABASE_URL", url)
    out = io.StringIO()
    status = cli.run(list(argv), serve=never_serve, out=out)
    return status, out.getvalue()


def test_workspace_create_json_prints_only_the_ids(
    monkeypatch: pytest.MonkeyPatch, database_url: str
) -> None:
    status, out = run(monkeypatch, database_url, "workspace", "create", "Acme", "--json")
    assert status == 0
    answer = json.loads(out)
    assert set(answer) == {"workspace_id", "api_key"}

    store = open_storage(parse_database_url(database_url))
    try:
        key = find_key(store.engine, answer["api_key"])
        assert key is not None
        assert key.workspace_id == answer["workspace_id"]
        assert set(key.permissions) == {"Channel.send", "Channel.view", "Workspace.admin"}
        with store.engine.connect() as conn:
            stored = conn.execute(select(api_keys.c.key_hash)).scalars().all()
        assert answer["api_key"] not in stored
        assert find_key(store.engine, answer["api_key"] + "x") is None
    finally:
        store.close()


def test_workspace_create_plain_says_the_key_is_shown_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    status, out = run(monkeypatch, f"sqlite:///{tmp_path / 'w.db'}", "workspace", "create", "Acme")
    assert status == 0
    assert "workspace_id:" in out
    assert "shown only now" in out


def test_projections_status_and_rebuild(
    monkeypatch: pytest.MonkeyPatch,
    storage: Storage,
    database_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    storage.ledger.record([report("Delivery", message_id=f"m-{i}") for i in range(12)])
    status, out = run(monkeypatch, database_url, "projections", "status")
    assert status == 0
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[1:]}
    assert rows["emails"] == rows["events"] == rows["suppressions"] == ["0", "12", "12"]
    status, out = run(monkeypatch, database_url, "projections", "rebuild", "suppressions")
    assert (status, out) == (0, "suppressions: rebuilt from 12 events\n")
    capsys.readouterr()
    status, out = run(monkeypatch, database_url, "projections", "rebuild", "emails")
    assert (status, out) == (0, "emails: rebuilt from 12 events\n")
    bar = capsys.readouterr().err  # the progress bar, on stderr
    assert "100%" in bar
    assert "12/12" in bar
    status, out = run(monkeypatch, database_url, "projections", "run", "--once")
    assert (status, out) == (0, "applied 12 events\n")
    status, out = run(monkeypatch, database_url, "projections", "status")
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[1:]}
    assert rows["emails"] == rows["suppressions"] == ["12", "12", "0"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["projections", "rebuild", "nope"], "no projection 'nope'"),
        # SQLite takes one writer at a time: more processes would only queue on it.
        (["serve", "--workers", "2"], "--workers 2 needs PostgreSQL"),
    ],
)
def test_a_command_that_cannot_run_on_sqlite_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    status, _ = run(monkeypatch, f"sqlite:///{tmp_path / 'x.db'}", *argv)
    assert status == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("mysql://localhost/db", "unsupported database URL"),
        ("postgresql://postgres@127.0.0.1:9/mailledger", "cannot open"),
        ("postgresql://postgres@127.0.0.1:notaport/x", "MAILLEDGER_DATABASE_URL"),
    ],
)
def test_bad_settings_give_one_line_and_exit_2(url: str, says: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "app", "projections", "status"],
        env={"MAILLEDGER_DATABASE_URL": url, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        cwd=Path(__file__).parents[2],
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert says in lines[0]
    assert "Traceback" not in result.stderr


def test_import_prints_a_summary_with_line_numbers_and_is_idempotent(
    monkeypatch: pytest.MonkeyPatch,
    storage: Storage,
    database_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from adapters import admin_store
    from adapters.workspaces import create_workspace

    workspace = create_workspace(storage.engine, "cli-import")
    endpoint = admin_store.create_endpoint(
        storage.engine,
        workspace.workspace_id,
        "generic",
        {"secret": "whsec_c2VjcmV0c2VjcmV0c2VjcmV0"},
    )
    event = '{"event_type": "%s", "message_id": "m1", "to_address": "a@x.test", "event_at": "%s"}'
    lines = [
        event % ("Delivery", "2025-03-14T19:04:02Z"),
        "not json",
        event % ("Open", "2025-03-14T19:05:02Z"),
    ]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")
    argv = ["import", str(path), "--format", "generic-jsonl", "--endpoint", endpoint.id]
    capsys.readouterr()
    status, out = run(monkeypatch, database_url, *argv)
    assert status == 0
    assert out.splitlines()[0].startswith("3 items: 2 events recorded, 0 already held")
    bar = capsys.readouterr().err  # the progress bar, on stderr
    assert "import events.jsonl" in bar
    assert "3/3" in bar
    assert "line 2:" in out
    status, out = run(monkeypatch, database_url, *argv[:2], "--endpoint", endpoint.id)
    assert out.startswith("3 items: 0 events recorded, 2 already held")
    status, _ = run(monkeypatch, database_url, "import", str(path), "--format", "ses-jsonl",
                    "--endpoint", endpoint.id)  # fmt: skip
    assert status == 2


def test_import_file_alone_takes_the_only_endpoint_that_can_take_it(
    monkeypatch: pytest.MonkeyPatch, storage: Storage, database_url: str, tmp_path: Path
) -> None:
    from adapters import admin_store
    from adapters.workspaces import create_workspace

    path = tmp_path / "events.jsonl"
    path.write_text(
        '{"event_type": "Delivery", "message_id": "m1", "to_address": "a@x.test", '
        '"event_at": "2025-03-14T19:04:02Z"}\n'
    )
    status, _ = run(monkeypatch, database_url, "import", str(path))
    assert status == 2  # nothing to import into yet

    workspace = create_workspace(storage.engine, "cli-import-alone").workspace_id
    postmark = admin_store.create_endpoint(
        storage.engine, workspace, "postmark", {"username": "u", "password": "p"}
    )
    generic = {"secret": "whsec_c2VjcmV0c2VjcmV0c2VjcmV0"}
    only = admin_store.create_endpoint(storage.engine, workspace, "generic", generic)
    status, out = run(monkeypatch, database_url, "import", str(path))
    assert status == 0
    assert out.startswith("1 items: 1 events recorded")

    status, _ = run(monkeypatch, database_url, "import", str(path), "--endpoint", postmark.id)
    assert status == 2  # Postmark has no export format: a message, not a traceback

    admin_store.create_endpoint(storage.engine, workspace, "generic", generic)
    status, _ = run(monkeypatch, database_url, "import", str(path))
    assert status == 2  # two could take it: which one must be said
    status, out = run(monkeypatch, database_url, "import", str(path), "--endpoint", only.id)
    assert out.startswith("1 items: 0 events recorded, 1 already held")

    again = ("import", str(path), "--endpoint", only.id, "--jobs")
    status, out = run(monkeypatch, database_url, *again, "2")
    if database_url.startswith("sqlite"):
        assert status == 2  # one writer at a time: said, not queued
    else:
        assert out.startswith("1 items: 0 events recorded, 1 already held")
    status, _ = run(monkeypatch, database_url, *again, "0")
    assert status == 2


def test_receipts_replay_records_nothing_new_on_a_healthy_ledger(
    monkeypatch: pytest.MonkeyPatch, storage: Storage, database_url: str
) -> None:
    from adapters import admin_store
    from adapters.ingest import Job, commit
    from adapters.receipts import Receipt
    from adapters.workspaces import create_workspace

    workspace = create_workspace(storage.engine, "cli-replay")
    endpoint = admin_store.create_endpoint(
        storage.engine,
        workspace.workspace_id,
        "generic",
        {"secret": "whsec_c2VjcmV0c2VjcmV0c2VjcmV0"},
    )
    body = (
        b'{"event_type": "Delivery", "message_id": "m1", "to_address": "a@x.test", '
        b'"event_at": "2025-03-14T19:04:02Z"}'
    )
    receipt = Receipt("0d8f6a70-0000-4000-8000-000000000001", endpoint.id, workspace.workspace_id,
                      "generic", "2025-03-14T19:04:03.000000Z", {}, body, True)  # fmt: skip
    from adapters.ingest import as_endpoint
    from adapters.providers import generic

    reports = generic.parse(body, as_endpoint(endpoint), receipt.id).reports
    commit(storage, [Job(receipt, reports)])
    status, out = run(monkeypatch, database_url, "receipts", "replay")
    assert status == 0
    assert out == "replayed 1 receipts: 0 events recorded, 1 already held, 0 still unparseable\n"
    status, out = run(monkeypatch, database_url, "receipts", "replay", "--dead-letters")
    assert out.startswith("replayed 0 receipts")


def test_serve_with_no_workers_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        run(monkeypatch, f"sqlite:///{tmp_path / 'w.db'}", "serve", "--workers", "0")
    assert exited.value.code == 2
    assert "must be at least 1" in capsys.readouterr().err


def test_serve_options_reach_the_server(monkeypatch: pytest.MonkeyPatch, postgres_url: str) -> None:
    seen: list[cli.ServeOptions] = []
    monkeypatch.setenv("MAILLEDGER_DATABASE_URL", postgres_url)
    argv = ["serve", "--port", "9", "--workers", "3", "--no-access-log"]
    assert cli.run(argv, serve=lambda _s, _st, options: seen.append(options)) == 0
    assert seen == [cli.ServeOptions("127.0.0.1", 9, workers=3, access_log=False)]


def test_serve_by_default_listens_on_8025_over_sqlite_in_var(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The first run needs no server and no setting (SPEC 2 and 6, the README's first line).
    monkeypatch.delenv("MAILLEDGER_DATABASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    seen: list[tuple[str, cli.ServeOptions]] = []
    status = cli.run(
        ["serve"],
        serve=lambda settings, _st, options: seen.append((settings.database_url, options)),
    )
    assert status == 0
    assert seen == [("sqlite:///var/mailledger.db", cli.ServeOptions("127.0.0.1", 8025))]
    assert (tmp_path / "var" / "mailledger.db").is_file()
