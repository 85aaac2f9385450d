"""The stats endpoint: equal to a brute-force count over the events, for every grouping,
scope and window; shapes, keys, bounds, rates; errors and isolation."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from adapters.http.stats import Stats
from adapters.storage import Storage
from domain.reports import Report
from tests.api.apiclient import Tenant, add_key, client_for, make_tenant
from tests.factories import report
from tests.integration.test_analytics import email_reports

FLAG_COUNTS = ("delivered", "bounced", "bounced_hard", "bounced_soft", "complained", "rejected")
ZERO_RATES = dict.fromkeys(
    ("delivery_rate", "bounce_rate", "complaint_rate", "open_rate", "click_rate"), 0.0
)


@pytest.fixture
def client(storage: Storage) -> Iterator[TestClient]:
    with client_for(storage) as test_client:
        yield test_client


@pytest.fixture
def tenant(storage: Storage) -> Tenant:
    return make_tenant(storage)


def stats_url(tenant: Tenant) -> str:
    return f"/v1/{tenant.workspace_id}/email/stats"


def get_stats(client: TestClient, tenant: Tenant, **params: str) -> dict[str, Any]:
    response = client.get(stats_url(tenant), params=params, headers=tenant.headers())
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    Stats.model_validate(body)
    return body


# --- brute force ---------------------------------------------------------------------


def outcome(events: list[Any]) -> dict[str, int]:
    """What happened to one email, counted straight from its stored events."""
    kinds = [str(e.event_type) for e in events]
    types = {e.bounce_type for e in events if e.event_type == "Bounce"}
    return {
        "sent": 1,
        "delivered": int("Delivery" in kinds),
        "bounced": int("Bounce" in kinds),
        "bounced_hard": int("Permanent" in types),
        "bounced_soft": int(bool(types & {"Transient", "Undetermined"})),
        "complained": int("Complaint" in kinds),
        "rejected": int("Reject" in kinds),
        "delayed": int("DeliveryDelay" in kinds),
        "unique_opens": int(any(e.event_type == "Open" and not e.machine_open for e in events)),
        "unique_clicks": int("Click" in kinds),
        "opens": kinds.count("Open"),
        "clicks": kinds.count("Click"),
    }


def with_rates(counts: dict[str, int]) -> dict[str, Any]:
    sent, delivered = counts["sent"], counts["delivered"]
    return {
        **counts,
        "delivery_rate": delivered / sent if sent else 0.0,
        "bounce_rate": counts["bounced"] / sent if sent else 0.0,
        "complaint_rate": counts["complained"] / sent if sent else 0.0,
        "open_rate": counts["unique_opens"] / delivered if delivered else 0.0,
        "click_rate": counts["unique_clicks"] / delivered if delivered else 0.0,
    }


def key_of(detail: dict[str, Any], group_by: str) -> str | None:
    if group_by == "day":
        return str(detail["sent_at"][:10])
    if group_by == "hour":
        return f"{detail['sent_at'][:13]}:00:00Z"
    if group_by == "recipient_domain":
        return str(detail["to_address"].split("@")[1])
    return detail["ses_use_case_id"]  # type: ignore[no-any-return]


def brute_force(
    client: TestClient,
    storage: Storage,
    tenant: Tenant,
    email_ids: set[Any],
    params: dict[str, str],
) -> dict[str, Any]:
    """The expected answer: each email's cohort from its detail, its outcome from its log."""
    groups: dict[str | None, dict[str, int]] = {}
    for email_id in email_ids:
        url = f"/v1/{tenant.workspace_id}/email/{email_id}"
        detail = client.get(url, headers=tenant.headers()).json()
        if "use_case_id" in params and detail["ses_use_case_id"] != params["use_case_id"]:
            continue
        if "setup_id" in params and detail["setup_id"] != params["setup_id"]:
            continue
        if "from" in params and detail["sent_at"] < params["from"]:
            continue
        if "to" in params and detail["sent_at"] >= params["to"]:
            continue
        counts = outcome(storage.ledger.get_history(email_id))
        group = groups.setdefault(key_of(detail, params["group_by"]), dict.fromkeys(counts, 0))
        for name, value in counts.items():
            group[name] += value
    totals: dict[str, int] = {}
    for counts in groups.values():
        for name, value in counts.items():
            totals[name] = totals.get(name, 0) + value
    ordered = sorted(groups.items(), key=lambda item: (item[0] is not None, item[0] or ""))
    return {
        "group_by": params["group_by"],
        "groups": [{"key": key, **with_rates(counts)} for key, counts in ordered],
        "totals": with_rates(totals or dict.fromkeys(outcome([]), 0)),
    }


