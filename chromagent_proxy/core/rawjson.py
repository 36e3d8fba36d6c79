"""Rename the model in a raw JSON request body without decoding and re-encoding all of it.

``modelMapping`` changes one value of the client's body; decoding it into Python objects
and encoding them again costs time and memory in proportion to its size (a 1 MB prompt
held again as Python objects, bench/README.md). ``rename_model`` rewrites only the bytes
of the top-level ``"model"`` value and returns None whenever it cannot be sure, so the
caller falls back to the full re-encode.

The candidate is a literal ``"model"`` key (the first one near the start, where most
clients put it, then the last one: the OpenAI SDKs put it after the messages) whose
value is a string decoding to the model the request was routed by. It could still be a
nested key or text inside a string; two checks with msgspec's C parser (no Python
objects beyond one string) settle it:

- the rewritten body's top-level ``model`` must read as the new name. A JSON decoder
  keeps the last of duplicate keys (msgspec does, and routing used it), so this holds
  only if the candidate was the last top-level ``model`` key, in any spelling;
- no top-level ``model`` key may come before it: the body cut just before the candidate
  and closed (``…, "_": 0}``) must have none. When the candidate is a real top-level key
  that cut is a faithful prefix of the object; when it is not, the first check fails.

Searches use ``bytes.find`` / ``rfind`` over a bounded head or from the end, so the cost
is two C-level parses of the body and one copy of it, against a full decode to Python
objects and a full encode; with ``unique`` no copy (``rename_model_parts``).

With ``unique`` the caller also knows the body is valid JSON (the request path decoded
it), and the candidate's depth is settled from its surroundings instead of a parse of
the whole renamed body (≈ 0.25 ms per MB, issue 20). In valid JSON a ``"model"`` whose
opening quote has no backslash before it is a whole string token (a closing quote there
would leave ``model`` bare), so followed by ``:`` it is an object key; that key is a
member of the top-level object when

- the byte before it (past whitespace) is the body's opening ``{``: the first member;
- its value is followed (past whitespace) by ``}`` and then only whitespace: that brace
  is the body's last, the top-level object's;
- the members after it, opened with ``{``, parse as one object with nothing after it:
  one level deeper, the brackets that close the enclosing containers would be left over;
- the members before it, closed with ``"_":0}``, parse as one object: one level deeper,
  the enclosing containers would be left open.

The last two copy a bounded part of the body (whichever is shorter); past that bound the
full check above runs. ``unique`` then makes the key the only top-level ``model``.
"""

from __future__ import annotations

import msgspec

from chromagent_proxy.core import codec
from chromagent_proxy.core.body import JOIN_BELOW, Body, Pieces, joined

_KEY = b'"model"'
_HEAD = 512  # where a body that starts with its model has it
_WS = frozenset(b" \t\r\n")


class _Top(msgspec.Struct):
    model: str | None = None


class _Any(msgspec.Struct):
    """Any JSON object: every member skipped in C, trailing bytes refused."""


_encode = msgspec.json.Encoder().encode
_decode_str = msgspec.json.Decoder(str).decode
_decode_top = msgspec.json.Decoder(_Top).decode
_decode_obj = msgspec.json.Decoder(_Any).decode
_PART = 64 * 1024  # the most the depth check copies; past it the renamed body is parsed
_DECODE_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, RecursionError)


def _skip_ws(buf: bytes, j: int) -> int:
    n = len(buf)
    while j < n and buf[j] in _WS:
        j += 1
    return j


def rename_model(raw: bytes, old: str, new: str, *, unique: bool = False) -> bytes | None:
    """``raw`` with its top-level ``model`` value ``old`` replaced by ``new``; None if unsure.
    One ``bytes``: ``rename_model_parts`` joined."""
    out = rename_model_parts(raw, old, new, unique=unique)
    return None if out is None else joined(out)


