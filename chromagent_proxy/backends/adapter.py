"""Custom backends that implement only the Chat Completions contract, for clients of
other dialects: IR request → ``ChatCompletionRequest`` → ``chat_completion`` /
``chat_completion_stream`` → IR events (DESIGN.md §9).

Results may be a ``ChatCompletion``, a dict or JSON bytes; stream parts a
``ChatCompletionChunk``, a dict, one chunk's JSON bytes, or framed SSE bytes
(``data: …``, e.g. ``sse.Framed``). Both go through the same Chat Completions step as
an OpenAI-compatible upstream (backends/openai_chat.py), so there is one translation.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

from .. import codec
from ..core import ir
from ..errors import UpstreamProtocolError
from ..schema.openai import ChatCompletionRequest
from ..sse import SSEDecoder
from . import openai_chat
from .base import BackendProvider, CompletionResult, RequestContext, StreamPart


def chat_request(request: ir.Request, *, stream: bool) -> ChatCompletionRequest:
    """The IR request as the Chat Completions request a custom backend takes."""
    return codec.convert(openai_chat.build(request, stream=stream), ChatCompletionRequest)


def _json(part: CompletionResult | StreamPart) -> bytes:
    if isinstance(part, bytes):
        return part
    if isinstance(part, Mapping):
        return codec.dumps(dict(part))
    return codec.encode(part)


async def legacy_generate(
    provider: BackendProvider, request: ir.Request, ctx: RequestContext
) -> list[ir.Event]:
    assert provider.config is not None
    result = await provider.chat_completion(chat_request(request, stream=False), provider.config)
    return openai_chat.answer(_json(result), ctx.backend_id)


async def legacy_generate_stream(
    provider: BackendProvider, request: ir.Request, ctx: RequestContext
) -> AsyncIterator[list[ir.Event]]:
    assert provider.config is not None
    backend_id = ctx.backend_id
    state = openai_chat.StreamState(backend_id, lenient=True)
    step, decode = openai_chat.step, openai_chat.decode
    parts = provider.chat_completion_stream(chat_request(request, stream=True), provider.config)
    async for part in parts:
        data = _json(part)
        if data[:5] == b"data:":  # already framed SSE: one or more events
            payloads = [e.data for e in SSEDecoder().feed(data) if e.data and e.data != b"[DONE]"]
        else:
            payloads = [data]
        out: list[ir.Event] = []
        for payload in payloads:
            try:
                chunk = decode(payload)
            except (codec.DecodeError, codec.ValidationError) as exc:
                raise _unreadable(backend_id, exc) from None
            out += step(state, chunk)
        if out:
            yield out
    out = openai_chat.finish(state)
    if out:
        yield out


def _unreadable(backend_id: str, exc: Exception) -> UpstreamProtocolError:
    return UpstreamProtocolError(
        f"backend '{backend_id}' yielded a stream part that is not a chat.completion.chunk: {exc}"
    )
