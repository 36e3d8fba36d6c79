"""The chat stream encoder's fast path (text deltas written from cached bytes) writes
exactly what building and encoding each chunk would, for any stream of IR events."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from chromagent_proxy import codec
from chromagent_proxy.core import ir
from chromagent_proxy.dialects.chat.encode import StreamEncoder

texts = st.text(max_size=20)
events = st.lists(
    st.one_of(
        st.builds(ir.TextDelta, texts, choice=st.integers(0, 1)),
        st.builds(ir.ThinkingDelta, texts),
        st.builds(ir.Start, model=st.one_of(st.none(), st.sampled_from(["m2", 'q"\\u2028']))),
        st.builds(ir.ToolCallStart, st.integers(0, 2), st.just("call_1"), st.just("f")),
        st.builds(ir.ToolCallDelta, st.integers(0, 2), texts),
        st.builds(ir.Finish, st.sampled_from(["stop", "length", "tool_calls"])),
        st.builds(ir.Usage, st.integers(0, 9), st.integers(0, 9)),
    ),
    max_size=25,
)


def _slow(enc: StreamEncoder, batch: list[ir.Event]) -> bytes:
    return b"".join(b"data: " + codec.encode(c) + b"\n\n" for c in enc.chunks(batch))


@settings(max_examples=300, deadline=None)
@given(st.lists(events, max_size=5), st.sampled_from(["m", 'we"ird\\model']))
def test_fast_path_writes_the_same_bytes(batches: list[list[ir.Event]], model: str) -> None:
    fast = StreamEncoder("chatcmpl-x", 7, model, include_usage=True)
    slow = StreamEncoder("chatcmpl-x", 7, model, include_usage=True)
    for batch in batches:
        assert fast.encode(batch) == _slow(slow, batch)
    assert fast.finish() == slow.finish()
