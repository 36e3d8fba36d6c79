"""Ollama NDJSON lines → IR events. Pure and synchronous; the shell owns the I/O.

Each line is one ``ChatResponse``: thinking and content deltas, tool calls that arrive
whole (never fragmented, never repeated), and a final ``done: true`` object with the
finish reason and token counters (wire-formats.md §6.2). A non-stream answer is the
same object once (``answer``), so there is one translation.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from ... import codec
from ...core import ir
from ...errors import UpstreamProtocolError
from ...schema.ollama import ChatResponse, OllamaToolCall
from ..shell import Translator
from .errors import error_of

decode_line = codec.decoder(ChatResponse).decode


def call_id(tc: OllamaToolCall) -> str:
    # Older Ollama versions send no ids; clients need one to answer the call.
    return tc.id or f"call_{uuid.uuid4().hex[:24]}"


def arguments_json(arguments: Any) -> str:
    """Ollama sends arguments as an object (or nothing); the IR keeps JSON text."""
    if arguments is None:
        return "{}"
    if isinstance(arguments, str):
        return arguments
    return codec.dumps(arguments).decode()


def finish_reason(done_reason: str | None, called_tools: bool) -> ir.FinishReason:
    """Ollama says "stop" even after tool calls; "length" when num_predict was hit."""
    if done_reason == "length":
        return "length"
    if called_tools:
        return "tool_calls"
    return "stop"


def usage_of(resp: ChatResponse) -> ir.Usage:
    # Ollama has no prompt cache counters; eval_count includes any thinking.
    return ir.Usage(input=resp.prompt_eval_count, output=resp.eval_count)


@dataclass(slots=True)
class StreamState:
    backend_id: str = "ollama"
    started: bool = False
    tool_calls: int = 0
    done: bool = False


def step(state: StreamState, resp: ChatResponse) -> list[ir.Event]:
    """One NDJSON line in, IR events out. An ``error`` line raises."""
    if state.done:
        return []  # nothing meaningful follows the final object
    if resp.error is not None:
        raise error_of(state.backend_id, resp.error)
    out: list[ir.Event] = []
    if not state.started:
        state.started = True
        out.append(ir.Start())
    msg = resp.message
    if msg is not None:
        # Thinking before content, as Ollama's /v1 does.
        if msg.thinking:
            out.append(ir.ThinkingDelta(msg.thinking))
        if msg.content:
            out.append(ir.TextDelta(msg.content))
        # Indexes count across the whole stream: calls may arrive in several lines.
        for tc in msg.tool_calls or ():
            k = state.tool_calls
            state.tool_calls += 1
            out.append(ir.ToolCallStart(k, call_id(tc), tc.function.name))
            out.append(ir.ToolCallDelta(k, arguments_json(tc.function.arguments)))
    if resp.done:
        state.done = True
        out.append(ir.Finish(finish_reason(resp.done_reason, state.tool_calls > 0)))
        out.append(usage_of(resp))
    return out


def finish(state: StreamState) -> list[ir.Event]:
    """End of the upstream body: the final ``done`` object must have arrived."""
    if not state.done:
        raise UpstreamProtocolError(
            f"backend '{state.backend_id}' ended the stream before its final (done) object"
        )
    return []


def answer(resp: ChatResponse, backend_id: str) -> list[ir.Event]:
    """A non-stream answer as the events its stream would give (it is the final object)."""
    if resp.error is not None:
        raise error_of(backend_id, resp.error)
    if not resp.done and resp.message is None:
        raise UpstreamProtocolError(f"backend '{backend_id}' sent an empty answer")
    state = StreamState(backend_id)
    out = step(state, resp)
    if not state.done:  # a whole answer is complete as it is
        out.append(ir.Finish(finish_reason(resp.done_reason, state.tool_calls > 0)))
        out.append(usage_of(resp))
    return out


TRANSLATOR: Translator[StreamState, ChatResponse] = Translator("ndjson", decode_line, step, finish)
