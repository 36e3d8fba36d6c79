"""The Chat Completions dialect (``/v1/chat/completions``): the OpenAI relay and custom
backends take it natively; translating backends get it through the IR."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec

from chromagent_proxy.core import codec, ir
from chromagent_proxy.core.accumulate import Answer
from chromagent_proxy.core.errors import GatewayError, InvalidRequest, UpstreamError
from chromagent_proxy.core.sse import DONE, Framed, frame
from chromagent_proxy.dialects.base import ConversationDialect, Inbound, decode_body
from chromagent_proxy.dialects.chat import decode, encode
from chromagent_proxy.dialects.routed import RoutedDecoder
from chromagent_proxy.schema.openai import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    StreamOptions,
)

if TYPE_CHECKING:  # a runtime import would point upward
    from chromagent_proxy.backends.base import BackendProvider, RequestContext

# stream_options watched: a body relay must know a client's "stream_options": null is there
# (it cannot add the usage option in front of it: the client's later null would win).
_decode_request = RoutedDecoder(ChatCompletionRequest, watch=("stream_options",))
_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


def parse_request(body: bytes) -> ChatCompletionRequest:
    return _parse(body)[0]


def _parse(body: bytes) -> tuple[ChatCompletionRequest, list[str]]:
    req, seen = decode_body(_decode_request.decode_seen, body)
    if not req.messages:
        raise InvalidRequest("'messages' must contain at least one message", param="messages")
    for i, msg in enumerate(req.messages):
        if msg.role not in _ROLES:
            raise InvalidRequest(
                f"messages[{i}].role must be one of system, developer, user, assistant, tool "
                f"(got {msg.role!r})",
                param=f"messages[{i}].role",
            )
        if msg.role == "tool" and not msg.tool_call_id:
            raise InvalidRequest(
                f"messages[{i}] has role 'tool' but no tool_call_id",
                param=f"messages[{i}].tool_call_id",
            )
    if req.n is not None and req.n < 1:
        raise InvalidRequest("'n' must be at least 1", param="n")
    return req, seen


class ChatDialect(ConversationDialect):
    name: ClassVar[str] = "chat"
    stream_end: ClassVar[bytes] = DONE

    def parse(self, body: bytes, headers: Mapping[str, str], query: Mapping[str, str]) -> Inbound:
        req, seen = _parse(body)
        stream = bool(req.stream)
        images = any(
            isinstance(m.content, list) and any(p.type == "image_url" for p in m.content)
            for m in req.messages
        )
        return Inbound(
            req.model,
            stream,
            bool(req.tools or req.functions),
            images,
            body,
            req,
            include_usage=bool(stream and req.stream_options and req.stream_options.include_usage),
            state=req.stream_options is None and "stream_options" in seen,  # sent as null
        )

    def to_ir(self, inbound: Inbound, backend_dialect: str) -> ir.Request:
        return decode.to_ir(_native(inbound), backend_dialect)

    def stream_encoder(self, inbound: Inbound, rid: str, model: str) -> encode.StreamEncoder:
        return encode.StreamEncoder(
            f"chatcmpl-{rid}", int(time.time()), model, inbound.include_usage
        )

    def complete(self, inbound: Inbound, answer: Answer, rid: str, model: str) -> bytes:
        return codec.encode(encode.completion(answer, f"chatcmpl-{rid}", int(time.time()), model))

    def error_body(self, err: GatewayError) -> tuple[int, bytes, dict[str, str]]:
        return err.status, err.body(), {}

    def stream_error(self, err: GatewayError, encoder: object = None) -> bytes:
        return frame(err.body())

    # -- native: the openai relay, and custom backends (the Chat Completions contract)

    def relays(self, provider: BackendProvider) -> bool:
        return not provider.translates or "chat" in provider.native_dialects

    @staticmethod
    def _upstream(
        provider: BackendProvider, inbound: Inbound, ctx: RequestContext
    ) -> ChatCompletionRequest:
        req = _native(inbound)
        cfg = provider.config
        if provider.relays_chat_body and not (cfg is not None and cfg.inline_images):
            # A body relay sends the client's raw bytes and reads only these fields: the
            # decoded messages are let go before it copies the body to rename the model
            # (a 1 MB prompt was held three times, issue 20). Another attempt that needs
            # them decodes the body again (_native).
            inbound.native = None
            # A client's "stream_options": null stands as an option that asks for nothing:
            # the relay then re-encodes the body with the usage option instead of putting
            # one in front of the null.
            opts = StreamOptions(include_usage=False) if inbound.state else req.stream_options
            return ChatCompletionRequest(
                ctx.upstream_model, [], stream=req.stream, stream_options=opts
            )
        if ctx.upstream_model == req.model:
            return req
        return msgspec.structs.replace(req, model=ctx.upstream_model)

    async def relay(
        self, provider: BackendProvider, inbound: Inbound, ctx: RequestContext
    ) -> tuple[bytes, ir.Usage | None]:
        assert provider.config is not None
        result = await provider.chat_completion(
            self._upstream(provider, inbound, ctx), provider.config
        )
        try:
            if isinstance(result, bytes):
                payload = result
            elif isinstance(result, Mapping):
                payload = codec.dumps(result)
            else:
                payload = codec.encode(result)
        except (TypeError, ValueError) as exc:
            raise UpstreamError(
                f"backend '{ctx.backend_id}' returned a result that is not JSON: {exc}",
                retryable=False,
            ) from None
        return payload, _usage_of(result)

    def relay_stream(
        self, provider: BackendProvider, inbound: Inbound, ctx: RequestContext
    ) -> AsyncIterator[Any]:
        assert provider.config is not None
        return provider.chat_completion_stream(
            self._upstream(provider, inbound, ctx), provider.config
        )

    def relayed(self, part: Any, want_usage: bool) -> tuple[bytes, ir.Usage | None]:
        """A relayed part: a framed batch (sse.Framed), one event's JSON bytes, or a chunk
        struct / dict from a custom backend. Usage is read on the way; a usage-only chunk
        the client did not ask for (the gateway asks upstreams for usage) is not written."""
        tp = type(part)
        if tp is Framed:
            return part, None
        if tp is bytes:
            if b'"prompt_tokens"' not in part:
                return frame(part), None
            usage = _usage_of(part)
            if not want_usage and _NO_CHOICES.search(part) is not None:
                return b"", usage
            return frame(part), usage
        usage = _usage_of(part)
        if usage is not None and not want_usage:
            choices = part.get("choices") if isinstance(part, Mapping) else part.choices
            if not choices:
                return b"", usage
        payload = codec.dumps(part) if isinstance(part, Mapping) else codec.encode(part)
        return frame(payload), usage


def _native(inbound: Inbound) -> ChatCompletionRequest:
    """The decoded request; decoded again from the body when a body relay let it go."""
    if inbound.native is None:
        inbound.native = parse_request(inbound.body)
    req: ChatCompletionRequest = inbound.native
    return req


_NO_CHOICES = re.compile(rb'"choices"\s*:\s*\[\s*\]')
_PROMPT = re.compile(rb'"prompt_tokens"\s*:\s*(\d+)')
_COMPLETION = re.compile(rb'"completion_tokens"\s*:\s*(\d+)')
_CACHED = re.compile(rb'"cached_tokens"\s*:\s*(\d+)')
_CACHE_WRITE = re.compile(rb'"cache_creation_tokens"\s*:\s*(\d+)')
_REASONING = re.compile(rb'"reasoning_tokens"\s*:\s*(\d+)')


def _int(m: re.Match[bytes] | None) -> int:
    return int(m.group(1)) if m else 0


def _split(prompt: int, completion: int, cached: int, cache_write: int, reasoning: int) -> ir.Usage:
    """OpenAI's counts (prompt includes the cache, completion the reasoning) → disjoint ir.Usage."""
    return ir.Usage(
        input=max(prompt - cached - cache_write, 0),
        output=max(completion - reasoning, 0),
        cache_read=cached,
        cache_write=cache_write,
        reasoning=reasoning,
    )


