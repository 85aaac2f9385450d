"""A tiny authoritative DNS server for tests: answers TXT queries from a dict.

It listens on UDP 127.0.0.1 at a random port, in a background thread. Names in
`records` get their TXT records (each a list of strings, so multi-string records can
be served); other query types at a known name get an empty answer, unknown names
NXDOMAIN. `records` may be changed while it runs.
"""

from __future__ import annotations

import socket
import threading

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.rrset

TxtRecords = dict[str, list[list[str]]]


class DnsServer:
    """A UDP responder on 127.0.0.1; use `start()` and `stop()` (or `with`)."""

    def __init__(self, records: TxtRecords | None = None) -> None:
        self.records: TxtRecords = {} if records is None else records
        self.queries: list[str] = []
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.bind(("127.0.0.1", 0))
        self._socket.settimeout(0.05)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="test-dns", daemon=True)

    @property
    def address(self) -> str:
        """`host:port`, as `MAILLEDGER_DNS_RESOLVER` wants it."""
        host, port = self._socket.getsockname()
        return f"{host}:{port}"

    def start(self) -> DnsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._socket.close()

    def __enter__(self) -> DnsServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                wire, client = self._socket.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            reply = self._answer(wire)
            if reply is not None:
                self._socket.sendto(reply, client)

    def _answer(self, wire: bytes) -> bytes | None:
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True).lower()
        self.queries.append(name)
        if name not in self.records:
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif question.rdtype == dns.rdatatype.TXT and self.records[name]:
            rrset = response.find_rrset(
                response.answer,
                question.name,
                dns.rdataclass.IN,
                dns.rdatatype.TXT,
                create=True,
            )
            for strings in self.records[name]:
                rrset.add(
                    dns.rdtypes.ANY.TXT.TXT(
                        dns.rdataclass.IN, dns.rdatatype.TXT, [s.encode() for s in strings]
                    ),
                    ttl=60,
                )
        limit = max(512, query.payload) if query.edns >= 0 else 512
        try:
            return response.to_wire(max_size=limit)
        except dns.exception.TooBig:
            response.flags |= dns.flags.TC
            response.answer.clear()
            return response.to_wire()


def split_txt(value: str, size: int = 255) -> list[str]:
    """A long TXT value as the strings of one record (each at most 255 bytes)."""
    return [value[i : i + size] for i in range(0, len(value), size)] or [""]
