"""SPEC 4.3: an event is filed under the endpoint's setup, else under the workspace's
setup for the sender's domain, else under none; an email made by a provider's event
starts with what the event says and the defaults of the rest."""

from __future__ import annotations

import pytest

from adapters import admin_store
from adapters.dns import generate_dkim_key
from adapters.ingest import Directory, adopt, as_endpoint
from adapters.providers.base import NeedsIOError
from adapters.storage import Storage
from adapters.workspaces import create_workspace
from tests.api.apiclient import client_for, make_tenant
from tests.factories import report


def test_reports_are_filed_under_the_endpoints_setup_else_the_senders_domain(
    storage: Storage,
) -> None:
    workspace = create_workspace(storage.engine, "filing").workspace_id
    news = admin_store.create_setup(
        storage.engine, workspace, "news.acme.example", generate_dkim_key(), "x"
    )
    billing = admin_store.create_setup(
        storage.engine, workspace, "billing.acme.example", generate_dkim_key(), "x"
    )
    config = {"secret": "whsec_c2VjcmV0c2VjcmV0"}
    plain = as_endpoint(admin_store.create_endpoint(storage.engine, workspace, "generic", config))
    pinned = as_endpoint(
        admin_store.create_endpoint(storage.engine, workspace, "generic", config, billing.id)
    )
    events = [
        report(workspace_id=workspace, message_id="a", from_address="Hi@News.Acme.Example"),
        report(workspace_id=workspace, message_id="b", from_address="x@elsewhere.example"),
        report(workspace_id=workspace, message_id="c"),  # says no sender at all
    ]

    by_domain = adopt(Directory(), storage.engine, plain, events)
    by_endpoint = adopt(Directory(), storage.engine, pinned, events)

    assert [r.setup_id for r in by_domain] == [news.id, None, None]
    assert [r.setup_id for r in by_endpoint] == [billing.id] * 3
    # Another workspace's setup for the same domain is never used.
    other = create_workspace(storage.engine, "other").workspace_id
    theirs = as_endpoint(admin_store.create_endpoint(storage.engine, other, "generic", config))
    foreign = report(workspace_id=other, message_id="d", from_address="hi@news.acme.example")
    assert adopt(Directory(), storage.engine, theirs, [foreign])[0].setup_id is None


def test_filing_offline_needs_a_recent_lookup_and_then_files_the_same(storage: Storage) -> None:
    workspace = create_workspace(storage.engine, "offline").workspace_id
    news = admin_store.create_setup(
        storage.engine, workspace, "news.acme.example", generate_dkim_key(), "x"
    )
    config = {"secret": "whsec_c2VjcmV0c2VjcmV0"}
    plain = as_endpoint(admin_store.create_endpoint(storage.engine, workspace, "generic", config))
    events = [report(workspace_id=workspace, message_id="a", from_address="hi@news.acme.example")]
    directory = Directory()

    with pytest.raises(NeedsIOError):
        adopt(directory, storage.engine, plain, events, offline=True)
    looked_up = adopt(directory, storage.engine, plain, events)
    from_memory = adopt(directory, storage.engine, plain, events, offline=True)

    assert [r.setup_id for r in looked_up] == [r.setup_id for r in from_memory] == [news.id]


def test_an_email_first_heard_of_from_a_provider_has_the_documented_defaults(
    storage: Storage,
) -> None:
    tenant = make_tenant(storage, "adopted")
    (outcome,) = storage.ledger.record(
        [report("Open", workspace_id=tenant.workspace_id, from_address="hi@shop.example")]
    )
    storage.runner.catch_up_all()

    with client_for(storage) as client:
        url = f"/v1/{tenant.workspace_id}/email/{outcome.email_id}"
        detail = client.get(url, headers=tenant.headers()).json()

    assert detail["state"] == "sent"  # an open says nothing about delivery
    assert detail["from_address"] == "hi@shop.example"
    assert detail["ses_use_case_id"] is None
    assert detail["attachment_filenames"] == []
    assert detail["open_count"] == 1
