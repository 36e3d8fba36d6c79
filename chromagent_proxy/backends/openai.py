"""OpenAI-compatible upstreams (OpenAI, vLLM, Groq, Ollama's /v1, LiteLLM...): a byte relay.

The client's raw body is sent unchanged unless ``modelMapping`` renames the
model, so every field this gateway does not know still reaches the upstream.
Stream events are relayed as they are; only an upstream error event is
decoded, to end the stream the OpenAI way.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, ClassVar

from .. import codec
from ..config import BackendConfig
from ..errors import InvalidRequest, UpstreamHTTPError, UpstreamProtocolError
from ..media import Image, check_inline_parts, collect_images
from ..schema.openai import ChatCompletionRequest
from ..sse import SSEDecoder, framed
from ..upstream import (
    DEFAULT_BODY_LIMIT,
    STREAM_ERRORS,
    body_chunks,
    error_in_ok_body,
    open_response,
    read_capped,
    stream_error,
)
from .base import BackendProvider, CompletionResult, StreamPart, current_context

DEFAULT_BASE_URL = "https://api.openai.com/v1"


class OpenAIBackend(BackendProvider):
    type: ClassVar[str] = "openai"
    # Chat Completions and embeddings are relayed as bytes (/v1/responses too, with
    # nativeResponses: see dialects/responses).
    native_dialects: ClassVar[frozenset[str]] = frozenset({"chat", "embeddings"})

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

    def _body(self, request: ChatCompletionRequest) -> bytes:
        ctx = current_context()
        # A stream's tokens are counted even when the client did not ask to see them: ask
        # the upstream for the usage chunk (the request path keeps it from the client).
        opts = request.stream_options
        add_usage = bool(request.stream) and not (opts is not None and opts.include_usage)
        if request.model == ctx.client_model and (opts is None or not add_usage):
            return _with_usage(ctx.raw_body) if add_usage else ctx.raw_body
        try:
            data: dict[str, Any] = codec.loads(ctx.raw_body)
        except ValueError as exc:  # e.g. a number beyond what orjson can hold (1e400)
            raise InvalidRequest(f"The request body cannot be re-encoded: {exc}") from None
        data["model"] = request.model
        if add_usage:
            data["stream_options"] = {"include_usage": True}
        return codec.dumps(data)

    async def _inline_images(
        self, request: ChatCompletionRequest, body: bytes, backend_id: str
    ) -> bytes:
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
        data: dict[str, Any] = codec.loads(body)
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

    async def post_native(self, name: str, body: bytes) -> bytes:
        """POST ``body`` to ``{baseUrl}/{name}`` and return the answer's bytes."""
        assert self.runtime is not None and self.config is not None
        url = self._endpoint(name)
        async with open_response(
            self.runtime,
            self.config.id,
            url,
            self._headers,
            body,
            extra_headers=current_context().upstream_headers,
        ) as resp:
            return await read_capped(resp, DEFAULT_BODY_LIMIT, self.config.id)

    async def stream_native(self, name: str, body: bytes) -> AsyncIterator[bytes]:
        """POST ``body`` to ``{baseUrl}/{name}`` and yield the streamed answer's bytes."""
        assert self.runtime is not None and self.config is not None
        url = self._endpoint(name)
        async with open_response(
            self.runtime,
            self.config.id,
            url,
            self._headers,
            body,
            extra_headers=current_context().upstream_headers,
        ) as resp:
            try:
                async for data in resp.content.iter_any():
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
        async with open_response(
            self.runtime,
            config.id,
            self._url,
            self._headers,
            body,
            extra_headers=current_context().upstream_headers,
        ) as resp:
            data = await read_capped(resp, DEFAULT_BODY_LIMIT, config.id)
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
        decoder = SSEDecoder()
        async with open_response(
            self.runtime,
            config.id,
            self._url,
            self._headers,
            body,
            extra_headers=current_context().upstream_headers,
        ) as resp:
            # body_chunks directly, not through upstream.iter_body: one async generator
            # less held per open stream (bench/README.md, memory per stream).
            try:
                async for data in body_chunks(resp, config.id):
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


def _stream_error(backend_id: str, payload: bytes) -> UpstreamHTTPError:
    try:
        data = codec.loads(payload)
        err = data.get("error", data) if isinstance(data, dict) else {}
    except ValueError:
        err = {}
    if not isinstance(err, dict):
        err = {"message": str(err)}
    code = err.get("code")
    return UpstreamHTTPError(
        f"backend '{backend_id}' reported an error mid-stream: {err.get('message', 'unknown error')}",
        type=err.get("type") if isinstance(err.get("type"), str) else "api_error",
        code=code if isinstance(code, str) else "upstream_error",
        retryable=False,
    )


_USAGE_OPTION = b'{"stream_options":{"include_usage":true},'


def _with_usage(body: bytes) -> bytes:
    """``stream_options.include_usage`` added to a body that has no ``stream_options``,
    without decoding it: the key goes first in the top-level object (the body decoded as
    a request, so it is an object with at least ``model`` and ``messages``)."""
    i = body.find(b"{")
    return body[:i] + _USAGE_OPTION + body[i + 1 :]
