"""SNS signing certificates: pinned in a directory, or fetched and chained to a root.

No test leaves the machine: fetching goes through a fake `fetch`, and the HTTP client
is tried against a loopback server only.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from adapters.providers.base import CertificateUnavailableError, SignatureError
from adapters.providers.sns_certs import MAX_CERT_BYTES, SnsCertificates, https_fetch, system_roots
from tests.unit.providers.signing import (
    CERT_URL,
    certificate,
    other_rsa_key,
    pem,
    sns_certificate_pem,
    sns_key,
)

ISSUER_URL = "http://crt.r2m01.amazontrust.test/r2m01.cer"
NAME = CERT_URL.rsplit("/", 1)[1]


class FakeWeb:
    """Serves fixed bytes by URL and counts the requests; raises OSError for others."""

    def __init__(self, pages: dict[str, bytes]) -> None:
        self.pages = pages
        self.requests: list[str] = []

    def __call__(self, url: str) -> bytes:
        self.requests.append(url)
        if url not in self.pages:
            raise OSError(f"unreachable: {url}")
        return self.pages[url]


def refuse_fetch(url: str) -> bytes:
    raise AssertionError(f"fetched {url}")


@pytest.fixture(scope="module")
def pki() -> dict[str, x509.Certificate]:
    """A root, an intermediate it signed, and an SNS leaf signed by the intermediate."""
    root_key = ec.generate_private_key(ec.SECP256R1())
    middle_key = ec.generate_private_key(ec.SECP256R1())
    root = certificate(root_key, "Test Root CA", ca=True)
    middle = certificate(middle_key, "Test RSA 2048 M01", root_key, "Test Root CA", ca=True)
    leaf = certificate(
        sns_key(), "sns.amazonaws.com", middle_key, "Test RSA 2048 M01", issuer_url=ISSUER_URL
    )
    return {"root": root, "middle": middle, "leaf": leaf}


# Pinned directory -----------------------------------------------------------------


def test_a_pinned_certificate_is_read_from_the_directory_as_it_is(tmp_path: Path) -> None:
    (tmp_path / NAME).write_bytes(sns_certificate_pem())
    source = SnsCertificates(tmp_path, fetch=refuse_fetch)
    assert source.pem_for(CERT_URL) == sns_certificate_pem()


def test_a_pinned_certificate_is_read_once_and_kept_by_url(tmp_path: Path) -> None:
    (tmp_path / NAME).write_bytes(sns_certificate_pem())
    source = SnsCertificates(tmp_path, fetch=refuse_fetch)
    source.pem_for(CERT_URL)
    (tmp_path / NAME).unlink()  # not read again for the next message
    assert source.pem_for(CERT_URL) == sns_certificate_pem()


def test_a_certificate_missing_from_the_directory_is_unavailable(tmp_path: Path) -> None:
    source = SnsCertificates(tmp_path, fetch=refuse_fetch)
    with pytest.raises(CertificateUnavailableError, match=NAME):
        source.pem_for(CERT_URL)


@pytest.mark.parametrize(
    "url",
    [
        "https://sns.us-east-1.amazonaws.com.evil.com/SimpleNotificationService-abc.pem",
        "http://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
        "https://evil.example.com/SimpleNotificationService-abc.pem",
        "https://sns.us-east-1.amazonaws.com/../SimpleNotificationService-abc.pem",
    ],
)
def test_a_url_off_the_sns_hosts_is_refused_before_reading_or_fetching(
    url: str, tmp_path: Path
) -> None:
    (tmp_path / "SimpleNotificationService-abc.pem").write_bytes(sns_certificate_pem())
    for source in (SnsCertificates(tmp_path, refuse_fetch), SnsCertificates(None, refuse_fetch)):
        with pytest.raises(SignatureError, match="SigningCertURL"):
            source.pem_for(url)


# Fetched --------------------------------------------------------------------------


def test_a_fetched_chain_to_a_trusted_root_is_accepted_and_cached(
    pki: dict[str, x509.Certificate],
) -> None:
    web = FakeWeb({CERT_URL: pem(pki["leaf"]) + pem(pki["middle"])})
    source = SnsCertificates(None, fetch=web, trusted_roots=[pki["root"]])
    assert source.pem_for(CERT_URL) == pem(pki["leaf"])
    assert source.pem_for(CERT_URL) == pem(pki["leaf"])
    assert web.requests == [CERT_URL]


def test_a_missing_intermediate_is_fetched_from_the_issuer_url(
    pki: dict[str, x509.Certificate],
) -> None:
    middle_der = pki["middle"].public_bytes(serialization.Encoding.DER)
    web = FakeWeb({CERT_URL: pem(pki["leaf"]), ISSUER_URL: middle_der})
    source = SnsCertificates(None, fetch=web, trusted_roots=[pki["root"]])
    assert source.pem_for(CERT_URL) == pem(pki["leaf"])
    assert web.requests == [CERT_URL, ISSUER_URL]


def test_a_fetched_certificate_that_chains_to_no_trusted_root_is_refused(
    pki: dict[str, x509.Certificate],
) -> None:
    other_root = certificate(other_rsa_key(), "Someone Else's Root", ca=True)
    web = FakeWeb({CERT_URL: pem(pki["leaf"]) + pem(pki["middle"])})
    source = SnsCertificates(None, fetch=web, trusted_roots=[other_root])
    with pytest.raises(SignatureError, match="does not chain to a trusted root"):
        source.pem_for(CERT_URL)


def test_a_self_signed_certificate_is_refused(pki: dict[str, x509.Certificate]) -> None:
    web = FakeWeb({CERT_URL: sns_certificate_pem()})
    source = SnsCertificates(None, fetch=web, trusted_roots=[pki["root"]])
    with pytest.raises(SignatureError, match="does not chain"):
        source.pem_for(CERT_URL)


def test_a_refused_certificate_is_not_cached(pki: dict[str, x509.Certificate]) -> None:
    web = FakeWeb({CERT_URL: sns_certificate_pem()})
    source = SnsCertificates(None, fetch=web, trusted_roots=[pki["root"]])
    for _ in range(2):
        with pytest.raises(SignatureError):
            source.pem_for(CERT_URL)
    assert web.requests == [CERT_URL, CERT_URL]


def test_an_unreachable_certificate_is_unavailable_so_the_provider_retries() -> None:
    source = SnsCertificates(None, fetch=FakeWeb({}), trusted_roots=[])
    with pytest.raises(CertificateUnavailableError, match="unreachable"):
        source.pem_for(CERT_URL)


def test_a_fetched_page_that_is_not_a_certificate_is_refused() -> None:
    source = SnsCertificates(None, fetch=FakeWeb({CERT_URL: b"<html>hello</html>"}))
    with pytest.raises(SignatureError, match="PEM certificate"):
        source.pem_for(CERT_URL)


def test_without_trusted_roots_nothing_fetched_is_trusted(
    pki: dict[str, x509.Certificate],
) -> None:
    web = FakeWeb({CERT_URL: pem(pki["leaf"]) + pem(pki["middle"])})
    source = SnsCertificates(None, fetch=web, trusted_roots=[])
    with pytest.raises(SignatureError, match="no trusted root"):
        source.pem_for(CERT_URL)


# System roots and the HTTP client ---------------------------------------------------


def verify_paths(cafile: Path, capath: Path | None) -> ssl.DefaultVerifyPaths:
    return ssl.DefaultVerifyPaths(str(cafile), str(capath) if capath else "", "", "", "", "")


def test_system_roots_come_from_the_cafile_skipping_what_does_not_load(
    pki: dict[str, x509.Certificate], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n"
    bundle = tmp_path / "ca-certificates.crt"
    bundle.write_bytes(pem(pki["root"]) + broken + pem(pki["middle"]) + pem(pki["root"]))
    monkeypatch.setattr(ssl, "get_default_verify_paths", lambda: verify_paths(bundle, None))
    assert system_roots() == [pki["root"], pki["middle"]]


def test_system_roots_fall_back_to_the_capath(
    pki: dict[str, x509.Certificate], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "5ad8a5d6.0").write_bytes(pem(pki["root"]))
    (tmp_path / "README").write_text("not a certificate")
    missing = tmp_path / "absent.crt"
    monkeypatch.setattr(ssl, "get_default_verify_paths", lambda: verify_paths(missing, tmp_path))
    assert system_roots() == [pki["root"]]


class Pages(BaseHTTPRequestHandler):
    """A loopback server: /cert answers a certificate, /moved redirects, /big is too big."""

    def do_GET(self) -> None:
        if self.path == "/moved":
            self.send_response(302)
            self.send_header("Location", "/cert")
            self.end_headers()
            return
        body = b"x" * (MAX_CERT_BYTES + 1) if self.path == "/big" else b"CERT"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def loopback() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Pages)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_the_http_client_gets_a_page(loopback: str) -> None:
    assert https_fetch(f"{loopback}/cert") == b"CERT"


def test_the_http_client_follows_no_redirect(loopback: str) -> None:
    with pytest.raises(OSError, match="302"):
        https_fetch(f"{loopback}/moved")


def test_the_http_client_refuses_more_than_a_certificate(loopback: str) -> None:
    with pytest.raises(OSError, match="larger than a certificate"):
        https_fetch(f"{loopback}/big")
