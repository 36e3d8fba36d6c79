"""OpenAI-compatible upstreams (OpenAI, vLLM, Groq, Ollama's /v1, LiteLLM...).

For a Chat Completions client it is a byte relay: the client's raw body is sent
unchanged (``modelMapping`` rewrites only the model's bytes), so every field this gateway does
not know still reaches the upstream; stream events are relayed as they are, only an
upstream error event is decoded, to end the stream the OpenAI way. For clients of
other dialects it translates (``generate``): IR → Chat Completions → IR events
(backends/openai_chat.py) through the shared stream shell.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, ClassVar

from chromagent_proxy.backends import openai_chat
from chromagent_proxy.backends.base import (
    BackendProvider,
    CompletionResult,
    RequestContext,
    StreamPart,
    context_headers,
    current_context,
)
from chromagent_proxy.backends.shell import stream_events
from chromagent_proxy.backends.upstream import error_in_ok_body, open_response, post_read
from chromagent_proxy.backends.upstream_read import (
    DEFAULT_BODY_LIMIT,
    STREAM_ERRORS,
    body_chunks,
    read_capped,
    stream_error,
)
from chromagent_proxy.core import codec, ir
from chromagent_proxy.core.body import Body, insert_after_brace, joined
from chromagent_proxy.core.config import BackendConfig
from chromagent_proxy.core.errors import InvalidRequest, UpstreamHTTPError, UpstreamProtocolError
from chromagent_proxy.core.rawjson import rename_model_parts
from chromagent_proxy.core.sse import Framed, SSEDecoder, framed
from chromagent_proxy.media.images import Image, check_inline_parts, collect_images
from chromagent_proxy.media.inline import inline_images
from chromagent_proxy.schema.openai import ChatCompletionRequest

DEFAULT_BASE_URL = "https://api.openai.com/v1"


class OpenAIBackend(BackendProvider):
    type: ClassVar[str] = "openai"
    # Chat Completions and embeddings are relayed as bytes (/v1/responses too, with
    # nativeResponses: see dialects/responses); other dialects translate (generate).
    native_dialects: ClassVar[frozenset[str]] = frozenset({"chat", "embeddings"})
    dialect: ClassVar[str] = "openai"
    translates: ClassVar[bool] = True
    # chat_completion[_stream] send the client's raw body and read only the request's model,
    # stream and stream_options (so the chat dialect can let the decoded messages go).
    relays_chat_body: ClassVar[bool] = True

    def __init__(self) -> None:
        super().__init__()
        self._url = ""
        self._headers: dict[str, str] = {}

    def supports_tools(self) -> bool:
        return True

    def supports_images(self) -> bool:
        return True

    def validate_config(self, config: BackendConfig) -> tuple[bool, list[str]]:
        errors: list[str] = []
        base = config.base_url or DEFAULT_BASE_URL
        if not base.startswith(("http://", "https://")):
            errors.append(f"baseUrl must start with http:// or https:// (got {base!r})")
        self._url = base.rstrip("/") + "/chat/completions"
        headers = {"Content-Type": "application/json"}
        if config.api_key:
            headers["Authorization"] = f"Bearer {config.api_key}"
        headers.update(config.additional_headers)
        self._headers = headers
        return not errors, errors

    def _body(self, request: ChatCompletionRequest) -> Body:
        ctx = current_context()
        # A stream's tokens are counted even when the client did not ask to see them: ask
        # the upstream for the usage chunk (the request path keeps it from the client).
        opts = request.stream_options
        add_usage = bool(request.stream) and not (opts is not None and opts.include_usage)
        if request.model == ctx.client_model and (opts is None or not add_usage):
            return _with_usage(ctx.raw_body) if add_usage else ctx.raw_body
        if opts is None or not add_usage:
            # Only the model's bytes change (rawjson.py); the full re-encode below is the
            # fallback for bodies where that is not certain to be right. unique: the
            # request path refused a body with two top-level model keys (dialects/routed.py).
            # Pieces, not joined: the client's bytes go to the socket as they are.
            renamed = rename_model_parts(ctx.raw_body, ctx.client_model, request.model, unique=True)
            if renamed is not None:
                return _with_usage(renamed) if add_usage else renamed
        try:
            data: dict[str, Any] = codec.loads_exact(ctx.raw_body)
        except (
            ValueError,
            codec.DecodeError,
        ) as exc:  # e.g. a number beyond what orjson can hold (1e400)
            raise InvalidRequest(f"The request body cannot be re-encoded: {exc}") from None
        data["model"] = request.model
        if add_usage:
            data["stream_options"] = {"include_usage": True}
        return codec.dumps(data)

    async def _inline_images(
        self, request: ChatCompletionRequest, body: Body, backend_id: str
    ) -> Body:
        """``inlineImages``: fetch http(s) image URLs through the guarded fetcher and send them
        as data: URLs, so a self-hosted upstream (vLLM...) never fetches a user URL itself;
        part types that may carry other URLs (video_url, file...) are refused."""
        assert self.runtime is not None
        check_inline_parts(request, backend_id)
        images = await collect_images(
            request, self.runtime.images, decode_data=False, limits=self.runtime.gateway.media
        )
        remote: dict[str, Image] = {u: img for u, img in images.items() if u[:5].lower() != "data:"}
        if not remote:
            return body
        data: dict[str, Any] = codec.loads(joined(body))  # off the fast path: a copy is fine
        for msg in data.get("messages") or ():
            content = msg.get("content") if isinstance(msg, dict) else None
            for part in content if isinstance(content, list) else ():
                ref = part.get("image_url") if isinstance(part, dict) else None
                if isinstance(ref, dict) and ref.get("url") in remote:
                    img = remote[ref["url"]]
                    ref["url"] = f"data:{img.media_type};base64,{img.b64}"
        return codec.dumps(data)

    # -- native relays of other OpenAI endpoints (/v1/responses with nativeResponses)

    def _endpoint(self, name: str) -> str:
        return self._url.removesuffix("/chat/completions") + "/" + name

    async def post_native(self, name: str, body: Body) -> bytes:
        """POST ``body`` to ``{baseUrl}/{name}`` and return the answer's bytes."""
        assert self.runtime is not None and self.config is not None
        url = self._endpoint(name)
        return await post_read(
            self.runtime,
            self.config.id,
            url,
            self._headers,
            body,
            DEFAULT_BODY_LIMIT,
            extra_headers=context_headers(),
        )

    async def stream_native(self, name: str, body: Body) -> AsyncIterator[bytes]:
        """POST ``body`` to ``{baseUrl}/{name}`` and yield the streamed answer's bytes."""
        assert self.runtime is not None and self.config is not None
        url = self._endpoint(name)
        async with open_response(
            self.runtime,
            self.config.id,
            url,
            self._headers,
            body,
            extra_headers=context_headers(),
        ) as resp:
            try:
                async for data in body_chunks(resp, self.config.id):
                    yield data
            except STREAM_ERRORS as exc:
                raise stream_error(self.config.id, exc) from None

    async def chat_completion(
        self, request: ChatCompletionRequest, config: BackendConfig
    ) -> CompletionResult:
        assert self.runtime is not None
        body = self._body(request)
        if config.inline_images:  # off the fast path: only upstreams marked internal pay for it
            body = await self._inline_images(request, body, config.id)
        data = await post_read(
            self.runtime,
            config.id,
            self._url,
            self._headers,
            body,
            DEFAULT_BODY_LIMIT,
            extra_headers=context_headers(),
        )
        err = error_in_ok_body(config.id, data)
        if err is not None:
            raise err
        return data

    async def chat_completion_stream(
        self, request: ChatCompletionRequest, config: BackendConfig
    ) -> AsyncIterator[StreamPart]:
        assert self.runtime is not None
        body = self._body(request)
        if config.inline_images:  # off the fast path: only upstreams marked internal pay for it
            body = await self._inline_images(request, body, config.id)
        del request  # not held for the stream's life (memory per open stream, issue 20)
        decoder = SSEDecoder()
        async with open_response(
            self.runtime,
            config.id,
            self._url,
            self._headers,
            body,
            extra_headers=context_headers(),
        ) as resp:
            # body_chunks directly, not through a generator wrapper: one async generator
            # less held per open stream (bench/README.md, memory per stream).
            try:
                async for data in body_chunks(resp, config.id):
                    if data[:6] == b"data: " and decoder.idle:
                        # The read's leading plain events, already framed as they would be
                        # re-framed: passed on as they are, not split and joined again.
                        cut = plain_events(data)
                        if cut:
                            yield Framed(data) if cut == len(data) else Framed(data[:cut])
                            data = data[cut:]
                            if not data:
                                continue
                    # Events that arrived in one read leave in one write (sse.Framed); a usage
                    # event goes alone and unframed so the metrics layer can read its counts.
                    batch: list[bytes] = []
                    for event in decoder.feed(data):
                        payload = event.data
                        done = payload == b"[DONE]"
                        if done or event.event == "error" or payload.startswith(b'{"error"'):
                            if batch:
                                yield batch[0] if len(batch) == 1 else framed(batch)
                            if done:
                                return
                            raise _stream_error(config.id, payload)
                        if b'"prompt_tokens"' in payload:
                            if batch:
                                yield batch[0] if len(batch) == 1 else framed(batch)
                                batch = []
                            yield payload
                            continue
                        batch.append(payload)
                    if batch:
                        yield batch[0] if len(batch) == 1 else framed(batch)
            except STREAM_ERRORS as exc:
                raise stream_error(config.id, exc) from None
            for event in decoder.flush():
                if event.data == b"[DONE]":
                    return
                yield event.data
        raise UpstreamProtocolError(f"backend '{config.id}' ended the stream without [DONE]")

    # -- other client dialects: translate through the IR ------------------------------

    async def _open(
        self, request: ir.Request, ctx: RequestContext, *, stream: bool
    ) -> open_response:
        assert self.runtime is not None and self.config is not None
        # inlineImages: a self-hosted upstream never fetches a user URL itself.
        await inline_images(
            request,
            self.runtime.images,
            self.runtime.gateway.media,
            fetch_remote=self.config.inline_images,
        )
        body = codec.dumps(openai_chat.build(request, stream=stream))
        return open_response(
            self.runtime,
            ctx.backend_id,
            self._url,
            self._headers,
            body,
            extra_headers=ctx.upstream_headers,
        )

    async def generate(self, request: ir.Request, ctx: RequestContext) -> list[ir.Event]:
        async with await self._open(request, ctx, stream=False) as resp:
            data = await read_capped(resp, DEFAULT_BODY_LIMIT, ctx.backend_id)
        err = error_in_ok_body(ctx.backend_id, data)
        if err is not None:
            raise err
        return openai_chat.answer(data, ctx.backend_id)

    async def generate_stream(
        self, request: ir.Request, ctx: RequestContext
    ) -> AsyncIterator[list[ir.Event]]:
        state = openai_chat.StreamState(ctx.backend_id)
        async with await self._open(request, ctx, stream=True) as resp:
            async for events in stream_events(resp, ctx.backend_id, openai_chat.TRANSLATOR, state):
                yield events


