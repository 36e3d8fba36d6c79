"""Ollama NDJSON lines → OpenAI chunks. Pure and synchronous; the provider owns the I/O.

Each line is one ``ChatResponse``: thinking and content deltas, tool calls that
arrive whole (never fragmented, never repeated), and a final ``done: true``
object with the finish reason and token counters (wire-formats.md §6.2).
"""

from __future__ import annotations

from dataclasses import dataclass

from ... import codec
from ...errors import UpstreamHTTPError, UpstreamProtocolError
from ...schema.ollama import ChatResponse, OllamaToolCall
from ...schema.openai import (
    ChatCompletionChunk,
    ChunkChoice,
    Delta,
    FunctionDelta,
    ToolCallDelta,
)
from .response import arguments_json, call_id, finish_reason, usage_of

_decode = codec.decoder(ChatResponse).decode


@dataclass(slots=True)
class StreamState:
    id: str
    created: int
    model: str
    backend_id: str
    include_usage: bool = False
    started: bool = False
    tool_calls: int = 0
    done: bool = False


def decode_line(line: bytes, backend_id: str) -> ChatResponse:
    try:
        return _decode(line)
    except (codec.DecodeError, codec.ValidationError) as exc:
        raise UpstreamProtocolError(
            f"backend '{backend_id}' sent a line that is not an Ollama chat object: {exc}"
        ) from None


def error_of(backend_id: str, error: object) -> UpstreamHTTPError:
    message = error if isinstance(error, str) else codec.dumps(error).decode()
    return UpstreamHTTPError(
        f"backend '{backend_id}' reported an error mid-stream: {message}", retryable=False
    )


def step(state: StreamState, line: bytes) -> list[ChatCompletionChunk]:
    """One NDJSON line in, zero or more chunks out. An ``error`` line raises."""
    if state.done:
        return []  # nothing meaningful follows the final object
    resp = _decode_or_raise(line, state.backend_id)
    out: list[ChatCompletionChunk] = []
    msg = resp.message
    if msg is not None:
        # Thinking and content in one line become two chunks, reasoning first (as Ollama's /v1 does).
        if msg.thinking:
            out.append(_chunk(state, _delta(state, reasoning_content=msg.thinking)))
        if msg.content:
            out.append(_chunk(state, _delta(state, content=msg.content)))
        if msg.tool_calls:
            deltas = [_tool_delta(state, tc) for tc in msg.tool_calls]
            out.append(_chunk(state, _delta(state, tool_calls=deltas)))
    if not state.started:
        out.append(_chunk(state, _delta(state, content="")))
    if resp.done:
        state.done = True
        reason = finish_reason(resp.done_reason, state.tool_calls > 0)
        out.append(_chunk(state, Delta(), reason))
        if state.include_usage:
            out.append(
                ChatCompletionChunk(state.id, state.created, state.model, [], usage_of(resp))
            )
    return out


def finish(state: StreamState) -> list[ChatCompletionChunk]:
    """End of the upstream body: the final ``done`` object must have arrived."""
    if not state.done:
        raise UpstreamProtocolError(
            f"backend '{state.backend_id}' ended the stream before its final (done) object"
        )
    return []


def _decode_or_raise(line: bytes, backend_id: str) -> ChatResponse:
    resp = decode_line(line, backend_id)
    if resp.error is not None:
        raise error_of(backend_id, resp.error)
    return resp


def _delta(
    state: StreamState,
    *,
    content: str | None = None,
    reasoning_content: str | None = None,
    tool_calls: list[ToolCallDelta] | None = None,
) -> Delta:
    role = None
    if not state.started:
        state.started = True
        role = "assistant"
    return Delta(
        role=role, content=content, tool_calls=tool_calls, reasoning_content=reasoning_content
    )


def _tool_delta(state: StreamState, tc: OllamaToolCall) -> ToolCallDelta:
    # Indexes count across the whole stream: calls may arrive in several lines.
    index = state.tool_calls
    state.tool_calls += 1
    return ToolCallDelta(
        index,
        call_id(tc),
        "function",
        FunctionDelta(tc.function.name, arguments_json(tc.function.arguments)),
    )


def _chunk(state: StreamState, delta: Delta, finish: str | None = None) -> ChatCompletionChunk:
    return ChatCompletionChunk(
        state.id, state.created, state.model, [ChunkChoice(0, delta, finish)]
    )
