"""Opaque continuation tokens: a keyset position, bound to its query, signed.

A token carries the sort key of the last item of a page and a fingerprint of the
filters it was issued for, under an HMAC of the service's secret. A token that was
not issued by the service, was altered, or comes back with other filters is refused
(400), so a client can never page through a query it did not ask for.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

import orjson

from adapters.http.api import ApiError

SIGNATURE_BYTES = 16


def fingerprint(kind: str, filters: dict[str, Any]) -> str:
    """A short digest of the query a token belongs to."""
    return hashlib.sha256(orjson.dumps([kind, filters], option=orjson.OPT_SORT_KEYS)).hexdigest()[
        :16
    ]


def issue(secret: bytes, query: str, position: list[Any]) -> str:
    """A token for the page after `position` of the query with this fingerprint."""
    payload = orjson.dumps({"q": query, "p": position})
    signature = hmac.new(secret, payload, hashlib.sha256).digest()[:SIGNATURE_BYTES]
    return base64.urlsafe_b64encode(payload + signature).decode().rstrip("=")


def read(secret: bytes, token: str, query: str) -> list[Any]:
    """The position a token carries; 400 unless this service issued it for this query."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except ValueError:
        raw = b""
    payload, signature = raw[:-SIGNATURE_BYTES], raw[-SIGNATURE_BYTES:]
    expected = hmac.new(secret, payload, hashlib.sha256).digest()[:SIGNATURE_BYTES]
    if len(raw) <= SIGNATURE_BYTES or not hmac.compare_digest(signature, expected):
        raise ApiError(400, "continuation_token: not a token this service issued")
    data = orjson.loads(payload)
    if data.get("q") != query:
        raise ApiError(400, "continuation_token: issued for a different query")
    position: list[Any] = data["p"]
    return position
