"""The analytics view: one row per email with its cohort and what happened to it.

Stats are cohorts of emails: an email counts in the one group its `sent_at`, recipient
domain or use case puts it in, and every event of the email counts there whenever it
happened. So `email_analytics` holds a row per email: the cohort fields (decided
exactly as the email detail decides them, by folding into the domain's `EmailView`) and
one 0/1 flag per outcome. Two rollups keep the sums of those rows per scope and hour
(`analytics_hourly`) and per scope, day and recipient domain (`analytics_daily_domains`),
moved by deltas in the same transaction: when an email's flags or cohort change, its
old contribution leaves its old bucket and the new one joins the new bucket. A stats
query reads whole hours (or days) of its window from a rollup, and only the partial
periods at the window's edges from the per-email rows: a 30-day window is a few hundred
rollup rows whatever the volume.

Definitions (docs/analytics.md, SPEC 3): `bounced` = at least one Bounce; `bounced_hard`
= at least one Bounce whose bounce_type is Permanent; `bounced_soft` = at least one
whose bounce_type is Transient or Undetermined. An email can be both (a soft bounce,
then a hard one), and a Bounce without a type is only `bounced`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import (
    Column,
    ColumnElement,
    Connection,
    Index,
    Integer,
    RowMapping,
    SmallInteger,
    String,
    Table,
    delete,
    func,
    literal_column,
    select,
    tuple_,
)
from sqlalchemy.dialects import postgresql, sqlite

from domain.email import EmailView
from domain.events import EmailEvent
from domain.reports import EventType
from projections.base import Positioned, metadata
from projections.bulk import save_rows, select_among
from projections.emails import TIME

# Outcomes an email has had at least once (0 or 1 each, so SUM counts emails).
FLAGS = (
    "delivered", "bounced", "bounced_hard", "complained", "rejected", "delayed", "opened",
    "clicked", "bounced_soft",
)  # fmt: skip
SOFT_BOUNCES = ("Transient", "Undetermined")
# Raw totals.
TOTALS = ("opens", "clicks")
# What the fold needs to decide the cohort the way EmailView does (see its ranks).
IDENTITY = ("to_address", "id_rank", "origin_rank", "origin_sent_at", "first_event_at")

email_analytics = Table(
    "email_analytics",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("workspace_id", String(64), nullable=False),
    Column("use_case_id", String(36)),
    Column("setup_id", String(36)),
    Column("sent_at", TIME, nullable=False),
    Column("recipient_domain", String(255), nullable=False),
    # Defaulted, so ProjectionRunner.create_tables can add a new one to an older table.
    *(Column(name, SmallInteger, nullable=False, server_default="0") for name in FLAGS),
    *(Column(name, Integer, nullable=False, server_default="0") for name in TOTALS),
    Column("to_address", String(320), nullable=False),
    Column("id_rank", String(128)),
    Column("origin_rank", String(128)),
    Column("origin_sent_at", TIME),
    Column("first_event_at", TIME),
    # A stats query reads one scope's rows in a sent_at window.
    Index("email_analytics_by_use_case", "workspace_id", "use_case_id", "sent_at"),
    Index("email_analytics_by_setup", "workspace_id", "setup_id", "sent_at"),
)

# Event kinds that only set a flag (keyed by name: sending events set none).
_SETS: dict[str, str] = {
    EventType.DELIVERY: "delivered",
    EventType.COMPLAINT: "complained",
    EventType.REJECT: "rejected",
    EventType.DELIVERY_DELAY: "delayed",
}


def recipient_domain(address: str) -> str:
    """The lowercased domain of an address (the whole address if it has no `@`)."""
    return address.rpartition("@")[2].lower()


@dataclass
class Cohort:
    """An email's analytics row while events are folded into it."""

    identity: EmailView
    counts: dict[str, int]

    @classmethod
    def new(cls, email_id: str, workspace_id: str) -> Cohort:
        """An email with no events yet."""
        return cls(
            EmailView(id=email_id, workspace_id=workspace_id), dict.fromkeys(FLAGS + TOTALS, 0)
        )

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Cohort:
        """Restore the fold from a stored row (only what the cohort fields depend on)."""
        identity = EmailView(
            id=row["id"],
            workspace_id=row["workspace_id"],
            use_case_id=row["use_case_id"],
            setup_id=row["setup_id"],
            **{name: row[name] for name in IDENTITY},
        )
        return cls(identity, {name: int(row[name]) for name in FLAGS + TOTALS})

    def apply(self, event: EmailEvent) -> None:
        """Fold one event in; commutative, like EmailView.apply."""
        self.identity.apply_origin(event)
        kind = event.event_type
        flag = _SETS.get(kind)
        if flag is not None:
            self.counts[flag] = 1
        elif kind is EventType.BOUNCE:
            self.counts["bounced"] = 1
            bounce_type = getattr(event, "bounce_type", None)
            if bounce_type == "Permanent":
                self.counts["bounced_hard"] = 1
            elif bounce_type in SOFT_BOUNCES:
                self.counts["bounced_soft"] = 1
        elif kind is EventType.OPEN:
            self.counts["opens"] += 1
            if not getattr(event, "machine_open", False):
                self.counts["opened"] = 1
        elif kind is EventType.CLICK:
            self.counts["clicks"] += 1
            self.counts["clicked"] = 1

    def as_row(self) -> dict[str, Any]:
        """The stored form."""
        view = self.identity
        return {
            "id": view.id,
            "workspace_id": view.workspace_id,
            "use_case_id": view.use_case_id,
            "setup_id": view.setup_id,
            "sent_at": view.sent_at,
            "recipient_domain": recipient_domain(view.to_address),
            **self.counts,
            **{name: getattr(view, name) for name in IDENTITY},
        }


