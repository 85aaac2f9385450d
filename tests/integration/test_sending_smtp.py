"""The smtp:// transport against a real SMTP server (aiosmtpd): STARTTLS and AUTH, the
provider id of the 250 reply, DKIM, 4xx retries until the window closes, 5xx outcomes."""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import ipaddress
import json
import socket
import ssl
import threading
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from email import message_from_bytes
from pathlib import Path
from typing import Any

import dkim  # type: ignore[import-untyped]
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from adapters import admin_store
from adapters.dns import generate_dkim_key
from adapters.importer import import_file
from adapters.ingest import Job, as_endpoint, commit
from adapters.providers import generic
from adapters.receipts import Receipt
from adapters.sending.accept import Sender
from adapters.sending.message import SendRequest
from adapters.sending.smtp import Attempt, Relay, SmtpSettings, deliver, provider_id
from adapters.sending.suppression import is_suppressed
from adapters.sending.worker import SendWorker
from adapters.storage import Storage
from adapters.workspaces import create_workspace
from bench.served import free_port
from tests.integration.test_sending_worker import Clock

USER, PASSWORD = "relay-user", "relay-p@ss:word"


@dataclass
class Inbox:
    """What the test relay saw, and how it answers."""

    messages: list[tuple[str, list[str], bytes]] = field(default_factory=list)
    sessions: list[tuple[bool, bool]] = field(default_factory=list)  # (tls, authenticated)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if address.startswith("unknown@"):
            return "550 5.1.1 <unknown@example.com>: user unknown"
        if address.startswith("later@"):
            return "451 4.7.1 greylisted, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.sessions.append((session.ssl is not None, bool(session.authenticated)))
        if any(rcpt.startswith("policy@") for rcpt in envelope.rcpt_tos):
            return "554 5.7.1 message refused by policy"
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 2.0.0 Ok: queued as 4QxYz7Hk2Lz"


def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
        USER.encode(),
        PASSWORD.encode(),
    )
    return AuthResult(success=ok)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (and the key), as the relay's."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("relay")
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


@dataclass
class Relayed:
    """A running test relay."""

    inbox: Inbox
    port: int
    client_tls: ssl.SSLContext


def start_relay(certificate: tuple[Path, Path], *, tls: bool) -> Iterator[Relayed]:
    inbox, port = Inbox(), free_port()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(*certificate)
    options: dict[str, Any] = {"tls_context": server_tls, "require_starttls": True} if tls else {}
    controller = Controller(
        inbox, hostname="127.0.0.1", port=port, authenticator=authenticator, **options
    )
    controller.start()
    try:
        yield Relayed(inbox, port, ssl.create_default_context(cafile=str(certificate[0])))
    finally:
        controller.stop()


@pytest.fixture
def relay(certificate: tuple[Path, Path]) -> Iterator[Relayed]:
    yield from start_relay(certificate, tls=True)


@pytest.fixture
def plain_relay(certificate: tuple[Path, Path]) -> Iterator[Relayed]:
    yield from start_relay(certificate, tls=False)


@dataclass
class Smtp:
    """A workspace with a verified setup and an smtp:// use case, a worker, a clock."""

    storage: Storage
    use_case: admin_store.UseCase
    setup: admin_store.Setup
    worker: SendWorker
    clock: Clock

    def send(self, to: str, **kw: Any) -> str:
        request = SendRequest(self.use_case.id, to, "Your receipt", "<p>Thanks!</p>", **kw)
        answer = Sender(self.storage, clock=self.clock).accept(self.use_case.workspace_id, request)
        return str(answer["id"])

    def run(self, passes: int = 1) -> None:
        for _ in range(passes):
            self.worker.run_once()

    def kinds(self, email_id: str) -> list[str]:
        return [str(e.event_type) for e in self.storage.ledger.get_history(uuid.UUID(email_id))]

    def last(self, email_id: str) -> Any:
        return self.storage.ledger.get_history(uuid.UUID(email_id))[-1]

    def state(self, email_id: str) -> str:
        return self.storage.ledger.view_email(uuid.UUID(email_id)).state

    def tries(self, email_id: str) -> tuple[int, list[tuple[str, str | None]]]:
        view = self.storage.ledger.view_email(uuid.UUID(email_id))
        return view.try_count, [(t["outcome"], t["response"]) for t in view.last_tries]


