"""Admin resources' tables: email setups, use cases and inbound endpoints.

Plain functions of an engine, returning frozen dataclasses. They hold what sending and
webhook verification need (the DKIM private key, the unmasked transport, the inbound
secrets), so only internal code sees them; the HTTP layer chooses what to show.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Engine,
    ForeignKey,
    Row,
    Select,
    String,
    Table,
    Text,
    UniqueConstraint,
    select,
)
from sqlalchemy.exc import IntegrityError

from adapters.dns import DkimKey
from adapters.workspaces import admin_metadata
from domain.reports import format_time, utc_now

T = TypeVar("T")

email_setups = Table(
    "email_setups",
    admin_metadata,
    Column("id", String(36), primary_key=True),
    Column("workspace_id", String(36), ForeignKey("workspaces.id"), nullable=False),
    Column("domain", String(253), nullable=False),
    Column("dkim_selector", String(63), nullable=False),
    Column("dkim_private_key", Text, nullable=False),
    Column("dkim_public_key", Text, nullable=False),
    Column("spf_include", String(253), nullable=False),
    Column("dns_verified", Boolean, nullable=False),
    Column("created_at", String(27), nullable=False),
    UniqueConstraint("workspace_id", "domain", name="uq_email_setups_workspace_domain"),
)

use_cases = Table(
    "use_cases",
    admin_metadata,
    Column("id", String(36), primary_key=True),
    Column("workspace_id", String(36), ForeignKey("workspaces.id"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("channel", String(20), nullable=False),
    Column("setup_id", String(36), ForeignKey("email_setups.id"), nullable=False),
    Column("from_address", String(320), nullable=False),
    Column("email_type", String(20), nullable=False),
    Column("transport", Text, nullable=False),
    Column("created_at", String(27), nullable=False),
)

inbound_endpoints = Table(
    "inbound_endpoints",
    admin_metadata,
    Column("id", String(36), primary_key=True),
    Column("workspace_id", String(36), ForeignKey("workspaces.id"), nullable=False),
    Column("provider", String(20), nullable=False),
    Column("setup_id", String(36), ForeignKey("email_setups.id"), nullable=True),
    Column("config", JSON, nullable=False),
    Column("created_at", String(27), nullable=False),
)


class DuplicateSetupError(ValueError):
    """The workspace already has a setup for this domain."""


@dataclass(frozen=True)
class Setup:
    """A sending domain: its DKIM key pair, the SPF include it asks for, its DNS state."""

    id: str
    workspace_id: str
    domain: str
    dkim_selector: str
    dkim_private_key: str  # PEM (PKCS#8); for signing, never shown
    dkim_public_key: str  # base64 DER SubjectPublicKeyInfo, as published
    spf_include: str
    dns_verified: bool
    created_at: str


@dataclass(frozen=True)
class UseCase:
    """What a workspace sends for, from which address, through which transport."""

    id: str
    workspace_id: str
    name: str
    channel: str
    setup_id: str
    from_address: str
    email_type: str
    transport: str  # "sandbox" or the full smtp:// URL, password included
    created_at: str


@dataclass(frozen=True)
class InboundEndpoint:
    """One provider account's webhook receiver and what verifies its signatures.

    `config` holds, by provider: ses `sns_topic_arns`; sendgrid `public_key` (base64
    DER); mailgun `signing_key`; postmark `username` and `password`; generic `secret`.
    """

    id: str
    workspace_id: str
    provider: str
    setup_id: str | None
    config: dict[str, Any]
    created_at: str


def _one(engine: Engine, query: Select[Any], convert: Callable[[Row[Any]], T]) -> T | None:
    """The first row the query finds, converted, or None."""
    with engine.connect() as conn:
        row = conn.execute(query).first()
    return None if row is None else convert(row)


def _many(engine: Engine, query: Select[Any], convert: Callable[[Row[Any]], T]) -> list[T]:
    """Every row the query finds, converted."""
    with engine.connect() as conn:
        return [convert(row) for row in conn.execute(query)]


def _new_id() -> str:
    return str(uuid.uuid4())


def _setup(row: Row[Any]) -> Setup:
    m = row._mapping
    return Setup(
        m["id"],
        m["workspace_id"],
        m["domain"],
        m["dkim_selector"],
        m["dkim_private_key"],
        m["dkim_public_key"],
        m["spf_include"],
        bool(m["dns_verified"]),
        m["created_at"],
    )


def _use_case(row: Row[Any]) -> UseCase:
    m = row._mapping
    return UseCase(
        m["id"],
        m["workspace_id"],
        m["name"],
        m["channel"],
        m["setup_id"],
        m["from_address"],
        m["email_type"],
        m["transport"],
        m["created_at"],
    )


def _endpoint(row: Row[Any]) -> InboundEndpoint:
    m = row._mapping
    return InboundEndpoint(
        m["id"], m["workspace_id"], m["provider"], m["setup_id"], dict(m["config"]), m["created_at"]
    )


def create_setup(
    engine: Engine, workspace_id: str, domain: str, key: DkimKey, spf_include: str
) -> Setup:
    """Store a new, unverified setup. Raises DuplicateSetupError for a domain already set up."""
    setup = Setup(
        _new_id(),
        workspace_id,
        domain,
        key.selector,
        key.private_key_pem,
        key.public_key,
        spf_include,
        dns_verified=False,
        created_at=format_time(utc_now()),
    )
    if find_setup_by_domain(engine, workspace_id, domain) is not None:
        raise DuplicateSetupError(domain)
    try:
        with engine.begin() as conn:
            conn.execute(email_setups.insert().values(**setup.__dict__))
    except IntegrityError:
        raise DuplicateSetupError(domain) from None  # a concurrent create won
    return setup


def get_setup(engine: Engine, workspace_id: str, setup_id: str) -> Setup | None:
    """The workspace's setup with this id (None for another workspace's)."""
    query = select(email_setups).where(
        email_setups.c.id == setup_id, email_setups.c.workspace_id == workspace_id
    )
    return _one(engine, query, _setup)


def find_setup_by_domain(engine: Engine, workspace_id: str, domain: str) -> Setup | None:
    """The workspace's setup for a sending domain (lowercased), if it has one."""
    query = select(email_setups).where(
        email_setups.c.workspace_id == workspace_id, email_setups.c.domain == domain.lower()
    )
    return _one(engine, query, _setup)


