"""Gemini ``GenerateContentResponse`` events → IR events (pure, synchronous).

Each Gemini SSE event is a whole ``GenerateContentResponse`` holding only new parts;
function calls arrive whole, so each becomes a ``ToolCallStart`` (carrying its
``thoughtSignature``) and one ``ToolCallDelta`` with the complete arguments.
``usageMetadata`` is a running snapshot: the last one wins, emitted by ``finish``.
The stream has no terminator; ``finish`` checks every candidate got a
``finishReason`` (else the stream was cut). A non-stream answer is the same
object once: ``answer`` runs the same step, so there is one translation.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from ... import codec
from ...core import ir
from ...errors import UpstreamProtocolError
from ...schema.gemini import GenerateContentResponse, UsageMetadata
from ..shell import Translator
from .errors import mid_stream_error

ORIGIN = "gemini"

# vercel/ai map-google-finish-reason.ts; wire-formats.md §4.3.
_CONTENT_FILTER = frozenset(
    {
        "SAFETY",
        "RECITATION",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
        "MODEL_ARMOR",
    }
)


def finish_reason(gemini: str | None, made_tool_call: bool) -> ir.FinishReason:
    if gemini == "MAX_TOKENS":
        return "length"
    if gemini in _CONTENT_FILTER:
        return "content_filter"
    # Gemini says STOP after function calls; clients loop on "tool_calls".
    return "tool_calls" if made_tool_call else "stop"


def usage_of(meta: UsageMetadata | None) -> ir.Usage:
    """Disjoint: Gemini's promptTokenCount includes the cached tokens; tool-use prompt
    tokens are input too; thoughts are reasoning, candidates the visible output."""
    if meta is None:
        return ir.Usage()
    prompt = meta.prompt_token_count + meta.tool_use_prompt_token_count
    cached = min(meta.cached_content_token_count, prompt)
    return ir.Usage(
        input=prompt - cached,
        output=meta.candidates_token_count,
        cache_read=cached,
        reasoning=meta.thoughts_token_count,
    )


def new_call_id() -> str:
    # Gemini sends no call ids (or only sometimes): clients need one to answer the call.
    return f"call_{uuid.uuid4().hex[:24]}"


@dataclass(slots=True)
class _Choice:
    calls: int = 0
    finished: bool = False


@dataclass(slots=True)
class StreamState:
    backend_id: str = "gemini"
    started: bool = False
    choices: dict[int, _Choice] = field(default_factory=dict)
    usage: UsageMetadata | None = None


def step(state: StreamState, event: GenerateContentResponse) -> list[ir.Event]:
    if event.error is not None:
        raise mid_stream_error(state.backend_id, event.error)
    if event.usage_metadata is not None:
        state.usage = event.usage_metadata
    out: list[ir.Event] = []
    if not state.started:
        state.started = True
        out.append(ir.Start(id=event.response_id))
    candidates = event.candidates or ()
    if not candidates:
        feedback = event.prompt_feedback
        if feedback is not None and feedback.block_reason and not state.choices:
            # The prompt was blocked: one empty answer, filtered.
            state.choices[0] = _Choice(finished=True)
            out.append(ir.Finish("content_filter"))
        return out
    for cand in candidates:
        index = cand.index
        choice = state.choices.get(index)
        if choice is None:
            choice = state.choices[index] = _Choice()
        if choice.finished:
            continue
        for part in (cand.content.parts if cand.content else None) or ():
            fc = part.function_call
            if fc is not None:
                k = choice.calls
                choice.calls += 1
                out.append(
                    ir.ToolCallStart(
                        k,
                        fc.id or new_call_id(),
                        fc.name,
                        signature=part.thought_signature,
                        origin=ORIGIN if part.thought_signature else None,
                        choice=index,
                    )
                )
                out.append(ir.ToolCallDelta(k, codec.dumps(fc.args or {}).decode(), index))
            elif part.text:
                if part.thought:
                    out.append(ir.ThinkingDelta(part.text, choice=index))
                else:
                    out.append(ir.TextDelta(part.text, index))
        if cand.finish_reason is not None:
            choice.finished = True
            out.append(ir.Finish(finish_reason(cand.finish_reason, choice.calls > 0), choice=index))
    return out


def finish(state: StreamState) -> list[ir.Event]:
    if not state.choices:
        raise UpstreamProtocolError(
            f"backend '{state.backend_id}' ended the stream without an answer"
        )
    if not all(c.finished for c in state.choices.values()):
        raise UpstreamProtocolError(
            f"backend '{state.backend_id}' ended the stream before the answer was finished"
        )
    return [usage_of(state.usage)]


def answer(resp: GenerateContentResponse, backend_id: str) -> list[ir.Event]:
    """A non-stream answer: the same events as its stream would give."""
    state = StreamState(backend_id)
    out = step(state, resp)
    if not state.choices:
        out.append(ir.Finish("stop"))  # no candidates and no block reason: an empty answer
        state.choices[0] = _Choice(finished=True)
    for index, c in state.choices.items():
        if not c.finished:  # a whole answer without finishReason is complete as it is
            out.append(ir.Finish(finish_reason(None, c.calls > 0), choice=index))
            c.finished = True
    return out + finish(state)


decode_event = codec.decoder(GenerateContentResponse).decode
TRANSLATOR: Translator[StreamState, GenerateContentResponse] = Translator(
    "sse", decode_event, step, finish
)
