"""The Chat Completions backend dialect as a translator: IR request → Chat Completions
body, and ``chat.completion.chunk`` / ``chat.completion`` JSON → IR events.

Used when the client's dialect is not chat (a Messages or Responses client in front of
an OpenAI-compatible upstream), and by backends/adapter.py for custom backends that
only implement the Chat Completions contract. A chat client in front of an ``openai``
backend never comes here: that is a byte relay (backends/openai.py).

Thinking is dropped (Chat Completions has no way to send it back), and so are cache
markers and signatures; images go as ``image_url`` (data URLs keep the client's base64).
The stream is always asked for its usage (``stream_options.include_usage``), so tokens
are counted whatever the client asked to see.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from msgspec import Struct

from .. import codec
from ..core import ir
from ..errors import UpstreamHTTPError, UpstreamProtocolError
from .shell import Translator

# ---------------------------------------------------------------- request


def _image_url(img: ir.Image) -> dict[str, Any]:
    url = (
        f"data:{img.media_type or 'image/png'};base64,{img.data}"
        if img.data is not None
        else img.url
    )
    ref: dict[str, Any] = {"url": url}
    if img.detail:
        ref["detail"] = img.detail
    return {"type": "image_url", "image_url": ref}


def _content(parts: list[ir.Text | ir.Image]) -> str | list[dict[str, Any]]:
    if all(type(p) is ir.Text for p in parts):
        return "".join(p.text for p in parts if type(p) is ir.Text)
    return [
        {"type": "text", "text": p.text} if type(p) is ir.Text else _image_url(p)  # type: ignore[arg-type]
        for p in parts
    ]


def _messages(req: ir.Request) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if req.system:
        out.append({"role": "system", "content": "\n\n".join(t.text for t in req.system)})
    for msg in req.messages:
        if msg.role == "system":
            text = "\n\n".join(p.text for p in msg.parts if type(p) is ir.Text)
            out.append({"role": "system", "content": text})
        elif msg.role == "user":
            content: list[ir.Text | ir.Image] = []
            for part in msg.parts:
                if type(part) is ir.ToolResult:
                    out.append(
                        {
                            "role": "tool",
                            "tool_call_id": part.call_id,
                            "content": _content(part.content),
                        }
                    )
                elif type(part) is ir.Text or type(part) is ir.Image:
                    content.append(part)
            if content:
                out.append({"role": "user", "content": _content(content)})
        else:
            texts = [p.text for p in msg.parts if type(p) is ir.Text]
            calls = [
                {
                    "id": p.id,
                    "type": "function",
                    "function": {"name": p.name, "arguments": p.arguments or "{}"},
                }
                for p in msg.parts
                if type(p) is ir.ToolCall
            ]
            if not texts and not calls:
                continue  # thinking only: nothing Chat Completions can carry
            m: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
            if calls:
                m["tool_calls"] = calls
            out.append(m)
    return out


def _tool_choice(tc: ir.ToolChoice) -> Any:
    if tc.mode == "tool":
        return {"type": "function", "function": {"name": tc.name}}
    return tc.mode


def build(req: ir.Request, *, stream: bool) -> dict[str, Any]:
    """The Chat Completions body for ``req.model``."""
    s = req.settings
    body: dict[str, Any] = {"model": req.model, "messages": _messages(req)}
    if req.tools:
        tools = []
        for t in req.tools:
            fn: dict[str, Any] = {"name": t.name}
            if t.description is not None:
                fn["description"] = t.description
            if t.parameters is not None:
                fn["parameters"] = t.parameters
            if t.strict is not None:
                fn["strict"] = t.strict
            tools.append({"type": "function", "function": fn})
        body["tools"] = tools
    tc = req.tool_choice
    if tc is not None and req.tools:
        body["tool_choice"] = _tool_choice(tc)
        if tc.parallel is not None:
            body["parallel_tool_calls"] = tc.parallel
    if s.max_tokens is not None:
        # Reasoning models take only max_completion_tokens; older compatible servers only
        # max_tokens: the newer name where reasoning is asked for.
        key = "max_completion_tokens" if s.reasoning is not None else "max_tokens"
        body[key] = s.max_tokens
    optional = (
        ("temperature", s.temperature),
        ("top_p", s.top_p),
        ("stop", s.stop),
        ("seed", s.seed),
        ("presence_penalty", s.presence_penalty),
        ("frequency_penalty", s.frequency_penalty),
        ("n", s.n),
        ("logprobs", s.logprobs),
        ("top_logprobs", s.top_logprobs),
        ("user", req.user),
    )
    body.update({key: value for key, value in optional if value is not None})
    if s.reasoning is not None and s.reasoning.effort is not None:
        body["reasoning_effort"] = s.reasoning.effort
    rf = s.response_format
    if rf is not None and rf.type != "text":
        if rf.type == "json_object":
            body["response_format"] = {"type": "json_object"}
        else:
            js: dict[str, Any] = {"name": rf.name or "response", "schema": rf.schema or {}}
            if rf.description:
                js["description"] = rf.description
            if rf.strict is not None:
                js["strict"] = rf.strict
            body["response_format"] = {"type": "json_schema", "json_schema": js}
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


# ---------------------------------------------------------------- answers


class _Function(Struct):
    name: str | None = None
    arguments: str | None = None


class _Call(Struct):
    index: int | None = None
    id: str | None = None
    function: _Function | None = None


class _Delta(Struct):
    content: str | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None  # vLLM, Ollama's /v1
    tool_calls: list[_Call] | None = None


class _Choice(Struct):
    index: int = 0
    delta: _Delta | None = None
    message: _Delta | None = None
    finish_reason: str | None = None


class _PromptDetails(Struct):
    cached_tokens: int | None = None
    cache_creation_tokens: int | None = None


class _CompletionDetails(Struct):
    reasoning_tokens: int | None = None


class _Usage(Struct):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    prompt_tokens_details: _PromptDetails | None = None
    completion_tokens_details: _CompletionDetails | None = None


class Chunk(Struct):
    """A ``chat.completion.chunk`` or a ``chat.completion`` (only what the step reads)."""

    id: str | None = None
    model: str | None = None
    choices: list[_Choice] | None = None
    usage: _Usage | None = None
    error: Any = None


decode = codec.decoder(Chunk).decode

_FINISH: dict[str, ir.FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}


def usage_of(u: _Usage) -> ir.Usage:
    """Disjoint: prompt_tokens includes cached (and, where reported, cache-write) tokens;
    completion_tokens includes reasoning."""
    pd, cd = u.prompt_tokens_details, u.completion_tokens_details
    cached = (pd.cached_tokens or 0) if pd else 0
    written = (pd.cache_creation_tokens or 0) if pd else 0
    reasoning = (cd.reasoning_tokens or 0) if cd else 0
    prompt, completion = u.prompt_tokens or 0, u.completion_tokens or 0
    return ir.Usage(
        input=max(prompt - cached - written, 0),
        output=max(completion - reasoning, 0),
        cache_read=cached,
        cache_write=written,
        reasoning=reasoning,
    )


def error_of(backend_id: str, error: Any) -> UpstreamHTTPError:
    """An OpenAI error object inside a 200 stream (or body)."""
    err = error if isinstance(error, dict) else {"message": str(error)}
    code, etype = err.get("code"), err.get("type")
    return UpstreamHTTPError(
        f"backend '{backend_id}' reported an error mid-stream: {err.get('message', 'unknown error')}",
        type=etype if isinstance(etype, str) else "api_error",
        code=code if isinstance(code, str) else "upstream_error",
        retryable=False,
    )


@dataclass(slots=True)
class _ChoiceState:
    calls: dict[int, int] = field(default_factory=dict)  # upstream index → IR index
    finished: bool = False


@dataclass(slots=True)
class StreamState:
    backend_id: str = "openai"
    #: Custom backends may end without a finish_reason: end their choices as "stop".
    lenient: bool = False
    started: bool = False
    choices: dict[int, _ChoiceState] = field(default_factory=dict)
    usage: ir.Usage | None = None


def step(state: StreamState, chunk: Chunk) -> list[ir.Event]:
    if chunk.error is not None:
        raise error_of(state.backend_id, chunk.error)
    out: list[ir.Event] = []
    if not state.started:
        state.started = True
        out.append(ir.Start(model=chunk.model or None, id=chunk.id or None))
    if chunk.usage is not None:
        state.usage = usage_of(chunk.usage)
    for ch in chunk.choices or ():
        index = ch.index
        cs = state.choices.get(index)
        if cs is None:
            cs = state.choices[index] = _ChoiceState()
        d = ch.delta or ch.message
        if d is not None:
            thought = d.reasoning_content or d.reasoning
            if thought:
                out.append(ir.ThinkingDelta(thought, choice=index))
            if d.content:
                out.append(ir.TextDelta(d.content, index))
            for pos, call in enumerate(d.tool_calls or ()):
                up = call.index if call.index is not None else pos
                k = cs.calls.get(up)
                fn = call.function
                if k is None:
                    k = cs.calls[up] = len(cs.calls)
                    cid = call.id or f"call_{state.backend_id}_{index}_{k}"
                    out.append(
                        ir.ToolCallStart(k, cid, (fn.name if fn else None) or "", choice=index)
                    )
                if fn is not None and fn.arguments:
                    out.append(ir.ToolCallDelta(k, fn.arguments, index))
        if ch.finish_reason is not None and not cs.finished:
            cs.finished = True
            reason = _FINISH.get(ch.finish_reason, "stop")
            out.append(ir.Finish(reason, choice=index))
    return out


def finish(state: StreamState) -> list[ir.Event]:
    out: list[ir.Event] = []
    unfinished = [i for i, c in state.choices.items() if not c.finished]
    if unfinished or not state.choices:
        if not state.lenient:
            raise UpstreamProtocolError(
                f"backend '{state.backend_id}' ended the stream before the answer was finished"
            )
        out += [
            ir.Finish("tool_calls" if state.choices[i].calls else "stop", choice=i)
            for i in unfinished
        ]
        if not state.choices:
            out.append(ir.Finish("stop"))
    if state.usage is not None:
        out.append(state.usage)
    return out


def answer(data: bytes, backend_id: str) -> list[ir.Event]:
    """A whole ``chat.completion`` as the events its stream would give (complete as it
    is: a choice without finish_reason ends as "stop")."""
    try:
        completion = decode(data)
    except (codec.DecodeError, codec.ValidationError) as exc:
        raise UpstreamProtocolError(
            f"backend '{backend_id}' sent a response that is not a chat completion: {exc}"
        ) from None
    state = StreamState(backend_id, lenient=True)
    out = step(state, completion)
    return out + finish(state)


TRANSLATOR: Translator[StreamState, Chunk] = Translator("sse", decode, step, finish)
