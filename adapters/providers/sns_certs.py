"""Where SNS signing certificates come from: a pinned directory, or Amazon over HTTPS.

Either way the URL must first pass the SNS host check. A certificate from the pinned
directory is trusted as it is (the directory is the operator's trust anchor, for
offline installs); a fetched one must chain to the system's trusted roots. Either is
kept in memory by URL once read (SNS publishes a new certificate under a new URL).
"""

from __future__ import annotations

import http.client
import re
import ssl
import threading
import urllib.parse
import warnings
from collections.abc import Callable, Sequence
from http import HTTPStatus
from pathlib import Path

import cryptography.x509.verification as x509v
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import AuthorityInformationAccessOID

from adapters.providers.base import CertificateUnavailableError, SignatureError
from adapters.providers.sns import check_cert_url

FETCH_TIMEOUT = 5.0
MAX_CERT_BYTES = 64 * 1024
PEM_BLOCK = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)
# Issuers fetched through the certificate's Authority Information Access when the SNS
# file holds only the leaf: the system store has roots, not intermediates.
MAX_ISSUER_FETCHES = 3


def https_fetch(url: str) -> bytes:
    """GET `url`: verified TLS for https, no redirects, 5 s timeout, 64 KiB at most.

    Redirects are not followed: they would take the certificate from a host the URL
    check never saw. Plain http is only ever asked for an issuer certificate, which
    the chain check authenticates by its signature.
    """
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    connection: http.client.HTTPConnection
    if parts.scheme == "https":
        context = ssl.create_default_context()
        connection = http.client.HTTPSConnection(
            host, parts.port, timeout=FETCH_TIMEOUT, context=context
        )
    else:
        connection = http.client.HTTPConnection(host, parts.port, timeout=FETCH_TIMEOUT)
    try:
        connection.request("GET", parts.path or "/")
        response = connection.getresponse()
        if response.status != HTTPStatus.OK:
            raise OSError(f"{url} answered {response.status}")
        data = response.read(MAX_CERT_BYTES + 1)
    finally:
        connection.close()
    if len(data) > MAX_CERT_BYTES:
        raise OSError(f"{url} is larger than a certificate")
    return data


def system_roots() -> list[x509.Certificate]:
    """The trusted roots of the system's OpenSSL configuration: its cafile, else capath."""
    paths = ssl.get_default_verify_paths()
    roots = _certificates_in([Path(paths.cafile)] if paths.cafile else [])
    if not roots and paths.capath and Path(paths.capath).is_dir():
        roots = _certificates_in(sorted(Path(paths.capath).iterdir()))
    return roots


def _certificates_in(files: list[Path]) -> list[x509.Certificate]:
    """Every certificate that loads from the PEM files; one that does not is skipped."""
    found: dict[bytes, x509.Certificate] = {}
    for path in files:
        try:
            text = path.read_bytes()
        except OSError:
            continue
        for block in PEM_BLOCK.findall(text):
            certificate = _certificate(block)
            if certificate is not None:
                found[certificate.fingerprint(hashes.SHA256())] = certificate
    return list(found.values())


class SnsCertificates:
    """A `CertificateSource` for SNS: pinned files in `cert_dir`, else fetched and checked."""

    def __init__(
        self,
        cert_dir: Path | None,
        fetch: Callable[[str], bytes] | None = None,
        *,
        trusted_roots: Sequence[x509.Certificate] | None = None,
    ) -> None:
        self._cert_dir = cert_dir
        self._fetch = fetch or https_fetch
        self._trusted_roots = trusted_roots
        self._store: x509v.Store | None = None
        self._cache: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def pem_for(self, url: str) -> bytes:
        check_cert_url(url)
        with self._lock:
            cached = self._cache.get(url)
        if cached is None:
            if self._cert_dir is not None:
                cached = self._pinned(self._cert_dir, url)
            else:
                cached = self._fetched(url)
            with self._lock:
                self._cache[url] = cached
        return cached

    def _pinned(self, cert_dir: Path, url: str) -> bytes:
        # The URL check leaves a last segment of letters, digits, '-' and '.pem' only.
        name = url.rsplit("/", 1)[1]
        try:
            return (cert_dir / name).read_bytes()
        except OSError:
            raise CertificateUnavailableError(
                f"no pinned certificate {name} in {cert_dir}"
            ) from None

    def _fetched(self, url: str) -> bytes:
        try:
            certificates = x509.load_pem_x509_certificates(self._get(url))
        except ValueError:
            raise SignatureError(f"{url} does not hold a PEM certificate") from None
        leaf = certificates[0]
        self._check_chain(leaf, list(certificates[1:]))
        return leaf.public_bytes(Encoding.PEM)

    def _get(self, url: str) -> bytes:
        try:
            return self._fetch(url)
        except OSError as error:
            raise CertificateUnavailableError(f"cannot fetch {url}: {error}") from None

    def _check_chain(self, leaf: x509.Certificate, intermediates: list[x509.Certificate]) -> None:
        if not hasattr(x509v, "ExtensionPolicy"):
            # Too old a cryptography to validate a chain: refuse rather than trust blindly.
            raise SignatureError(
                "certificate chains cannot be verified here; pin the SNS "
                "certificates in a directory instead"
            )
        # Only the chain matters here, not what the leaf is for: SNS names no key usage.
        verifier = (
            x509v.PolicyBuilder()
            .store(self._roots())
            .extension_policies(
                ca_policy=x509v.ExtensionPolicy.webpki_defaults_ca(),
                ee_policy=x509v.ExtensionPolicy.permit_all(),
            )
            .build_client_verifier()
        )
        failure: Exception | None = None
        for _ in range(MAX_ISSUER_FETCHES + 1):
            try:
                verifier.verify(leaf, intermediates)
            except x509v.VerificationError as error:
                failure = error
            else:
                return
            issuer = self._missing_issuer(intermediates[-1] if intermediates else leaf)
            if issuer is None:
                break
            intermediates.append(issuer)
        raise SignatureError(f"the SNS certificate does not chain to a trusted root: {failure}")

    def _missing_issuer(self, certificate: x509.Certificate) -> x509.Certificate | None:
        """The issuer named by `certificate`'s Authority Information Access, if any."""
        try:
            access = certificate.extensions.get_extension_for_class(
                x509.AuthorityInformationAccess
            ).value
        except x509.ExtensionNotFound:
            return None
        for description in access:
            location = description.access_location
            if (
                description.access_method == AuthorityInformationAccessOID.CA_ISSUERS
                and isinstance(location, x509.UniformResourceIdentifier)
                and location.value.startswith(("http://", "https://"))
            ):
                return _certificate(self._get(location.value))
        return None

    def _roots(self) -> x509v.Store:
        if self._store is None:
            roots = self._trusted_roots if self._trusted_roots is not None else system_roots()
            if not roots:
                raise SignatureError("no trusted root certificates to check the SNS certificate")
            self._store = x509v.Store(list(roots))
        return self._store


def _certificate(data: bytes) -> x509.Certificate | None:
    """A certificate in DER (as issuers are usually published) or PEM; None if neither."""
    for load in (x509.load_der_x509_certificate, x509.load_pem_x509_certificate):
        try:
            # Some long-lived roots break RFC 5280 in ways cryptography only warns about.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", CryptographyDeprecationWarning)
                return load(data)
        except ValueError:
            continue
    return None