WINDOWS = [
    {},
    {"from": "2025-03-11T00:00:00.000000Z"},
    {"to": "2025-03-11T12:00:00.000000Z"},
    {"from": "2025-03-10T06:00:00.000000Z", "to": "2025-03-12T06:00:00.000000Z"},
    {"from": "2025-03-10T06:20:00.000000Z", "to": "2025-03-12T06:40:00.000000Z"},
    {"from": "2025-03-11T06:20:00.000000Z", "to": "2025-03-11T06:40:00.000000Z"},
    {"from": "2025-03-10T23:30:00.000000Z", "to": "2025-03-11T01:00:00.000000Z"},
]
SCOPES = [{"use_case_id": "uc-1"}, {"use_case_id": "uc-2"}, {"setup_id": "s-1"}]


@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    chunks=st.lists(st.lists(email_reports(), min_size=3, max_size=12), min_size=1, max_size=3),
    scope=st.sampled_from(SCOPES),
    window=st.sampled_from(WINDOWS),
)
def test_stats_equal_a_brute_force_count_over_the_events(
    client: TestClient,
    storage: Storage,
    chunks: list[list[Report]],
    scope: dict[str, str],
    window: dict[str, str],
) -> None:
    tenant = make_tenant(storage)  # a fresh workspace for every example
    email_ids = set()
    for chunk in chunks:
        mine = [replace(r, workspace_id=tenant.workspace_id) for r in chunk]
        email_ids |= {o.email_id for o in storage.ledger.record(mine)}
        storage.runner.catch_up_all()
    for group_by in ("day", "hour", "recipient_domain", "use_case"):
        params = {**scope, **window, "group_by": group_by}
        expected = brute_force(client, storage, tenant, email_ids, params)
        assert get_stats(client, tenant, **params) == expected, params


# --- shapes, keys, bounds ---------------------------------------------------------------


def seed_campaign(storage: Storage, workspace_id: str) -> None:
    """Three emails of uc-1 over two days, one of uc-2, with outcomes of every kind."""

    def r(kind: str, n: int, at: str, **more: Any) -> Report:
        domain = "Example.COM" if n % 2 else "other.test"
        return report(kind, workspace_id=workspace_id, message_id=f"m-{n}",
                      to_address=f"u{n}@{domain}", event_at=at, **more)  # fmt: skip

    storage.ledger.record(
        [
            r("Sent", 1, "2025-03-10T19:04:00Z", use_case_id="uc-1", setup_id="s-1"),
            r("Delivery", 1, "2025-03-10T19:05:00Z"),
            r("Open", 1, "2025-03-10T20:00:00Z", machine_open=True),
            r("Open", 1, "2025-03-12T08:00:00Z", machine_open=False),
            r("Click", 1, "2025-03-12T08:01:00Z", link="https://x.test/"),
            r("Click", 1, "2025-03-12T08:02:00Z", link="https://y.test/"),
            r("Sent", 2, "2025-03-10T19:59:59Z", use_case_id="uc-1", setup_id="s-1"),
            r("Bounce", 2, "2025-03-11T01:00:00Z", bounce_type="Transient"),
            r("Sent", 3, "2025-03-11T00:00:00Z", use_case_id="uc-1", setup_id="s-1"),
            r("Delivery", 3, "2025-03-11T00:00:05Z"),
            r("Complaint", 3, "2025-03-11T02:00:00Z", feedback_type="abuse"),
            r("Sent", 4, "2025-03-11T00:00:00Z", use_case_id="uc-2", setup_id="s-1"),
            r("Bounce", 4, "2025-03-11T00:01:00Z", bounce_type="Permanent"),
            r("Delivery", 5, "2025-03-11T03:00:00Z", setup_id="s-1"),  # sent around us
        ]
    )
    storage.runner.catch_up_all()


