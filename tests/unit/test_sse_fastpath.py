"""SSEDecoder.feed's fast path gives exactly the events of the general line loop.

The reference decoder below only ever uses the line loop (``_feed``); both are
fed the same bytes cut at the same places, with every framing quirk the line
loop handles (CR / CRLF endings, comments, ``event:`` and ``id:`` fields,
multi-line data, ``data:`` without a space, blank-line runs).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chromagent_proxy.core.sse import SSEDecoder, SSEEvent

LINES = st.sampled_from(
    [
        b"data: {}",
        b'data: {"a":1}',
        b"data:x",
        b"data: ",
        b"data: [DONE]",
        b"event: message_start",
        b"event:ping",
        b": keep-alive",
        b"id: 7",
        b"retry: 10",
        b"",
    ]
)
NEWLINES = st.sampled_from([b"\n", b"\r\n", b"\r"])


@st.composite
def streams(draw: st.DrawFn) -> bytes:
    parts: list[bytes] = []
    for _ in range(draw(st.integers(0, 30))):
        parts.append(draw(LINES) + draw(NEWLINES))
        if draw(st.booleans()):
            parts.append(draw(NEWLINES))  # end of event
    return b"".join(parts)


def _reference(chunks: list[bytes]) -> list[SSEEvent]:
    dec = SSEDecoder()
    out: list[SSEEvent] = []
    for c in chunks:
        out += dec._feed(c)
    out += dec._feed(b"\n\n") if (dec._buf or dec._data) else []
    return out


def _fast(chunks: list[bytes]) -> list[SSEEvent]:
    dec = SSEDecoder()
    out: list[SSEEvent] = []
    for c in chunks:
        out += dec.feed(c)
    return out + dec.flush()


@pytest.mark.slow
@settings(max_examples=400, deadline=None)
@given(streams(), st.lists(st.integers(0, 400), max_size=8))
def test_fast_path_matches_line_loop(data: bytes, cuts: list[int]) -> None:
    points = sorted({min(c, len(data)) for c in cuts})
    chunks, last = [], 0
    for p in [*points, len(data)]:
        chunks.append(data[last:p])
        last = p
    assert _fast(chunks) == _reference(chunks)


def test_common_shapes_take_the_fast_path() -> None:
    dec = SSEDecoder()
    body = b'data: {"a":1}\n\nevent: ping\ndata: {"type": "ping"}\n\ndata: [DONE]\n\ndata: {"b"'
    assert dec.feed(body) == [
        SSEEvent(None, b'{"a":1}'),
        SSEEvent("ping", b'{"type": "ping"}'),
        SSEEvent(None, b"[DONE]"),
    ]
    assert dec.feed(b":2}\n\n") == [SSEEvent(None, b'{"b":2}')]


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_reads_that_end_mid_event_give_the_same_events(newline: bytes) -> None:
    # Long streams are read in pieces that end anywhere: after a read that ends inside an
    # event, the next read finishes that event and takes the fast path for the rest.
    nl = newline
    body = b"".join(
        b'data: {"i":' + str(i).encode() + b"}" + nl + nl
        if i % 3
        else b"event: e" + str(i).encode() + nl + b"data: " + str(i).encode() + nl + nl
        for i in range(12)
    )
    whole = _fast([body])
    assert len(whole) == 12
    for size in (1, 2, 3, 7, 16, 41):
        assert _fast([body[i : i + size] for i in range(0, len(body), size)]) == whole
    for cut in range(len(body) + 1):
        assert _fast([body[:cut], body[cut:]]) == whole
