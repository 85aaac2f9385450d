"""The history endpoint: every stored event, the email as it stood at any time, the
chain's verdict, and the usual auth and isolation."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from starlette.testclient import TestClient

from adapters.http.history import History
from adapters.settings import parse_database_url
from adapters.storage import Storage, open_storage
from domain.reports import Report, format_time
from tests.api.apiclient import Tenant, add_key, client_for, make_tenant
from tests.factories import report
from tests.integration.test_audit import tamper

START = datetime(2025, 3, 14, 20, 0, tzinfo=UTC)


class Clock:
    """A clock the test moves: each reading is one second after the previous one."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


@pytest.fixture
def clocked(database_url: str) -> Iterator[Storage]:
    """A store whose received_at times the test controls."""
    store = open_storage(parse_database_url(database_url), batch_size=7, clock=Clock())
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def tenant(clocked: Storage) -> Tenant:
    return make_tenant(clocked)


@pytest.fixture
def client(clocked: Storage) -> Iterator[TestClient]:
    with client_for(clocked) as test_client:
        yield test_client


def lifecycle(workspace_id: str, message_id: str = "msg-1") -> list[Report]:
    """One email's events, every kind, as providers would report them."""
    where: dict[str, Any] = {"workspace_id": workspace_id, "message_id": message_id}
    return [
        report(
            "Sent", event_at="2025-03-14T19:00:00Z", from_address="shop@news.test",
            subject="Your order", setup_id="setup-1", use_case_id="uc-1",
            email_type="transactional", tier="good", attachment_filenames=["a.pdf"], **where,
        ),
        report("DeliveryDelay", event_at="2025-03-14T19:00:30Z", delay_type="MailboxFull", **where),
        report("Delivery", event_at="2025-03-14T19:01:00Z", smtp_response="250 OK", **where),
        report("Open", event_at="2025-03-14T19:02:00Z", machine_open=True, ip="192.0.2.1", **where),
        report("Open", event_at="2025-03-14T19:03:00Z", user_agent="Mail", **where),
        report("Click", event_at="2025-03-14T19:04:00Z", link="https://shop.test/a", **where),
        report(
            "Bounce", event_at="2025-03-14T19:05:00Z", bounce_type="Transient",
            bounce_subtype="MailboxFull", transport_key="ses-b-1", **where,
        ),
        report("Complaint", event_at="2025-03-14T19:06:00Z", feedback_type="abuse", **where),
        report("Reject", event_at="2025-03-14T19:07:00Z", reason="Bad content", **where),
    ]  # fmt: skip


def history_url(tenant: Tenant, email_id: object) -> str:
    return f"/v1/{tenant.workspace_id}/email/{email_id}/history"


def test_history_lists_every_stored_event_in_log_order_with_every_field(
    client: TestClient, clocked: Storage, tenant: Tenant
) -> None:
    outcomes = clocked.ledger.record(lifecycle(tenant.workspace_id))
    email_id = outcomes[0].email_id

    response = client.get(history_url(tenant, email_id), headers=tenant.headers())

    assert response.status_code == 200
    body = response.json()
    History.model_validate(body)
    assert set(body) == {"email_id", "events", "chain_valid"}
    assert body["email_id"] == str(email_id)
    assert body["chain_valid"] is True
    stored = clocked.ledger.get_history(email_id)
    assert [e["version"] for e in body["events"]] == list(range(1, 10))
    for shown, event in zip(body["events"], stored, strict=True):
        assert shown == {
            "version": event.originator_version,
            "event_type": str(event.event_type),
            "event_at": event.event_at,
            "received_at": event.received_at,
            "provider": "ses",
            "transport_key": event.transport_key,
            "semantic_key": event.semantic_key,
            "receipt_id": None,
            "detail": event.detail(),
            "prev_hash": event.prev_hash,
            "hash": event.hash,
        }
    events = body["events"]
    assert events[0]["prev_hash"] == "0" * 64
    assert all(b["prev_hash"] == a["hash"] for a, b in itertools.pairwise(events))
    assert events[6]["transport_key"] == "ses:ses-b-1"
    assert events[6]["detail"] == {
        "bounce_type": "Transient", "bounce_subtype": "MailboxFull", "diagnostic_code": None,
    }  # fmt: skip
    assert events[0]["detail"]["attachment_filenames"] == ["a.pdf"]


def test_as_of_at_every_event_boundary_is_the_detail_as_it_stood_then(
    client: TestClient, clocked: Storage, tenant: Tenant
) -> None:
    arrivals = lifecycle(tenant.workspace_id)
    random.Random(7).shuffle(arrivals)  # providers report late and out of order
    assert arrivals[0].event_type != "Sent"
    seen: list[tuple[str, dict[str, Any]]] = []  # (received_at, the detail right after)
    for item in arrivals:
        (outcome,) = clocked.ledger.record([item])  # one second later each
        clocked.runner.catch_up_all()
        email_id = outcome.email_id
        received_at = clocked.ledger.get_history(email_id)[-1].received_at
        detail = client.get(f"/v1/{tenant.workspace_id}/email/{email_id}", headers=tenant.headers())
        seen.append((received_at, detail.json()))

    for count, (received_at, _) in enumerate(seen, start=1):
        just_before = format_time(datetime.fromisoformat(received_at) - timedelta(microseconds=1))
        for as_of, kept in ((received_at, count), (just_before, count - 1)):
            response = client.get(
                history_url(tenant, email_id), params={"as_of": as_of}, headers=tenant.headers()
            )
            body = response.json()
            assert response.status_code == 200
            assert [e["received_at"] for e in body["events"]] == [r for r, _ in seen[:kept]]
            assert body["chain_valid"] is True
            if kept:
                assert body["detail"] == seen[kept - 1][1]
            else:
                assert body["detail"] is None
    # Any RFC 3339 offset names the same moment.
    local = datetime.fromisoformat(seen[3][0]).astimezone().isoformat()
    body = client.get(
        history_url(tenant, email_id), params={"as_of": local}, headers=tenant.headers()
    ).json()
    assert body["detail"] == seen[3][1]