def test_day_groups_are_cohorts_by_send_day_with_every_count_and_rate(
    client: TestClient, storage: Storage, tenant: Tenant
) -> None:
    seed_campaign(storage, tenant.workspace_id)
    body = get_stats(client, tenant, use_case_id="uc-1", group_by="day")
    assert [g["key"] for g in body["groups"]] == ["2025-03-10", "2025-03-11"]
    monday = body["groups"][0]
    assert monday == {
        "key": "2025-03-10", "sent": 2, "delivered": 1, "bounced": 1, "bounced_hard": 0,
        "bounced_soft": 1, "complained": 0, "rejected": 0, "delayed": 0, "unique_opens": 1,
        "unique_clicks": 1, "opens": 2, "clicks": 2, "delivery_rate": 0.5, "bounce_rate": 0.5,
        "complaint_rate": 0.0, "open_rate": 1.0, "click_rate": 1.0,
    }  # fmt: skip
    assert body["totals"]["sent"] == 3
    assert body["totals"]["complaint_rate"] == 1 / 3
    assert body["totals"]["delivery_rate"] == 2 / 3
    assert body["totals"]["open_rate"] == 0.5
    assert "key" not in body["totals"]


def test_hour_domain_and_use_case_keys(
    client: TestClient, storage: Storage, tenant: Tenant
) -> None:
    seed_campaign(storage, tenant.workspace_id)
    hours = get_stats(client, tenant, use_case_id="uc-1", group_by="hour")
    assert [(g["key"], g["sent"]) for g in hours["groups"]] == [
        ("2025-03-10T19:00:00Z", 2),
        ("2025-03-11T00:00:00Z", 1),
    ]
    domains = get_stats(client, tenant, setup_id="s-1", group_by="recipient_domain")
    assert [(g["key"], g["sent"]) for g in domains["groups"]] == [
        ("example.com", 3),
        ("other.test", 2),
    ]
    cases = get_stats(client, tenant, setup_id="s-1", group_by="use_case")
    assert [(g["key"], g["sent"]) for g in cases["groups"]] == [(None, 1), ("uc-1", 3), ("uc-2", 1)]
    assert cases["groups"][0]["open_rate"] == 0.0  # delivered, never opened
    assert cases["totals"]["bounced_hard"] == 1


def test_from_is_inclusive_and_to_exclusive_in_any_offset(
    client: TestClient, storage: Storage, tenant: Tenant
) -> None:
    seed_campaign(storage, tenant.workspace_id)
    body = get_stats(
        client, tenant, use_case_id="uc-1", group_by="day",
        **{"from": "2025-03-10T19:59:59Z", "to": "2025-03-11T01:00:00+01:00"},
    )  # fmt: skip
    assert [(g["key"], g["sent"]) for g in body["groups"]] == [("2025-03-10", 1)]
    body = get_stats(client, tenant, use_case_id="uc-1", **{"from": "2025-03-11T00:00:00.000001Z"})
    assert body["group_by"] == "day"  # the default grouping
    assert body["groups"] == []
    assert body["totals"] == {**dict.fromkeys(outcome([]), 0), **ZERO_RATES}


def test_another_workspaces_emails_never_count(
    client: TestClient, storage: Storage, tenant: Tenant
) -> None:
    other = make_tenant(storage, "Other")
    seed_campaign(storage, other.workspace_id)
    body = get_stats(client, tenant, use_case_id="uc-1", group_by="use_case")
    assert body["groups"] == []
    assert get_stats(client, other, use_case_id="uc-1")["totals"]["sent"] == 3


# --- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "names"),
    [
        ("group_by=day", "use_case_id or setup_id"),
        ("use_case_id=&group_by=day", "use_case_id"),
        ("use_case_id=uc-1&group_by=week", "group_by"),
        ("use_case_id=uc-1&group_by=", "group_by"),
        ("use_case_id=uc-1&from=last-week", "from"),
        ("use_case_id=uc-1&to=2025-03-10T10:00:00", "to"),
    ],
)
def test_bad_stats_queries_are_422_naming_the_parameter(
    client: TestClient, tenant: Tenant, query: str, names: str
) -> None:
    response = client.get(f"{stats_url(tenant)}?{query}", headers=tenant.headers())
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "unprocessable_entity"
    assert names in response.json()["error"]["message"]


def test_stats_need_a_key_with_channel_view_of_this_workspace(
    client: TestClient, storage: Storage, tenant: Tenant
) -> None:
    url = f"{stats_url(tenant)}?use_case_id=uc-1"
    for headers in ({}, {"Authorization": f"Basic {tenant.key}"}, {"Authorization": "Bearer x"}):
        response = client.get(url, headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthorized"
    sender = add_key(storage, tenant.workspace_id, ["Channel.send"])
    assert client.get(url, headers=tenant.headers(sender)).status_code == 403
    other = make_tenant(storage, "Other")
    assert client.get(url, headers=other.headers()).status_code == 403
    viewer = add_key(storage, tenant.workspace_id, ["Channel.view"])
    assert client.get(url, headers=tenant.headers(viewer)).status_code == 200
