"""Property tests for the incremental SSE and NDJSON decoders.

Any split of a valid stream gives the same events as feeding it whole; any
input either decodes or raises UpstreamProtocolError (nothing else), and an
endless line is refused once it passes the cap instead of growing memory.
"""

from __future__ import annotations

import itertools
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chromagent_proxy.errors import UpstreamProtocolError
from chromagent_proxy.sse import NDJSONDecoder, SSEDecoder, SSEEvent

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# A field value: any bytes but the line terminators.
value = st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
event_name = st.none() | st.text(
    st.characters(codec="ascii", exclude_characters="\r\n", min_codepoint=33),
    min_size=1,
    max_size=10,
)
eol = st.sampled_from([b"\n", b"\r\n", b"\r"])


@st.composite
def sse_stream(draw: st.DrawFn) -> tuple[bytes, list[SSEEvent]]:
    """A valid SSE body with mixed line endings, comments and ignored fields, and its events."""
    out = bytearray()
    events: list[SSEEvent] = []

    def eol_() -> bytes:
        # A lone CR followed by LF would be one CRLF terminator, not two: avoid that pairing.
        end = draw(eol.filter(lambda e: not (out.endswith(b"\r") and e == b"\n")))
        return end

    for _ in range(draw(st.integers(0, 6))):
        name = draw(event_name)
        lines = draw(st.lists(value, min_size=1, max_size=3))
        if draw(st.booleans()):
            out += b": keep-alive comment" + eol_()
        if name is not None:
            out += b"event: " + name.encode() + eol_()
        if draw(st.booleans()):
            out += b"id: 42" + eol_()
        for line in lines:
            # "data:x" and "data: x" mean the same; one leading space is dropped.
            spaced = draw(st.booleans()) or line[:1] == b" "
            out += (b"data: " if spaced else b"data:") + line + eol_()
        out += eol_()
        events.append(SSEEvent(name, b"\n".join(lines)))
    return bytes(out), events


def split_points(data: bytes) -> st.SearchStrategy[list[int]]:
    return st.lists(st.integers(0, len(data)), max_size=12).map(sorted)


def pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def decode_sse(chunks: list[bytes], max_line: int | None = None) -> list[SSEEvent]:
    dec = SSEDecoder() if max_line is None else SSEDecoder(max_line)
    out: list[SSEEvent] = []
    for c in chunks:
        out += dec.feed(c)
    return out + dec.flush()


@pytest.mark.slow
@SETTINGS
@given(st.data())
def test_sse_any_split_gives_the_same_events(data: st.DataObject) -> None:
    body, expected = data.draw(sse_stream())
    cuts = data.draw(split_points(body))
    assert decode_sse([body]) == expected
    assert decode_sse(pieces(body, cuts)) == expected
    # One byte at a time is the harshest split (CRLF always straddles a read).
    assert decode_sse([body[i : i + 1] for i in range(len(body))]) == expected


@SETTINGS
@given(st.lists(st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")), max_size=8), st.data())
def test_ndjson_any_split_gives_the_same_lines(lines: list[bytes], data: st.DataObject) -> None:
    sep = data.draw(
        st.lists(
            st.sampled_from([b"\n", b"\r\n", b"\n\n"]), min_size=len(lines), max_size=len(lines)
        )
    )
    body = b"".join(line + s for line, s in zip(lines, sep, strict=True))
    expected = [line.strip() for line in lines if line.strip()]
    cuts = data.draw(split_points(body))
    for chunks in ([body], pieces(body, cuts), [body[i : i + 1] for i in range(len(body))]):
        dec = NDJSONDecoder()
        out: list[bytes] = []
        for c in chunks:
            out += dec.feed(c)
        assert out + dec.flush() == expected


@SETTINGS
@given(st.lists(st.binary(max_size=200), max_size=20))
def test_arbitrary_bytes_decode_or_raise_the_protocol_error(chunks: list[bytes]) -> None:
    """Garbage never crashes a decoder with anything but the protocol error, and is quick."""
    for dec in (SSEDecoder(max_line_bytes=256), NDJSONDecoder(max_line_bytes=256)):
        start = time.monotonic()
        try:
            for c in chunks:
                dec.feed(c)
            dec.flush()
        except UpstreamProtocolError:
            pass
        assert time.monotonic() - start < 1.0


@SETTINGS
@given(st.integers(1, 4096), st.sampled_from(["sse", "ndjson"]), st.binary(min_size=1, max_size=3))
def test_endless_line_is_refused_at_the_cap(step: int, kind: str, filler: bytes) -> None:
    """A line that never ends raises once it passes the cap: memory stays bounded."""
    filler = filler.replace(b"\n", b"x").replace(b"\r", b"x")
    cap = 8192
    dec = SSEDecoder(cap) if kind == "sse" else NDJSONDecoder(cap)
    prefix = b"data: " if kind == "sse" else b""
    fed = 0
    chunk = (filler * (step // len(filler) + 1))[:step]
    try:
        dec.feed(prefix)
        while fed < 10 * cap:
            dec.feed(chunk)
            fed += len(chunk)
    except UpstreamProtocolError as exc:
        assert "longer than" in str(exc)
    else:
        raise AssertionError("an endless line was never refused")
    # Refused within one chunk of the cap: the decoder never held much more than the cap.
    assert fed <= cap + step


def test_big_stream_in_small_pieces_is_linear() -> None:
    """Scanning only new bytes: 4 MiB of short events in 1 KiB reads decodes quickly."""
    body = b"data: " + b"y" * 100 + b"\n\n"
    data = body * (4 * 1024 * 1024 // len(body))
    dec = SSEDecoder()
    start = time.monotonic()
    n = 0
    for i in range(0, len(data), 1024):
        n += len(dec.feed(data[i : i + 1024]))
    # and one 4 MiB line fed in 1 KiB reads (the tail is rescanned only from where it stopped)
    long_line = NDJSONDecoder()
    for _ in range(4 * 1024):
        long_line.feed(b"z" * 1024)
    assert long_line.feed(b"\n") == [b"z" * 4 * 1024 * 1024]
    assert n == len(data) // len(body)
    assert time.monotonic() - start < 5.0


def test_an_empty_read_between_cr_and_lf_keeps_them_one_line_end() -> None:
    """Found by the split property: an empty chunk used to reset the pending-CR state, so
    the LF after it ended a line of its own and split the event."""
    body = b"event: e\r\ndata: x\r\n\r\n"
    cut = body.index(b"\n")  # between the first CR and its LF
    assert decode_sse([body[:cut], b"", body[cut:]]) == [SSEEvent("e", b"x")]
