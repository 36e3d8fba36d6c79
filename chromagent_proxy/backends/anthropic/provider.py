"""The ``anthropic`` and ``vertex-anthropic`` backend types.

Both speak the Messages API through the same translator (request.py, stream.py,
response.py). They differ in URL, credentials and images:

- ``anthropic``: ``{baseUrl}/v1/messages``, ``x-api-key``, ``anthropic-version``
  header; remote image URLs are passed on as ``url`` sources (``inlineImages``
  fetches and inlines them instead).
- ``vertex-anthropic``: ``{baseUrl}/projects/{p}/locations/{l}/publishers/anthropic/
  models/{model}:rawPredict`` (``:streamRawPredict``), a Google bearer token
  (auth/google.py), ``anthropic_version`` in the body; Vertex rejects URL image
  sources, so remote images are always fetched through the guarded fetcher.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import ClassVar, Protocol
from urllib.parse import quote

import aiohttp
import msgspec

from ... import codec
from ...config import BackendConfig
from ...errors import UpstreamProtocolError
from ...media import collect_images
from ...schema.anthropic import StreamEvent
from ...schema.openai import ChatCompletionRequest
from ...sse import SSEDecoder
from ...upstream import DEFAULT_BODY_LIMIT, iter_body, open_response, read_capped
from ..base import BackendProvider, CompletionResult, StreamPart, current_context
from ..vertex import location_of, vertex_base_url
from .errors import UpstreamUnauthorized, http_error, ok_body_error
from .request import DEFAULT_MAX_TOKENS, build_body, response_tool
from .response import decode_message, to_chat_completion
from .stream import StreamState, decode_event, finish, step

DEFAULT_BASE_URL = "https://api.anthropic.com"
ANTHROPIC_VERSION = "2023-06-01"


class TokenSource(Protocol):
    """What auth/google.py's GoogleAuth offers (and what tests substitute)."""

    @property
    def refreshable(self) -> bool: ...

    async def headers(self) -> dict[str, str]: ...

    async def invalidate(self, token: str | None = None) -> None: ...


