"""The email and event queries: auth, every filter, pages, detail, isolation."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from adapters.http.emails import EmailDetail, EmailList, EventList
from adapters.storage import Storage
from domain.reports import Report
from tests.api.apiclient import Tenant, add_key, client_for, make_tenant
from tests.factories import report

MARCH_11 = "2025-03-11T00:00:00.000000Z"
RECIPIENTS = ["ann@example.com", "bob@example.com", "cy@example.org"]


def seed(storage: Storage, workspace_id: str, count: int = 24, use_case: str = "uc-1") -> None:
    """`count` emails over three recipients, in varied states, with opens and clicks."""
    reports: list[Report] = []
    for i in range(count):
        common = {
            "workspace_id": workspace_id,
            "message_id": f"{use_case}-msg-{i}",
            "to_address": RECIPIENTS[i % 3],
        }
        minute = f"2025-03-{10 + i // 10:02d}T10:{i % 60:02d}:00Z"
        reports.append(
            report(
                "Sent",
                event_at=minute,
                from_address="shop@news.test",
                subject=f"Order {i}",
                setup_id="setup-1" if i % 2 else "setup-2",
                use_case_id=use_case,
                **common,
            )
        )
        later = f"2025-03-{10 + i // 10:02d}T11:{i % 60:02d}:00Z"
        if i % 4 == 0:
            reports.append(report("Delivery", event_at=later, **common))
            reports.append(report("Open", event_at=later, machine_open=i % 8 == 0, **common))
        if i % 4 == 1:
            reports.append(
                report(
                    "Bounce",
                    event_at=later,
                    bounce_type="Permanent",
                    bounce_subtype="General",
                    **common,
                )
            )
        if i % 4 == 2:
            reports.append(report("Delivery", event_at=later, **common))
            reports.append(report("Complaint", event_at=later, feedback_type="abuse", **common))
        if i % 6 == 0:
            reports.append(report("Click", event_at=later, link="https://shop.test/x", **common))
    storage.ledger.record(reports)
    storage.runner.catch_up_all()


@pytest.fixture
def tenant(storage: Storage) -> Tenant:
    return make_tenant(storage)


@pytest.fixture
def client(storage: Storage, tenant: Tenant) -> Iterator[TestClient]:
    seed(storage, tenant.workspace_id)
    with client_for(storage) as test_client:
        yield test_client


def emails_url(tenant: Tenant) -> str:
    return f"/v1/{tenant.workspace_id}/email"


def get_all(
    client: TestClient, tenant: Tenant, url: str, params: dict[str, Any]
) -> list[dict[str, Any]]:
    """Every item of a list, walking its pages."""
    items: list[dict[str, Any]] = []
    token = None
    for _ in range(1000):
        query = dict(params, limit=params.get("limit", 5))
        if token:
            query["continuation_token"] = token
        response = client.get(url, params=query, headers=tenant.headers())
        assert response.status_code == 200, response.text
        body = response.json()
        items.extend(body["emails"] if "emails" in body else body["events"])
        if not body["has_more"]:
            assert body["continuation_token"] is None
            return items
        token = body["continuation_token"]
    raise AssertionError("pages never ended")


# --- auth ---------------------------------------------------------------------------


def test_no_key_wrong_scheme_or_unknown_key_is_401(client: TestClient, tenant: Tenant) -> None:
    url = emails_url(tenant) + "?use_case_id=uc-1"
    for headers in ({}, {"Authorization": f"Basic {tenant.key}"}, {"Authorization": "Bearer nope"}):
        response = client.get(url, headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthorized"


def test_key_without_channel_view_is_403(
    client: TestClient, tenant: Tenant, storage: Storage
) -> None:
    key = add_key(storage, tenant.workspace_id, ["Channel.send"])
    response = client.get(emails_url(tenant) + "?use_case_id=uc-1", headers=tenant.headers(key))
    assert response.status_code == 403
    assert "Channel.view" in response.json()["error"]["message"]


def test_view_key_reads(client: TestClient, tenant: Tenant, storage: Storage) -> None:
    key = add_key(storage, tenant.workspace_id, ["Channel.view"])
    response = client.get(emails_url(tenant) + "?use_case_id=uc-1", headers=tenant.headers(key))
    assert response.status_code == 200


def test_another_workspaces_path_is_403_and_its_emails_404(
    client: TestClient, tenant: Tenant, storage: Storage
) -> None:
    other = make_tenant(storage, "Other")
    response = client.get(emails_url(tenant) + "?use_case_id=uc-1", headers=other.headers())
    assert response.status_code == 403
    some = client.get(emails_url(tenant) + "?use_case_id=uc-1", headers=tenant.headers()).json()
    email_id = some["emails"][0]["id"]
    assert (
        client.get(
            f"/v1/{other.workspace_id}/email/{email_id}", headers=other.headers()
        ).status_code
        == 404
    )
    mine = client.get(f"/v1/{other.workspace_id}/email?use_case_id=uc-1", headers=other.headers())
    assert mine.json() == {"emails": [], "has_more": False, "continuation_token": None}
    events = client.get(
        f"/v1/{other.workspace_id}/email/event?use_case_id=uc-1", headers=other.headers()
    )
    assert events.json()["events"] == []


# --- validation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "names"),
    [
        ("", "use_case_id or setup_id"),
        ("use_case_id=uc-1&state=lost", "state"),
        ("use_case_id=uc-1&limit=0", "limit"),
        ("use_case_id=uc-1&limit=201", "limit"),
        ("use_case_id=uc-1&limit=many", "limit"),
        ("use_case_id=uc-1&sent_after=yesterday", "sent_after"),
        ("use_case_id=uc-1&sent_before=2025-03-10T10:00:00", "sent_before"),
    ],
)
def test_bad_email_queries_are_422_naming_the_parameter(
    client: TestClient, tenant: Tenant, query: str, names: str
) -> None:
    response = client.get(f"{emails_url(tenant)}?{query}", headers=tenant.headers())
    assert response.status_code == 422
    assert names in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("query", "names"),
    [
        ("email_id=x", "use_case_id or setup_id"),
        ("use_case_id=uc-1&event_type=Sent", "event_type"),
        ("use_case_id=uc-1&event_at_after=soon", "event_at_after"),
    ],
)
def test_bad_event_queries_are_422_naming_the_parameter(
    client: TestClient, tenant: Tenant, query: str, names: str
) -> None:
    response = client.get(f"{emails_url(tenant)}/event?{query}", headers=tenant.headers())
    assert response.status_code == 422
    assert names in response.json()["error"]["message"]


def test_forged_altered_or_foreign_tokens_are_400(client: TestClient, tenant: Tenant) -> None:
    first = client.get(
        emails_url(tenant), params={"use_case_id": "uc-1", "limit": 3}, headers=tenant.headers()
    )
    token = first.json()["continuation_token"]
    assert token
    altered = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
    for bad, params in [
        ("not-a-token", {"use_case_id": "uc-1"}),
        (altered, {"use_case_id": "uc-1"}),
        (token, {"use_case_id": "uc-1", "state": "bounced"}),
    ]:
        response = client.get(
            emails_url(tenant),
            params={**params, "continuation_token": bad},
            headers=tenant.headers(),
        )
        assert response.status_code == 400, bad
        assert "continuation_token" in response.json()["error"]["message"]


# --- the email list ----------------------------------------------------------------------


def test_list_is_newest_first_and_matches_its_schema(client: TestClient, tenant: Tenant) -> None:
    response = client.get(
        emails_url(tenant), params={"use_case_id": "uc-1"}, headers=tenant.headers()
    )
    body = EmailList.model_validate(response.json())
    assert len(body.emails) == 24
    assert not body.has_more
    keys = [(e.sent_at or "", e.id) for e in body.emails]
    assert keys == sorted(keys, reverse=True)
    first = response.json()["emails"][0]
    assert set(first) == {
        "id", "ses_use_case_id", "setup_id", "from_address", "to_address", "subject",
        "state", "sent_at", "has_attachment", "open_count", "click_count",
    }  # fmt: skip
    assert first["ses_use_case_id"] == "uc-1"


FILTERS: list[dict[str, Any]] = [
    {"use_case_id": "uc-1"},
    {"setup_id": "setup-1"},
    {"use_case_id": "uc-1", "to_address": ["ann@example.com"]},
    {"use_case_id": "uc-1", "to_address": ["ANN@example.com", "cy@example.org"]},
    {"use_case_id": "uc-1", "state": ["bounced"]},
    {"use_case_id": "uc-1", "state": ["complained", "delivered"]},
    {"use_case_id": "uc-1", "sent_after": "2025-03-11T10:15:00Z"},
    {"use_case_id": "uc-1", "sent_before": "2025-03-11T10:15:00Z"},
    {
        "setup_id": "setup-2",
        "state": ["delivered", "complained"],
        "to_address": ["ann@example.com", "cy@example.org"],
        "sent_after": "2025-03-10T10:02:00Z",
        "sent_before": "2025-03-12T10:02:00+00:00",
    },
]


def expected(everything: list[dict[str, Any]], flt: dict[str, Any]) -> list[str]:
    def keep(e: dict[str, Any]) -> bool:
        if "use_case_id" in flt and e["ses_use_case_id"] != flt["use_case_id"]:
            return False
        if "setup_id" in flt and e["setup_id"] != flt["setup_id"]:
            return False
        if "to_address" in flt and e["to_address"] not in {a.lower() for a in flt["to_address"]}:
            return False
        if "state" in flt and e["state"] not in flt["state"]:
            return False
        if "sent_after" in flt and e["sent_at"] < flt["sent_after"].replace("Z", ".000000Z"):
            return False
        return not ("sent_before" in flt and e["sent_at"] >= flt["sent_before"][:19] + ".000000Z")

    return [e["id"] for e in everything if keep(e)]


@pytest.mark.parametrize("flt", FILTERS, ids=lambda f: "+".join(sorted(f)))
def test_each_filter_alone_and_combined(
    client: TestClient, tenant: Tenant, flt: dict[str, Any]
) -> None:
    everything = get_all(client, tenant, emails_url(tenant), {"use_case_id": "uc-1", "limit": 200})
    found = [e["id"] for e in get_all(client, tenant, emails_url(tenant), {**flt, "limit": 4})]
    assert found == expected(everything, flt)
    assert found  # every filter here matches something


def test_pages_walk_without_gaps_or_duplicates_while_emails_arrive(
    client: TestClient, tenant: Tenant, storage: Storage
) -> None:
    at_start = [
        e["id"]
        for e in get_all(client, tenant, emails_url(tenant), {"use_case_id": "uc-1", "limit": 200})
    ]
    seen: list[str] = []
    token = None
    counter = itertools.count(100)
    while True:
        params: dict[str, Any] = {"use_case_id": "uc-1", "limit": 5}
        if token:
            params["continuation_token"] = token
        body = client.get(emails_url(tenant), params=params, headers=tenant.headers()).json()
        seen.extend(e["id"] for e in body["emails"])
        n = next(counter)  # a newer email arrives between every two pages
        storage.ledger.record(
            [report("Sent", workspace_id=tenant.workspace_id, message_id=f"new-{n}",
                    event_at="2025-04-01T00:00:00Z", use_case_id="uc-1")]
        )  # fmt: skip
        storage.runner.catch_up_all()
        if not body["has_more"]:
            break
        token = body["continuation_token"]
    assert seen == at_start
    assert len(set(seen)) == len(seen)


# --- detail -------------------------------------------------------------------------------


def test_detail_has_every_field(client: TestClient, tenant: Tenant) -> None:
    listing = client.get(
        emails_url(tenant),
        params={"use_case_id": "uc-1", "state": "bounced"},
        headers=tenant.headers(),
    ).json()
    email_id = listing["emails"][0]["id"]
    response = client.get(f"{emails_url(tenant)}/{email_id}", headers=tenant.headers())
    assert response.status_code == 200
    detail = EmailDetail.model_validate(response.json())
    assert detail.state == "bounced"
    assert (detail.bounce_type, detail.bounce_subtype) == ("Permanent", "General")
    assert detail.bounced_at is not None
    assert detail.bounced_at.endswith("Z")
    assert detail.attachment_filenames == []
    assert detail.message_id.startswith("uc-1-msg-")


def test_detail_of_unknown_or_malformed_id_is_404(client: TestClient, tenant: Tenant) -> None:
    for email_id in ("7d2c4a0e-0000-4000-8000-000000000000", "not-a-uuid"):
        response = client.get(f"{emails_url(tenant)}/{email_id}", headers=tenant.headers())
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"


# --- the event list -------------------------------------------------------------------------


def test_event_list_shows_provider_events_with_their_detail(
    client: TestClient, tenant: Tenant
) -> None:
    url = f"{emails_url(tenant)}/event"
    events = get_all(client, tenant, url, {"use_case_id": "uc-1", "limit": 7})
    EventList.model_validate({"events": events, "has_more": False, "continuation_token": None})
    assert {e["event_type"] for e in events} == {"Delivery", "Open", "Bounce", "Complaint", "Click"}
    keys = [(e["event_at"], e["id"]) for e in events]
    assert [k[0] for k in keys] == sorted((k[0] for k in keys), reverse=True)
    assert len({e["id"] for e in events}) == len(events)
    bounce = next(e for e in events if e["event_type"] == "Bounce")
    assert bounce["detail"]["bounce_type"] == "Permanent"
    opened = [e["detail"]["machine_open"] for e in events if e["event_type"] == "Open"]
    assert True in opened
    assert False in opened
    click = next(e for e in events if e["event_type"] == "Click")
    assert click["detail"]["link"] == "https://shop.test/x"


def test_event_filters_alone_and_combined(client: TestClient, tenant: Tenant) -> None:
    url = f"{emails_url(tenant)}/event"
    everything = get_all(client, tenant, url, {"use_case_id": "uc-1", "limit": 200})
    some_email = everything[0]["email_id"]
    cases: list[tuple[dict[str, Any], Any]] = [
        ({"email_id": [some_email]}, lambda e: e["email_id"] == some_email),
        ({"event_type": ["Bounce", "Click"]}, lambda e: e["event_type"] in {"Bounce", "Click"}),
        ({"event_at_after": "2025-03-11T00:00:00Z"}, lambda e: e["event_at"] >= MARCH_11),
        ({"event_at_before": "2025-03-11T00:00:00Z"}, lambda e: e["event_at"] < MARCH_11),
        (
            {"event_type": ["Delivery"], "event_at_after": "2025-03-10T11:05:00Z",
             "event_at_before": "2025-03-12T00:00:00Z"},
            lambda e: e["event_type"] == "Delivery"
            and "2025-03-10T11:05:00.000000Z" <= e["event_at"] < "2025-03-12T00:00:00.000000Z",
        ),
    ]  # fmt: skip
    for params, keep in cases:
        found = get_all(client, tenant, url, {"use_case_id": "uc-1", "limit": 3, **params})
        assert [e["id"] for e in found] == [e["id"] for e in everything if keep(e)], params
        assert found


def test_events_scoped_by_setup(client: TestClient, tenant: Tenant) -> None:
    url = f"{emails_url(tenant)}/event"
    by_setup = get_all(client, tenant, url, {"setup_id": "setup-1", "limit": 50})
    emails = {e["id"] for e in get_all(client, tenant, emails_url(tenant), {"setup_id": "setup-1"})}
    assert by_setup
    assert {e["email_id"] for e in by_setup} <= emails