def _usage_of(result: Any) -> ir.Usage | None:
    """Token usage of a Chat Completions result or chunk in any shape a backend returns,
    with the cache and reasoning details when the backend reports them."""
    if type(result) is bytes:
        # Relayed JSON: look only at the "usage" object (at the end in practice) with
        # regex searches instead of decoding the whole body.
        i = result.rfind(b'"usage"')
        if i < 0:
            return None
        p = _PROMPT.search(result, i)
        c = _COMPLETION.search(result, i)
        if p is None and c is None:
            return None
        if result.find(b"_tokens_details", i) < 0:
            return ir.Usage(input=_int(p), output=_int(c))
        return _split(
            _int(p),
            _int(c),
            _int(_CACHED.search(result, i)),
            _int(_CACHE_WRITE.search(result, i)),
            _int(_REASONING.search(result, i)),
        )
    if isinstance(result, (ChatCompletion, ChatCompletionChunk)):
        u = result.usage
        if u is None:
            return None
        pd, cd = u.prompt_tokens_details, u.completion_tokens_details
        return _split(
            u.prompt_tokens,
            u.completion_tokens,
            pd.cached_tokens if pd is not None else 0,
            (pd.cache_creation_tokens or 0) if pd is not None else 0,
            cd.reasoning_tokens if cd is not None else 0,
        )
    if isinstance(result, Mapping):
        d = result.get("usage")
        if isinstance(d, Mapping):
            pdd, cdd = d.get("prompt_tokens_details"), d.get("completion_tokens_details")
            pdm: Mapping[str, Any] = pdd if isinstance(pdd, Mapping) else {}
            cdm: Mapping[str, Any] = cdd if isinstance(cdd, Mapping) else {}
            return _split(
                int(d.get("prompt_tokens") or 0),
                int(d.get("completion_tokens") or 0),
                int(pdm.get("cached_tokens") or 0),
                int(pdm.get("cache_creation_tokens") or 0),
                int(cdm.get("reasoning_tokens") or 0),
            )
    return None


CHAT = ChatDialect()