SUMS = ("sent", *FLAGS, *TOTALS)


class Rollup:
    """Sums of `email_analytics` rows per bucket: the scope, a period of sent_at (its
    first `width` characters: an hour or a day) and, for one of them, the domain."""

    def __init__(self, name: str, period: str, width: int, *, by_domain: bool) -> None:
        self.period, self.width, self.by_domain = period, width, by_domain
        domain = [Column("recipient_domain", String(255), primary_key=True)] if by_domain else []
        # Scope ids are "" (not NULL) here, so they can sit in the primary key.
        self.table = Table(
            name,
            metadata,
            Column("workspace_id", String(64), primary_key=True),
            Column("use_case_id", String(36), primary_key=True),
            Column("setup_id", String(36), primary_key=True),
            Column(period, String(width), primary_key=True),
            *domain,
            *(Column(n, Integer, nullable=False, server_default="0") for n in SUMS),
            Index(f"{name}_by_setup", "workspace_id", "setup_id", period),
        )
        self.key_names = tuple(c.name for c in self.table.primary_key.columns)

    def bucket(self, row: dict[str, Any]) -> tuple[str, ...]:
        """The bucket an email row counts in (in `key_names` order)."""
        scope = (row["workspace_id"], row["use_case_id"] or "", row["setup_id"] or "")
        key = (*scope, row["sent_at"][: self.width])
        return (*key, row["recipient_domain"]) if self.by_domain else key


HOURLY = Rollup("analytics_hourly", "hour", 13, by_domain=False)
DAILY_DOMAINS = Rollup("analytics_daily_domains", "day", 10, by_domain=True)


def _contribution(row: dict[str, Any]) -> list[int]:
    return [1, *(int(row[n]) for n in FLAGS + TOTALS)]


def _existing(conn: Connection, ids: list[str]) -> list[RowMapping]:
    return select_among(conn, select(email_analytics), email_analytics.c.id, ids)


