"""What JSON a request may hold that the gateway cannot re-encode, and where it is.

orjson (the encoder for translated and re-written bodies) refuses integers
outside the signed/unsigned 64-bit range and nesting deeper than 254 levels.
A request carrying either is the client's fault: ``unencodable`` finds the
first such field so the answer is a 400 naming it, not a 502 and a traceback.
It only runs after an encode failed, so it costs nothing on the normal path.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from . import codec
from .errors import InvalidRequest

MAX_DEPTH = 254
INT_MIN = -(2**63)
INT_MAX = 2**64 - 1

_decode = msgspec.json.Decoder().decode


def _path(parts: tuple[str | int, ...]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
    return out or "(body)"


def find_unencodable(value: Any) -> tuple[str, str] | None:
    """(field path, problem) of the first value orjson cannot encode, or None."""
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(value, ())]
    while stack:
        node, path = stack.pop()
        if len(path) > MAX_DEPTH:
            return _path(path[:8]) + "...", f"is nested deeper than {MAX_DEPTH} levels"
        if isinstance(node, bool):
            continue
        if isinstance(node, int):
            if not INT_MIN <= node <= INT_MAX:
                return _path(path), "is an integer outside the 64-bit range"
        elif isinstance(node, dict):
            stack.extend((v, (*path, str(k))) for k, v in reversed(node.items()))
        elif isinstance(node, list):
            stack.extend((v, (*path, i)) for i, v in reversed(list(enumerate(node))))
    return None


def unencodable(raw_body: bytes) -> InvalidRequest | None:
    """A 400 naming the field that made re-encoding ``raw_body`` fail, or None."""
    try:
        data = _decode(raw_body)
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
        return None
    found = find_unencodable(data)
    if found is None:
        return None
    where, problem = found
    return InvalidRequest(
        f"'{where}' {problem}; the gateway cannot forward it (integers must fit in 64 bits, "
        f"nesting is limited to {MAX_DEPTH} levels)",
        param=where,
    )


# Keys the gateway routes on: with two copies, routing would use the last while the raw body
# relayed upstream holds both (and the upstream may read the first).
_ROUTED = ("model", "stream")
_KEY = re.compile(rb'\s*("(?:[^"\\]|\\.)*")\s*:\s*', re.DOTALL)
_NEXT = re.compile(rb"\s*,")
# An escaped ASCII letter (``"mod\u0065l"``): a key in disguise.
_ESCAPED_ASCII = re.compile(rb"\\u00[67]", re.IGNORECASE)
_top_level = msgspec.json.Decoder(dict[str, msgspec.Raw]).decode


def duplicate_routed_key(body: bytes) -> str | None:
    """A key that appears twice at the top level of ``body`` when ``model`` or ``stream``
    might be duplicated, else None.

    Two byte counts settle almost every body at once (~1 µs). Otherwise the top level is
    decoded with its values left raw (C speed), then walked key by key: each value is
    skipped by comparing it with the raw value the decoder kept for that key, so nothing
    is tokenized in Python. A value that differs is an earlier copy of a repeated key."""
    if (
        body.count(b'"model"') < 2
        and body.count(b'"stream"') < 2
        and not (b"\\u" in body and _ESCAPED_ASCII.search(body))
    ):
        return None
    try:
        top = _top_level(body)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError, UnicodeDecodeError):
        return None  # parse_request explains what is wrong with it
    pos = body.find(b"{") + 1
    seen: set[str] = set()
    while True:
        m = _KEY.match(body, pos)
        if m is None:
            return None
        raw_key = m.group(1)
        try:
            key = codec.loads(raw_key) if b"\\" in raw_key else raw_key[1:-1].decode()
        except (ValueError, UnicodeDecodeError):
            return None
        value = top.get(key)
        if key in seen or value is None:
            return str(key)
        seen.add(key)
        raw = bytes(value)
        pos = m.end()
        if not body.startswith(raw, pos):
            return str(key)  # not the value that won: an earlier copy of this key
        nxt = _NEXT.match(body, pos + len(raw))
        if nxt is None:
            return None
        pos = nxt.end()