def rename_model_parts(raw: bytes, old: str, new: str, *, unique: bool = False) -> Body | None:
    """``rename_model`` as the pieces it is made of, not joined: with ``unique`` (when the
    key's depth is settled from its surroundings) the client's bytes before and after the
    value, as views, around the new value; the sender writes them as they are (core/body.py).
    A body under ``JOIN_BELOW`` is joined (cheaper than pieces for ≈ 1 KB).

    ``unique``: the caller knows the body has at most one top-level ``model`` key in any
    spelling (the request path refuses others: dialects/routed.py), so the
    check for an earlier one, a copy and a parse of the whole head when the key comes
    last (the OpenAI SDKs' order), is skipped."""
    if old == new:
        return None  # nothing to rename (the caller sends the body as it is)
    first = raw.find(_KEY, 0, _HEAD)
    out = _rewrite(raw, first, old, new, unique) if first >= 0 else None
    if out is None:
        last = raw.rfind(_KEY)
        if last >= 0 and last != first:
            out = _rewrite(raw, last, old, new, unique)
    return out


def with_model(raw: bytes, old: str, new: str) -> Body:
    """A parsed request's body with its top-level model ``old`` renamed ``new``, for a relay:
    in place when certain (pieces, ``unique``: the request path refused repeated model
    keys, dialects/routed.py), else decoded and re-encoded with the new model."""
    if old == new:
        return raw
    renamed = rename_model_parts(raw, old, new, unique=True)
    if renamed is not None:
        return renamed
    data = codec.loads(raw)
    data["model"] = new
    return codec.dumps(data)


def _rewrite(raw: bytes, key: int, old: str, new: str, unique: bool) -> Body | None:
    """Replace the value of the ``"model"`` key at ``key`` if it is the top-level one."""
    j = _skip_ws(raw, key + len(_KEY))
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
        view = memoryview(raw)
        parts = (view[:start], _encode(new), view[end:])
        if unique:
            top = _top_level(raw, key, end)
            if top is not None:
                if not top:
                    return None
                return Pieces(parts) if len(raw) >= JOIN_BELOW else b"".join(parts)
        out = b"".join(parts)  # the checks below parse the renamed body
        if _decode_top(out).model != new:
            return None  # not the last top-level key: a nested one, text, or a duplicate
        cut = key
        while cut > 0 and raw[cut - 1] in _WS:
            cut -= 1
        before = raw[cut - 1 : cut]
        if before == b",":
            if not unique:
                # One copy of the head, closed as an object: does it hold a model key?
                head = bytearray(view[:cut])
                head += b'"_":0}'
                if _decode_top(head).model is not None:
                    return None  # a top-level model key before this one
        elif before != b"{":
            return None
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return None
    return out


def _top_level(raw: bytes, key: int, end: int) -> bool | None:
    """Whether the key at ``key`` (its string value ends at ``end``) is a member of the
    top-level object of the valid JSON ``raw``; None when only a parse of the whole body
    could tell (both sides of it longer than _PART). See the module's docstring."""
    if raw[key - 1 : key] == b"\\":
        return False  # an escaped quote: text inside a string
    cut = key
    while cut > 0 and raw[cut - 1] in _WS:
        cut -= 1
    before = raw[cut - 1 : cut]
    if before == b"{" and _skip_ws(raw, 0) == cut - 1:
        return True
    after = _skip_ws(raw, end)
    if raw[after : after + 1] == b"}":
        return _skip_ws(raw, after + 1) == len(raw)
    if raw[after : after + 1] != b"," or before not in (b",", b"{"):
        return False
    tail = len(raw) - after
    if min(cut, tail) > _PART:
        return None
    try:
        if tail <= cut:
            _decode_obj(b"{" + raw[after + 1 :])
        else:
            head = bytearray(memoryview(raw)[:cut])
            head += b'"_":0}'
            _decode_obj(head)
    except _DECODE_ERRORS:
        return False
    return True
