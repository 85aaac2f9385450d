"""Admin resources (Workspace.admin): setups, use cases, keys, inbound endpoints.

Every answer is built from a response model, so what leaves the service is exactly what
the model names: never a DKIM private key, an SMTP password, an API key's hash or an
inbound endpoint's secret.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
import unicodedata
import uuid
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key
from pydantic import BaseModel, Field, RootModel, field_validator
from starlette.responses import Response

from adapters import admin_store, workspaces
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
from adapters.http.api import ApiError, Call, Handler, Operation, dump, json_response, not_found

ADMIN = "Workspace.admin"
TAG = "admin"
PREFIX = "/v1/{workspace_id}"
SNS_TOPIC_ARN = re.compile(
    r"arn:aws(-cn|-us-gov)?:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]{1,256}(\.fifo)?"
)
LOCAL_PART = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
Permission = Literal["Channel.send", "Channel.view", "Workspace.admin"]


def _path_id(call: Call, name: str, what: str) -> str:
    """A UUID path parameter in canonical form; anything else names nothing (404)."""
    try:
        return str(uuid.UUID(call.path(name)))
    except ValueError:
        raise not_found(what) from None


def _text(value: str) -> str:
    """A non-blank string without control characters (PostgreSQL refuses NUL in text)."""
    if not value.strip():
        raise ValueError("must not be blank")
    if any(unicodedata.category(char) == "Cc" for char in value):
        raise ValueError("must not contain control characters")
    return value


# Setups ---------------------------------------------------------------------------------


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
    setup_id = _path_id(call, "setup_id", "setup")
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


# Use cases ------------------------------------------------------------------------------


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
        return _text(value).strip()

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
        value = _text(value).strip()
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


async def _named_setup(call: Call, setup_id: str) -> admin_store.Setup:
    """The workspace's setup a body names (404 when it names none of them)."""
    setup = await call.run(admin_store.get_setup, call.storage.reader, call.workspace_id, setup_id)
    if setup is None:
        raise not_found("setup")
    return setup


async def create_use_case(call: Call) -> Response:
    body: UseCaseBody = call.body
    setup = await _named_setup(call, body.setup_id)
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
    use_case_id = _path_id(call, "use_case_id", "use case")
    engine = call.storage.reader
    use_case = await call.run(admin_store.get_use_case, engine, call.workspace_id, use_case_id)
    if use_case is None:
        raise not_found("use case")
    return json_response(dump(UseCaseAnswer.of(use_case)))


# Keys -----------------------------------------------------------------------------------


