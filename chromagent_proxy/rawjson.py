"""Rename the model in a raw JSON request body without decoding and re-encoding all of it.

``modelMapping`` changes one value of the client's body; decoding and re-encoding the
whole body for that costs time and memory in proportion to its size (a 1 MB prompt held
again as Python objects, bench/README.md). ``rename_model`` rewrites only the bytes of
the top-level ``"model"`` value and returns None whenever it cannot be sure, so the
caller falls back to the full re-encode.

Why one search is enough (the caller has decoded the body once, so it is a valid JSON
object with a string ``model`` at the top level): if no ``\\u006`` escape occurs, no
key can spell ``model`` with escapes, so the top-level key is the literal bytes
``"model"``. If those bytes occur exactly once in the whole body, that occurrence is the
top-level key: a nested ``model`` key, a string value ``"model"``, or a string ending in
an escaped quote followed by ``model`` would each be a second occurrence. Its value must
then be a string decoding to the model the request was routed by. Only C-level
``bytes.find`` passes run (no regex, no per-byte Python loop): a couple of passes over
the body, against a full decode and re-encode.
"""

from __future__ import annotations

import msgspec

_KEY = b'"model"'
_WS = frozenset(b" \t\r\n")
_encode = msgspec.json.Encoder().encode
_decode_str = msgspec.json.Decoder(str).decode


def _skip_ws(buf: bytes, j: int) -> int:
    n = len(buf)
    while j < n and buf[j] in _WS:
        j += 1
    return j


def rename_model(raw: bytes, old: str, new: str) -> bytes | None:
    """``raw`` with its top-level ``model`` value ``old`` replaced by ``new``; None if unsure."""
    i = raw.find(_KEY)
    if i < 0 or raw.find(_KEY, i + len(_KEY)) >= 0 or b"\\u006" in raw:
        return None
    j = _skip_ws(raw, i + len(_KEY))
    if raw[j : j + 1] != b":":
        return None
    start = _skip_ws(raw, j + 1)
    if raw[start : start + 1] != b'"':
        return None
    # The first quote after the opening one closes the value unless the value holds an
    # escaped quote; then the slice does not decode (or decodes to something else).
    end = raw.find(b'"', start + 1) + 1
    try:
        if end <= 0 or _decode_str(raw[start:end]) != old:
            return None
    except msgspec.DecodeError:
        return None
    view = memoryview(raw)
    return b"".join((view[:start], _encode(new), view[end:]))