def _stream_error(backend_id: str, payload: bytes) -> UpstreamHTTPError:
    try:
        data = codec.loads(payload)
        err = data.get("error", data) if isinstance(data, dict) else {}
    except ValueError:
        err = {}
    return openai_chat.error_of(backend_id, err)


# What the relay must look at itself: the end, an error, the usage (metrics).
_MARKERS = (b"[DONE]", b'{"error"', b'"prompt_tokens"')


def plain_events(data: bytes) -> int:
    """How many leading bytes of ``data`` are whole events the relay passes on unchanged:
    each exactly one ``data: <payload>`` line and a blank line (what ``framed`` would
    write back), none carrying a marker. 0 if the first event is not such an event.

    Counting instead of splitting (each pass ≈ 1 ns per byte): the prefix starts with
    ``data: `` and ends with a blank line; with k ``\\n\\ndata: `` in it, 2k + 2 line feeds
    mean there is no other one, so it is k + 1 one-line data events; no CR (other line
    endings take the decoder)."""
    end = data.rfind(b"\n\n") + 2
    for marker in _MARKERS:
        i = data.find(marker, 0, end)
        if i != -1:
            end = data.rfind(b"\n\n", 0, i) + 2
    if end < 8 or data[:6] != b"data: ":
        return 0
    k = data.count(b"\n\ndata: ", 0, end)
    if data.count(b"\n", 0, end) != 2 * k + 2 or data.find(b"\r", 0, end) != -1:
        return 0
    return end


_USAGE_OPTION = b'"stream_options":{"include_usage":true},'


def _with_usage(body: Body) -> Body:
    """``stream_options.include_usage`` added to a body that has no ``stream_options``,
    without decoding or copying it: the key goes first in the top-level object (the body
    decoded as a request, so it is an object with at least ``model`` and ``messages``)."""
    return insert_after_brace(body, _USAGE_OPTION)
