"""What every provider shares: reading addresses."""

from __future__ import annotations

from email.utils import parseaddr

from hypothesis import given
from hypothesis import strategies as st

from adapters.providers.base import BARE_ADDRESS, address

ATOM = "abcXYZ019!#$%&'*+/=?^_`{|}~.-"


@given(st.text(ATOM, min_size=1, max_size=12), st.text("abz09.-", min_size=1, max_size=12))
def test_a_bare_address_reads_as_the_standard_parser_reads_it(local: str, domain: str) -> None:
    value = f"{local}@{domain}"
    assert BARE_ADDRESS.fullmatch(value)
    assert address(value) == parseaddr(value)[1]


@given(st.text(max_size=40))
def test_any_text_reads_as_the_standard_parser_reads_it(value: str) -> None:
    assert address(value) == (parseaddr(value)[1] or None)


def test_a_named_address_gives_the_address() -> None:
    assert address('"Shop, Inc." <news@shop.example>') == "news@shop.example"
    assert address("news@shop.example") == "news@shop.example"
    assert address("") is None
    assert address(None) is None