def list_setups(engine: Engine, workspace_id: str) -> list[Setup]:
    """The workspace's setups, oldest first."""
    query = (
        select(email_setups)
        .where(email_setups.c.workspace_id == workspace_id)
        .order_by(email_setups.c.created_at, email_setups.c.id)
    )
    return _many(engine, query, _setup)


def set_dns_verified(engine: Engine, setup_id: str, verified: bool) -> None:
    """Record the outcome of the latest DNS verification."""
    with engine.begin() as conn:
        conn.execute(
            email_setups.update().where(email_setups.c.id == setup_id).values(dns_verified=verified)
        )


def create_use_case(
    engine: Engine,
    workspace_id: str,
    *,
    name: str,
    channel: str,
    setup_id: str,
    from_address: str,
    email_type: str,
    transport: str,
) -> UseCase:
    """Store a new use case (the caller has checked its setup and address)."""
    use_case = UseCase(
        _new_id(),
        workspace_id,
        name,
        channel,
        setup_id,
        from_address,
        email_type,
        transport,
        format_time(utc_now()),
    )
    with engine.begin() as conn:
        conn.execute(use_cases.insert().values(**use_case.__dict__))
    return use_case


def get_use_case(engine: Engine, workspace_id: str, use_case_id: str) -> UseCase | None:
    """The workspace's use case with this id (None for another workspace's)."""
    query = select(use_cases).where(
        use_cases.c.id == use_case_id, use_cases.c.workspace_id == workspace_id
    )
    return _one(engine, query, _use_case)


def list_use_cases(engine: Engine, workspace_id: str) -> list[UseCase]:
    """The workspace's use cases, oldest first."""
    query = (
        select(use_cases)
        .where(use_cases.c.workspace_id == workspace_id)
        .order_by(use_cases.c.created_at, use_cases.c.id)
    )
    return _many(engine, query, _use_case)


def create_endpoint(
    engine: Engine,
    workspace_id: str,
    provider: str,
    config: dict[str, Any],
    setup_id: str | None = None,
) -> InboundEndpoint:
    """Store a new inbound endpoint (the caller has validated its config)."""
    endpoint = InboundEndpoint(
        _new_id(), workspace_id, provider, setup_id, dict(config), format_time(utc_now())
    )
    with engine.begin() as conn:
        conn.execute(inbound_endpoints.insert().values(**endpoint.__dict__))
    return endpoint


def get_endpoint(engine: Engine, endpoint_id: str) -> InboundEndpoint | None:
    """The endpoint a webhook URL names, whichever workspace owns it."""
    query = select(inbound_endpoints).where(inbound_endpoints.c.id == endpoint_id)
    return _one(engine, query, _endpoint)


def get_workspace_endpoint(
    engine: Engine, workspace_id: str, endpoint_id: str
) -> InboundEndpoint | None:
    """The workspace's endpoint with this id (None for another workspace's)."""
    endpoint = get_endpoint(engine, endpoint_id)
    return endpoint if endpoint is not None and endpoint.workspace_id == workspace_id else None


def endpoints_of_providers(engine: Engine, providers: Collection[str]) -> list[InboundEndpoint]:
    """Every workspace's inbound endpoints for these providers, oldest first."""
    query = (
        select(inbound_endpoints)
        .where(inbound_endpoints.c.provider.in_(sorted(providers)))
        .order_by(inbound_endpoints.c.created_at, inbound_endpoints.c.id)
    )
    return _many(engine, query, _endpoint)


def list_endpoints(engine: Engine, workspace_id: str) -> list[InboundEndpoint]:
    """The workspace's inbound endpoints, oldest first."""
    query = (
        select(inbound_endpoints)
        .where(inbound_endpoints.c.workspace_id == workspace_id)
        .order_by(inbound_endpoints.c.created_at, inbound_endpoints.c.id)
    )
    return _many(engine, query, _endpoint)
