"""What every provider module shares: errors, the endpoint, the result, payload reading.

A provider module has two pure functions. `verify` decides whether a request really
comes from the endpoint's provider account; `parse` turns a verified body into reports.
Neither touches the network or a database: what they need from outside (the clock,
used tokens, signing certificates) arrives in a `VerifyContext`.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parseaddr
from typing import Any, Protocol

import orjson

from domain.reports import EventType, InvalidReportError, Report, format_time, normalize_time

# An address with nothing around it (most providers send the sender so): dot-atom
# characters, one @, a plain domain.
BARE_ADDRESS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9.-]+")

# The custom argument / tag / metadata name under which a sender echoes mailledger's
# own email id, so an event finds its email even without the provider's message id.
EMAIL_ID_ARG = "mailledger_email_id"


class SignatureError(Exception):
    """The request is not proven to come from the endpoint's provider account (401)."""


class ForbiddenSourceError(Exception):
    """The request comes from a source this endpoint does not accept (403)."""


class AlreadyReceivedError(Exception):
    """A verified retry of a request already recorded, by the provider's own request id
    (2xx, recording nothing)."""


class PayloadError(ValueError):
    """A verified body that cannot be understood (400, kept as a dead letter)."""


class CertificateUnavailableError(Exception):
    """A signing certificate cannot be had right now (503, so the provider retries)."""


class NeedsIOError(Exception):
    """Going on needs the database or the network, which a request interpreted on the
    event loop must not wait for: the caller interprets it again in a worker thread."""


@dataclass(frozen=True)
class Endpoint:
    """One inbound endpoint: a provider account and what verifies its requests."""

    id: str
    workspace_id: str
    provider: str
    setup_id: str | None
    config: Mapping[str, Any]


@dataclass(frozen=True)
class Parsed:
    """What a verified request said: reports, and provider events without meaning here."""

    reports: list[Report]
    ignored: list[str] = field(default_factory=list)
    subscribe_url: str | None = None
    note: str | None = None


class ReplayGuard(Protocol):
    """Remembers single-use keys (Mailgun tokens)."""

    def first_use(self, key: str) -> bool:
        """True the first time `key` is offered, False ever after."""
        ...


class CertificateSource(Protocol):
    """Gives the PEM of an SNS signing certificate by its URL."""

    def pem_for(self, url: str) -> bytes:
        """The certificate's PEM; SignatureError or CertificateUnavailableError else."""
        ...


class MemoryReplayGuard:
    """A `ReplayGuard` for one process: keys live in memory (tests, single workers)."""

    def __init__(self) -> None:
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def first_use(self, key: str) -> bool:
        with self._lock:
            if key in self._seen:
                return False
            self._seen.add(key)
            return True


@dataclass(frozen=True)
class VerifyContext:
    """What verification needs from outside: the clock, used tokens, certificates."""

    now: datetime
    replay_guard: ReplayGuard
    certificates: CertificateSource


def lower_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Headers keyed by lowercase name: HTTP header names are case-insensitive."""
    return {name.lower(): value for name, value in headers.items()}


def config_text(endpoint: Endpoint, key: str) -> str:
    """A required text setting of the endpoint; without it nothing can be verified."""
    value = endpoint.config.get(key)
    if not isinstance(value, str) or not value:
        raise SignatureError(f"the endpoint has no {key} to verify requests with")
    return value


def load_json(body: bytes, what: str) -> Any:
    """The JSON value of `body`, or PayloadError saying what was expected."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise PayloadError(f"{what} is not valid JSON: {error}") from None


class reading:  # lower case: read as a function, `with reading(where): ...`
    """Turn a report refused by the domain into a PayloadError that says where.

    A class, not a generator context manager: it wraps every event of every payload,
    and a generator's setup cost about a microsecond each time."""

    __slots__ = ("where",)

    def __init__(self, where: str) -> None:
        self.where = where

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: Any
    ) -> None:
        if isinstance(error, InvalidReportError):
            raise PayloadError(f"{self.where}: {error}") from None