def make_smtp(storage: Storage, relayed: Relayed, *, credentials: bool = True) -> Smtp:
    workspace = create_workspace(storage.engine, "Acme").workspace_id
    setup = admin_store.create_setup(
        storage.engine, workspace, "mail.acme.example", generate_dkim_key(), "x"
    )
    admin_store.set_dns_verified(storage.engine, setup.id, True)
    auth = f"{USER}:{PASSWORD.replace('@', '%40').replace(':', '%3A')}@" if credentials else ""
    use_case = admin_store.create_use_case(
        storage.engine,
        workspace,
        name="relay",
        channel="email",
        setup_id=setup.id,
        from_address="billing@mail.acme.example",
        email_type="transactional",
        transport=f"smtp://{auth}127.0.0.1:{relayed.port}",
    )
    clock = Clock()
    settings = SmtpSettings(
        timeout=5,
        tls_context=relayed.client_tls,
        retry_window=timedelta(minutes=30),
        first_retry=timedelta(minutes=1),
        max_retry=timedelta(minutes=8),
    )
    worker = SendWorker(storage, clock=clock, smtp=settings)
    verified = admin_store.get_setup(storage.engine, workspace, setup.id)
    assert verified is not None
    return Smtp(storage, use_case, verified, worker, clock)


@pytest.fixture
def smtp(storage: Storage, relay: Relayed) -> Smtp:
    return make_smtp(storage, relay)


def test_a_relay_takes_the_message_over_starttls_with_auth(smtp: Smtp, relay: Relayed) -> None:
    email_id = smtp.send("ann@example.com")
    smtp.run()

    assert smtp.kinds(email_id) == ["Sent", "Dispatched"]
    handed = smtp.last(email_id)
    assert handed.detail() == {
        "transport": "smtp",
        "provider_message_id": "4QxYz7Hk2Lz",
        "smtp_response": "250 2.0.0 Ok: queued as 4QxYz7Hk2Lz",
    }
    assert smtp.state(email_id) == "sent"
    assert smtp.tries(email_id) == (1, [("dispatched", "250 2.0.0 Ok: queued as 4QxYz7Hk2Lz")])
    ((mail_from, rcpt_tos, content),) = relay.inbox.messages
    assert (mail_from, rcpt_tos) == ("billing@mail.acme.example", ["ann@example.com"])
    assert relay.inbox.sessions == [(True, True)]
    message = message_from_bytes(content)
    assert (
        message["Message-ID"]
        == f"<{smtp.storage.ledger.get_history(uuid.UUID(email_id))[0].message_id}>"
    )
    assert message["X-Mailledger-Email-Id"] == email_id
    assert message["X-SES-MESSAGE-TAGS"] == f"mailledger_email_id={email_id}"


def test_events_reported_under_the_relays_own_id_find_the_email(
    smtp: Smtp, relay: Relayed, tmp_path: Path
) -> None:
    """A relay that reports under its id (SES classic notifications carry no tags)."""
    email_id = smtp.send("ann@example.com")
    smtp.run()
    workspace = smtp.use_case.workspace_id
    endpoint = admin_store.create_endpoint(
        smtp.storage.engine, workspace, "generic", {"secret": "whsec_c2VjcmV0c2VjcmV0"}
    )
    export = tmp_path / "relay-events.jsonl"
    bounce = {
        "event_type": "Bounce",
        "message_id": "4QxYz7Hk2Lz",  # the id of the relay's 250 reply, nothing of ours
        "to_address": "Ann@Example.com",
        "event_at": "2025-03-14T19:10:00Z",
        "bounce_type": "Permanent",
    }
    export.write_bytes(json.dumps(bounce).encode() + b"\n")

    summary = import_file(smtp.storage, as_endpoint(endpoint), export, "generic-jsonl")

    assert summary.recorded == 1
    assert smtp.kinds(email_id) == ["Sent", "Dispatched", "Bounce"]
    assert smtp.state(email_id) == "bounced"
    smtp.run()  # the worker brings the suppression list up to date before sending
    assert is_suppressed(smtp.storage.engine, workspace, "ann@example.com")

    # A webhook's events take the same way (the group commit links them).
    body = json.dumps(dict(bounce, event_type="Complaint", feedback_type="abuse")).encode()
    receipt = Receipt(
        str(uuid.uuid4()), endpoint.id, workspace, "generic", "2025-03-14T19:11:00.000000Z",
        {}, body, True,
    )  # fmt: skip
    parsed = generic.parse(body, as_endpoint(endpoint), receipt.id)
    (tally,) = commit(smtp.storage, [Job(receipt, list(parsed.reports))])
    assert tally.recorded == 1
    assert smtp.state(email_id) == "complained"


