"""Accepting a send: check the use case, store the message, record `Sent`.

The outbox row (with the blobs and the Idempotency-Key's answer) is stored first, in
one transaction, then the `Sent` event is recorded; the request answers only after
both. Should the process die in between, the worker finds the row and records the
`Sent` itself before anything else, and a retry with the same key records it too:
the ledger drops whichever comes second.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from adapters import admin_store
from adapters.sending import lifecycle, outbox
from adapters.sending.blobs import blob_key
from adapters.sending.message import (
    Envelope,
    InvalidSendError,
    SendRequest,
    build_message,
    check_send_window,
    check_size,
)
from adapters.sending.tier import TierCache
from adapters.storage import Storage
from domain.application import EmailNotFoundError
from domain.email import EmailView
from domain.reports import Report, format_time, utc_now


class UseCaseNotFoundError(LookupError):
    """No email use case of the workspace has this id (404)."""


class SetupNotVerifiedError(RuntimeError):
    """An smtp:// use case whose setup's DNS is not verified (409)."""


class IdempotencyMismatchError(ValueError):
    """The Idempotency-Key was used for a different request (422)."""


class NotQueuedError(RuntimeError):
    """The email has left (or was never queued): it cannot be canceled (409)."""


class EmailMissingError(LookupError):
    """The workspace has no such email (404)."""


@dataclass(frozen=True)
class Sender:
    """Accepts sends and cancels for one store."""

    storage: Storage
    clock: Callable[[], datetime] = utc_now
    tiers: TierCache = field(default_factory=TierCache)

    def accept(
        self, workspace_id: str, request: SendRequest, key: str | None = None
    ) -> dict[str, Any]:
        """Store and record one send; its answer (the first answer, for a repeated key)."""
        engine = self.storage.engine
        if key is not None:
            replay = self._replay(workspace_id, request, key)
            if replay is not None:
                return replay
        now = self.clock()
        if request.send_at is not None:
            check_send_window(request.send_at, now)
        use_case = self._use_case(workspace_id, request.use_case_id)
        domain = use_case.from_address.rpartition("@")[2]
        message_id = f"{uuid.uuid4().hex}@{domain}"
        envelope = Envelope(use_case.from_address, request.to_address, message_id, now)
        check_size(build_message(envelope, request))
        tier = self.tiers.tier(self.storage.reader, workspace_id, use_case.setup_id, now)
        sent = self._sent(use_case, request, message_id, format_time(now), tier)
        reports = [sent]
        if request.send_at is not None:
            reports.append(lifecycle.scheduled(sent, request.send_at))
        answer = {
            "id": str(sent.target_email_id),
            "message_id": message_id,
            "sent_at": sent.event_at,
            "attachment_filenames": request.attachment_filenames,
        }
        row = outbox.new_email_row(
            email_id=answer["id"],
            workspace_id=workspace_id,
            use_case_id=use_case.id,
            message_id=message_id,
            to_address=request.to_address,
            from_address=use_case.from_address,
            subject=request.subject,
            body_sha256=blob_key(request.body_html.encode()),
            attachments=[
                {
                    "filename": a.filename,
                    "sha256": a.sha256,
                    "size": len(a.content),
                    "content_type": a.content_type,
                }
                for a in request.attachments
            ],
            reports=[lifecycle.to_json(r) for r in reports],
            send_at=request.send_at,
            accepted_at=sent.event_at,
            due_at=request.send_at or sent.event_at,
        )
        contents = [request.body_html.encode(), *(a.content for a in request.attachments)]
        remembered = None if key is None else (key, request.fingerprint(), answer)
        try:
            outbox.store_accepted(engine, row, contents, remembered, now)
        except outbox.IdempotencyRaceError:
            assert key is not None
            replay = self._replay(workspace_id, request, key)
            if replay is None:
                raise
            return replay
        self.storage.ledger.record(reports)
        return answer

    def _replay(self, workspace_id: str, request: SendRequest, key: str) -> dict[str, Any] | None:
        found = outbox.find_idempotent(self.storage.engine, workspace_id, key, self.clock())
        if found is None:
            return None
        if found.fingerprint != request.fingerprint():
            raise IdempotencyMismatchError("Idempotency-Key: already used for a different request")
        self.record_accepted(workspace_id, found.email_id)
        return found.response

    def record_accepted(self, workspace_id: str, email_id: str) -> None:
        """Record the email's acceptance reports (a no-op when they are recorded)."""
        row = outbox.get_row(self.storage.engine, workspace_id, email_id)
        if row is not None:
            self.storage.ledger.record([lifecycle.from_json(r) for r in row["reports"]])

    def _use_case(self, workspace_id: str, use_case_id: str) -> admin_store.UseCase:
        reader = self.storage.reader
        use_case = admin_store.get_use_case(reader, workspace_id, use_case_id)
        if use_case is None or use_case.channel != "email":
            raise UseCaseNotFoundError(use_case_id)
        if use_case.transport.startswith("smtp://"):
            setup = admin_store.get_setup(reader, workspace_id, use_case.setup_id)
            if setup is None or not setup.dns_verified:
                raise SetupNotVerifiedError(use_case.setup_id)
        return use_case

    @staticmethod
    def _sent(
        use_case: admin_store.UseCase,
        request: SendRequest,
        message_id: str,
        event_at: str,
        tier: str,
    ) -> Report:
        try:
            return lifecycle.sent(
                use_case.workspace_id,
                message_id,
                request.to_address,
                event_at,
                from_address=use_case.from_address,
                subject=request.subject,
                setup_id=use_case.setup_id,
                detail={
                    "use_case_id": use_case.id,
                    "email_type": use_case.email_type,
                    "tier": tier,
                    "attachment_filenames": request.attachment_filenames,
                    "has_attachment": bool(request.attachments),
                    "tags": {},
                },
            )
        except ValueError as error:
            raise InvalidSendError(str(error)) from None

    def cancel(self, workspace_id: str, email_id: str) -> EmailView:
        """Cancel a queued email; the email as it stands afterwards."""
        status = outbox.cancel(self.storage.engine, workspace_id, email_id, self.clock())
        if status is None:
            if self._exists(workspace_id, email_id):
                raise NotQueuedError(email_id)
            raise EmailMissingError(email_id)
        if status != outbox.CANCELED:
            raise NotQueuedError(email_id)
        row = outbox.get_row(self.storage.engine, workspace_id, email_id)
        assert row is not None
        accepted = [lifecycle.from_json(r) for r in row["reports"]]
        now = format_time(self.clock())
        self.storage.ledger.record([*accepted, lifecycle.canceled(accepted[0], now)])
        return self.storage.ledger.view_email(uuid.UUID(email_id))

    def _exists(self, workspace_id: str, email_id: str) -> bool:
        try:
            email = self.storage.ledger.view_email(uuid.UUID(email_id))
        except EmailNotFoundError:
            return False
        return email.workspace_id == workspace_id
