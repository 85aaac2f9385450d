"""The smtp:// transport: one conversation per email with the use case's relay.

STARTTLS whenever the relay offers it (credentials are never sent in the clear), AUTH
when the URL has a user, the provider's id from the 250 reply when it gives one. A 4xx
reply or a lost connection is retried with backoff until the retry window closes; a
5xx refusal of the recipient is a hard bounce; any other 5xx is a reject.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal
from urllib.parse import unquote, urlsplit

import aiosmtplib

DEFAULT_PORT = 587
QUEUED_AS = re.compile(r"queued as\s+<?([^\s>]+)>?", re.IGNORECASE)
ENHANCED_STATUS = re.compile(r"\d\.\d{1,3}\.\d{1,3}")
ID_LIKE = re.compile(r"[\w.@=+-]{8,}")

Kind = Literal["sent", "bounced", "rejected", "retry"]


@dataclass(frozen=True)
class Relay:
    """Where an smtp:// use case sends, and as whom."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> Relay:
        """The relay of an `smtp://[user:password@]host[:port]` URL."""
        parts = urlsplit(url)
        if parts.scheme != "smtp" or not parts.hostname:
            raise ValueError("not an smtp:// URL")
        user = None if parts.username is None else unquote(parts.username)
        password = None if parts.password is None else unquote(parts.password)
        return cls(parts.hostname, parts.port or DEFAULT_PORT, user, password)


@dataclass(frozen=True)
class SmtpSettings:
    """How the transport talks to relays and how long it keeps trying."""

    timeout: float = 30.0
    tls_context: ssl.SSLContext | None = None  # None: the system's trusted roots
    retry_window: timedelta = timedelta(hours=24)
    first_retry: timedelta = timedelta(minutes=1)
    max_retry: timedelta = timedelta(hours=1)

    def retry_at(self, attempts: int, now: datetime) -> datetime:
        """When to try again after `attempts` failed tries (doubling, capped)."""
        doublings = min(max(attempts - 1, 0), 30)
        wait = min(self.first_retry * (1 << doublings), self.max_retry)
        return now + wait


@dataclass(frozen=True)
class Attempt:
    """What one conversation with the relay came to."""

    kind: Kind
    reply: str
    provider_message_id: str | None = None


def provider_id(message: str) -> str | None:
    """The relay's id for the message in its 250 reply (`queued as X`, `Ok <id>`)."""
    found = QUEUED_AS.search(message)
    if found:
        return found.group(1)
    tokens = [t.strip("<>[]") for t in message.split() if not ENHANCED_STATUS.fullmatch(t)]
    last = tokens[-1] if tokens else ""
    if ID_LIKE.fullmatch(last) and any(char.isdigit() for char in last):
        return last
    return None


def _by_code(code: int, message: str, *, recipient: bool = False) -> Attempt:
    reply = f"{code} {message}".strip()
    if 400 <= code < 500:
        return Attempt("retry", reply)
    return Attempt("bounced" if recipient else "rejected", reply)


async def deliver(
    relay: Relay, sender: str, recipient: str, message: bytes, settings: SmtpSettings
) -> Attempt:
    """Hand one message to the relay; never raises for what the relay or network does."""
    client = aiosmtplib.SMTP(
        hostname=relay.host,
        port=relay.port,
        timeout=settings.timeout,
        start_tls=None,  # upgrade when offered
        tls_context=settings.tls_context,
    )
    try:
        await client.connect()
        if relay.username is not None:
            if client.get_transport_info("sslcontext") is None:
                return Attempt("rejected", "the relay offers no STARTTLS; credentials stay home")
            await client.login(relay.username, relay.password or "")
        _, answer = await client.sendmail(sender, [recipient], message)
        return Attempt("sent", f"250 {answer}", provider_id(answer))
    except aiosmtplib.SMTPRecipientsRefused as error:
        refused = error.recipients[0]
        return _by_code(refused.code, refused.message, recipient=True)
    except aiosmtplib.SMTPResponseException as error:
        return _by_code(error.code, error.message)
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as error:
        return Attempt("retry", f"connection: {error or type(error).__name__}")
    finally:
        await _hang_up(client)


async def _hang_up(client: aiosmtplib.SMTP) -> None:
    """QUIT, then drop the socket at once and let the loop see it go.

    A TLS close waits for the relay's close_notify, which may come after the caller's
    event loop has ended; the socket would then be left open until garbage collection.
    Once QUIT is answered (or the conversation failed) nothing more is owed to the relay.
    """
    transport = client.transport
    if client.is_connected:
        with contextlib.suppress(aiosmtplib.SMTPException, OSError, TimeoutError):
            await client.quit()
        client.close()
    if isinstance(transport, asyncio.WriteTransport):
        transport.abort()
        await asyncio.sleep(0)  # the loop runs connection_lost, which frees the socket
