"""Provider webhooks through the HTTP service: status codes, receipts, durability."""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.error
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from eventsourcing.persistence import OperationalError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from starlette.applications import Starlette
from starlette.testclient import TestClient

from adapters import receipts as receipt_store
from adapters.http.hooks import RememberedCertificates
from adapters.ingest import GroupCommitter, Job, Tally, replay
from adapters.providers import generic
from adapters.providers.base import NeedsIOError, PayloadError
from adapters.receipts import Outcome, Receipt, receipt_outcomes, receipts
from adapters.settings import Settings
from adapters.storage import Storage
from app import create_app
from domain.reports import email_id_for
from tests.api.apiclient import Tenant, make_tenant
from tests.unit.providers import signing


def now() -> datetime:
    return datetime.now(UTC)


class Service:
    """A client on the real app, a tenant, and its inbound endpoints by provider."""

    def __init__(self, client: TestClient, storage: Storage, tenant: Tenant) -> None:
        self.client, self.storage, self.tenant = client, storage, tenant
        self.urls: dict[str, str] = {}
        self.confirmed: list[str] = []

    def endpoint(self, provider: str, **config: Any) -> str:
        response = self.client.post(
            f"/v1/{self.tenant.workspace_id}/email/inbound",
            json={"provider": provider, **config},
            headers=self.tenant.headers(),
        )
        assert response.status_code == 201, response.text
        url: str = response.json()["url"]
        return url

    def events(self) -> int:
        return self.storage.ledger.head_position()

    def outcomes(self) -> list[str]:
        with self.storage.engine.connect() as conn:
            query = select(receipt_outcomes.c.outcome).order_by(receipt_outcomes.c.id)
            return list(conn.execute(query).scalars())

    def receipts(self) -> int:
        with self.storage.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(receipts)).scalar_one())


@pytest.fixture
def service(storage: Storage) -> Iterator[Service]:
    tenant = make_tenant(storage)
    confirmed: list[str] = []
    app = create_app(
        Settings(database_url="sqlite:///unused.db"),
        storage,
        run_projections=False,
        certificates=signing.StaticCertificates(signing.sns_certificate_pem()),
        confirm_subscription=confirmed.append,
    )
    with TestClient(app) as client:
        svc = Service(client, storage, tenant)
        svc.confirmed = confirmed
        yield svc


def generic_request(service: Service, url: str, events: Any, webhook_id: str | None = None) -> Any:
    """A signed generic request; each under a new webhook-id unless one is given."""
    body = json.dumps(events).encode()
    webhook_id = webhook_id or f"msg_{uuid.uuid4().hex}"
    headers = signing.generic_headers(body, webhook_id=webhook_id, timestamp=now())
    return service.client.post(url, content=body, headers=headers)


def generic_event(n: int, kind: str = "Delivery", **fields: Any) -> dict[str, Any]:
    return {
        "event_type": kind,
        "message_id": f"relay-{n % 3}",
        "to_address": f"rcpt{n % 2}@example.com",
        "event_at": f"2025-03-14T19:{n % 60:02d}:00Z",
        "event_id": f"evt-{n}",
        **fields,
    }


# --- generic -------------------------------------------------------------------------


def test_generic_batch_is_recorded_once_and_redelivery_is_a_duplicate(service: Service) -> None:
    url = service.endpoint("generic", secret=signing.GENERIC_SECRET)
    events = [generic_event(n) for n in range(5)]
    first = generic_request(service, url, events)
    assert first.status_code == 200
    assert first.json() == {"received": 5, "recorded": 5, "duplicates": 0, "ignored": 0}
    head = service.events()
    again = generic_request(service, url, events, webhook_id="msg_2")
    assert again.json() == {"received": 5, "recorded": 0, "duplicates": 5, "ignored": 0}
    assert service.events() == head
    assert service.outcomes() == ["recorded", "duplicate"]