@dataclass(frozen=True)
class JsonObject:
    """Typed reads from one JSON object of a payload, with errors that say where."""

    data: Mapping[str, Any]
    where: str

    @classmethod
    def of(cls, value: Any, where: str) -> JsonObject:
        if not isinstance(value, dict):
            raise PayloadError(f"{where} must be a JSON object")
        return cls(value, where)

    def _path(self, key: str) -> str:
        return f"{self.where}.{key}"

    def text(self, key: str) -> str:
        """A required, non-empty string."""
        value = self.data.get(key)
        if not isinstance(value, str) or not value:
            raise PayloadError(f"{self._path(key)} is required and must be a non-empty string")
        return value

    def maybe_text(self, key: str) -> str | None:
        """A string when present; numbers are given as their text, anything else is None."""
        value = self.data.get(key)
        if isinstance(value, bool):
            return None
        if isinstance(value, int | float):
            return str(value)
        return value if isinstance(value, str) and value else None

    def flag(self, key: str) -> bool | None:
        value = self.data.get(key)
        return value if isinstance(value, bool) else None

    def child(self, key: str) -> JsonObject:
        """A required nested object."""
        if key not in self.data:
            raise PayloadError(f"{self._path(key)} is required")
        return JsonObject.of(self.data[key], self._path(key))

    def maybe_child(self, key: str) -> JsonObject:
        """A nested object, empty when absent or null."""
        value = self.data.get(key)
        return JsonObject.of({} if value is None else value, self._path(key))

    def children(self, key: str) -> list[JsonObject]:
        """A list of objects, empty when absent."""
        value = self.data.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise PayloadError(f"{self._path(key)} must be a list")
        return [JsonObject.of(item, f"{self._path(key)}[{i}]") for i, item in enumerate(value)]

    def texts(self, key: str) -> list[str]:
        """A list of strings, empty when absent."""
        value = self.data.get(key)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise PayloadError(f"{self._path(key)} must be a list of strings")
        return list(value)

    def time(self, key: str) -> str:
        """A required RFC 3339 time, normalized."""
        try:
            return normalize_time(self.text(key))
        except InvalidReportError as error:  # where it was is written only when it is wrong
            raise PayloadError(f"{self._path(key)}: {error}") from None

    def unix_time(self, key: str) -> str:
        """A required unix timestamp (seconds, int, float or numeric text), as RFC 3339 UTC."""
        value = self.data.get(key)
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                value = None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise PayloadError(f"{self._path(key)} is required and must be a unix timestamp")
        try:
            return format_time(datetime.fromtimestamp(value, UTC))
        except (OverflowError, OSError, ValueError):
            raise PayloadError(f"{self._path(key)} is not a representable time") from None


def rfc3339(text: str, where: str) -> str:
    """`text` as canonical RFC 3339 UTC, or PayloadError naming where it was."""
    try:
        return normalize_time(text)
    except InvalidReportError as error:
        raise PayloadError(f"{where}: {error}") from None


def correlation_id(value: Any) -> uuid.UUID | None:
    """mailledger's email id echoed by a provider (text, or the first of a list)."""
    if isinstance(value, list):
        value = value[0] if value else None
    if not isinstance(value, str):
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def address(value: str | None) -> str | None:
    """The bare address of `Name <addr>` or `addr`, None when there is none."""
    if not value:
        return None
    if BARE_ADDRESS.fullmatch(value):
        return value  # what parseaddr gives for it, at a twentieth of the cost
    found = parseaddr(value)[1]
    return found or None


def compact(detail: Mapping[str, Any]) -> dict[str, Any]:
    """The detail without the fields the provider did not say."""
    return {name: value for name, value in detail.items() if value is not None}


def parse_events(
    events: Iterable[JsonObject],
    kind_field: str,
    kinds: Mapping[str, EventType],
    provider: str,
    build: Callable[[JsonObject, EventType], Report],
) -> Parsed:
    """Reports of a list of provider events, in order; kinds without a meaning here are
    listed as ignored (`provider:kind`), not refused."""
    parsed = Parsed([])
    for event in events:
        kind = event.text(kind_field)
        if kind not in kinds:
            parsed.ignored.append(f"{provider}:{kind}")
            continue
        parsed.reports.append(build(event, kinds[kind]))
    return parsed
