"""Reports and report strategies for the tests."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from domain.reports import EventType, Report

WORKSPACE = "6f1f2a4e-0000-4000-8000-000000000001"


def report(
    event_type: str = "Delivery",
    *,
    message_id: str = "msg-1",
    to_address: str = "rcpt@example.com",
    event_at: str = "2025-03-14T19:04:01.160250Z",
    transport_key: str | None = None,
    provider: str = "ses",
    workspace_id: str = WORKSPACE,
    **detail: Any,
) -> Report:
    """A report with sensible defaults; type-specific fields as keyword arguments."""
    origin = {
        k: detail.pop(k) for k in ("from_address", "subject", "sent_at", "setup_id") if k in detail
    }
    return Report(
        workspace_id=workspace_id,
        event_type=EventType(event_type),
        provider=provider,
        message_id=message_id,
        to_address=to_address,
        event_at=event_at,
        transport_key=transport_key,
        detail=detail,
        **origin,
    )


_TIMES = st.integers(min_value=0, max_value=5).map(lambda minute: f"2025-03-14T19:0{minute}:00Z")


@st.composite
def reports(draw: st.DrawFn, emails: int = 3) -> Report:
    """Any report about one of a few emails, with type-specific fields."""
    event_type = draw(st.sampled_from(list(EventType)))
    detail: dict[str, Any] = {}
    if event_type is EventType.BOUNCE:
        detail["bounce_type"] = draw(st.sampled_from(["Permanent", "Transient", "Undetermined"]))
        detail["bounce_subtype"] = draw(st.sampled_from(["General", "NoEmail", None]))
    elif event_type is EventType.OPEN:
        detail["machine_open"] = draw(st.booleans())
    elif event_type is EventType.CLICK:
        detail["link"] = draw(st.sampled_from(["https://a.test/", "https://b.test/"]))
    elif event_type is EventType.SENT:
        detail["use_case_id"] = draw(st.sampled_from(["uc-1", "uc-2"]))
        detail["from_address"] = "sender@mailledger.test"
        detail["subject"] = draw(st.sampled_from(["Hello", "Receipt"]))
    return report(
        event_type.value,
        message_id=f"msg-{draw(st.integers(min_value=1, max_value=emails))}",
        event_at=draw(_TIMES),
        transport_key=draw(st.one_of(st.none(), st.uuids().map(str))),
        provider=draw(st.sampled_from(["ses", "sendgrid"])),
        **detail,
    )


def distinct(items: list[Report]) -> list[Report]:
    """Each fact once: the first of any reports that share a key (transport or semantic),
    as the ledger keeps the first to arrive."""
    seen: set[str] = set()
    kept = []
    for item in items:
        keys = {item.semantic_key} | ({item.scoped_transport_key} - {None})
        if not keys & seen:
            kept.append(item)
        seen |= {k for k in keys if k}
    return kept