def _move(
    conn: Connection, rollup: Rollup, changes: list[tuple[dict[str, Any] | None, dict[str, Any]]]
) -> None:
    """Apply (old row, new row) changes of emails to a rollup's sums."""
    deltas: dict[tuple[str, ...], list[int]] = {}
    for old, new in changes:
        for row, sign in ((old, -1), (new, 1)):
            if row is None:
                continue
            delta = deltas.setdefault(rollup.bucket(row), [0] * len(SUMS))
            for i, value in enumerate(_contribution(row)):
                delta[i] += sign * value
    touched = {key: delta for key, delta in deltas.items() if any(delta)}
    if not touched:
        return
    table, names = rollup.table, rollup.key_names
    insert = postgresql.insert(table) if conn.dialect.name == "postgresql" else sqlite.insert(table)
    statement = insert.on_conflict_do_update(
        index_elements=list(names), set_={n: table.c[n] + insert.excluded[n] for n in SUMS}
    )
    rows = [dict(zip(names + SUMS, (*key, *delta), strict=True)) for key, delta in touched.items()]
    conn.execute(statement, rows)
    # A bucket whose last email moved to another one disappears, as after a rebuild.
    emptied = [key for key, delta in touched.items() if delta[0] < 0]
    for start in range(0, len(emptied), 50):
        keys = tuple_(*(table.c[n] for n in names)).in_(emptied[start : start + 50])
        conn.execute(delete(table).where(keys, table.c.sent == 0))


class AnalyticsProjection:
    """Keeps `email_analytics` equal to folding each email's events into a `Cohort`,
    and the rollups equal to the sums of its rows."""

    name = "analytics"
    tables: Sequence[Table] = (email_analytics, HOURLY.table, DAILY_DOMAINS.table)

    def process(
        self, conn: Connection, batch: Sequence[Positioned], *, whole_emails: bool = False
    ) -> None:
        grouped: dict[str, list[EmailEvent]] = {}
        for item in batch:
            grouped.setdefault(item.email_id, []).append(item.event)
        stored = [] if whole_emails else _existing(conn, list(grouped))
        before = {row["id"]: dict(row) for row in stored}
        changes: list[tuple[dict[str, Any] | None, dict[str, Any]]] = []
        for email_id, events in grouped.items():
            old = before.get(email_id)
            cohort = Cohort.from_row(old) if old else Cohort.new(email_id, events[0].workspace_id)
            for event in events:
                cohort.apply(event)
            changes.append((old, cohort.as_row()))
        save_rows(conn, email_analytics, [new for _, new in changes], before)
        for rollup in (HOURLY, DAILY_DOMAINS):
            _move(conn, rollup, changes)


GroupBy = Literal["day", "hour", "recipient_domain", "use_case"]
GROUP_BY: tuple[GroupBy, ...] = ("day", "hour", "recipient_domain", "use_case")


@dataclass(frozen=True)
class StatsFilter:
    """Which emails the stats cover: a scope (use case or setup) and a sent_at window."""

    workspace_id: str
    use_case_id: str | None = None
    setup_id: str | None = None
    sent_from: str | None = None
    sent_to: str | None = None


def _substr(column: ColumnElement[Any], width: int) -> ColumnElement[Any]:
    # Literal lengths (not bound parameters), so SELECT and GROUP BY are one expression.
    return func.substr(column, literal_column("1"), literal_column(str(width)))


def _email_sums(conn: Connection, where: StatsFilter, group_by: GroupBy) -> list[RowMapping]:
    c = email_analytics.c
    keys = {"day": _substr(c.sent_at, 10), "hour": _substr(c.sent_at, 13)}
    keys.update(recipient_domain=c.recipient_domain, use_case=c.use_case_id)
    key = keys[group_by].label("key")
    sums = [func.sum(c[name]).label(name) for name in FLAGS + TOTALS]
    query = select(key, func.count().label("sent"), *sums)
    query = query.where(c.workspace_id == where.workspace_id)
    if where.use_case_id is not None:
        query = query.where(c.use_case_id == where.use_case_id)
    if where.setup_id is not None:
        query = query.where(c.setup_id == where.setup_id)
    if where.sent_from is not None:
        query = query.where(c.sent_at >= where.sent_from)
    if where.sent_to is not None:
        query = query.where(c.sent_at < where.sent_to)
    return list(conn.execute(query.group_by(key)).mappings())


