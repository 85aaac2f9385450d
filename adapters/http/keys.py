"""API keys: made with permissions, shown once, deleted at once."""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator
from starlette.responses import Response

from adapters import workspaces
from adapters.http.admin_common import (
    BODY_ERRORS,
    Permission,
    admin_op,
    clean_text,
    path_id,
)
from adapters.http.api import Call, Operation, dump, json_response, not_found


class KeyBody(BaseModel):
    """A new API key."""

    name: str = Field(min_length=1, max_length=200, description="A name for people.")
    permissions: list[Permission] = Field(
        min_length=1, description="What the key may do: a non-empty subset of the permissions."
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return clean_text(value).strip()


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
    key_id = path_id(call, "key_id", "key")
    engine = call.storage.engine
    if not await call.run(workspaces.delete_key, engine, call.workspace_id, key_id):
        raise not_found("key")
    return Response(status_code=204)


def keys_operations() -> list[Operation]:
    """The keys endpoints."""
    return [
        admin_op(
            "POST",
            "/keys",
            create_key,
            "Create an API key",
            body=KeyBody,
            response=KeyCreated,
            status=201,
            errors=BODY_ERRORS,
            description="The key is in this answer only; it is stored hashed.",
        ),
        admin_op("GET", "/keys", list_keys, "List API keys", response=KeyList),
        admin_op(
            "DELETE",
            "/keys/{key_id}",
            delete_key,
            "Delete an API key",
            status=204,
            errors=(404,),
            description="The key stops working at once.",
        ),
    ]
