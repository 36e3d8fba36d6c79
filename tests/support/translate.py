"""Drive a backend's pure stream functions (backends/shell.Translator) over recorded
bytes the way the shell does — split into reads of any size — and encode the IR events
with the Chat Completions StreamEncoder, as a client would receive them."""

from __future__ import annotations

from typing import Any, TypeVar

from chromagent_proxy import codec
from chromagent_proxy.backends.shell import Translator
from chromagent_proxy.core import ir
from chromagent_proxy.core.accumulate import Answer
from chromagent_proxy.dialects.chat.encode import StreamEncoder, completion
from chromagent_proxy.sse import NDJSONDecoder, SSEDecoder

S = TypeVar("S")
E = TypeVar("E")


def drive(
    translator: Translator[S, E], state: S, body: bytes, split: int | None
) -> list[list[ir.Event]]:
    """The IR event lists of each read of ``split`` bytes (None: one read), then finish."""
    sse = translator.framing == "sse"
    decoder: SSEDecoder | NDJSONDecoder = SSEDecoder() if sse else NDJSONDecoder()
    size = split or max(len(body), 1)
    batches: list[list[ir.Event]] = []

    def payloads(data: bytes | None) -> list[bytes]:
        if isinstance(decoder, NDJSONDecoder):
            return decoder.feed(data) if data is not None else decoder.flush()
        events = decoder.feed(data) if data is not None else decoder.flush()
        return [e.data for e in events if e.data and e.data != b"[DONE]"]

    for i in range(0, len(body), size):
        out: list[ir.Event] = []
        for p in payloads(body[i : i + size]):
            out += translator.step(state, translator.decode(p))
        if out:
            batches.append(out)
    out = []
    for p in payloads(None):
        out += translator.step(state, translator.decode(p))
    out += translator.finish(state)
    if out:
        batches.append(out)
    return batches


def flat(batches: list[list[ir.Event]]) -> list[ir.Event]:
    return [ev for batch in batches for ev in batch]


def usage_of(events: list[ir.Event]) -> ir.Usage:
    usages = [ev for ev in events if isinstance(ev, ir.Usage)]
    assert usages, "no Usage event"
    return usages[-1]


def chat_chunks(batches: list[list[ir.Event]], include_usage: bool = True) -> list[dict[str, Any]]:
    """What a Chat Completions client receives for these event lists."""
    enc = StreamEncoder("chatcmpl-x", 1, "m", include_usage)
    body = b"".join(enc.encode(batch) for batch in batches) + enc.finish()
    return [codec.loads(ev.data) for ev in SSEDecoder().feed(body)]


def chat_completion(
    events: list[ir.Event], id: str = "chatcmpl-x", created: int = 1, model: str = "m"
) -> dict[str, Any]:
    """What a Chat Completions client receives for a whole answer."""
    answer = Answer()
    answer.add(events)
    out: dict[str, Any] = codec.loads(codec.encode(completion(answer, id, created, model)))
    return out
