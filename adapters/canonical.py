"""Canonical JSON at orjson's speed, byte for byte what the domain's definition writes.

orjson with sorted keys writes the same bytes as the standard library's canonical
encoder for strings, integers within 64 bits, booleans, null, objects with text keys
and arrays; it writes some floats differently (`1e-05` becomes `0.00001`). So values made
only of the former take orjson, and anything else the standard encoder, which also
keeps its exact behaviour (and errors) for what orjson would refuse or write otherwise.
tests/unit/test_canonical.py checks the two agree on arbitrary JSON.
"""

from __future__ import annotations

from typing import Any

import orjson

from domain.reports import standard_canonical_json, use_canonical_encoder

_PLAIN = frozenset({str, int, bool, type(None)})


def _plain(value: Any) -> bool:
    kind = type(value)
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str or (type(item) not in _PLAIN and not _plain(item)):
                return False
        return True
    if kind is list or kind is tuple:
        return all(type(item) in _PLAIN or _plain(item) for item in value)
    return kind in _PLAIN


def canonical_json(value: Any, *, plain: bool = False) -> bytes:
    """`domain.reports.standard_canonical_json(value)`, faster (`plain`: the caller
    promises what `_plain` would check)."""
    if plain or _plain(value):
        try:
            return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
        except TypeError:  # an integer beyond 64 bits, a lone surrogate
            pass
    return standard_canonical_json(value)


def install() -> None:
    """Make the domain compute canonical JSON with this encoder."""
    use_canonical_encoder(canonical_json)
