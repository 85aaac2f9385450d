"""DKIM signatures with a setup's key (dkimpy), so relays send mail that verifies."""

from __future__ import annotations

import dkim  # type: ignore[import-untyped]  # dkimpy ships no type hints
from cryptography.hazmat.primitives import serialization

# The headers signed: what identifies and describes the message to its reader.
SIGNED_HEADERS = [b"from", b"to", b"subject", b"date", b"message-id", b"mime-version",
                  b"content-type"]  # fmt: skip


def _pkcs1(private_key_pem: str) -> bytes:
    # Setups keep PKCS#8; dkimpy documents PKCS#1, so hand it that.
    key = serialization.load_pem_private_key(private_key_pem.encode(), password=None)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def sign(message: bytes, domain: str, selector: str, private_key_pem: str) -> bytes:
    """The message with a DKIM-Signature header (rsa-sha256, relaxed/relaxed) first."""
    header: bytes = dkim.sign(
        message,
        selector.encode(),
        domain.encode(),
        _pkcs1(private_key_pem),
        canonicalize=(b"relaxed", b"relaxed"),
        include_headers=SIGNED_HEADERS,
    )
    return header + message
