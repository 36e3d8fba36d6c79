"""The ``ollama`` backend: native ``{baseUrl}/api/chat`` with NDJSON streaming.

The native API (not Ollama's /v1 layer) is used so tools, images, thinking and
``options`` such as ``num_ctx`` all work. ``GET {baseUrl}/api/tags`` tells
``/v1/models`` which models are pulled.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import aiohttp
from multidict import CIMultiDictProxy

from ... import codec
from ...config import BackendConfig
from ...core import ir
from ...errors import GatewayError, UpstreamHTTPError, UpstreamProtocolError, upstream_http_error
from ...media import collect_images
from ...schema.ollama import ChatResponse, TagList
from ...schema.openai import ChatCompletionRequest
from ...sse import NDJSONDecoder
from ...upstream import DEFAULT_BODY_LIMIT, ErrorParser, iter_body, open_response, read_capped
from ..base import BackendProvider, CompletionResult, RequestContext, StreamPart, current_context
from . import embed as embedding
from .request import build_body
from .response import to_completion
from .stream import StreamState, decode_line, error_of, finish, step

DEFAULT_BASE_URL = "http://localhost:11434"
# /api/tags is asked while a client waits for GET /v1/models: keep it short.
TAGS_TIMEOUT = aiohttp.ClientTimeout(total=2.0, sock_connect=1.0)
TAGS_BODY_LIMIT = 4 * 1024 * 1024

_decode_tags = codec.decoder(TagList).decode


class OllamaBackend(BackendProvider):
    type: ClassVar[str] = "ollama"

    def __init__(self) -> None:
        super().__init__()
        self.base_url = DEFAULT_BASE_URL
        self._chat_url = DEFAULT_BASE_URL + "/api/chat"
        self._tags_url = DEFAULT_BASE_URL + "/api/tags"
        self._embed_url = DEFAULT_BASE_URL + "/api/embed"
        self._headers: dict[str, str] = {}
        self._hint = ""

    def supports_tools(self) -> bool:
        return True

    def supports_images(self) -> bool:
        return True

    def validate_config(self, config: BackendConfig) -> tuple[bool, list[str]]:
        errors: list[str] = []
        base = (config.base_url or DEFAULT_BASE_URL).rstrip("/")
        if not base.startswith(("http://", "https://")):
            errors.append(f"baseUrl must start with http:// or https:// (got {base!r})")
        if base.endswith("/v1"):
            errors.append(
                f"baseUrl {base!r} points at Ollama's OpenAI layer; the ollama type speaks the "
                "native API, so give the server root (e.g. http://localhost:11434), or use "
                'type "openai" for the /v1 layer'
            )
        # ollama.com documents its cloud base as https://ollama.com/api; accept both spellings.
        base = base.removesuffix("/api")
        if isinstance(config.keep_alive, str) and not config.keep_alive.strip():
            errors.append('keepAlive must be a duration like "5m", a number of seconds, or -1')
        self.base_url = base
        self._chat_url = base + "/api/chat"
        self._tags_url = base + "/api/tags"
        self._embed_url = base + "/api/embed"
        headers = {"Content-Type": "application/json"}
        if config.api_key:
            headers["Authorization"] = f"Bearer {config.api_key}"
        headers.update(config.additional_headers)
        self._headers = headers
        # open_response already names the backend and the URL; this says what to check.
        self._hint = "; is Ollama running there? (start it with `ollama serve`, or fix baseUrl)"
        return not errors, errors

    async def _body(
        self, request: ChatCompletionRequest, config: BackendConfig, *, stream: bool
    ) -> bytes:
        assert self.runtime is not None
        images = await collect_images(
            request, self.runtime.images, limits=self.runtime.gateway.media
        )
        body = build_body(
            request,
            request.model,
            images,
            stream=stream,
            default_options=config.options,
            keep_alive=config.keep_alive,
            default_max_tokens=config.default_max_tokens,
        )
        return codec.dumps(body)

    def _open(
        self, request: ChatCompletionRequest, config: BackendConfig, body: bytes
    ) -> open_response:
        """POST ``body`` to /api/chat (``async with`` it for the response)."""
        assert self.runtime is not None
        return open_response(
            self.runtime,
            config.id,
            self._chat_url,
            self._headers,
            body,
            error_parser=_error_parser(request.model, self.base_url),
            hint=self._hint,
            extra_headers=current_context().upstream_headers,
        )

    async def chat_completion(
        self, request: ChatCompletionRequest, config: BackendConfig
    ) -> CompletionResult:
        body = await self._body(request, config, stream=False)
        async with self._open(request, config, body) as resp:
            data = await read_capped(resp, DEFAULT_BODY_LIMIT, config.id)
        resp_obj = _decode_whole(data, config.id)
        return to_completion(
            resp_obj,
            id=f"chatcmpl-{current_context().request_id}",
            created=int(time.time()),
            model=request.model,
        )

    async def chat_completion_stream(
        self, request: ChatCompletionRequest, config: BackendConfig
    ) -> AsyncIterator[StreamPart]:
        ctx = current_context()
        body = await self._body(request, config, stream=True)
        state = StreamState(
            f"chatcmpl-{ctx.request_id}",
            int(time.time()),
            request.model,
            config.id,
            ctx.include_usage,
        )
        decoder = NDJSONDecoder()
        async with self._open(request, config, body) as resp:
            async for data in iter_body(resp, config.id):
                for line in decoder.feed(data):
                    for chunk in step(state, line):
                        yield chunk
            for line in decoder.flush():
                for chunk in step(state, line):
                    yield chunk
        for chunk in finish(state):
            yield chunk

    async def embed(self, request: ir.EmbedRequest, ctx: RequestContext) -> ir.EmbedResult:
        assert self.runtime is not None and self.config is not None
        return await embedding.embed(
            self.runtime,
            self.config.id,
            self._embed_url,
            self._headers,
            request,
            self.config.keep_alive,
            _error_parser(request.model, self.base_url),
            self._hint,
        )

    async def list_models(self) -> list[str]:
        """The models pulled into this Ollama (``GET /api/tags``); raises when it is down."""
        assert self.runtime is not None and self.config is not None
        headers = {k: v for k, v in self._headers.items() if k != "Content-Type"}
        async with self.runtime.session.get(
            self._tags_url, headers=headers, timeout=TAGS_TIMEOUT, allow_redirects=False
        ) as resp:
            if resp.status != 200:
                raise UpstreamHTTPError(
                    f"backend '{self.config.id}' answered /api/tags with HTTP {resp.status}"
                )
            data = await read_capped(resp, TAGS_BODY_LIMIT, self.config.id)
        try:
            tags = _decode_tags(data)
        except (codec.DecodeError, codec.ValidationError) as exc:
            raise UpstreamProtocolError(
                f"backend '{self.config.id}' sent an unreadable /api/tags: {exc}"
            ) from None
        return [m.name or m.model for m in tags.models or [] if m.name or m.model]


def _decode_whole(data: bytes, backend_id: str) -> ChatResponse:
    resp = decode_line(data, backend_id)
    if resp.error is not None:
        raise error_of(backend_id, resp.error)
    if not resp.done and resp.message is None:
        raise UpstreamProtocolError(f"backend '{backend_id}' sent an empty answer")
    return resp


def _error_parser(model: str, base_url: str) -> ErrorParser:
    """Ollama errors are ``{"error": "<text>"}``; a 404 from /api/chat means the model is not pulled."""

    def parse(
        backend_id: str, status: int, body: bytes, headers: CIMultiDictProxy[str]
    ) -> GatewayError:
        message = _error_text(body)
        if status == 404:
            if message is None:
                # Not Ollama's JSON: something else answers at this URL.
                return UpstreamHTTPError(
                    f"backend '{backend_id}' has no Ollama /api/chat at {base_url} (HTTP 404); "
                    "baseUrl must be the Ollama server root, e.g. http://localhost:11434",
                    retryable=False,
                )
            return UpstreamHTTPError(
                f"model '{model}' is not available on backend '{backend_id}' ({message}); "
                f"pull it with `ollama pull {model}`",
                status=404,
                type="invalid_request_error",
                code="model_not_found",
                param="model",
                retryable=False,
            )
        text = message if message is not None else body[:500].decode("utf-8", "replace").strip()
        err = upstream_http_error(
            backend_id,
            status,
            text or f"upstream returned HTTP {status}",
            retry_after=headers.get("Retry-After"),
        )
        if status == 400 and "does not support tools" in text:
            err.param = "tools"
        return err

    return parse


def _error_text(body: bytes) -> str | None:
    try:
        data: Any = codec.loads(body)
    except ValueError:
        return None
    if isinstance(data, dict) and "error" in data:
        err = data["error"]
        if isinstance(err, dict):
            return str(err.get("message") or err)
        return str(err)
    return None
