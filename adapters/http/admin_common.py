"""What the admin endpoints share: permission, tag, path prefix, small field checks."""

from __future__ import annotations

import re
import unicodedata
import uuid
from typing import Any, Literal

from adapters import admin_store
from adapters.http.api import Call, Handler, Operation, not_found

ADMIN = "Workspace.admin"
TAG = "admin"
PREFIX = "/v1/{workspace_id}"
SNS_TOPIC_ARN = re.compile(
    r"arn:aws(-cn|-us-gov)?:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]{1,256}(\.fifo)?"
)
LOCAL_PART = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
Permission = Literal["Channel.send", "Channel.view", "Workspace.admin"]


def path_id(call: Call, name: str, what: str) -> str:
    """A UUID path parameter in canonical form; anything else names nothing (404)."""
    try:
        return str(uuid.UUID(call.path(name)))
    except ValueError:
        raise not_found(what) from None


def clean_text(value: str) -> str:
    """A non-blank string without control characters (PostgreSQL refuses NUL in text)."""
    if not value.strip():
        raise ValueError("must not be blank")
    if any(unicodedata.category(char) == "Cc" for char in value):
        raise ValueError("must not contain control characters")
    return value


AUTH_ERRORS = (401, 403)


def admin_op(method: str, path: str, handler: Handler, summary: str, **kwargs: Any) -> Operation:
    errors = tuple(sorted({*AUTH_ERRORS, *kwargs.pop("errors", ())}))
    return Operation(method, PREFIX + path, handler, summary, ADMIN, TAG, errors=errors, **kwargs)


BODY_ERRORS = (400, 413, 422)


async def named_setup(call: Call, setup_id: str) -> admin_store.Setup:
    """The workspace's setup a body names (404 when it names none of them)."""
    setup = await call.run(admin_store.get_setup, call.storage.reader, call.workspace_id, setup_id)
    if setup is None:
        raise not_found("setup")
    return setup