def test_the_message_carries_a_dkim_signature_that_verifies(smtp: Smtp, relay: Relayed) -> None:
    smtp.send("ann@example.com", attachments=())
    smtp.run()
    ((_, _, content),) = relay.inbox.messages
    record = f"v=DKIM1; k=rsa; p={smtp.setup.dkim_public_key}".encode()
    expected = f"{smtp.setup.dkim_selector}._domainkey.{smtp.setup.domain}.".encode()

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        return record if name == expected else None

    assert b"DKIM-Signature" in content.split(b"\r\n\r\n")[0]
    assert dkim.verify(content, dnsfunc=lookup)
    assert not dkim.verify(content.replace(b"Thanks!", b"Thanks?"), dnsfunc=lookup)


def test_a_refused_recipient_is_a_hard_bounce_and_suppresses(smtp: Smtp) -> None:
    email_id = smtp.send("unknown@example.com")
    smtp.run()
    assert smtp.kinds(email_id) == ["Sent", "Bounce"]
    bounce = smtp.last(email_id)
    assert bounce.provider == "smtp"
    assert bounce.detail()["bounce_type"] == "Permanent"
    assert "550 5.1.1" in bounce.detail()["diagnostic_code"]
    assert smtp.state(email_id) == "bounced"
    ((outcome, reply),) = smtp.tries(email_id)[1]
    assert outcome == "bounced"
    assert reply is not None
    assert reply.startswith("550 5.1.1")
    smtp.run()  # the next pass follows the log into the suppression list
    assert is_suppressed(smtp.storage.reader, smtp.use_case.workspace_id, "unknown@example.com")


def test_a_5xx_to_the_message_is_a_reject(smtp: Smtp) -> None:
    email_id = smtp.send("policy@example.com")
    smtp.run()
    assert smtp.kinds(email_id) == ["Sent", "Reject"]
    assert smtp.last(email_id).detail() == {"reason": "smtp; 554 5.7.1 message refused by policy"}
    assert smtp.state(email_id) == "rejected"
    assert smtp.tries(email_id) == (1, [("rejected", "554 5.7.1 message refused by policy")])


def test_a_4xx_is_retried_with_backoff_then_failed_after_the_window(smtp: Smtp) -> None:
    email_id = smtp.send("later@example.com")
    smtp.run()
    assert smtp.kinds(email_id) == ["Sent", "DeliveryDelay"]
    delay = smtp.last(email_id)
    assert delay.provider == "smtp"
    assert delay.detail()["delay_type"] == "TransientCommunicationFailure"
    assert smtp.state(email_id) == "sending"
    assert smtp.tries(email_id) == (1, [("deferred", None)])
    smtp.run()  # not due yet: the first retry waits a minute
    assert smtp.kinds(email_id) == ["Sent", "DeliveryDelay"]
    waits = []
    for _ in range(10):
        before = len(smtp.kinds(email_id))
        minutes = 0
        while len(smtp.kinds(email_id)) == before and minutes < 20:
            smtp.clock.advance(minutes=1)
            minutes += 1
            smtp.run()
        waits.append(minutes)
        if smtp.kinds(email_id)[-1] == "Failed":
            break
    assert waits[:4] == [1, 2, 4, 8]  # doubling, then capped at 8 minutes
    assert smtp.kinds(email_id)[-1] == "Failed"
    assert set(smtp.kinds(email_id)[1:-1]) == {"DeliveryDelay"}
    failed = smtp.last(email_id).detail()
    assert failed["smtp_response"] == "451 4.7.1 greylisted, try again later"
    assert smtp.state(email_id) == "failed"
    count, last = smtp.tries(email_id)
    assert count == len(smtp.kinds(email_id)) - 1
    assert last == [("failed", "451 4.7.1 greylisted, try again later")] + [("deferred", None)] * 2


def test_an_unreachable_relay_is_retried(storage: Storage, relay: Relayed) -> None:
    down = Relayed(relay.inbox, free_port(), relay.client_tls)  # nothing listens there
    smtp = make_smtp(storage, down)
    email_id = smtp.send("ann@example.com")
    smtp.run()
    assert smtp.kinds(email_id) == ["Sent", "DeliveryDelay"]


