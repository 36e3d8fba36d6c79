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

from chromagent_proxy.core import codec
from chromagent_proxy.core.errors import InvalidRequest

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
# An escaped ASCII letter (``"mod\u0065l"``): a key in disguise. A regex with this literal
# prefix is faster than ``b"\\u" in body`` (CPython's search is slow on a two-byte needle).
_ESCAPED_ASCII = re.compile(rb"\\u00[67]")
# Past this size the exact walk below (one C-level pass, ≈ 0.3 ms per MB) is cheaper than
# the prefilter plus the walk it would often trigger anyway.
_WALK_ABOVE = 16 * 1024
_top_level = msgspec.json.Decoder(dict[str, msgspec.Raw]).decode


def _maybe_repeated(body: bytes) -> bool:
    """False when neither routed key can appear twice (two byte counts and one search,
    ~1 µs per KB; a regex alternation of the three was 10× slower)."""
    return (
        body.count(b'"model"') >= 2
        or body.count(b'"stream"') >= 2
        or _ESCAPED_ASCII.search(body) is not None
    )


def duplicate_routed_key(body: bytes) -> str | None:
    """A key that appears twice at the top level of ``body`` when ``model`` or ``stream``
    might be duplicated, else None.

    A small body is settled at once when neither key can appear twice (_maybe_repeated);
    a large one goes straight to the exact walk (the byte counts cost ≈ 1 ms per MB), and
    asks _maybe_repeated only when the walk found another key repeated (rare), so both
    sizes answer alike."""
    if len(body) <= _WALK_ABOVE:
        return _first_repeated(body) if _maybe_repeated(body) else None
    key = _first_repeated(body)
    if key is None or key in _ROUTED or _maybe_repeated(body):
        return key
    return None


def _first_repeated(body: bytes) -> str | None:
    """The first top-level key found repeated. The top level is decoded with its values
    left raw (C speed), then walked key by key: each value is skipped by comparing it with
    the raw value the decoder kept for that key, so nothing is tokenized in Python. A
    value that differs is an earlier copy of a repeated key."""
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
        pos = m.end()
        # Compared in place (a Raw is a view into body): a copy of a 1 MB value would cost
        # a fresh allocation and its page faults.
        if not body.startswith(value, pos):
            return str(key)  # not the value that won: an earlier copy of this key
        nxt = _NEXT.match(body, pos + len(value))
        if nxt is None:
            return None
        pos = nxt.end()
