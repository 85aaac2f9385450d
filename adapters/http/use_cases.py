"""Use cases: what a workspace sends for, from which address, through which transport."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, field_validator
from starlette.responses import Response

from adapters import admin_store
from adapters.dns import (
    normalize_domain,
)
from adapters.http.admin_common import (
    BODY_ERRORS,
    LOCAL_PART,
    admin_op,
    clean_text,
    named_setup,
    path_id,
)
from adapters.http.api import ApiError, Call, Operation, dump, json_response, not_found


def mask_transport(transport: str) -> str:
    """The transport as shown: an smtp:// URL's password replaced by `***`."""
    parts = urlsplit(transport)
    if parts.password is None:
        return transport
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return parts._replace(netloc=f"{user}:***@{hostport}").geturl()


class UseCaseBody(BaseModel):
    """A use case: what a workspace sends for, from which address, through what."""

    name: str = Field(min_length=1, max_length=200, description="A name for people.")
    channel: Literal["email"] = Field(description="The channel; only `email` exists.")
    setup_id: str = Field(description="The setup (sending domain) the use case sends from.")
    from_address: str = Field(
        max_length=320, description="The sender address; it must be on the setup's domain."
    )
    email_type: Literal["transactional", "marketing"] = Field(description="The kind of mail.")
    transport: str = Field(
        description="`sandbox` (stored, never leaves the machine) or "
        "`smtp://user:password@host:port` (needs a DNS-verified setup)."
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return clean_text(value).strip()

    @field_validator("from_address")
    @classmethod
    def _from_address(cls, value: str) -> str:
        local, at, domain = value.strip().rpartition("@")
        if not at or len(local) > 64 or not LOCAL_PART.fullmatch(local):
            raise ValueError(f"not an email address: {value!r}")
        return f"{local}@{normalize_domain(domain)}"

    @field_validator("transport")
    @classmethod
    def _transport(cls, value: str) -> str:
        value = clean_text(value).strip()
        if value == "sandbox":
            return value
        try:
            parts = urlsplit(value)
            port = parts.port
        except ValueError:
            raise ValueError("not a parseable smtp:// URL") from None
        if parts.scheme != "smtp" or not parts.hostname:
            raise ValueError("must be 'sandbox' or an smtp://[user:password@]host[:port] URL")
        if port == 0:
            raise ValueError("the SMTP port must be 1-65535")
        return value


class UseCaseAnswer(BaseModel):
    """A use case as stored (its transport's password masked)."""

    id: str = Field(description="The use case's id (UUID).")
    name: str = Field(description="Its name.")
    channel: str = Field(description="Its channel (`email`).")
    setup_id: str = Field(description="The setup it sends from.")
    from_address: str = Field(description="The sender address.")
    email_type: str = Field(description="`transactional` or `marketing`.")
    transport: str = Field(description="`sandbox` or the smtp:// URL with its password masked.")
    created_at: str = Field(description="When it was made (RFC 3339 UTC).")

    @classmethod
    def of(cls, use_case: admin_store.UseCase) -> UseCaseAnswer:
        return cls(
            id=use_case.id,
            name=use_case.name,
            channel=use_case.channel,
            setup_id=use_case.setup_id,
            from_address=use_case.from_address,
            email_type=use_case.email_type,
            transport=mask_transport(use_case.transport),
            created_at=use_case.created_at,
        )


class UseCaseList(BaseModel):
    """The workspace's use cases, oldest first."""

    use_cases: list[UseCaseAnswer] = Field(description="Every use case of the workspace.")


async def create_use_case(call: Call) -> Response:
    body: UseCaseBody = call.body
    setup = await named_setup(call, body.setup_id)
    if body.from_address.rpartition("@")[2] != setup.domain:
        raise ApiError(
            422, f"from_address: must be an address on the setup's domain {setup.domain}"
        )
    if body.transport != "sandbox" and not setup.dns_verified:
        raise ApiError(409, f"the setup {setup.domain} is not DNS verified; verify it first")
    use_case = await call.run(
        lambda: admin_store.create_use_case(
            call.storage.engine,
            call.workspace_id,
            name=body.name,
            channel=body.channel,
            setup_id=setup.id,
            from_address=body.from_address,
            email_type=body.email_type,
            transport=body.transport,
        )
    )
    return json_response(dump(UseCaseAnswer.of(use_case)), 201)


async def list_use_cases(call: Call) -> Response:
    found = await call.run(admin_store.list_use_cases, call.storage.reader, call.workspace_id)
    return json_response(dump(UseCaseList(use_cases=[UseCaseAnswer.of(u) for u in found])))


async def get_use_case(call: Call) -> Response:
    use_case_id = path_id(call, "use_case_id", "use case")
    engine = call.storage.reader
    use_case = await call.run(admin_store.get_use_case, engine, call.workspace_id, use_case_id)
    if use_case is None:
        raise not_found("use case")
    return json_response(dump(UseCaseAnswer.of(use_case)))


def use_cases_operations() -> list[Operation]:
    """The use cases endpoints."""
    return [
        admin_op(
            "POST",
            "/use-case",
            create_use_case,
            "Create a use case",
            body=UseCaseBody,
            response=UseCaseAnswer,
            status=201,
            errors=(*BODY_ERRORS, 404, 409),
            description="422 when from_address is not on the setup's domain; 409 for an "
            "smtp:// transport on a setup whose DNS is not verified.",
        ),
        admin_op("GET", "/use-case", list_use_cases, "List use cases", response=UseCaseList),
        admin_op(
            "GET",
            "/use-case/{use_case_id}",
            get_use_case,
            "Get a use case",
            response=UseCaseAnswer,
            errors=(404,),
        ),
    ]
