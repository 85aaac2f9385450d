"""Sending domains (setups): DKIM keys, the records to publish, DNS verification."""

from __future__ import annotations

import asyncio

from pydantic import BaseModel, Field, field_validator
from starlette.responses import Response

from adapters import admin_store
from adapters.dns import (
    DnsConfigError,
    assess,
    generate_dkim_key,
    lookup_txt,
    normalize_domain,
    record_names,
    records_to_publish,
    spf_include,
)
from adapters.http.admin_common import (
    BODY_ERRORS,
    admin_op,
    path_id,
)
from adapters.http.api import ApiError, Call, Operation, dump, json_response, not_found


class SetupBody(BaseModel):
    """A sending domain to set up."""

    domain: str = Field(description="The domain mail is sent from, e.g. `mail.example.com`.")

    @field_validator("domain")
    @classmethod
    def _domain(cls, value: str) -> str:
        return normalize_domain(value)


class RecordAnswer(BaseModel):
    """A DNS record to publish at the domain's DNS host."""

    type: str = Field(description="The record type (always `TXT`).")
    name: str = Field(description="The fully qualified name to publish the record at.")
    value: str = Field(description="The record's text.")


class SetupAnswer(BaseModel):
    """A sending domain, its DNS verification state and the records it needs."""

    id: str = Field(description="The setup's id (UUID).")
    domain: str = Field(description="The sending domain, lowercased.")
    dns_verified: bool = Field(description="Whether the latest verification found every record.")
    records: list[RecordAnswer] = Field(description="The SPF, DKIM and DMARC TXT records.")

    @classmethod
    def of(cls, setup: admin_store.Setup) -> SetupAnswer:
        records = records_to_publish(
            setup.domain, setup.dkim_selector, setup.dkim_public_key, setup.spf_include
        )
        return cls(
            id=setup.id,
            domain=setup.domain,
            dns_verified=setup.dns_verified,
            records=[RecordAnswer(type=r.type, name=r.name, value=r.value) for r in records],
        )


class SetupList(BaseModel):
    """The workspace's setups, oldest first."""

    setups: list[SetupAnswer] = Field(description="Every setup of the workspace.")


class CheckAnswer(BaseModel):
    """What the resolver answered for one record."""

    record: str = Field(description="Which record was checked: SPF, DKIM or DMARC.")
    ok: bool = Field(description="Whether a correct record was found.")
    found: list[str] = Field(
        description="The TXT records seen at the record's name (multi-string ones joined)."
    )


class VerifyAnswer(BaseModel):
    """The outcome of a DNS verification."""

    id: str = Field(description="The setup's id.")
    dns_verified: bool = Field(description="True when every check passed; stored on the setup.")
    checks: list[CheckAnswer] = Field(description="One check per record: SPF, DKIM, DMARC.")


async def create_setup(call: Call) -> Response:
    body: SetupBody = call.body
    key = await call.run(generate_dkim_key)
    try:
        setup = await call.run(
            admin_store.create_setup,
            call.storage.engine,
            call.workspace_id,
            body.domain,
            key,
            spf_include(),
        )
    except admin_store.DuplicateSetupError:
        raise ApiError(409, f"the workspace already has a setup for {body.domain}") from None
    return json_response(dump(SetupAnswer.of(setup)), 201)


async def _setup(call: Call) -> admin_store.Setup:
    setup_id = path_id(call, "setup_id", "setup")
    setup = await call.run(admin_store.get_setup, call.storage.reader, call.workspace_id, setup_id)
    if setup is None:
        raise not_found("setup")
    return setup


async def list_setups(call: Call) -> Response:
    setups = await call.run(admin_store.list_setups, call.storage.reader, call.workspace_id)
    return json_response(dump(SetupList(setups=[SetupAnswer.of(s) for s in setups])))


async def get_setup(call: Call) -> Response:
    return json_response(dump(SetupAnswer.of(await _setup(call))))


async def verify_setup(call: Call) -> Response:
    setup = await _setup(call)
    names = record_names(setup.domain, setup.dkim_selector)
    try:
        spf, dkim, dmarc = await asyncio.gather(*(call.run(lookup_txt, name) for name in names))
    except DnsConfigError as error:
        raise ApiError(503, str(error)) from None
    checks = assess((spf, dkim, dmarc), setup.dkim_public_key, setup.spf_include)
    verified = all(check.ok for check in checks)
    await call.run(admin_store.set_dns_verified, call.storage.engine, setup.id, verified)
    answer = VerifyAnswer(
        id=setup.id,
        dns_verified=verified,
        checks=[CheckAnswer(record=c.record, ok=c.ok, found=c.found) for c in checks],
    )
    return json_response(dump(answer))


def setups_operations() -> list[Operation]:
    """The setups endpoints."""
    return [
        admin_op(
            "POST",
            "/email/setup",
            create_setup,
            "Set up a sending domain",
            body=SetupBody,
            response=SetupAnswer,
            status=201,
            errors=(*BODY_ERRORS, 409),
            description="Makes a DKIM key pair and answers the SPF, DKIM and DMARC TXT "
            "records to publish. 409 when the workspace already has this domain.",
        ),
        admin_op("GET", "/email/setup", list_setups, "List sending domains", response=SetupList),
        admin_op(
            "GET",
            "/email/setup/{setup_id}",
            get_setup,
            "Get a sending domain",
            response=SetupAnswer,
            errors=(404,),
        ),
        admin_op(
            "POST",
            "/email/setup/{setup_id}/verify",
            verify_setup,
            "Verify a sending domain's DNS records",
            response=VerifyAnswer,
            errors=(404, 503),
            description="Looks the SPF, DKIM and DMARC TXT records up and stores whether "
            "all three are right.",
        ),
    ]