def test_bad_signature_is_401_and_stores_no_event(service: Service) -> None:
    url = service.endpoint("generic", secret=signing.GENERIC_SECRET)
    body = json.dumps(generic_event(1)).encode()
    headers = signing.generic_headers(body, timestamp=now())
    for bad in (
        dict(headers, **{"webhook-signature": "v1," + base64.b64encode(b"x" * 32).decode()}),
        {k: v for k, v in headers.items() if k != "webhook-signature"},
        signing.generic_headers(body, timestamp=now() - timedelta(minutes=10)),
    ):
        response = service.client.post(url, content=body, headers=bad)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthorized"
    tampered = service.client.post(url, content=body + b" ", headers=headers)
    assert tampered.status_code == 401
    assert service.events() == 0
    assert service.outcomes() == ["refused"] * 4
    assert service.receipts() == 4


def test_unknown_endpoint_is_404_and_another_providers_path_is_403(service: Service) -> None:
    url = service.endpoint("generic", secret=signing.GENERIC_SECRET)
    endpoint_id = url.rsplit("/", 1)[1]
    body = b"[]"
    assert service.client.post("/hooks/generic/not-a-uuid", content=body).status_code == 404
    missing = "/hooks/generic/0b7c2e52-0000-4000-8000-000000000000"
    assert service.client.post(missing, content=body).status_code == 404
    wrong = service.client.post(
        f"/hooks/sendgrid/{endpoint_id}", content=body, headers=signing.generic_headers(body)
    )
    assert wrong.status_code == 403
    assert service.events() == 0


def test_oversized_body_is_413(service: Service) -> None:
    url = service.endpoint("generic", secret=signing.GENERIC_SECRET)
    response = service.client.post(url, content=b"[" + b" " * (10 * 1024 * 1024) + b"]")
    assert response.status_code == 413


