"""Inbound webhook endpoints: one per provider account, holding what verifies it."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any, Literal

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key
from pydantic import BaseModel, Field, RootModel, field_validator
from starlette.responses import Response

from adapters import admin_store
from adapters.http.admin_common import (
    BODY_ERRORS,
    SNS_TOPIC_ARN,
    admin_op,
    clean_text,
    named_setup,
    path_id,
)
from adapters.http.api import Call, Operation, dump, json_response, not_found

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
        return clean_text(value).strip()

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
        return clean_text(value)

    @field_validator("password")
    @classmethod
    def _password(cls, value: str) -> str:
        return clean_text(value)

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
    setup_id = None if body.setup_id is None else (await named_setup(call, body.setup_id)).id
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
    endpoint_id = path_id(call, "endpoint_id", "inbound endpoint")
    engine = call.storage.reader
    endpoint = await call.run(
        admin_store.get_workspace_endpoint, engine, call.workspace_id, endpoint_id
    )
    if endpoint is None:
        raise not_found("inbound endpoint")
    return json_response(dump(EndpointAnswer.of(endpoint)))


def inbound_operations() -> list[Operation]:
    """The inbound endpoints."""
    return [
        admin_op(
            "POST",
            "/email/inbound",
            create_inbound,
            "Create an inbound webhook endpoint",
            body=InboundBody,
            response=EndpointAnswer,
            status=201,
            errors=(*BODY_ERRORS, 404),
            description="Answers the URL to paste into the provider's console.",
        ),
        admin_op(
            "GET",
            "/email/inbound",
            list_inbound,
            "List inbound webhook endpoints",
            response=EndpointList,
        ),
        admin_op(
            "GET",
            "/email/inbound/{endpoint_id}",
            get_inbound,
            "Get an inbound webhook endpoint",
            response=EndpointAnswer,
            errors=(404,),
        ),
    ]