class KeyBody(BaseModel):
    """A new API key."""

    name: str = Field(min_length=1, max_length=200, description="A name for people.")
    permissions: list[Permission] = Field(
        min_length=1, description="What the key may do: a non-empty subset of the permissions."
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _text(value).strip()


class KeyCreated(BaseModel):
    """A key just made: the only answer that ever holds the key itself."""

    id: str = Field(description="The key's id (UUID).")
    name: str = Field(description="Its name.")
    permissions: list[str] = Field(description="What it may do.")
    api_key: str = Field(description="The key, shown this once; only its hash is stored.")


class KeyAnswer(BaseModel):
    """A key as listed (never the key nor its hash)."""

    id: str = Field(description="The key's id (UUID).")
    name: str = Field(description="Its name.")
    permissions: list[str] = Field(description="What it may do.")
    created_at: str = Field(description="When it was made (RFC 3339 UTC).")


class KeyList(BaseModel):
    """The workspace's keys, oldest first."""

    keys: list[KeyAnswer] = Field(description="Every key of the workspace.")


async def create_key(call: Call) -> Response:
    body: KeyBody = call.body
    key = await call.run(
        workspaces.create_key,
        call.storage.engine,
        call.workspace_id,
        body.name,
        list(body.permissions),
    )
    answer = KeyCreated(
        id=key.id, name=key.name, permissions=list(key.permissions), api_key=key.api_key
    )
    return json_response(dump(answer), 201)


async def list_keys(call: Call) -> Response:
    keys = await call.run(workspaces.list_keys, call.storage.reader, call.workspace_id)
    answers = [
        KeyAnswer(id=k.id, name=k.name, permissions=list(k.permissions), created_at=k.created_at)
        for k in keys
    ]
    return json_response(dump(KeyList(keys=answers)))


async def delete_key(call: Call) -> Response:
    key_id = _path_id(call, "key_id", "key")
    engine = call.storage.engine
    if not await call.run(workspaces.delete_key, engine, call.workspace_id, key_id):
        raise not_found("key")
    return Response(status_code=204)


# Inbound endpoints ----------------------------------------------------------------------

SetupRef = Annotated[
    str | None, Field(description="The setup whose emails this endpoint's events belong to.")
]


class SesInbound(BaseModel):
    """Amazon SES events through SNS."""

    provider: Literal["ses"] = Field(description="`ses`.")
    sns_topic_arns: list[str] = Field(
        min_length=1, max_length=100, description="The SNS topics whose notifications to accept."
    )
    setup_id: SetupRef = None

    @field_validator("sns_topic_arns")
    @classmethod
    def _arns(cls, value: list[str]) -> list[str]:
        for arn in value:
            if not SNS_TOPIC_ARN.fullmatch(arn):
                raise ValueError(f"not an SNS topic ARN: {arn!r}")
        return list(dict.fromkeys(value))

    def config(self) -> dict[str, Any]:
        return {"sns_topic_arns": self.sns_topic_arns}


class SendgridInbound(BaseModel):
    """SendGrid's signed Event Webhook."""

    provider: Literal["sendgrid"] = Field(description="`sendgrid`.")
    public_key: str = Field(
        max_length=2000,
        description="The verification key from SendGrid's console: base64 DER of a P-256 key.",
    )
    setup_id: SetupRef = None

    @field_validator("public_key")
    @classmethod
    def _public_key(cls, value: str) -> str:
        text = "".join(line for line in value.strip().splitlines() if not line.startswith("-----"))
        try:
            der = base64.b64decode("".join(text.split()), validate=True)
            key = load_der_public_key(der)
        except (binascii.Error, ValueError):
            raise ValueError("must be the base64 DER of a public key") from None
        if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(
            key.curve, ec.SECP256R1
        ):
            raise ValueError("must be an ECDSA P-256 (secp256r1) public key")
        return base64.b64encode(der).decode("ascii")

    def config(self) -> dict[str, Any]:
        return {"public_key": self.public_key}


class MailgunInbound(BaseModel):
    """Mailgun webhooks, signed with the account's HTTP webhook signing key."""

    provider: Literal["mailgun"] = Field(description="`mailgun`.")
    signing_key: str = Field(max_length=1000, description="The webhook signing key (secret).")
    setup_id: SetupRef = None

    @field_validator("signing_key")
    @classmethod
    def _signing_key(cls, value: str) -> str:
        return _text(value).strip()

    def config(self) -> dict[str, Any]:
        return {"signing_key": self.signing_key}


class PostmarkInbound(BaseModel):
    """Postmark webhooks, sent with HTTP basic auth."""

    provider: Literal["postmark"] = Field(description="`postmark`.")
    username: str = Field(max_length=200, description="The basic auth user name.")
    password: str = Field(max_length=1000, description="The basic auth password (secret).")
    setup_id: SetupRef = None

    @field_validator("username")
    @classmethod
    def _username(cls, value: str) -> str:
        if ":" in value:
            raise ValueError("must not contain ':'")
        return _text(value)

    @field_validator("password")
    @classmethod
    def _password(cls, value: str) -> str:
        return _text(value)

    def config(self) -> dict[str, Any]:
        return {"username": self.username, "password": self.password}


class GenericInbound(BaseModel):
    """mailledger's own event JSON, signed per Standard Webhooks."""

    provider: Literal["generic"] = Field(description="`generic`.")
    secret: str = Field(
        max_length=1000, description="`whsec_` and the base64 of at least 16 random bytes."
    )
    setup_id: SetupRef = None

    @field_validator("secret")
    @classmethod
    def _secret(cls, value: str) -> str:
        value = value.strip()
        if not value.startswith("whsec_"):
            raise ValueError("must start with 'whsec_'")
        try:
            raw = base64.b64decode(value.removeprefix("whsec_"), validate=True)
        except binascii.Error:
            raise ValueError("must be 'whsec_' followed by base64") from None
        if len(raw) < 16:
            raise ValueError("must hold at least 16 bytes")
        return value

    def config(self) -> dict[str, Any]:
        return {"secret": self.secret}


Inbound = SesInbound | SendgridInbound | MailgunInbound | PostmarkInbound | GenericInbound


class InboundBody(RootModel[Annotated[Inbound, Field(discriminator="provider")]]):
    """An inbound endpoint: the provider and what verifies its signatures."""


class EndpointAnswer(BaseModel):
    """An inbound endpoint (never its secrets)."""

    id: str = Field(description="The endpoint's id (UUID).")
    provider: str = Field(description="ses, sendgrid, mailgun, postmark or generic.")
    url: str = Field(description="The path to give the provider: `/hooks/{provider}/{id}`.")
    setup_id: str | None = Field(description="The setup its emails belong to, if any.")
    created_at: str = Field(description="When it was made (RFC 3339 UTC).")
    sns_topic_arns: list[str] | None = Field(
        default=None, description="ses: the SNS topics accepted."
    )
    public_key: str | None = Field(default=None, description="sendgrid: the verification key.")
    username: str | None = Field(default=None, description="postmark: the basic auth user name.")

    @classmethod
    def of(cls, endpoint: admin_store.InboundEndpoint) -> EndpointAnswer:
        public = ("sns_topic_arns", "public_key", "username")
        shown = {k: endpoint.config[k] for k in public if k in endpoint.config}
        return cls(
            id=endpoint.id,
            provider=endpoint.provider,
            url=f"/hooks/{endpoint.provider}/{endpoint.id}",
            setup_id=endpoint.setup_id,
            created_at=endpoint.created_at,
            **shown,
        )


class EndpointList(BaseModel):
    """The workspace's inbound endpoints, oldest first."""

    endpoints: list[EndpointAnswer] = Field(description="Every endpoint of the workspace.")


async def create_inbound(call: Call) -> Response:
    body: Inbound = call.body.root
    setup_id = None if body.setup_id is None else (await _named_setup(call, body.setup_id)).id
    endpoint = await call.run(
        admin_store.create_endpoint,
        call.storage.engine,
        call.workspace_id,
        body.provider,
        body.config(),
        setup_id,
    )
    return json_response(dump(EndpointAnswer.of(endpoint)), 201)


async def list_inbound(call: Call) -> Response:
    found = await call.run(admin_store.list_endpoints, call.storage.reader, call.workspace_id)
    return json_response(dump(EndpointList(endpoints=[EndpointAnswer.of(e) for e in found])))


async def get_inbound(call: Call) -> Response:
    endpoint_id = _path_id(call, "endpoint_id", "inbound endpoint")
    engine = call.storage.reader
    endpoint = await call.run(
        admin_store.get_workspace_endpoint, engine, call.workspace_id, endpoint_id
    )
    if endpoint is None:
        raise not_found("inbound endpoint")
    return json_response(dump(EndpointAnswer.of(endpoint)))


# The operations -------------------------------------------------------------------------

AUTH_ERRORS = (401, 403)


def _op(method: str, path: str, handler: Handler, summary: str, **kwargs: Any) -> Operation:
    errors = tuple(sorted({*AUTH_ERRORS, *kwargs.pop("errors", ())}))
    return Operation(method, PREFIX + path, handler, summary, ADMIN, TAG, errors=errors, **kwargs)


def admin_operations() -> list[Operation]:
    """Every admin endpoint."""
    body_errors = (400, 413, 422)
    return [
        _op(
            "POST",
            "/email/setup",
            create_setup,
            "Set up a sending domain",
            body=SetupBody,
            response=SetupAnswer,
            status=201,
            errors=(*body_errors, 409),
            description="Makes a DKIM key pair and answers the SPF, DKIM and DMARC TXT "
            "records to publish. 409 when the workspace already has this domain.",
        ),
        _op("GET", "/email/setup", list_setups, "List sending domains", response=SetupList),
        _op(
            "GET",
            "/email/setup/{setup_id}",
            get_setup,
            "Get a sending domain",
            response=SetupAnswer,
            errors=(404,),
        ),
        _op(
            "POST",
            "/email/setup/{setup_id}/verify",
            verify_setup,
            "Verify a sending domain's DNS records",
            response=VerifyAnswer,
            errors=(404, 503),
            description="Looks the SPF, DKIM and DMARC TXT records up and stores whether "
            "all three are right.",
        ),
        _op(
            "POST",
            "/use-case",
            create_use_case,
            "Create a use case",
            body=UseCaseBody,
            response=UseCaseAnswer,
            status=201,
            errors=(*body_errors, 404, 409),
            description="422 when from_address is not on the setup's domain; 409 for an "
            "smtp:// transport on a setup whose DNS is not verified.",
        ),
        _op("GET", "/use-case", list_use_cases, "List use cases", response=UseCaseList),
        _op(
            "GET",
            "/use-case/{use_case_id}",
            get_use_case,
            "Get a use case",
            response=UseCaseAnswer,
            errors=(404,),
        ),
        _op(
            "POST",
            "/keys",
            create_key,
            "Create an API key",
            body=KeyBody,
            response=KeyCreated,
            status=201,
            errors=body_errors,
            description="The key is in this answer only; it is stored hashed.",
        ),
        _op("GET", "/keys", list_keys, "List API keys", response=KeyList),
        _op(
            "DELETE",
            "/keys/{key_id}",
            delete_key,
            "Delete an API key",
            status=204,
            errors=(404,),
            description="The key stops working at once.",
        ),
        _op(
            "POST",
            "/email/inbound",
            create_inbound,
            "Create an inbound webhook endpoint",
            body=InboundBody,
            response=EndpointAnswer,
            status=201,
            errors=(*body_errors, 404),
            description="Answers the URL to paste into the provider's console.",
        ),
        _op(
            "GET",
            "/email/inbound",
            list_inbound,
            "List inbound webhook endpoints",
            response=EndpointList,
        ),
        _op(
            "GET",
            "/email/inbound/{endpoint_id}",
            get_inbound,
            "Get an inbound webhook endpoint",
            response=EndpointAnswer,
            errors=(404,),
        ),
    ]
