"""Anthropic Messages SSE events → IR events (pure, synchronous); a non-stream
``Message`` becomes the same events (``answer``), so there is one translation.

Anthropic numbers content blocks across all kinds (text, thinking, tool_use); the IR
numbers tool calls alone, so each block start records what its index means here. A
thinking block's signature arrives in pieces and closes the block at its stop. The
json_response tool (response_format) is the answer itself: its input streams as text.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ... import codec
from ...core import ir
from ...errors import UpstreamProtocolError
from ...schema.anthropic import Message, StreamEvent
from ...schema.anthropic import Usage as AnthropicUsage
from ..shell import Translator
from .errors import stream_error

ORIGIN = "anthropic"

_FINISH: dict[str, ir.FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop_sequence",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "refusal",
}


def finish_reason(stop_reason: str | None, tool_calls: bool) -> ir.FinishReason:
    """``tool_use`` without a client-visible tool call (the response_format tool) is a
    normal stop for the client."""
    reason = _FINISH.get(stop_reason or "", "stop")
    if reason == "tool_calls" and not tool_calls:
        return "stop"
    return reason


class Counts:
    """Token counts merged from message_start and message_delta (later values win)."""

    __slots__ = ("cache_creation", "cache_read", "input", "output")

    def __init__(self) -> None:
        self.input = 0
        self.output = 0
        self.cache_creation = 0
        self.cache_read = 0

    def update(self, u: AnthropicUsage | None) -> None:
        if u is None:
            return
        if u.input_tokens is not None:
            self.input = u.input_tokens
        if u.output_tokens is not None:
            self.output = u.output_tokens
        if u.cache_creation_input_tokens is not None:
            self.cache_creation = u.cache_creation_input_tokens
        if u.cache_read_input_tokens is not None:
            self.cache_read = u.cache_read_input_tokens

    def usage(self) -> ir.Usage:
        # Already disjoint: input_tokens excludes cache reads and writes. Thinking tokens
        # are inside output_tokens (Anthropic does not count them apart).
        return ir.Usage(
            input=self.input,
            output=self.output,
            cache_read=self.cache_read,
            cache_write=self.cache_creation,
        )


@dataclass(slots=True)
class _Block:
    kind: str  # text | tool | response | thinking | other
    index: int = 0  # tool call index (tool)
    has_args: bool = False
    signature: str = ""


@dataclass(slots=True)
class StreamState:
    backend_id: str = "anthropic"
    response_tool: str | None = None
    start: ir.Start | None = None  # held back until there is output
    started: bool = False
    finished: bool = False
    blocks: dict[int, _Block] = field(default_factory=dict)
    tool_calls: int = 0
    stop_reason: str | None = None
    stop_sequence: str | None = None
    saw_message_delta: bool = False
    counts: Counts = field(default_factory=Counts)


def step(state: StreamState, ev: StreamEvent) -> list[ir.Event]:
    kind = ev.type
    if kind == "ping" or state.finished:
        return []
    if kind == "error":
        err = ev.error
        raise stream_error(
            state.backend_id,
            err.type if err is not None else "api_error",
            err.message if err is not None else "",
        )
    out: list[ir.Event] = []
    if kind == "message_start" and ev.message is not None:
        state.start = ir.Start(model=ev.message.model or None, id=ev.message.id or None)
        state.counts.update(ev.message.usage)
    elif kind == "content_block_start":
        out = _block_start(state, ev)
    elif kind == "content_block_delta":
        out = _block_delta(state, ev)
    elif kind == "content_block_stop":
        out = _block_stop(state, ev.index)
    elif kind == "message_delta":
        state.saw_message_delta = True
        if ev.delta is not None:
            if ev.delta.stop_reason is not None:
                state.stop_reason = ev.delta.stop_reason
            if ev.delta.stop_sequence is not None:
                state.stop_sequence = ev.delta.stop_sequence
        state.counts.update(ev.usage)
    elif kind == "message_stop":
        out = _final(state)
    # Unknown event types are ignored (the API adds new ones).
    return _announce(state, out)


def _announce(state: StreamState, out: list[ir.Event]) -> list[ir.Event]:
    """Put Start in front of the first real output. Held back until there is output, so
    an error event right after message_start still comes before the answer began (and
    the request can fail over)."""
    if out and not state.started:
        state.started = True
        out.insert(0, state.start or ir.Start())
    return out


def _block_start(state: StreamState, ev: StreamEvent) -> list[ir.Event]:
    cb = ev.content_block
    if cb is None:
        return []
    if cb.type == "text":
        state.blocks[ev.index] = _Block("text")
        return [ir.TextDelta(cb.text)] if cb.text else []
    if cb.type == "tool_use":
        preset = codec.dumps(cb.input).decode() if cb.input else ""
        if state.response_tool is not None and cb.name == state.response_tool:
            state.blocks[ev.index] = _Block("response", has_args=bool(preset))
            return [ir.TextDelta(preset)] if preset else []
        block = _Block("tool", index=state.tool_calls, has_args=bool(preset))
        state.tool_calls += 1
        state.blocks[ev.index] = block
        out: list[ir.Event] = [ir.ToolCallStart(block.index, cb.id or "", cb.name or "")]
        if preset:
            out.append(ir.ToolCallDelta(block.index, preset))
        return out
    if cb.type == "thinking":
        state.blocks[ev.index] = _Block("thinking", signature=cb.signature or "")
        return [ir.ThinkingDelta(cb.thinking)] if cb.thinking else []
    if cb.type == "redacted_thinking":
        state.blocks[ev.index] = _Block("other")
        return [ir.RedactedThinkingBlock(cb.data or "", ORIGIN)]
    state.blocks[ev.index] = _Block("other")
    return []


def _block_delta(state: StreamState, ev: StreamEvent) -> list[ir.Event]:
    d = ev.delta
    block = state.blocks.get(ev.index)
    if d is None or block is None:
        return []
    if d.type == "text_delta" and d.text:
        return [ir.TextDelta(d.text)]
    if d.type == "input_json_delta" and d.partial_json:
        block.has_args = True
        if block.kind == "response":
            return [ir.TextDelta(d.partial_json)]
        if block.kind == "tool":
            return [ir.ToolCallDelta(block.index, d.partial_json)]
        return []
    if d.type == "thinking_delta" and d.thinking:
        return [ir.ThinkingDelta(d.thinking)]
    if d.type == "signature_delta" and d.signature:
        block.signature += d.signature
    return []


def _block_stop(state: StreamState, index: int) -> list[ir.Event]:
    block = state.blocks.get(index)
    if block is None:
        return []
    # Clients JSON-parse the joined arguments: a tool with no input must still say "{}".
    if block.kind == "tool" and not block.has_args:
        return [ir.ToolCallDelta(block.index, "{}")]
    if block.kind == "response" and not block.has_args:
        return [ir.TextDelta("{}")]
    if block.kind == "thinking" and block.signature:
        return [ir.ThinkingDelta(signature=block.signature, origin=ORIGIN)]
    return []


def _final(state: StreamState) -> list[ir.Event]:
    state.finished = True
    reason = finish_reason(state.stop_reason, state.tool_calls > 0)
    stop_sequence = state.stop_sequence if reason == "stop_sequence" else None
    return [ir.Finish(reason, stop_sequence), state.counts.usage()]


def finish(state: StreamState) -> list[ir.Event]:
    """End of input. A stream cut before ``message_delta`` is an error, not a short answer."""
    if state.finished:
        return []
    if not state.saw_message_delta:
        raise UpstreamProtocolError(
            f"backend '{state.backend_id}' ended the stream before the message was complete"
        )
    return _announce(state, _final(state))


def answer(msg: Message, response_tool: str | None = None) -> list[ir.Event]:
    """A non-stream Message as the events its stream would give."""
    out: list[ir.Event] = [ir.Start(model=msg.model or None, id=msg.id or None)]
    calls = 0
    for block in msg.content:
        if block.type == "text":
            out.append(ir.TextDelta(block.text or ""))
        elif block.type == "tool_use":
            args = codec.dumps(block.input if block.input is not None else {}).decode()
            if response_tool is not None and block.name == response_tool:
                out.append(ir.TextDelta(args))
            else:
                out.append(ir.ToolCallStart(calls, block.id or "", block.name or ""))
                out.append(ir.ToolCallDelta(calls, args))
                calls += 1
        elif block.type == "thinking":
            out.append(ir.ThinkingDelta(block.thinking or ""))
            if block.signature:
                out.append(ir.ThinkingDelta(signature=block.signature, origin=ORIGIN))
        elif block.type == "redacted_thinking":
            out.append(ir.RedactedThinkingBlock(block.data or "", ORIGIN))
        # Server-tool blocks (web search results...) have no IR equivalent.
    counts = Counts()
    counts.update(msg.usage)
    reason = finish_reason(msg.stop_reason, calls > 0)
    stop_sequence = msg.stop_sequence if reason == "stop_sequence" else None
    out += [ir.Finish(reason, stop_sequence), counts.usage()]
    return out


decode_event = codec.decoder(StreamEvent).decode
decode_message = codec.decoder(Message).decode
TRANSLATOR: Translator[StreamState, StreamEvent] = Translator("sse", decode_event, step, finish)