def test_credentials_are_not_sent_to_a_relay_without_starttls(
    storage: Storage, plain_relay: Relayed
) -> None:
    smtp = make_smtp(storage, plain_relay)
    email_id = smtp.send("ann@example.com")
    smtp.run()
    assert smtp.kinds(email_id) == ["Sent", "Reject"]
    assert "STARTTLS" in smtp.last(email_id).detail()["reason"]
    assert plain_relay.inbox.messages == []


def test_a_relay_without_tls_takes_mail_without_credentials(
    storage: Storage, plain_relay: Relayed
) -> None:
    smtp = make_smtp(storage, plain_relay, credentials=False)
    email_id = smtp.send("ann@example.com")
    smtp.run()
    assert smtp.kinds(email_id) == ["Sent", "Dispatched"]
    assert plain_relay.inbox.sessions == [(False, False)]


@pytest.mark.parametrize(
    ("reply", "found"),
    [
        ("2.0.0 Ok: queued as 4QxYz7Hk2Lz", "4QxYz7Hk2Lz"),
        ("Ok 0100018e1f2b3c4d-5e6f7a8b-0000-0000-0000-000000000000-000000",
         "0100018e1f2b3c4d-5e6f7a8b-0000-0000-0000-000000000000-000000"),
        ("2.0.0 OK <20250314190401.1234@relay.example>", "20250314190401.1234@relay.example"),
        ("Great success", None),
        ("2.0.0 Ok", None),
    ],
)  # fmt: skip
def test_the_provider_id_comes_from_the_250_reply(reply: str, found: str | None) -> None:
    assert provider_id(reply) == found


def test_relay_urls_are_parsed() -> None:
    assert Relay.parse("smtp://u%40x:p%3Aw@mail.example:2525") == Relay(
        "mail.example", 2525, "u@x", "p:w"
    )
    assert Relay.parse("smtp://mail.example") == Relay("mail.example", 587)
    with pytest.raises(ValueError, match="smtp"):
        Relay.parse("sandbox")


def silent_closer(certificate: tuple[Path, Path], done: threading.Event) -> int:
    """A relay that takes one message over STARTTLS, answers QUIT, and then never reads
    again: the client's TLS close_notify is never answered."""
    listener = socket.create_server(("127.0.0.1", 0))
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(*certificate)

    def serve() -> None:
        conn, _ = listener.accept()
        channel: Any = conn
        pending = b""

        def line() -> bytes:
            nonlocal pending
            while b"\r\n" not in pending:
                pending += channel.recv(65536)
            first, pending = pending.split(b"\r\n", 1)
            return first

        channel.sendall(b"220 silent ESMTP\r\n")
        while True:
            verb = line().split(b" ", 1)[0].upper()
            if verb == b"EHLO":
                starttls = b"" if channel is not conn else b"250-STARTTLS\r\n"
                channel.sendall(b"250-silent\r\n" + starttls + b"250 8BITMIME\r\n")
            elif verb == b"STARTTLS":
                channel.sendall(b"220 go ahead\r\n")
                channel = server_tls.wrap_socket(conn, server_side=True)
            elif verb == b"DATA":
                channel.sendall(b"354 go on\r\n")
                while line() != b".":
                    pass
                channel.sendall(b"250 2.0.0 Ok: queued as SILENT123\r\n")
            elif verb == b"QUIT":
                channel.sendall(b"221 bye\r\n")
                break
            else:
                channel.sendall(b"250 OK\r\n")
        done.wait(30)
        channel.close()
        listener.close()

    threading.Thread(target=serve, daemon=True).start()
    return int(listener.getsockname()[1])


def test_no_socket_is_left_open_when_the_relay_never_closes_its_tls(
    certificate: tuple[Path, Path],
) -> None:
    done = threading.Event()
    port = silent_closer(certificate, done)
    settings = SmtpSettings(
        timeout=5, tls_context=ssl.create_default_context(cafile=str(certificate[0]))
    )
    gc.collect()  # whatever earlier tests left is not this test's to count
    try:
        attempt = asyncio.run(
            deliver(
                Relay("127.0.0.1", port),
                "a@mail.acme.example",
                "b@example.com",
                b"Hi\r\n",
                settings,
            )
        )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            gc.collect()
    finally:
        done.set()
    assert attempt == Attempt("sent", "250 2.0.0 Ok: queued as SILENT123", "SILENT123")
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []
