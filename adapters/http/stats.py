"""The stats endpoint: cohorts of emails by day, hour, recipient domain or use case.

Served from the analytics projection (projections/analytics.py); what each count and
rate means is in docs/analytics.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy import Connection, Engine

from adapters.http.api import Call, Operation, json_response, rfc3339_time
from adapters.http.emails import SCOPE
from projections.analytics import GroupBy, StatsFilter, stats_groups

T = TypeVar("T")
COUNTS = (
    "sent", "delivered", "bounced", "bounced_hard", "bounced_soft", "complained", "rejected",
    "delayed", "unique_opens", "unique_clicks", "opens", "clicks",
)  # fmt: skip
# The projection's column behind each count, where its name differs.
_COLUMNS = {"unique_opens": "opened", "unique_clicks": "clicked"}


class StatsQuery(BaseModel):
    """Scope, window and grouping of the stats."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    use_case_id: str | None = Field(None, min_length=1, description="Only emails of this use case.")
    setup_id: str | None = Field(None, min_length=1, description="Only emails of this email setup.")
    sent_from: str | None = Field(
        None, alias="from", description="RFC 3339; emails sent at or after."
    )
    sent_to: str | None = Field(None, alias="to", description="RFC 3339; emails sent before.")
    group_by: GroupBy = Field(
        "day", description="day, hour (UTC), recipient_domain or use_case (default day)."
    )

    _times = field_validator("sent_from", "sent_to")(rfc3339_time)

    @model_validator(mode="after")
    def _scoped(self) -> StatsQuery:
        if self.use_case_id is None and self.setup_id is None:
            raise ValueError(SCOPE)
        return self


class Figures(BaseModel):
    """Counts (emails with at least one such event; opens and clicks are raw totals)
    and unrounded rates."""

    sent: int
    delivered: int
    bounced: int
    bounced_hard: int = Field(description="With at least one Permanent bounce.")
    bounced_soft: int = Field(description="With at least one Transient or Undetermined bounce.")
    complained: int
    rejected: int
    delayed: int
    unique_opens: int = Field(description="With at least one open that is not a machine open.")
    unique_clicks: int
    opens: int = Field(description="Every open, machine opens included.")
    clicks: int = Field(description="Every click.")
    delivery_rate: float = Field(description="delivered / sent (0 when sent is 0).")
    bounce_rate: float = Field(description="bounced / sent (0 when sent is 0).")
    complaint_rate: float = Field(description="complained / sent (0 when sent is 0).")
    open_rate: float = Field(description="unique_opens / delivered (0 when none delivered).")
    click_rate: float = Field(description="unique_clicks / delivered (0 when none delivered).")


class Group(Figures):
    """One cohort."""

    key: str | None = Field(
        description="2025-03-14 (day), 2025-03-14T19:00:00Z (hour), the lowercased "
        "recipient domain, or the use case id (null for emails sent around the service)."
    )


class Stats(BaseModel):
    """Groups in ascending key order (empty ones left out) and their totals."""

    group_by: GroupBy
    groups: list[Group]
    totals: Figures


def _ratio(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def figures(counts: dict[str, int]) -> dict[str, Any]:
    """Counts with their rates."""
    shaped: dict[str, Any] = {name: counts[name] for name in COUNTS}
    sent, delivered = counts["sent"], counts["delivered"]
    shaped["delivery_rate"] = _ratio(delivered, sent)
    shaped["bounce_rate"] = _ratio(counts["bounced"], sent)
    shaped["complaint_rate"] = _ratio(counts["complained"], sent)
    shaped["open_rate"] = _ratio(counts["unique_opens"], delivered)
    shaped["click_rate"] = _ratio(counts["unique_clicks"], delivered)
    return shaped


def _counts(row: dict[str, Any]) -> dict[str, int]:
    return {name: int(row[_COLUMNS.get(name, name)]) for name in COUNTS}


def _key(group_by: GroupBy, raw: str | None) -> str | None:
    if group_by == "hour" and raw is not None:
        return f"{raw}:00:00Z"
    return raw


def _in_one_snapshot(conn: Connection, read: Callable[[], T]) -> T:
    # An answer may read a rollup and the per-email rows at its window's edges: both
    # must see the same projection commit, or an email could move between them unseen.
    if conn.dialect.name == "postgresql":
        conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            return read()
    conn.exec_driver_sql("BEGIN")  # the reader autocommits; SQLite's WAL keeps a snapshot
    try:
        return read()
    finally:
        conn.exec_driver_sql("COMMIT")


def stats(engine: Engine, workspace_id: str, q: StatsQuery) -> dict[str, Any]:
    """The stats answer of one query."""
    where = StatsFilter(workspace_id, q.use_case_id, q.setup_id, q.sent_from, q.sent_to)
    with engine.connect() as conn:
        rows = _in_one_snapshot(conn, lambda: stats_groups(conn, where, q.group_by))
    # Nulls (emails without a use case) first, then ascending keys.
    rows.sort(key=lambda row: (row["key"] is not None, row["key"] or ""))
    groups = [{"key": _key(q.group_by, row["key"]), **figures(_counts(row))} for row in rows]
    totals = dict.fromkeys(COUNTS, 0)
    for group in groups:
        for name in COUNTS:
            totals[name] += group[name]
    return {"group_by": q.group_by, "groups": groups, "totals": figures(totals)}


async def get_stats_endpoint(call: Call) -> Any:
    return json_response(await call.run(stats, call.storage.reader, call.workspace_id, call.query))


def stats_operations() -> list[Operation]:
    """Every stats endpoint."""
    return [
        Operation(
            "GET",
            "/v1/{workspace_id}/email/stats",
            get_stats_endpoint,
            "Delivery and engagement stats of email cohorts",
            "Channel.view",
            "emails",
            query=StatsQuery,
            response=Stats,
            errors=(422,),
            description="Emails of one use case or setup, sent in [from, to), grouped by "
            "the day or hour (UTC) they were sent, their recipient domain or their use "
            "case. An event counts in its email's group whenever it happened.",
        )
    ]