class AnthropicBackend(BackendProvider):
    type: ClassVar[str] = "anthropic"
    vertex: ClassVar[bool] = False

    def __init__(self) -> None:
        super().__init__()
        self._url = ""
        self._headers: dict[str, str] = {}
        self._max_tokens = DEFAULT_MAX_TOKENS
        self._fetch_remote = False
        self.auth: TokenSource | None = None

    def supports_tools(self) -> bool:
        return True

    def supports_images(self) -> bool:
        return True

    def validate_config(self, config: BackendConfig) -> tuple[bool, list[str]]:
        errors = self._check_common(config)
        base = (config.base_url or DEFAULT_BASE_URL).rstrip("/")
        if not base.startswith(("http://", "https://")):
            errors.append(f"baseUrl must start with http:// or https:// (got {base!r})")
        # Accept both "https://api.anthropic.com" and ".../v1" as baseUrl.
        self._url = base + ("/messages" if base.endswith("/v1") else "/v1/messages")
        headers = {
            "content-type": "application/json",
            "anthropic-version": ANTHROPIC_VERSION,
        }
        if config.api_key:
            headers["x-api-key"] = config.api_key
        headers.update(_lower(config.additional_headers))
        if "x-api-key" not in headers and "authorization" not in headers:
            errors.append("apiKey is required (or an x-api-key / Authorization additionalHeader)")
        self._headers = headers
        self._fetch_remote = config.inline_images
        return not errors, errors

    def _check_common(self, config: BackendConfig) -> list[str]:
        errors: list[str] = []
        if config.default_max_tokens is not None:
            if config.default_max_tokens < 1:
                errors.append("defaultMaxTokens must be a positive integer")
            self._max_tokens = config.default_max_tokens
        return errors

    def _url_for(self, model: str, stream: bool) -> str:
        return self._url

    async def _request_headers(self) -> dict[str, str]:
        if self.auth is None:
            return self._headers
        return {**self._headers, **(await self.auth.headers())}

    async def _prepare(self, request: ChatCompletionRequest) -> tuple[str, bytes]:
        assert self.runtime is not None
        images = await collect_images(
            request,
            self.runtime.images,
            fetch_remote=self._fetch_remote,
            limits=self.runtime.gateway.media,
        )
        body = build_body(
            request,
            request.model,
            images,
            default_max_tokens=self._max_tokens,
            vertex=self.vertex,
        )
        return self._url_for(request.model, bool(request.stream)), codec.dumps(body)

    async def _enter(
        self, stack: AsyncExitStack, config: BackendConfig, url: str, body: bytes
    ) -> aiohttp.ClientResponse:
        assert self.runtime is not None
        headers = await self._request_headers()
        try:
            return await stack.enter_async_context(
                open_response(
                    self.runtime,
                    config.id,
                    url,
                    headers,
                    body,
                    error_parser=http_error,
                    extra_headers=current_context().upstream_headers,
                )
            )
        except UpstreamUnauthorized:
            # A cached Google token can be revoked before expiry: refresh once, retry once.
            if self.auth is None or not self.auth.refreshable:
                raise
            await self.auth.invalidate(headers.get("Authorization"))
        headers = await self._request_headers()
        return await stack.enter_async_context(
            open_response(
                self.runtime,
                config.id,
                url,
                headers,
                body,
                error_parser=http_error,
                extra_headers=current_context().upstream_headers,
            )
        )

    @asynccontextmanager
    async def _post(
        self, config: BackendConfig, url: str, body: bytes
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        async with AsyncExitStack() as stack:
            yield await self._enter(stack, config, url, body)

    async def chat_completion(
        self, request: ChatCompletionRequest, config: BackendConfig
    ) -> CompletionResult:
        url, body = await self._prepare(request)
        async with self._post(config, url, body) as resp:
            data = await read_capped(resp, DEFAULT_BODY_LIMIT, config.id)
        try:
            msg = decode_message(data)
        except msgspec.DecodeError as exc:
            raise UpstreamProtocolError(
                f"backend '{config.id}' sent a response that is not a Messages object: {exc}"
            ) from None
        if msg.type == "error":  # an error envelope with HTTP 200: not an empty completion
            raise ok_body_error(config.id, data, resp.headers)
        return to_chat_completion(
            msg,
            id=f"chatcmpl-{current_context().request_id}",
            created=int(time.time()),
            model=request.model,
            response_tool=response_tool(request),
        )

    async def chat_completion_stream(
        self, request: ChatCompletionRequest, config: BackendConfig
    ) -> AsyncIterator[StreamPart]:
        url, body = await self._prepare(request)
        ctx = current_context()
        state = StreamState(
            id=f"chatcmpl-{ctx.request_id}",
            created=int(time.time()),
            model=request.model,
            include_usage=ctx.include_usage,
            response_tool=response_tool(request),
            backend_id=config.id,
        )
        decoder = SSEDecoder()
        async with self._post(config, url, body) as resp:
            async for data in iter_body(resp, config.id):
                for event in decoder.feed(data):
                    for chunk in step(state, _decode(event.data, config.id)):
                        yield chunk
            for event in decoder.flush():
                for chunk in step(state, _decode(event.data, config.id)):
                    yield chunk
        for chunk in finish(state):
            yield chunk


class VertexAnthropicBackend(AnthropicBackend):
    type: ClassVar[str] = "vertex-anthropic"
    vertex: ClassVar[bool] = True

    def validate_config(self, config: BackendConfig) -> tuple[bool, list[str]]:
        errors = self._check_common(config)
        if not config.project_id:
            errors.append("projectId is required")
        location = config.location
        if config.base_url:
            base = config.base_url.rstrip("/")
            if not base.startswith(("http://", "https://")):
                errors.append(f"baseUrl must start with http:// or https:// (got {base!r})")
            location = location or location_of(base)
            if not location:
                errors.append(
                    f"location is required (it cannot be read from the baseUrl host {base!r})"
                )
        elif location:
            base = vertex_base_url(location)
        else:
            base = ""
            errors.append(
                "set baseUrl (e.g. https://us-central1-aiplatform.googleapis.com/v1) or location"
            )
        self._url = (
            f"{base}/projects/{quote(config.project_id or '', safe='')}"
            f"/locations/{quote(location or '', safe='')}/publishers/anthropic/models/"
        )
        headers = {"content-type": "application/json"}
        extra = _lower(config.additional_headers)
        # Vertex takes the API version in the body (anthropic_version); the header is not its mechanism.
        extra.pop("anthropic-version", None)
        headers.update(extra)
        self._headers = headers
        self._fetch_remote = True  # Vertex rejects URL image sources
        if "authorization" not in headers and not errors:
            from ...auth.google import GoogleAuth

            self.auth = GoogleAuth(
                api_key=config.api_key,
                credentials_file=config.credentials_file,
                label=f"backend '{config.id}'",
            )
        return not errors, errors

    def _url_for(self, model: str, stream: bool) -> str:
        verb = ":streamRawPredict" if stream else ":rawPredict"
        return self._url + quote(model, safe="@._-") + verb


def _lower(headers: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def _decode(data: bytes, backend_id: str) -> StreamEvent:
    try:
        return decode_event(data)
    except msgspec.DecodeError as exc:
        raise UpstreamProtocolError(
            f"backend '{backend_id}' sent a malformed stream event: {exc}"
        ) from None
