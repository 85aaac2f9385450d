"""A sending domain's DNS: the records to publish (SPF, DKIM, DMARC) and checking them.

Lookups go through the system's resolver, or through `MAILLEDGER_DNS_RESOLVER=host:port`
when it is set (read at every call, so an operator or a test can point it elsewhere).
"""

from __future__ import annotations

import base64
import ipaddress
import os
import re
import secrets
import socket
from dataclasses import dataclass

import dns.exception
import dns.nameserver
import dns.rdatatype
import dns.resolver
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

RESOLVER_ENV = "MAILLEDGER_DNS_RESOLVER"
SPF_INCLUDE_ENV = "MAILLEDGER_SPF_INCLUDE"
DEFAULT_SPF_INCLUDE = "spf.mailledger.local"
DKIM_KEY_BITS = 2048
TIMEOUT = 2.0  # seconds per try; the whole lookup gets a little more
EDNS_PAYLOAD = 1232  # fits a 2048-bit DKIM record in one UDP answer (DNS flag day 2020)

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


class DnsConfigError(ValueError):
    """`MAILLEDGER_DNS_RESOLVER` cannot be used; the message says why."""


@dataclass(frozen=True)
class DkimKey:
    """A DKIM key pair: the private key (PEM) to sign with, the public one to publish."""

    selector: str
    private_key_pem: str
    public_key: str  # base64 of the DER SubjectPublicKeyInfo, the record's p= tag


@dataclass(frozen=True)
class Record:
    """A DNS record to publish."""

    kind: str  # SPF, DKIM or DMARC
    type: str
    name: str
    value: str


@dataclass(frozen=True)
class Check:
    """What the resolver answered for one record, and whether it is right."""

    record: str
    ok: bool
    found: list[str]


def normalize_domain(domain: str) -> str:
    """A sending domain as stored: lowercased ASCII (IDNA), no trailing dot.

    Raises ValueError unless it is a hostname of at least two labels.
    """
    name = domain.strip().lower().removesuffix(".")
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError:
            raise ValueError(f"not a valid domain name: {domain!r}") from None
    labels = name.split(".")
    if len(name) > 253 or len(labels) < 2 or not all(_LABEL.match(label) for label in labels):
        raise ValueError(f"not a valid domain name: {domain!r}")
    if labels[-1].isdigit():
        raise ValueError(f"not a valid domain name (an IP address?): {domain!r}")
    return name


def spf_include() -> str:
    """The SPF include to ask for: `MAILLEDGER_SPF_INCLUDE` or the default."""
    return os.environ.get(SPF_INCLUDE_ENV, "").strip() or DEFAULT_SPF_INCLUDE


def generate_dkim_key() -> DkimKey:
    """A fresh RSA-2048 key pair under a random selector (CPU work: run it off the loop)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=DKIM_KEY_BITS)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return DkimKey(f"ml{secrets.token_hex(4)}", pem, base64.b64encode(der).decode("ascii"))


def dkim_name(selector: str, domain: str) -> str:
    """Where the DKIM key is published."""
    return f"{selector}._domainkey.{domain}"


def dmarc_name(domain: str) -> str:
    """Where the DMARC policy is published."""
    return f"_dmarc.{domain}"


def records_to_publish(domain: str, selector: str, public_key: str, include: str) -> list[Record]:
    """The SPF, DKIM and DMARC TXT records a setup asks its owner to publish."""
    return [
        Record("SPF", "TXT", domain, f"v=spf1 include:{include} ~all"),
        Record("DKIM", "TXT", dkim_name(selector, domain), f"v=DKIM1; k=rsa; p={public_key}"),
        Record("DMARC", "TXT", dmarc_name(domain), "v=DMARC1; p=none;"),
    ]


def make_resolver(timeout: float = TIMEOUT) -> dns.resolver.Resolver:
    """The system's resolver, or the one `MAILLEDGER_DNS_RESOLVER` names."""
    address = os.environ.get(RESOLVER_ENV, "").strip()
    if not address:
        resolver = dns.resolver.Resolver()
    else:
        host, port = _parse_address(address)
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [dns.nameserver.Do53Nameserver(host, port)]
    resolver.use_edns(0, 0, EDNS_PAYLOAD)
    resolver.timeout = timeout
    resolver.lifetime = timeout * 1.5
    resolver.cache = None  # a record just published must be seen at once
    return resolver


def _parse_address(address: str) -> tuple[str, int]:
    host, sep, port_text = address.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise DnsConfigError(f"{RESOLVER_ENV}: expected host:port, got {address!r}")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        try:
            host = socket.gethostbyname(host)
        except OSError as error:
            raise DnsConfigError(f"{RESOLVER_ENV}: cannot resolve {host!r}: {error}") from None
    return host, int(port_text)


def lookup_txt(name: str, timeout: float = TIMEOUT) -> list[str]:
    """The TXT records at `name`, each one's strings joined; [] when there are none or the
    resolver does not answer (a verification then simply fails). Raises DnsConfigError
    when `MAILLEDGER_DNS_RESOLVER` is unusable."""
    try:
        resolver = make_resolver(timeout)
        answer = resolver.resolve(name, dns.rdatatype.TXT, search=False)
    except dns.exception.DNSException:
        return []
    found: list[str] = []
    for rdata in answer:
        strings: tuple[bytes, ...] = rdata.strings
        found.append(b"".join(strings).decode("utf-8", errors="replace"))
    return found


def _tags(record: str) -> dict[str, str]:
    """`k=v; k=v` tags (DKIM, DMARC) with whitespace removed from the values."""
    tags: dict[str, str] = {}
    for part in record.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            tags.setdefault(key.strip().lower(), "".join(value.split()))
    return tags


def spf_ok(found: list[str], include: str) -> bool:
    """One SPF record (two are a permanent error, RFC 7208 4.5) that includes ours."""
    spf = [r for r in found if r.lower() == "v=spf1" or r.lower().startswith("v=spf1 ")]
    if len(spf) != 1:
        return False
    wanted = f"include:{include.lower()}"
    return any(term.lower().lstrip("+") == wanted for term in spf[0].split())


def dkim_ok(found: list[str], public_key: str) -> bool:
    """A record at the selector carrying our public key."""
    return any(_tags(record).get("p") == public_key for record in found)


def dmarc_ok(found: list[str]) -> bool:
    """One DMARC record (several mean none applies, RFC 7489 6.6.3)."""
    dmarc = [r for r in found if r.split(";")[0].replace(" ", "") == "v=DMARC1"]
    return len(dmarc) == 1


def record_names(domain: str, selector: str) -> tuple[str, str, str]:
    """Where the SPF, DKIM and DMARC records of a setup live."""
    return domain, dkim_name(selector, domain), dmarc_name(domain)


def assess(
    found: tuple[list[str], list[str], list[str]], public_key: str, include: str
) -> list[Check]:
    """Which of the looked-up SPF, DKIM and DMARC records are published right."""
    spf, dkim, dmarc = found
    return [
        Check("SPF", spf_ok(spf, include), spf),
        Check("DKIM", dkim_ok(dkim, public_key), dkim),
        Check("DMARC", dmarc_ok(dmarc), dmarc),
    ]
