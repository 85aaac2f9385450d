"""Sending through the API: the outbox, the blob store, transports, suppression.

The request stores the message and its `Sent` event; a background worker takes it from
the outbox to its transport (the sandbox's mailbox simulator, or SMTP) and records what
becomes of it through the ledger's one idempotent write path.
"""
