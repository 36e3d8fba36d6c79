"""Gemini SSE events → OpenAI ``chat.completion.chunk``s (pure, synchronous).

Each Gemini event is a whole ``GenerateContentResponse`` holding only new
parts; function calls arrive whole, so each becomes one tool-call delta with
complete ``arguments``. ``usageMetadata`` is a running snapshot: the last one
wins. The stream has no terminator; ``finish`` checks every candidate got a
``finishReason`` (else the stream was cut) and emits the usage chunk.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ... import codec
from ...errors import UpstreamProtocolError
from ...schema.gemini import GenerateContentResponse, UsageMetadata
from ...schema.openai import (
    ChatCompletionChunk,
    ChunkChoice,
    Delta,
    FunctionDelta,
    ToolCallDelta,
)
from .ids import make_tool_call_id
from .response import finish_reason, mid_stream_error, usage_of


@dataclass(slots=True)
class _Choice:
    next_tool_index: int = 0
    finished: bool = False


@dataclass(slots=True)
class StreamState:
    id: str
    created: int
    model: str
    backend_id: str = "gemini"
    include_usage: bool = False
    choices: dict[int, _Choice] = field(default_factory=dict)
    usage: UsageMetadata | None = None


def _chunk(
    state: StreamState, index: int, delta: Delta, finish: str | None = None
) -> ChatCompletionChunk:
    return ChatCompletionChunk(
        state.id, state.created, state.model, [ChunkChoice(index, delta, finish)]
    )


def step(state: StreamState, event: GenerateContentResponse) -> list[ChatCompletionChunk]:
    if event.error is not None:
        raise mid_stream_error(state.backend_id, event.error)
    if event.usage_metadata is not None:
        state.usage = event.usage_metadata
    out: list[ChatCompletionChunk] = []
    candidates = event.candidates or ()
    if not candidates:
        feedback = event.prompt_feedback
        if feedback is not None and feedback.block_reason and not state.choices:
            # The prompt was blocked: one empty answer, filtered.
            state.choices[0] = _Choice(finished=True)
            out.append(_chunk(state, 0, Delta(role="assistant", content="")))
            out.append(_chunk(state, 0, Delta(), "content_filter"))
        return out
    for cand in candidates:
        choice = state.choices.get(cand.index)
        if choice is None:
            choice = state.choices[cand.index] = _Choice()
            out.append(_chunk(state, cand.index, Delta(role="assistant", content="")))
        if choice.finished:
            continue
        texts: list[str] = []
        thoughts: list[str] = []
        calls: list[ToolCallDelta] = []
        for part in (cand.content.parts if cand.content else None) or ():
            fc = part.function_call
            if fc is not None:
                calls.append(
                    ToolCallDelta(
                        index=choice.next_tool_index,
                        id=make_tool_call_id(part.thought_signature),
                        type="function",
                        function=FunctionDelta(fc.name, codec.dumps(fc.args or {}).decode()),
                    )
                )
                choice.next_tool_index += 1
            elif part.text:
                (thoughts if part.thought else texts).append(part.text)
        if texts or thoughts or calls:
            delta = Delta(
                content="".join(texts) or None,
                reasoning_content="".join(thoughts) or None,
                tool_calls=calls or None,
            )
            out.append(_chunk(state, cand.index, delta))
        if cand.finish_reason is not None:
            choice.finished = True
            reason = finish_reason(cand.finish_reason, choice.next_tool_index > 0)
            out.append(_chunk(state, cand.index, Delta(), reason))
    return out


def finish(state: StreamState) -> list[ChatCompletionChunk]:
    if not state.choices:
        raise UpstreamProtocolError(
            f"backend '{state.backend_id}' ended the stream without an answer"
        )
    if not all(c.finished for c in state.choices.values()):
        raise UpstreamProtocolError(
            f"backend '{state.backend_id}' ended the stream before the answer was finished"
        )
    if not state.include_usage:
        return []
    return [ChatCompletionChunk(state.id, state.created, state.model, [], usage_of(state.usage))]


decode_event = codec.decoder(GenerateContentResponse).decode
