"""The OpenAI relay passes a read's leading plain events on as they are (openai.plain_events):
the prefix it takes must be exactly what splitting the events and framing them again
would write, never an event the relay must look at ([DONE], an error, the usage), and the
decoder must be where it would have been. End to end: test_stream_coalescing.py."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from chromagent_proxy.backends.openai import plain_events
from chromagent_proxy.core.sse import SSEDecoder, framed

LINES = st.sampled_from(
    [
        b'data: {"choices":[{"delta":{"content":"hi"}}]}',
        b'data: {"choices":[{"delta":{"content":"data: [x]"}}]}',
        b"data: {}",
        b"data: ",
        b"data:x",
        b"data: [DONE]",
        b'data: {"error":{"message":"overloaded"}}',
        b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":5}}',
        b'data: {"content":"[DONE] is text here"}',
        b"event: error",
        b": keep-alive",
        b"id: 7",
        b"",
    ]
)
NEWLINES = st.sampled_from([b"\n", b"\n", b"\n", b"\r\n", b"\r"])


PLAIN = st.sampled_from(
    [
        b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\n',
        b'data: {"choices":[{"delta":{"content":"data: [x]"}}]}\n\n',
        b"data: {}\n\n",
    ]
)


@st.composite
def reads(draw: st.DrawFn) -> bytes:
    parts: list[bytes] = []
    # Half the reads open with plain events (what OpenAI sends), then anything.
    if draw(st.booleans()):
        parts += draw(st.lists(PLAIN, min_size=1, max_size=6))
    for _ in range(draw(st.integers(0, 12))):
        parts.append(draw(LINES) + draw(NEWLINES))
        if draw(st.integers(0, 3)):
            parts.append(b"\n")  # most events end with their blank line
    data = b"".join(parts)
    cut = draw(st.integers(0, len(data)))  # a read may end anywhere
    return data[:cut]


@settings(max_examples=3000, deadline=None)
@given(reads())
def test_the_prefix_is_what_splitting_and_framing_again_would_write(data: bytes) -> None:
    cut = plain_events(data)
    whole = SSEDecoder().feed(data)
    if not cut:
        return
    dec = SSEDecoder()
    head = dec.feed(data[:cut])
    assert dec.idle  # whole events only
    assert head and all(e.event is None for e in head)
    payloads = [e.data for e in head]
    assert framed(payloads) == data[:cut]  # the same bytes the client got before
    for p in payloads:  # nothing the relay must look at itself
        assert p != b"[DONE]" and not p.startswith(b'{"error"') and b'"prompt_tokens"' not in p
    assert head + dec.feed(data[cut:]) == whole  # the rest decodes as it would have


def test_a_typical_read_is_taken_up_to_the_usage_event() -> None:
    chunk = b'data: {"choices":[{"delta":{"content":"w"}}]}\n\n'
    usage = b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":5}}\n\n'
    data = chunk * 20 + usage + b"data: [DONE]\n\n"
    assert plain_events(data) == len(chunk) * 20
    assert plain_events(chunk * 3) == len(chunk) * 3
    assert plain_events(chunk * 3 + chunk[:10]) == len(chunk) * 3  # up to the cut event
    assert plain_events(chunk.replace(b"\n", b"\r\n") * 3) == 0  # other framings: decoder
    assert plain_events(b": ping\n\n" + chunk) == 0
