"""The analytics projection: cohorts as the email detail decides them, bounce kinds,
and a rebuild from the log that gives the same rows and the same stats."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from adapters.storage import Storage
from domain.reports import Report
from projections.analytics import (
    DAILY_DOMAINS,
    GROUP_BY,
    HOURLY,
    SUMS,
    Rollup,
    StatsFilter,
    email_analytics,
    split_window,
    stats_groups,
)
from projections.emails import emails
from tests.factories import WORKSPACE, report

DOMAINS = ["a.test", "b.test", "mail.example"]
T = "2025-03-"
KINDS = ["Sent", "Delivery", "Bounce", "Complaint", "Reject", "DeliveryDelay", "Open", "Click"]


@st.composite
def email_reports(draw: st.DrawFn, workspace_id: str = WORKSPACE, emails: int = 6) -> Report:
    """Any report about one of a few emails spread over days, hours, domains, use cases
    and setups; some create their email without a Sent (no use case then)."""
    n = draw(st.integers(min_value=0, max_value=emails - 1))
    kind = draw(st.sampled_from(KINDS))
    day, hour = draw(st.integers(10, 12)), draw(st.integers(0, 23))
    detail: dict[str, Any] = {}
    if kind == "Sent":
        detail["use_case_id"] = draw(st.sampled_from(["uc-1", "uc-2"]))
        detail["setup_id"] = draw(st.sampled_from(["s-1", "s-2"]))
    elif draw(st.booleans()) and draw(st.booleans()):  # reported for mail sent around us
        detail["setup_id"] = draw(st.sampled_from(["s-1", "s-2"]))
        detail["sent_at"] = f"2025-03-{day:02d}T{hour:02d}:00:00Z"
    if kind == "Bounce":
        detail["bounce_type"] = draw(
            st.sampled_from(["Permanent", "Transient", "Undetermined", None])
        )
    elif kind == "Open":
        detail["machine_open"] = draw(st.booleans())
    elif kind == "Click":
        detail["link"] = draw(st.sampled_from(["https://a.test/", "https://b.test/"]))
    return report(
        kind,
        workspace_id=workspace_id,
        message_id=f"msg-{n}",
        to_address=f"user{n}@{DOMAINS[n % len(DOMAINS)]}",
        event_at=f"2025-03-{day:02d}T{hour:02d}:{draw(st.integers(0, 59)):02d}:00Z",
        transport_key=draw(st.one_of(st.none(), st.uuids().map(str))),
        **detail,
    )


def rows(store: Storage) -> list[dict[str, Any]]:
    with store.engine.connect() as conn:
        query = select(email_analytics).order_by(email_analytics.c.id)
        return [dict(row) for row in conn.execute(query).mappings()]


def rollup_rows(store: Storage, rollup: Rollup) -> dict[tuple[str, ...], dict[str, int]]:
    with store.engine.connect() as conn:
        found = conn.execute(select(rollup.table)).mappings()
        return {tuple(row[n] for n in rollup.key_names): {n: row[n] for n in SUMS} for row in found}


def summed(emails: list[dict[str, Any]], rollup: Rollup) -> dict[tuple[str, ...], dict[str, int]]:
    """What a rollup must hold: the sums of the email rows, bucket by bucket."""
    sums: dict[tuple[str, ...], dict[str, int]] = {}
    for row in emails:
        bucket = sums.setdefault(rollup.bucket(row), dict.fromkeys(SUMS, 0))
        for name in SUMS:
            bucket[name] += 1 if name == "sent" else row[name]
    return sums


SCOPES = [
    StatsFilter(WORKSPACE, use_case_id="uc-1"),
    StatsFilter(WORKSPACE, setup_id="s-2"),
    StatsFilter(WORKSPACE, setup_id="s-1", sent_from="2025-03-11T00:00:00.000000Z"),
    StatsFilter(WORKSPACE, use_case_id="uc-2", sent_to="2025-03-11T12:00:00.000000Z"),
    StatsFilter(
        WORKSPACE,
        use_case_id="uc-1",
        sent_from=f"{T}10T05:30:00.000000Z",
        sent_to=f"{T}12T07:10:00.000000Z",
    ),
]


def all_stats(store: Storage) -> list[list[dict[str, Any]]]:
    with store.engine.connect() as conn:
        return [
            sorted(stats_groups(conn, where, group_by), key=lambda g: str(g["key"]))
            for where in SCOPES
            for group_by in GROUP_BY
        ]


@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    chunks=st.lists(st.lists(email_reports(), min_size=1, max_size=8), min_size=1, max_size=5),
    steps=st.lists(st.integers(min_value=0, max_value=2), min_size=5, max_size=5),
)
def test_rebuild_gives_the_same_rows_and_stats_as_following_the_log(
    storage: Storage, chunks: list[list[Report]], steps: list[int]
) -> None:
    storage.runner.rebuild("analytics")
    for chunk, step_count in zip(chunks, steps, strict=False):
        storage.ledger.record(chunk)
        for _ in range(step_count):  # follow part of the way, in batches of 7
            storage.runner.step("analytics")
    storage.runner.catch_up_all()
    incremental, stats = rows(storage), all_stats(storage)
    rollups = [rollup_rows(storage, rollup) for rollup in (HOURLY, DAILY_DOMAINS)]
    assert rollups == [summed(incremental, rollup) for rollup in (HOURLY, DAILY_DOMAINS)]

    storage.runner.rebuild("analytics")

    assert rows(storage) == incremental
    assert [rollup_rows(storage, rollup) for rollup in (HOURLY, DAILY_DOMAINS)] == rollups
    assert all_stats(storage) == stats


ANN = "Ann@Example.COM"


def test_cohort_fields_are_those_of_the_email_detail(storage: Storage) -> None:
    storage.ledger.record(
        [
            report("Open", event_at="2025-03-15T08:00:00Z", machine_open=True, to_address=ANN),
            report("Delivery", event_at="2025-03-14T23:59:00Z", to_address=ANN),
        ]
    )
    storage.runner.catch_up_all()
    storage.ledger.record(
        [
            report(
                "Sent", event_at="2025-03-14T23:58:00Z", use_case_id="uc-1", setup_id="s-1",
                to_address=ANN,
            )
        ]
    )  # fmt: skip
    storage.runner.catch_up_all()
    with storage.engine.connect() as conn:
        (email,) = conn.execute(select(emails)).mappings()
    (row,) = rows(storage)
    assert row["id"] == email["id"]
    assert (row["sent_at"], row["use_case_id"], row["setup_id"]) == (
        email["sent_at"], email["use_case_id"], email["setup_id"],
    )  # fmt: skip
    assert row["sent_at"] == "2025-03-14T23:58:00.000000Z"
    assert row["recipient_domain"] == "example.com"
    assert (row["delivered"], row["opened"], row["opens"]) == (1, 0, 1)  # a machine open


def bounced(*types: str | None) -> dict[str, Any]:
    """The analytics row of an email with bounces of these types, in this order."""
    return {
        "bounced": 1,
        "bounced_hard": int("Permanent" in types),
        "bounced_soft": int("Transient" in types or "Undetermined" in types),
        "reports": [
            report(
                "Bounce", event_at=f"2025-03-14T19:0{i}:00Z", bounce_type=t, message_id=str(types)
            )
            for i, t in enumerate(types)
        ],
    }


def test_hard_and_soft_each_mean_at_least_one_bounce_of_their_types(storage: Storage) -> None:
    # SPEC 3: bounced_hard (Permanent), bounced_soft (Transient or Undetermined), each
    # "the number of emails with at least one such event": soft then hard is both; a
    # bounce without a type is neither.
    cases = [
        bounced("Permanent"),
        bounced("Transient"),
        bounced("Undetermined"),
        bounced(None),
        bounced("Transient", "Permanent"),
        bounced("Permanent", "Transient"),
        bounced("Undetermined", "Transient"),
    ]
    for case in cases:
        storage.ledger.record(case["reports"])
    storage.runner.catch_up_all()
    with storage.engine.connect() as conn:
        found = {
            row["message_id"]: (row["bounced"], row["bounced_hard"], row["bounced_soft"])
            for row in conn.execute(
                select(
                    emails.c.message_id,
                    email_analytics.c.bounced,
                    email_analytics.c.bounced_hard,
                    email_analytics.c.bounced_soft,
                ).join(emails, emails.c.id == email_analytics.c.id)
            ).mappings()
        }
    for case in cases:
        expected = (1, case["bounced_hard"], case["bounced_soft"])
        assert found[case["reports"][0].message_id] == expected
    assert found[str(("Transient", "Permanent"))] == (1, 1, 1)
    assert found[str((None,))] == (1, 0, 0)


def test_a_late_event_counts_in_the_group_of_the_day_its_email_was_sent(storage: Storage) -> None:
    storage.ledger.record(
        [
            report("Sent", event_at="2025-03-10T23:00:00Z", use_case_id="uc-1"),
            report("Bounce", event_at="2025-03-11T09:00:00Z", bounce_type="Transient"),
            report("Sent", message_id="m-2", event_at="2025-03-11T10:00:00Z", use_case_id="uc-1"),
        ]
    )
    storage.runner.catch_up_all()
    with storage.engine.connect() as conn:
        groups = stats_groups(conn, StatsFilter(WORKSPACE, use_case_id="uc-1"), "day")
    by_day = {g["key"]: (g["sent"], g["bounced"]) for g in groups}
    assert by_day == {"2025-03-10": (1, 1), "2025-03-11": (1, 0)}


def test_a_window_splits_into_whole_periods_and_partial_edges() -> None:
    def at(text: str) -> str:
        return f"{T}{text}.000000Z"

    assert split_window(at("10T06:30:00"), at("12T06:15:00"), 13) == (
        (f"{T}10T07", f"{T}12T06"),
        [(at("10T06:30:00"), at("10T07:00:00")), (at("12T06:00:00"), at("12T06:15:00"))],
    )
    assert split_window(at("10T06:00:00"), at("12T00:00:00"), 10) == (
        (f"{T}11", f"{T}12"),
        [(at("10T06:00:00"), at("11T00:00:00"))],
    )
    # No whole hour inside: all of it from the per-email rows.
    assert split_window(at("10T06:30:00"), at("10T07:45:00"), 13) == (
        None,
        [(at("10T06:30:00"), at("10T07:45:00"))],
    )
    assert split_window(None, None, 13) == ((None, None), [])
    assert split_window(at("12T00:00:00"), at("11T00:00:00"), 10) == (None, [])
    assert split_window("2025-12-31T23:59:59.000000Z", None, 10) == (
        ("2026-01-01", None),
        [("2025-12-31T23:59:59.000000Z", "2026-01-01T00:00:00.000000Z")],
    )
