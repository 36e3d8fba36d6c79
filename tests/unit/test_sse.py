from __future__ import annotations

import pytest

from chromagent_proxy.core.errors import UpstreamProtocolError
from chromagent_proxy.core.sse import DONE, NDJSONDecoder, SSEDecoder, SSEEvent, frame

STREAM = (
    b": OPENROUTER PROCESSING\n\n"
    b'data: {"a":1}\n\n'
    b"event: error\r\n"
    b'data: {"error":{"message":"x"}}\r\n\r\n'
    b"data: line1\rdata: line2\r\r"
    b"data: [DONE]\n\n"
)
EXPECTED = [
    SSEEvent(None, b'{"a":1}'),
    SSEEvent("error", b'{"error":{"message":"x"}}'),
    SSEEvent(None, b"line1\nline2"),
    SSEEvent(None, b"[DONE]"),
]


def feed_split(data: bytes, size: int) -> list[SSEEvent]:
    dec = SSEDecoder()
    out: list[SSEEvent] = []
    for i in range(0, len(data), size):
        out += dec.feed(data[i : i + size])
    return out + dec.flush()


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, len(STREAM)])
def test_any_split_gives_the_same_events(size: int) -> None:
    assert feed_split(STREAM, size) == EXPECTED


def test_event_is_emitted_as_soon_as_its_blank_line_arrives() -> None:
    dec = SSEDecoder()
    assert dec.feed(b'data: {"a":1}\n') == []
    assert dec.feed(b"\n") == [SSEEvent(None, b'{"a":1}')]


def test_unterminated_last_event_is_flushed() -> None:
    dec = SSEDecoder()
    assert dec.feed(b"data: tail") == []
    assert dec.flush() == [SSEEvent(None, b"tail")]


def test_overlong_line_is_a_protocol_error() -> None:
    dec = SSEDecoder(max_line_bytes=100)
    with pytest.raises(UpstreamProtocolError):
        for _ in range(20):
            dec.feed(b"data: " + b"x" * 10)


def test_ndjson_splits_and_skips_blank_lines() -> None:
    data = b'{"a":1}\n\n{"b":2}\r\n{"c":3}'
    for size in (1, 5, len(data)):
        dec = NDJSONDecoder()
        out: list[bytes] = []
        for i in range(0, len(data), size):
            out += dec.feed(data[i : i + size])
        out += dec.flush()
        assert out == [b'{"a":1}', b'{"b":2}', b'{"c":3}']


def test_ndjson_overlong_line() -> None:
    dec = NDJSONDecoder(max_line_bytes=10)
    with pytest.raises(UpstreamProtocolError):
        dec.feed(b"x" * 11)


def test_frame_and_done() -> None:
    assert frame(b'{"x":1}') == b'data: {"x":1}\n\n'
    assert DONE == b"data: [DONE]\n\n"