def test_unparseable_body_is_a_dead_letter_that_replays_after_a_fix(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = service.endpoint("generic", secret=signing.GENERIC_SECRET)
    healthy = generic.parse

    def broken(*_: Any) -> Any:
        raise PayloadError("event_at: this parser cannot read it yet")

    monkeypatch.setattr(generic, "parse", broken)
    response = generic_request(service, url, [generic_event(1), generic_event(2)])
    assert response.status_code == 400
    assert "event_at" in response.json()["error"]["message"]
    assert service.events() == 0
    assert service.outcomes() == ["dead_letter"]

    monkeypatch.setattr(generic, "parse", healthy)
    dead = list(receipt_store.for_replay(service.storage.engine, dead_letters_only=True))
    assert len(dead) == 1
    summary = replay(service.storage, dead)
    assert (summary.receipts, summary.recorded, summary.dead_letters) == (1, 2, 0)
    assert service.events() == 2
    assert receipt_store.count_for_replay(service.storage.engine, dead_letters_only=True) == 0

    everything = list(receipt_store.for_replay(service.storage.engine))
    again = replay(service.storage, everything)
    assert (again.recorded, again.duplicates) == (0, 2)
    assert service.events() == 2


def test_a_database_failure_is_503_and_the_retry_loses_nothing(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = service.endpoint("generic", secret=signing.GENERIC_SECRET)
    events = [generic_event(n) for n in range(3)]
    healthy = service.storage.ledger.record

    def down(*_: Any) -> Any:
        raise OperationalError("connection refused")

    monkeypatch.setattr(service.storage.ledger, "record", down)
    failed = generic_request(service, url, events, webhook_id="msg_down")
    assert failed.status_code == 503
    assert failed.json()["error"]["code"] == "unavailable"
    monkeypatch.setattr(service.storage.ledger, "record", healthy)
    retried = generic_request(service, url, events, webhook_id="msg_down")
    assert retried.json()["recorded"] == 3


# --- SES via SNS ---------------------------------------------------------------------------


def test_ses_bounce_through_sns_records_one_event_per_recipient(service: Service) -> None:
    url = service.endpoint("ses", sns_topic_arns=[signing.TOPIC])
    body = signing.sns_body("bounce")
    response = service.client.post(
        url, content=body, headers={"x-amz-sns-message-type": "Notification"}
    )
    assert response.status_code == 200, response.text
    recipients = len(signing.payload_json("ses", "bounce")["bounce"]["bouncedRecipients"])
    assert response.json()["recorded"] == recipients
    again = service.client.post(
        url, content=body, headers={"x-amz-sns-message-type": "Notification"}
    )
    assert again.json()["duplicates"] == recipients


def test_ses_requests_after_the_first_answer_as_the_first_did(service: Service) -> None:
    # The first request's certificate is read in a worker thread; later ones are
    # verified from memory, on the event loop, and must refuse and record the same.
    url = service.endpoint("ses", sns_topic_arns=[signing.TOPIC])
    headers = {"x-amz-sns-message-type": "Notification"}
    first = service.client.post(url, content=signing.sns_body("delivery"), headers=headers)
    forged = signing.sns_body(
        "bounce", key=rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    refused = service.client.post(url, content=forged, headers=headers)
    genuine = service.client.post(url, content=signing.sns_body("bounce"), headers=headers)

    assert first.json()["recorded"] == 1
    assert refused.status_code == 401
    assert genuine.json()["recorded"] >= 1
    assert service.receipts() == 3
    assert service.outcomes() == ["recorded", "refused", "recorded"]


def test_remembered_certificates_answer_offline_only_what_was_read() -> None:
    source = signing.StaticCertificates(b"pem")
    remembered = RememberedCertificates(source)
    with pytest.raises(NeedsIOError):
        remembered.offline().pem_for("https://sns.example/a.pem")
    assert remembered.pem_for("https://sns.example/a.pem") == b"pem"
    assert remembered.offline().pem_for("https://sns.example/a.pem") == b"pem"
    with pytest.raises(NeedsIOError):
        remembered.offline().pem_for("https://sns.example/b.pem")
    assert source.asked == ["https://sns.example/a.pem"]


def test_sns_topic_not_configured_is_403(service: Service) -> None:
    url = service.endpoint("ses", sns_topic_arns=["arn:aws:sns:us-east-1:123456789012:other"])
    response = service.client.post(url, content=signing.sns_body("bounce"))
    assert response.status_code == 403
    assert service.events() == 0


def test_sns_subscription_is_confirmed_after_verification(service: Service) -> None:
    url = service.endpoint("ses", sns_topic_arns=[signing.TOPIC])
    message = signing.sign_sns(signing.payload_json("ses", "sns_subscription_confirmation"))
    response = service.client.post(url, content=json.dumps(message).encode())
    assert response.status_code == 200, response.text
    assert service.confirmed == [message["SubscribeURL"]]
    forged = dict(message, SubscribeURL="https://sns.us-east-1.amazonaws.com/?Action=Other")
    refused = service.client.post(url, content=json.dumps(forged).encode())
    assert refused.status_code == 401
    assert len(service.confirmed) == 1


def test_a_failed_subscription_confirmation_is_503_and_the_request_is_kept(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreachable(url: str) -> None:
        raise urllib.error.URLError("sns.us-east-1.amazonaws.com: connection refused")

    state = cast("Starlette", service.client.app).state
    monkeypatch.setattr(state, "hooks", replace(state.hooks, confirm_subscription=unreachable))
    url = service.endpoint("ses", sns_topic_arns=[signing.TOPIC])
    message = signing.sign_sns(signing.payload_json("ses", "sns_subscription_confirmation"))

    response = service.client.post(url, content=json.dumps(message).encode())

    assert response.status_code == 503
    assert "could not be confirmed" in response.json()["error"]["message"]
    assert service.outcomes() == ["unconfirmed"]
    assert service.receipts() == 1


# --- SendGrid, Mailgun, Postmark -------------------------------------------------------------


def test_sendgrid_batch(service: Service) -> None:
    key = signing.sendgrid_key()
    url = service.endpoint("sendgrid", public_key=signing.sendgrid_public_key(key))
    body = signing.payload("sendgrid", "batch")
    response = service.client.post(url, content=body, headers=signing.sendgrid_headers(body, now()))
    assert response.status_code == 200, response.text
    assert response.json()["recorded"] >= 1
    stale = signing.sendgrid_headers(body, now() - timedelta(hours=1))
    assert service.client.post(url, content=body, headers=stale).status_code == 401


def test_mailgun_token_is_accepted_once(service: Service) -> None:
    url = service.endpoint("mailgun", signing_key=signing.MAILGUN_KEY)
    body = signing.mailgun_body("delivered", timestamp=now(), token="t" * 50)
    assert service.client.post(url, content=body).status_code == 200
    replayed = service.client.post(url, content=body)
    assert replayed.status_code == 401


def test_mailgun_token_of_a_failed_request_can_be_retried(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = service.endpoint("mailgun", signing_key=signing.MAILGUN_KEY)
    body = signing.mailgun_body("delivered", timestamp=now(), token="u" * 50)
    healthy = service.storage.ledger.record

    def down(*_: Any) -> Any:
        raise OperationalError("connection refused")

    monkeypatch.setattr(service.storage.ledger, "record", down)
    assert service.client.post(url, content=body).status_code == 503
    monkeypatch.setattr(service.storage.ledger, "record", healthy)
    assert service.client.post(url, content=body).status_code == 200


def test_postmark_basic_auth(service: Service) -> None:
    url = service.endpoint(
        "postmark", username=signing.POSTMARK_USER, password=signing.POSTMARK_PASSWORD
    )
    body = signing.payload("postmark", "delivery")
    ok = service.client.post(url, content=body, headers={"Authorization": signing.basic_auth()})
    assert ok.status_code == 200, ok.text
    wrong = service.client.post(
        url, content=body, headers={"Authorization": signing.basic_auth(password="guess")}
    )
    assert wrong.status_code == 401
    assert service.client.post(url, content=body).status_code == 401


# --- group commit and redelivery -----------------------------------------------------------


def test_receipts_and_outcomes_read_back_as_they_were_stored(storage: Storage) -> None:
    kept = Receipt(
        "r-1",
        "e",
        "w",
        "generic",
        "2025-03-14T00:00:00.000000Z",
        {"content-type": "application/json", "webhook-id": "tab\there, \\N"},
        b"\x00\xff{}\\.\t\n\r",
        True,
    )
    outcomes = [
        Outcome("r-1", "2025-03-14T00:00:01.000000Z", "recorded", 200, 2, 1, 0),
        Outcome(
            "r-1",
            "2025-03-14T00:00:02.000000Z",
            "dead_letter",
            400,
            message="line\nbreak\ttab \\N",
            replay=True,
        ),
    ]
    receipt_store.save(storage.engine, [kept], outcomes)
    assert list(receipt_store.for_replay(storage.engine)) == [kept]
    assert receipt_store.outcomes_of(storage.engine, "r-1") == outcomes


def counted_records(storage: Storage) -> list[int]:
    """The number of reports of each `ledger.record` call from now on."""
    calls: list[int] = []
    healthy = storage.ledger.record

    def counting(reports: Any) -> Any:
        calls.append(len(reports))
        return healthy(reports)

    storage.ledger.record = counting  # type: ignore[method-assign]
    return calls


def commit_concurrently(committer: GroupCommitter, jobs: list[Job]) -> list[Tally]:
    """The jobs handed in at once, as concurrent requests hand them in."""

    async def concurrently() -> list[Tally]:
        return await asyncio.gather(*(committer.commit(job) for job in jobs))

    return asyncio.run(concurrently())


def test_concurrent_requests_share_transactions(storage: Storage) -> None:
    calls = counted_records(storage)
    committer = GroupCommitter(storage)
    jobs = [
        Job(
            Receipt(
                f"r-{n:03d}", "e", "w", "generic", "2025-03-14T00:00:00.000000Z", {}, b"", True
            ),
            [
                generic.parse(
                    json.dumps(generic_event(n)).encode(), signing.endpoint("generic"), None
                ).reports[0]
            ],
        )
        for n in range(40)
    ]

    tallies = commit_concurrently(committer, jobs)
    assert sum(t.recorded for t in tallies) == 40
    assert sum(calls) == 40
    assert len(calls) < 40


def test_a_group_is_at_most_max_reports_unless_one_request_is_bigger(storage: Storage) -> None:
    committer = GroupCommitter(storage, max_reports=3)
    calls = counted_records(storage)
    endpoint = signing.endpoint("generic")
    sizes = [2, 1, 5, 1, 1, 1]
    jobs = [
        Job(
            Receipt(f"r-{n}", "e", "w", "generic", "2025-03-14T00:00:00.000000Z", {}, b"", True),
            generic.parse(
                json.dumps([generic_event(10 * n + i) for i in range(size)]).encode(),
                endpoint,
                None,
            ).reports,
        )
        for n, size in enumerate(sizes)
    ]

    tallies = commit_concurrently(committer, jobs)
    assert [t.recorded for t in tallies] == sizes
    assert calls == [3, 5, 3]


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    picks=st.lists(st.integers(min_value=0, max_value=5), min_size=1, max_size=12),
    chunk=st.integers(min_value=1, max_value=4),
)
def test_redelivery_in_any_order_and_grouping_changes_nothing(
    service: Service, picks: list[int], chunk: int
) -> None:
    # Two fresh workspaces: one gets each picked event once, in order, one request
    # each; the other gets the picks as drawn (repeats, any order) in batches.
    pool = [generic_event(n, "Open" if n % 2 else "Delivery") for n in range(6)]
    once, noisy = make_tenant(service.storage, "once"), make_tenant(service.storage, "noisy")
    for tenant, batches in (
        (once, [[pool[i]] for i in sorted(set(picks))]),
        (noisy, [[pool[i] for i in picks[s : s + chunk]] for s in range(0, len(picks), chunk)]),
    ):
        service.tenant = tenant
        url = service.endpoint("generic", secret=signing.GENERIC_SECRET)
        for batch in batches:
            assert generic_request(service, url, batch).status_code == 200

    def views(tenant: Tenant) -> dict[tuple[str, str], dict[str, Any]]:
        found = {}
        for n in set(picks):
            email_id = email_id_for(
                tenant.workspace_id, pool[n]["message_id"], pool[n]["to_address"]
            )
            view = service.storage.ledger.view_email(email_id).as_row()
            for name in ("id", "workspace_id", "updated_at"):
                view.pop(name)
            found[(pool[n]["message_id"], pool[n]["to_address"])] = view
        return found

    assert views(noisy) == views(once)


def test_generic_retry_under_a_seen_webhook_id_is_acknowledged_and_records_nothing(
    service: Service,
) -> None:
    url = service.endpoint("generic", secret=signing.GENERIC_SECRET)
    first = generic_request(service, url, [generic_event(1)], webhook_id="msg_retry")
    assert first.json()["recorded"] == 1
    head = service.events()

    # Same id, even with other events in the body: a retry, not news.
    retry = generic_request(service, url, [generic_event(2)], webhook_id="msg_retry")

    assert retry.status_code == 200
    assert retry.json() == {"received": 0, "recorded": 0, "duplicates": 0, "ignored": 0}
    assert service.events() == head
    assert service.outcomes() == ["recorded", "duplicate"]
    assert service.receipts() == 2  # the retry is kept too
    other_endpoint = service.endpoint("generic", secret=signing.GENERIC_SECRET)
    elsewhere = generic_request(service, other_endpoint, [generic_event(2)], "msg_retry")
    assert elsewhere.json()["recorded"] == 1  # ids are per endpoint
