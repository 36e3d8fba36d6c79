"""Anthropic Messages SSE events → OpenAI chat.completion.chunk objects (pure, sync).

``step`` takes one decoded event and returns the chunks it produces;
``finish`` runs at end of input. Anthropic numbers content blocks across all
kinds (text, thinking, tool_use), OpenAI numbers tool calls alone, so each
block start records what that Anthropic index means here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ... import codec
from ...errors import UpstreamProtocolError
from ...schema.anthropic import StreamEvent
from ...schema.openai import (
    ChatCompletionChunk,
    ChunkChoice,
    Delta,
    FunctionDelta,
    ToolCallDelta,
)
from .errors import stream_error
from .response import Counts, finish_reason

decode_event = codec.decoder(StreamEvent).decode


@dataclass(slots=True)
class _Block:
    kind: str  # text | tool | response | thinking | redacted | other
    index: int = 0  # tool_calls index (tool) or thinking_blocks index (thinking/redacted)
    has_args: bool = False
    text: list[str] = field(default_factory=list)
    signature: str = ""
    data: str = ""


@dataclass(slots=True)
class StreamState:
    id: str
    created: int
    model: str
    include_usage: bool = False
    response_tool: str | None = None
    backend_id: str = "anthropic"
    started: bool = False
    finished: bool = False
    blocks: dict[int, _Block] = field(default_factory=dict)
    tool_calls: int = 0
    thinking_blocks: int = 0
    stop_reason: str | None = None
    saw_message_delta: bool = False
    counts: Counts = field(default_factory=Counts)


def _chunk(state: StreamState, delta: Delta, finish: str | None = None) -> ChatCompletionChunk:
    return ChatCompletionChunk(
        state.id, state.created, state.model, [ChunkChoice(0, delta, finish)]
    )


def _tool_delta(index: int, arguments: str) -> Delta:
    return Delta(tool_calls=[ToolCallDelta(index, function=FunctionDelta(arguments=arguments))])


def step(state: StreamState, ev: StreamEvent) -> list[ChatCompletionChunk]:
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
    out: list[ChatCompletionChunk] = []
    if kind == "message_start" and ev.message is not None:
        if ev.message.model:
            state.model = ev.message.model
        state.counts.update(ev.message.usage)
    elif kind == "content_block_start":
        out.extend(_block_start(state, ev))
    elif kind == "content_block_delta":
        out.extend(_block_delta(state, ev))
    elif kind == "content_block_stop":
        out.extend(_block_stop(state, ev.index))
    elif kind == "message_delta":
        state.saw_message_delta = True
        if ev.delta is not None and ev.delta.stop_reason is not None:
            state.stop_reason = ev.delta.stop_reason
        state.counts.update(ev.usage)
    elif kind == "message_stop":
        out.extend(_final(state))
    # Unknown event types are ignored (the API adds new ones).
    return _announce(state, out)


def _announce(state: StreamState, out: list[ChatCompletionChunk]) -> list[ChatCompletionChunk]:
    """Put the role chunk (as OpenAI's first chunk) in front of the first real output.

    Held back until there is output, so an error event right after message_start
    still reaches the handler before the 200 is sent and can fail over.
    """
    if out and not state.started:
        state.started = True
        out.insert(0, _chunk(state, Delta(role="assistant", content="")))
    return out


def _block_start(state: StreamState, ev: StreamEvent) -> list[ChatCompletionChunk]:
    cb = ev.content_block
    if cb is None:
        return []
    if cb.type == "text":
        state.blocks[ev.index] = _Block("text")
        return [_chunk(state, Delta(content=cb.text))] if cb.text else []
    if cb.type == "tool_use":
        preset = codec.dumps(cb.input).decode() if cb.input else ""
        if state.response_tool is not None and cb.name == state.response_tool:
            state.blocks[ev.index] = _Block("response", has_args=bool(preset))
            return [_chunk(state, Delta(content=preset))] if preset else []
        block = _Block("tool", index=state.tool_calls, has_args=bool(preset))
        state.tool_calls += 1
        state.blocks[ev.index] = block
        call = ToolCallDelta(
            block.index, cb.id or "", "function", FunctionDelta(cb.name or "", preset)
        )
        return [_chunk(state, Delta(tool_calls=[call]))]
    if cb.type == "thinking":
        block = _Block("thinking", index=state.thinking_blocks, signature=cb.signature or "")
        state.thinking_blocks += 1
        state.blocks[ev.index] = block
        if cb.thinking:
            block.text.append(cb.thinking)
            return [_chunk(state, Delta(reasoning_content=cb.thinking))]
        return []
    if cb.type == "redacted_thinking":
        state.blocks[ev.index] = _Block("redacted", index=state.thinking_blocks, data=cb.data or "")
        state.thinking_blocks += 1
        return []
    state.blocks[ev.index] = _Block("other")
    return []


def _block_delta(state: StreamState, ev: StreamEvent) -> list[ChatCompletionChunk]:
    d = ev.delta
    block = state.blocks.get(ev.index)
    if d is None or block is None:
        return []
    if d.type == "text_delta" and d.text:
        return [_chunk(state, Delta(content=d.text))]
    if d.type == "input_json_delta" and d.partial_json:
        block.has_args = True
        if block.kind == "response":
            return [_chunk(state, Delta(content=d.partial_json))]
        if block.kind == "tool":
            return [_chunk(state, _tool_delta(block.index, d.partial_json))]
        return []
    if d.type == "thinking_delta" and d.thinking:
        block.text.append(d.thinking)
        return [_chunk(state, Delta(reasoning_content=d.thinking))]
    if d.type == "signature_delta" and d.signature:
        block.signature += d.signature
    return []


def _block_stop(state: StreamState, index: int) -> list[ChatCompletionChunk]:
    block = state.blocks.get(index)
    if block is None:
        return []
    # OpenAI clients JSON-parse the joined arguments: a tool with no input must still say "{}".
    if block.kind == "tool" and not block.has_args:
        return [_chunk(state, _tool_delta(block.index, "{}"))]
    if block.kind == "response" and not block.has_args:
        return [_chunk(state, Delta(content="{}"))]
    entry: dict[str, Any]
    if block.kind == "thinking":
        entry = {
            "index": block.index,
            "type": "thinking",
            "thinking": "".join(block.text),
            "signature": block.signature,
        }
    elif block.kind == "redacted":
        entry = {"index": block.index, "type": "redacted_thinking", "data": block.data}
    else:
        return []
    # The whole signed block once, so a client can replay it (see docs/readme-anthropic.md).
    return [_chunk(state, Delta(thinking_blocks=[entry]))]


def _final(state: StreamState) -> list[ChatCompletionChunk]:
    state.finished = True
    out = [_chunk(state, Delta(), finish_reason(state.stop_reason, state.tool_calls > 0))]
    if state.include_usage:
        out.append(
            ChatCompletionChunk(state.id, state.created, state.model, [], state.counts.usage())
        )
    return out


def finish(state: StreamState) -> list[ChatCompletionChunk]:
    """End of input. A stream cut before ``message_delta`` is an error, not a short answer."""
    if state.finished:
        return []
    if not state.saw_message_delta:
        raise UpstreamProtocolError(
            f"backend '{state.backend_id}' ended the stream before the message was complete"
        )
    return _announce(state, _final(state))
