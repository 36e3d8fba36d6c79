"""What JSON a request may hold that the gateway cannot re-encode, and where it is.

orjson (the encoder for translated and re-written bodies) refuses integers
outside the signed/unsigned 64-bit range and nesting deeper than 254 levels.
A request carrying either is the client's fault: ``unencodable`` finds the
first such field so the answer is a 400 naming it, not a 502 and a traceback.
It only runs after an encode failed, so it costs nothing on the normal path.
"""

from __future__ import annotations

from typing import Any

import msgspec

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
