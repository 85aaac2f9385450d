"""The `mailledger` command line. app.py hands it the pieces it wires together."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import orjson
from tqdm import tqdm

from adapters import admin_store, receipts
from adapters.audit import verify_command
from adapters.importer import (
    FORMATS,
    ImportFileError,
    ImportStoppedError,
    default_jobs,
    import_file,
)
from adapters.ingest import as_endpoint, replay
from adapters.settings import Settings, SettingsError
from adapters.storage import Storage, StorageUnavailableError, open_configured
from adapters.workspaces import create_workspace
from domain.reports import InvalidReportError, normalize_time
from projections.runner import UnknownProjectionError

EXIT_USAGE = 2


@dataclass(frozen=True)
class ServeOptions:
    """How `mailledger serve` runs: where it listens, how many processes answer."""

    host: str = "127.0.0.1"
    port: int = 8025
    workers: int = 1
    access_log: bool = True


Serve = Callable[[Settings, Storage, ServeOptions], None]


def configure_logging() -> None:
    """Log lines on stderr (each serving process calls it too)."""
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(message)s")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """Every command and option, with help a newcomer can follow."""
    parser = argparse.ArgumentParser(
        prog="mailledger",
        description="Event-sourced email delivery tracking. The database is chosen by "
        "MAILLEDGER_DATABASE_URL (default sqlite:///var/mailledger.db).",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the HTTP service and its projections")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8025)
    serve.add_argument(
        "--workers",
        type=_positive,
        default=1,
        help="processes answering requests (PostgreSQL only beyond 1); about one per core",
    )
    serve.add_argument(
        "--no-access-log",
        dest="access_log",
        action="store_false",
        help="no log line per request (it costs CPU at high request rates)",
    )

    workspace = commands.add_parser("workspace", help="manage workspaces")
    workspace_commands = workspace.add_subparsers(dest="action", required=True)
    create = workspace_commands.add_parser("create", help="create a workspace and its admin key")
    create.add_argument("name")
    create.add_argument("--json", action="store_true", help="print only JSON on stdout")

    projections = commands.add_parser("projections", help="inspect and rebuild read models")
    projection_commands = projections.add_subparsers(dest="action", required=True)
    projection_commands.add_parser("status", help="each projection's position and lag")
    rebuild = projection_commands.add_parser("rebuild", help="rebuild from position 0")
    rebuild.add_argument("name", nargs="?", help="one projection (default: all)")
    follow = projection_commands.add_parser("run", help="follow the log (without serving)")
    follow.add_argument("--once", action="store_true", help="catch up, then exit")

    audit = commands.add_parser("audit", help="check the integrity of the event log")
    audit_commands = audit.add_subparsers(dest="action", required=True)
    verify = audit_commands.add_parser(
        "verify", help="recompute every email's hash chain; exit 1 if any link is broken"
    )
    verify.add_argument("--workspace", metavar="ID", help="only this workspace's emails")

    stored = commands.add_parser("receipts", help="stored webhook requests")
    receipt_commands = stored.add_subparsers(dest="action", required=True)
    replay = receipt_commands.add_parser(
        "replay", help="re-parse verified receipts with today's parsers (idempotent)"
    )
    replay.add_argument("--endpoint", metavar="ID", help="only this inbound endpoint's")
    replay.add_argument("--since", metavar="T", help="only those received at or after T")
    replay.add_argument("--dead-letters", action="store_true", help="only dead letters")

    bulk = commands.add_parser("import", help="load a provider export file")
    bulk.add_argument("file", type=Path)
    bulk.add_argument(
        "--format", choices=sorted(FORMATS), help="default: the endpoint provider's format"
    )
    bulk.add_argument(
        "--endpoint",
        metavar="ID",
        help="the inbound endpoint (default: the only one that can take the file)",
    )
    bulk.add_argument(
        "--jobs",
        type=int,
        metavar="N",
        help="processes that parse and record at once (default: one per core on "
        "PostgreSQL, at most 8; SQLite takes one)",
    )
    return parser


def run(argv: Sequence[str], serve: Serve, out: TextIO = sys.stdout) -> int:
    """Run one command; the exit status."""
    args = build_parser().parse_args(argv)
    configure_logging()
    try:
        settings = Settings.from_env()
        if args.command == "serve":
            _check_workers(settings, args.workers)
        storage = open_configured(settings)
    except (SettingsError, StorageUnavailableError) as error:
        print(f"mailledger: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    try:
        if args.command == "serve":
            options = ServeOptions(args.host, args.port, args.workers, args.access_log)
            serve(settings, storage, options)
            return 0
        if args.command == "workspace":
            return _create_workspace(storage, args.name, as_json=args.json, out=out)
        if args.command == "audit":
            return verify_command(storage.ledger, args.workspace, out)
        if args.command == "receipts":
            return _replay(storage, args, out)
        if args.command == "import":
            return _import(storage, args, out)
        return _projections(storage, args, out)
    except (UnknownProjectionError, ImportFileError, InvalidReportError) as error:
        print(f"mailledger: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except ImportStoppedError as error:
        print(
            f"mailledger: import stopped: {error}; what it recorded stays recorded, and "
            "importing the file again records the rest",
            file=sys.stderr,
        )
        return 1
    finally:
        storage.close()


def _check_workers(settings: Settings, workers: int) -> None:
    """Several serving processes need PostgreSQL: SQLite takes one writer at a time, so
    more processes would only queue on its lock (and each runs a group commit)."""
    if workers > 1 and settings.database.kind == "sqlite":
        raise SettingsError(
            f"--workers {workers} needs PostgreSQL (MAILLEDGER_DATABASE_URL=postgresql://...); "
            "SQLite serves with one worker"
        )


def _create_workspace(storage: Storage, name: str, *, as_json: bool, out: TextIO) -> int:
    try:
        made = create_workspace(storage.engine, name)
    except ValueError as error:
        print(f"mailledger: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    if as_json:
        answer = {"workspace_id": made.workspace_id, "api_key": made.api_key}
        out.write(orjson.dumps(answer).decode() + "\n")
    else:
        out.write(f"workspace_id: {made.workspace_id}\n")
        out.write(f"api_key:      {made.api_key}\n")
        out.write("The key is shown only now; keep it somewhere safe.\n")
    return 0


def _projections(storage: Storage, args: argparse.Namespace, out: TextIO) -> int:
    runner = storage.runner
    if args.action == "status":
        out.write(f"{'projection':<12} {'position':>10} {'head':>10} {'lag':>10}\n")
        for status in runner.status():
            out.write(
                f"{status.name:<12} {status.position:>10} {status.head:>10} {status.lag:>10}\n"
            )
        return 0
    if args.action == "rebuild":
        names = [args.name] if args.name else list(runner.projections)
        for name in names:
            runner.get(name)
        head = storage.ledger.head_position()
        label = f"rebuild {', '.join(names)}"
        with tqdm(total=head, desc=label, unit="ev", file=sys.stderr) as bar:
            applied = runner.rebuild_together(names, progress=bar.update)
        out.write(f"{', '.join(names)}: rebuilt from {applied} events\n")
        return 0
    if args.once:
        out.write(f"applied {runner.catch_up_all()} events\n")
        return 0
    import threading  # noqa: PLC0415 (only the long-running form needs it)

    stop = threading.Event()
    try:
        runner.run(stop, interval=0.2)
    except KeyboardInterrupt:
        stop.set()
    return 0


def _replay(storage: Storage, args: argparse.Namespace, out: TextIO) -> int:
    since = normalize_time(args.since) if args.since else None
    chosen = {"endpoint_id": args.endpoint, "since": since, "dead_letters_only": args.dead_letters}
    total = receipts.count_for_replay(storage.engine, **chosen)
    with tqdm(total=total, desc="replay", unit="receipt", file=sys.stderr) as bar:
        summary = replay(storage, receipts.for_replay(storage.engine, **chosen), bar.update)
    out.write(
        f"replayed {summary.receipts} receipts: {summary.recorded} events recorded, "
        f"{summary.duplicates} already held, {summary.dead_letters} still unparseable\n"
    )
    return 0


def _import_endpoint(
    storage: Storage, endpoint_id: str | None, fmt: str | None
) -> admin_store.InboundEndpoint:
    """The endpoint named, or else the only one whose provider the file can be for."""
    if endpoint_id is not None:
        stored = admin_store.get_endpoint(storage.engine, endpoint_id)
        if stored is None:
            raise ImportFileError(f"no inbound endpoint {endpoint_id}")
        return stored
    providers = {FORMATS[fmt]} if fmt is not None else set(FORMATS.values())
    found = admin_store.endpoints_of_providers(storage.engine, providers)
    if len(found) == 1:
        return found[0]
    kinds = ", ".join(sorted(providers))
    if not found:
        raise ImportFileError(
            f"no inbound endpoint ({kinds}) to import into: make one "
            "(POST /v1/{workspace_id}/email/inbound), then import"
        )
    listed = "; ".join(f"{e.id} ({e.provider}, workspace {e.workspace_id})" for e in found[:10])
    raise ImportFileError(
        f"{len(found)} inbound endpoints can take it, name one with --endpoint ID: {listed}"
    )


def _import(storage: Storage, args: argparse.Namespace, out: TextIO) -> int:
    stored = _import_endpoint(storage, args.endpoint, args.format)
    if not args.file.is_file():
        raise ImportFileError(f"no such file: {args.file}")
    fmt = args.format or next(
        (f for f, provider in FORMATS.items() if provider == stored.provider), None
    )
    if fmt is None:
        raise ImportFileError(
            f"{stored.provider} has no export format mailledger reads "
            f"(formats: {', '.join(sorted(FORMATS))})"
        )
    jobs = default_jobs(storage.database) if args.jobs is None else args.jobs
    if jobs < 1:
        raise ImportFileError(f"--jobs takes a number of processes (1 or more), not {jobs}")
    with args.file.open("rb") as lines:
        total = sum(1 for _ in lines) if fmt.endswith("jsonl") else None
    with tqdm(total=total, desc=f"import {args.file.name}", unit="item", file=sys.stderr) as bar:
        summary = import_file(
            storage, as_endpoint(stored), args.file, fmt, progress=bar.update, jobs=jobs
        )
    out.write(
        f"{summary.items} items: {summary.recorded} events recorded, "
        f"{summary.duplicates} already held, {summary.ignored} without meaning here, "
        f"{len(summary.unparseable)} unparseable\n"
    )
    for line, message in summary.unparseable[:100]:
        out.write(f"  line {line}: {message}\n")
    if len(summary.unparseable) > 100:
        out.write(f"  ... and {len(summary.unparseable) - 100} more\n")
    return 0
