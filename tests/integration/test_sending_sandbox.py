"""The sandbox's mailbox simulator, suppression and scheduling, through the real app.

The app's send worker records the simulator's events a few hundred milliseconds after
each send; the tests poll the ledger with a timeout rather than sleeping blindly.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from starlette.testclient import TestClient

from adapters.storage import Storage
from domain.reports import EventType, Report, format_time, utc_now
from tests.api.apiclient import add_key, client_for, make_tenant
from tests.api.test_sending import Sending, open_sending, wait_until

HANDED = ["Sent", "Dispatched"]


@pytest.fixture
def client(storage: Storage) -> Iterator[TestClient]:
    with client_for(storage) as test_client:
        yield test_client


@pytest.fixture
def acme(client: TestClient, storage: Storage) -> Sending:
    return open_sending(client, storage, make_tenant(storage, "Acme"))


@pytest.fixture
def other(client: TestClient, storage: Storage) -> Sending:
    return open_sending(client, storage, make_tenant(storage, "Other"))


# The simulator ---------------------------------------------------------------------------

SIMULATOR = [
    ("success@simulator.test", ["Delivery"], "delivered"),
    ("bounce@simulator.test", ["Bounce"], "bounced"),
    ("complaint@simulator.test", ["Delivery", "Complaint"], "complained"),
    ("ooto@simulator.test", ["Delivery"], "delivered"),
    ("suppressed@simulator.test", ["Bounce"], "bounced"),
    ("delay@simulator.test", ["DeliveryDelay", "Delivery"], "delivered"),
    ("bounce+run42@simulator.test", ["Bounce"], "bounced"),
    ("Complaint+x@Simulator.Test", ["Delivery", "Complaint"], "complained"),
    ("nobody@example.com", ["Delivery"], "delivered"),
    ("bounce@example.com", ["Delivery"], "delivered"),
]


@pytest.mark.parametrize(("address", "outcome", "state"), SIMULATOR)
def test_each_simulator_address_ends_as_documented(
    acme: Sending, address: str, outcome: list[str], state: str
) -> None:
    email_id = acme.sent(address)["id"]
    acme.wait_for_kinds(email_id, HANDED + outcome)
    assert acme.view(email_id).state == state
    events = acme.history(email_id)
    assert [e.provider for e in events] == ["mailledger", "mailledger"] + ["sandbox"] * len(outcome)
    assert events[1].detail()["transport"] == "sandbox"
    assert [e.event_at for e in events] == sorted(e.event_at for e in events)


def test_a_hard_bounce_says_permanent_general(acme: Sending) -> None:
    email_id = acme.sent("bounce@simulator.test")["id"]
    acme.wait_for_kinds(email_id, [*HANDED, "Bounce"])
    view = acme.view(email_id)
    assert (view.bounce_type, view.bounce_subtype) == ("Permanent", "General")


def test_suppressed_bounces_as_suppressed(acme: Sending) -> None:
    email_id = acme.sent("suppressed@simulator.test")["id"]
    acme.wait_for_kinds(email_id, [*HANDED, "Bounce"])
    view = acme.view(email_id)
    assert (view.bounce_type, view.bounce_subtype) == ("Permanent", "Suppressed")


def test_ooto_notes_the_auto_reply(acme: Sending) -> None:
    email_id = acme.sent("ooto@simulator.test")["id"]
    acme.wait_for_kinds(email_id, [*HANDED, "Delivery"])
    assert "auto-reply" in acme.history(email_id)[-1].detail()["smtp_response"]


def test_complaint_comes_after_the_delivery(acme: Sending) -> None:
    email_id = acme.sent("complaint@simulator.test")["id"]
    acme.wait_for_kinds(email_id, [*HANDED, "Delivery", "Complaint"])
    view = acme.view(email_id)
    assert view.delivered_at is not None
    assert view.complained_at is not None
    assert view.delivered_at < view.complained_at
    assert acme.history(email_id)[-1].detail()["feedback_type"] == "abuse"


# Suppression --------------------------------------------------------------------------


def suppressions(acme: Sending, query: str = "", key: str | None = None) -> Any:
    response = acme.get(f"/suppression{query}".replace("+", "%2B"), key=key)
    assert response.status_code == 200, response.text
    return response.json()


def wait_suppressed(acme: Sending, address: str) -> dict[str, Any]:
    def listed() -> bool:
        return bool(suppressions(acme, f"?address={address}")["suppressions"])

    wait_until(listed, show=lambda: suppressions(acme))
    entry: dict[str, Any] = suppressions(acme, f"?address={address}")["suppressions"][0]
    return entry


def test_a_hard_bounce_suppresses_and_the_next_send_is_rejected(acme: Sending) -> None:
    first = acme.sent("bounce+s1@simulator.test")["id"]
    acme.wait_for_kinds(first, [*HANDED, "Bounce"])
    entry = wait_suppressed(acme, "bounce+s1@simulator.test")
    assert entry == {
        "address": "bounce+s1@simulator.test",
        "cause": "Bounce",
        "since": acme.view(first).bounced_at,
        "email_id": first,
    }

    again = acme.send("bounce+s1@simulator.test")
    assert again.status_code == 201
    second = again.json()["id"]
    acme.wait_for_kinds(second, ["Sent", "Reject"])
    assert acme.history(second)[-1].detail() == {"reason": "suppressed"}
    assert acme.view(second).state == "rejected"
    # a label is an address of its own: bounce+s2 is not suppressed by bounce+s1
    third = acme.sent("bounce+s2@simulator.test")["id"]
    acme.wait_for_kinds(third, [*HANDED, "Bounce"])


def test_a_complaint_suppresses(acme: Sending) -> None:
    email_id = acme.sent("complaint@simulator.test")["id"]
    acme.wait_for_kinds(email_id, [*HANDED, "Delivery", "Complaint"])
    entry = wait_suppressed(acme, "complaint@simulator.test")
    assert (entry["cause"], entry["email_id"]) == ("Complaint", email_id)


def test_a_provider_webhooks_hard_bounce_suppresses_but_a_soft_one_does_not(
    acme: Sending,
) -> None:
    def bounce(to: str, kind: str) -> Report:
        return Report(
            workspace_id=acme.tenant.workspace_id,
            event_type=EventType.BOUNCE,
            provider="ses",
            message_id=f"ses-{to}",
            to_address=to,
            event_at="2025-03-14T19:00:00Z",
            detail={"bounce_type": kind},
        )

    acme.storage.ledger.record([bounce("hard@example.com", "Permanent")])
    acme.storage.ledger.record([bounce("soft@example.com", "Transient")])
    entry = wait_suppressed(acme, "hard@example.com")
    assert entry["since"] == "2025-03-14T19:00:00.000000Z"
    assert suppressions(acme, "?address=soft@example.com")["suppressions"] == []
    rejected = acme.sent("HARD@example.com")["id"]
    acme.wait_for_kinds(rejected, ["Sent", "Reject"])


def test_removing_an_address_lets_it_be_sent_to_again(acme: Sending) -> None:
    first = acme.sent("bounce+r@simulator.test")["id"]
    acme.wait_for_kinds(first, [*HANDED, "Bounce"])
    wait_suppressed(acme, "bounce+r@simulator.test")

    sender = add_key(acme.storage, acme.tenant.workspace_id, ["Channel.send", "Channel.view"])
    path = acme.url("/suppression/bounce+r@simulator.test")
    assert acme.client.delete(path, headers=acme.tenant.headers(sender)).status_code == 403
    assert acme.client.delete(path, headers=acme.tenant.headers()).status_code == 204
    assert acme.client.delete(path, headers=acme.tenant.headers()).status_code == 204
    assert suppressions(acme)["suppressions"] == []

    second = acme.sent("bounce+r@simulator.test")["id"]
    acme.wait_for_kinds(second, [*HANDED, "Bounce"])  # sent again, bounced again...
    entry = wait_suppressed(acme, "bounce+r@simulator.test")  # ...and suppressed again
    assert entry["email_id"] == second


def test_addresses_added_by_hand_are_suppressed_until_removed(acme: Sending) -> None:
    def add(body: Any, key: str | None = None) -> Any:
        return acme.client.post(
            acme.url("/suppression"), json=body, headers=acme.tenant.headers(key)
        )

    added = add({"addresses": ["Manual@Example.COM", "bounce+m@simulator.test"]})

    assert added.status_code == 201, added.text
    entries = sorted(added.json()["suppressions"], key=lambda e: e["address"])
    assert [(e["address"], e["cause"], e["email_id"]) for e in entries] == [
        ("bounce+m@simulator.test", "manual", None),
        ("manual@example.com", "manual", None),
    ]
    assert add({"addresses": ["manual@example.com"]}).json() == {"suppressions": [entries[1]]}
    rejected = acme.sent("manual@example.com")["id"]
    acme.wait_for_kinds(rejected, ["Sent", "Reject"])
    assert acme.history(rejected)[-1].detail() == {"reason": "suppressed"}

    # Kept apart from the projected list: a rebuild keeps them.
    acme.storage.runner.rebuild("suppressions")
    assert len(suppressions(acme)["suppressions"]) == 2

    assert acme.client.delete(
        acme.url("/suppression/manual@example.com"), headers=acme.tenant.headers()
    ).status_code == 204  # fmt: skip
    assert [e["address"] for e in suppressions(acme)["suppressions"]] == ["bounce+m@simulator.test"]
    acme.wait_for_kinds(acme.sent("manual@example.com")["id"], [*HANDED, "Delivery"])

    viewer = add_key(acme.storage, acme.tenant.workspace_id, ["Channel.view"])
    assert add({"addresses": ["x@example.com"]}, key=viewer).status_code == 403
    bad_bodies: list[dict[str, Any]] = [
        {"addresses": []},
        {"addresses": ["not an address"]},
        {"address": "a@b.c"},
    ]
    for bad in bad_bodies:
        answer = add(bad)
        assert answer.status_code == 422, bad
        assert "addresses" in answer.json()["error"]["message"]


def test_the_suppression_list_pages_and_stays_in_its_workspace(
    acme: Sending, other: Sending
) -> None:
    ids = [acme.sent(f"bounce+p{i}@simulator.test")["id"] for i in range(3)]
    for email_id in ids:
        acme.wait_for_kinds(email_id, [*HANDED, "Bounce"])
    wait_until(lambda: len(suppressions(acme)["suppressions"]) == 3)

    seen, token, pages = [], None, 0
    while True:
        query = "?limit=2" + (f"&continuation_token={token}" if token else "")
        page = suppressions(acme, query)
        seen += [entry["address"] for entry in page["suppressions"]]
        pages += 1
        token = page["continuation_token"]
        if not page["has_more"]:
            assert token is None
            break
    assert pages == 2
    assert sorted(seen) == [f"bounce+p{i}@simulator.test" for i in range(3)]
    assert suppressions(other)["suppressions"] == []
    assert acme.get("/suppression?continuation_token=forged").status_code == 400
    assert acme.get("/suppression?limit=0").status_code == 422
    assert acme.get("/suppression?limit=201").status_code == 422
    assert acme.client.get(acme.url("/suppression")).status_code == 401
    viewer = add_key(acme.storage, acme.tenant.workspace_id, ["Channel.view"])
    assert suppressions(acme, key=viewer)["has_more"] is False


# Scheduling and cancel ----------------------------------------------------------------


def in_future(**delta: float) -> str:
    return format_time(utc_now() + timedelta(**delta))


def test_a_scheduled_email_is_queued_then_canceled(acme: Sending) -> None:
    send_at = in_future(hours=1)
    email_id = acme.sent(send_at=send_at)["id"]
    assert acme.kinds(email_id) == ["Sent", "Scheduled"]
    assert acme.view(email_id).state == "queued"
    assert acme.history(email_id)[1].detail() == {"send_at": send_at}

    response = acme.client.post(acme.url(f"/{email_id}/cancel"), headers=acme.tenant.headers())

    assert response.status_code == 200, response.text
    detail = response.json()
    assert detail["id"] == email_id
    assert detail["state"] == "canceled"
    assert detail["ses_use_case_id"] == acme.use_case_id
    again = acme.client.post(acme.url(f"/{email_id}/cancel"), headers=acme.tenant.headers())
    assert again.status_code == 200
    assert again.json() == detail
    assert acme.kinds(email_id) == ["Sent", "Scheduled", "Canceled"]


def test_a_scheduled_email_leaves_at_its_time_and_cannot_be_canceled_then(
    acme: Sending,
) -> None:
    email_id = acme.sent(send_at=in_future(seconds=1.5))["id"]
    assert acme.view(email_id).state == "queued"
    acme.wait_for_kinds(email_id, ["Sent", "Scheduled", "Dispatched", "Delivery"])
    assert acme.view(email_id).state == "delivered"
    response = acme.client.post(acme.url(f"/{email_id}/cancel"), headers=acme.tenant.headers())
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "conflict"


def test_an_email_sent_at_once_cannot_be_canceled(acme: Sending) -> None:
    email_id = acme.sent()["id"]
    response = acme.client.post(acme.url(f"/{email_id}/cancel"), headers=acme.tenant.headers())
    assert response.status_code == 409


def test_cancel_of_unknown_or_foreign_emails_is_404(acme: Sending, other: Sending) -> None:
    theirs = other.sent(send_at=in_future(hours=1))["id"]
    for email_id in (theirs, "nope", "6f1f2a4e-0000-4000-8000-00000000dead"):
        response = acme.client.post(acme.url(f"/{email_id}/cancel"), headers=acme.tenant.headers())
        assert response.status_code == 404
    assert other.view(theirs).state == "queued"


def test_cancel_needs_the_send_permission(acme: Sending) -> None:
    email_id = acme.sent(send_at=in_future(hours=1))["id"]
    viewer = add_key(acme.storage, acme.tenant.workspace_id, ["Channel.view"])
    path = acme.url(f"/{email_id}/cancel")
    assert acme.client.post(path, headers=acme.tenant.headers(viewer)).status_code == 403
    assert acme.client.post(path).status_code == 401


def test_a_scheduled_send_to_an_address_suppressed_meanwhile_is_rejected(acme: Sending) -> None:
    email_id = acme.sent("bounce+late@simulator.test", send_at=in_future(seconds=2))["id"]
    bounced = acme.sent("bounce+late@simulator.test")["id"]
    acme.wait_for_kinds(bounced, [*HANDED, "Bounce"])
    acme.wait_for_kinds(email_id, ["Sent", "Scheduled", "Reject"])
    assert acme.view(email_id).state == "rejected"


def test_the_read_model_shows_the_new_states(acme: Sending) -> None:
    queued = acme.sent(send_at=in_future(hours=1))["id"]
    canceled = acme.sent(send_at=in_future(hours=2))["id"]
    acme.client.post(acme.url(f"/{canceled}/cancel"), headers=acme.tenant.headers())
    acme.storage.runner.catch_up_all()
    for email_id, state in ((queued, "queued"), (canceled, "canceled")):
        detail = acme.get(f"/{email_id}").json()
        assert detail["state"] == state
    listed = acme.get(f"?use_case_id={acme.use_case_id}&state=queued").json()
    assert [e["id"] for e in listed["emails"]] == [queued]