def test_as_of_after_everything_equals_the_current_detail(
    client: TestClient, clocked: Storage, tenant: Tenant
) -> None:
    (first, *_) = clocked.ledger.record(lifecycle(tenant.workspace_id))
    clocked.runner.catch_up_all()
    now = client.get(f"/v1/{tenant.workspace_id}/email/{first.email_id}", headers=tenant.headers())
    body = client.get(
        history_url(tenant, first.email_id),
        params={"as_of": "2099-01-01T00:00:00Z", "verify": "true"},
        headers=tenant.headers(),
    ).json()
    assert body["detail"] == now.json()
    assert body["detail"]["state"] == "complained"
    assert len(body["events"]) == 9


def test_a_tampered_event_makes_chain_valid_false(
    client: TestClient, clocked: Storage, tenant: Tenant
) -> None:
    (first, *_) = clocked.ledger.record(lifecycle(tenant.workspace_id))
    url = history_url(tenant, first.email_id)
    assert client.get(url, headers=tenant.headers()).json()["chain_valid"] is True

    tamper(clocked, first.email_id, version=7, old=b"Transient", new=b"Permanent")

    for params in ({}, {"verify": "true"}, {"as_of": "2025-03-14T20:00:02Z"}):
        body = client.get(url, params=params, headers=tenant.headers()).json()
        assert body["chain_valid"] is False, params
    body = client.get(url, headers=tenant.headers()).json()
    assert body["events"][6]["detail"]["bounce_type"] == "Permanent"  # shown as stored


@pytest.mark.parametrize(
    ("query", "names"),
    [
        ("as_of=yesterday", "as_of"),
        ("as_of=2025-03-14T19:00:00", "as_of"),  # no zone
        ("verify=perhaps", "verify"),
    ],
)
def test_bad_history_queries_are_422_naming_the_parameter(
    client: TestClient, clocked: Storage, tenant: Tenant, query: str, names: str
) -> None:
    (first, *_) = clocked.ledger.record(lifecycle(tenant.workspace_id))
    response = client.get(
        f"{history_url(tenant, first.email_id)}?{query}", headers=tenant.headers()
    )
    assert response.status_code == 422
    assert response.json()["error"]["message"].startswith(names)


def test_unknown_malformed_or_foreign_emails_are_404(
    client: TestClient, clocked: Storage, tenant: Tenant
) -> None:
    other = make_tenant(clocked, "Other")
    (theirs, *_) = clocked.ledger.record(lifecycle(other.workspace_id))
    for email_id in ("7d2c4a0e-0000-4000-8000-000000000000", "not-a-uuid", theirs.email_id):
        response = client.get(history_url(tenant, email_id), headers=tenant.headers())
        assert response.status_code == 404, email_id
        assert response.json()["error"]["code"] == "not_found"
    assert client.get(history_url(other, theirs.email_id), headers=other.headers()).status_code == (
        200
    )


def test_history_needs_a_key_with_channel_view_of_this_workspace(
    client: TestClient, clocked: Storage, tenant: Tenant
) -> None:
    (first, *_) = clocked.ledger.record(lifecycle(tenant.workspace_id))
    url = history_url(tenant, first.email_id)
    for headers in ({}, {"Authorization": "Bearer nope"}):
        assert client.get(url, headers=headers).status_code == 401
    sender = add_key(clocked, tenant.workspace_id, ["Channel.send"])
    response = client.get(url, headers=tenant.headers(sender))
    assert response.status_code == 403
    assert "Channel.view" in response.json()["error"]["message"]
    other = make_tenant(clocked, "Other")
    assert client.get(url, headers=other.headers()).status_code == 403
    viewer = add_key(clocked, tenant.workspace_id, ["Channel.view"])
    assert client.get(url, headers=tenant.headers(viewer)).status_code == 200


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b'"workspace_id":', b'"workspace_id:'),  # no longer JSON
        (b'"subject":', b'"subjekt":'),  # JSON, but a field is gone
    ],
)
def test_an_event_that_no_longer_reads_makes_chain_valid_false_not_an_error(
    client: TestClient, clocked: Storage, tenant: Tenant, old: bytes, new: bytes
) -> None:
    (first, *_) = clocked.ledger.record(lifecycle(tenant.workspace_id))
    tamper(clocked, first.email_id, version=3, old=old, new=new)

    response = client.get(history_url(tenant, first.email_id), headers=tenant.headers())

    assert response.status_code == 200
    body = response.json()
    assert body["chain_valid"] is False
    assert [e["version"] for e in body["events"]] == [1, 2, 4, 5, 6, 7, 8, 9]