def _rollup_sums(
    conn: Connection,
    rollup: Rollup,
    where: StatsFilter,
    group_by: GroupBy,
    periods: tuple[str | None, str | None],
) -> list[RowMapping]:
    t = rollup.table
    period = t.c[rollup.period]
    keys = {"day": _substr(period, 10), "hour": period, "use_case": t.c.use_case_id}
    if rollup.by_domain:
        keys["recipient_domain"] = t.c.recipient_domain
    key = keys[group_by].label("key")
    query = select(key, *(func.sum(t.c[name]).label(name) for name in SUMS))
    query = query.where(t.c.workspace_id == where.workspace_id)
    if where.use_case_id is not None:
        query = query.where(t.c.use_case_id == where.use_case_id)
    if where.setup_id is not None:
        query = query.where(t.c.setup_id == where.setup_id)
    first, end = periods
    if first is not None:
        query = query.where(period >= first)
    if end is not None:
        query = query.where(period < end)
    return list(conn.execute(query.group_by(key)).mappings())


_PERIOD_REST = {13: ":00:00.000000Z", 10: "T00:00:00.000000Z"}
_PERIOD_STEP = {13: timedelta(hours=1), 10: timedelta(days=1)}


def _start(period: str) -> str:
    """The first moment of a period (`2025-03-14T19` or `2025-03-14`)."""
    return period + _PERIOD_REST[len(period)]


def _ceil(moment: str, width: int) -> str:
    """The first period that starts at or after `moment`."""
    period = moment[:width]
    if _start(period) == moment:
        return period
    later = datetime.fromisoformat(_start(period)) + _PERIOD_STEP[width]
    return later.strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:width]


Window = tuple[str | None, str | None]


def split_window(lo: str | None, hi: str | None, width: int) -> tuple[Window | None, list[Window]]:
    """[lo, hi) as the whole periods inside it (first, end), if any, and the partial
    stretches at its edges, each shorter than one period."""
    first = None if lo is None else _ceil(lo, width)
    end = None if hi is None else hi[:width]
    if first is not None and end is not None and first >= end:
        return None, [(lo, hi)] if lo is not None and hi is not None and lo < hi else []
    edges: list[Window] = []
    if lo is not None and first is not None and lo != _start(first):
        edges.append((lo, _start(first)))
    if hi is not None and end is not None and hi != _start(end):
        edges.append((_start(end), hi))
    return (first, end), edges


def stats_groups(conn: Connection, where: StatsFilter, group_by: GroupBy) -> list[dict[str, Any]]:
    """Per group: its raw key (`2025-03-14`, `2025-03-14T19`, a domain, a use case id
    or None), `sent` and the sum of every flag and total, in no particular order."""
    rollup = DAILY_DOMAINS if group_by == "recipient_domain" else HOURLY
    whole, edges = split_window(where.sent_from, where.sent_to, rollup.width)
    found: list[RowMapping] = []
    if whole is not None:
        found.extend(_rollup_sums(conn, rollup, where, group_by, whole))
    for lo, hi in edges:
        found.extend(_email_sums(conn, replace(where, sent_from=lo, sent_to=hi), group_by))
    groups: dict[str | None, dict[str, Any]] = {}
    for row in found:
        key = row["key"] or None  # "" is the rollups' "no use case"
        group = groups.setdefault(key, dict.fromkeys(SUMS, 0))
        for name in SUMS:
            group[name] += int(row[name])
    return [{"key": key, **sums} for key, sums in groups.items()]
