"""The ``anthropic`` and ``vertex-anthropic`` backend types.

Both speak the Messages API through the same translator (request.py, stream.py). They
differ in URL, credentials and images:

- ``anthropic``: ``{baseUrl}/v1/messages``, ``x-api-key``, ``anthropic-version``
  header; remote image URLs are passed on as ``url`` sources (``inlineImages``
  fetches and inlines them instead).
- ``vertex-anthropic``: ``{baseUrl}/projects/{p}/locations/{l}/publishers/anthropic/
  models/{model}:rawPredict`` (``:streamRawPredict``), a Google bearer token
  (auth/google.py; one refresh-and-retry on 401, vertex.py), ``anthropic_version`` in
  the body; Vertex rejects URL image sources, so remote images are always fetched
  through the guarded fetcher.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack
from typing import ClassVar
from urllib.parse import quote

from chromagent_proxy.backends.anthropic import native, stream
from chromagent_proxy.backends.anthropic.errors import http_error, ok_body_error
from chromagent_proxy.backends.anthropic.request import (
    DEFAULT_MAX_TOKENS,
    build_body,
    response_tool,
)
from chromagent_proxy.backends.base import BackendProvider, RequestContext
from chromagent_proxy.backends.shell import stream_events
from chromagent_proxy.backends.upstream_read import (
    DEFAULT_BODY_LIMIT,
    UpstreamResponse,
    read_capped,
)
from chromagent_proxy.backends.vertex import TokenSource, model_prefix, post, retrying_parser
from chromagent_proxy.core import codec, ir
from chromagent_proxy.core.config import BackendConfig
from chromagent_proxy.core.errors import UpstreamProtocolError
from chromagent_proxy.media.inline import inline_images

DEFAULT_BASE_URL = "https://api.anthropic.com"
ANTHROPIC_VERSION = "2023-06-01"
_PARSER = retrying_parser(http_error)


class AnthropicBackend(BackendProvider):
    type: ClassVar[str] = "anthropic"
    dialect: ClassVar[str] = "anthropic"
    translates: ClassVar[bool] = True
    vertex: ClassVar[bool] = False
    native_dialects: ClassVar[frozenset[str]] = frozenset({"messages"})

    def __init__(self) -> None:
        super().__init__()
        self._url = ""
        self._headers: dict[str, str] = {}
        self._max_tokens = DEFAULT_MAX_TOKENS
        self._fetch_remote = False
        self._native_structured = True
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
        # Off by default on Vertex: its org policy (allowedPartnerModelFeatures) must allow it.
        native = config.options.get("nativeStructuredOutput", not self.vertex)
        if isinstance(native, bool):
            self._native_structured = native
        else:
            errors.append("options.nativeStructuredOutput must be true or false")
        return errors

    def _response_tool(self, request: ir.Request) -> str | None:
        return response_tool(request, vertex=self.vertex, native=self._native_structured)

    def _url_for(self, model: str, stream: bool) -> str:
        return self._url

    async def _post(self, request: ir.Request, ctx: RequestContext, *, stream: bool) -> post:
        assert self.runtime is not None
        await inline_images(
            request,
            self.runtime.images,
            self.runtime.gateway.media,
            fetch_remote=self._fetch_remote,
        )
        body = build_body(
            request,
            stream=stream,
            default_max_tokens=self._max_tokens,
            vertex=self.vertex,
            native_structured=self._native_structured,
        )
        url = self._url_for(request.model, stream)
        return post(
            self.runtime, ctx.backend_id, url, self._headers, codec.dumps(body), self.auth, _PARSER
        )

    async def generate(self, request: ir.Request, ctx: RequestContext) -> list[ir.Event]:
        async with await self._post(request, ctx, stream=False) as resp:
            data = await read_capped(resp, DEFAULT_BODY_LIMIT, ctx.backend_id)
        try:
            msg = stream.decode_message(data)
        except (codec.DecodeError, codec.ValidationError) as exc:
            raise UpstreamProtocolError(
                f"backend '{ctx.backend_id}' sent a response that is not a Messages object: {exc}"
            ) from None
        if msg.type == "error":  # an error envelope with HTTP 200: not an empty answer
            raise ok_body_error(ctx.backend_id, data, resp.headers)
        return stream.answer(msg, self._response_tool(request))

    async def generate_stream(
        self, request: ir.Request, ctx: RequestContext
    ) -> AsyncIterator[list[ir.Event]]:
        state = stream.StreamState(ctx.backend_id, self._response_tool(request))
        async with await self._post(request, ctx, stream=True) as resp:
            async for events in stream_events(resp, ctx.backend_id, stream.TRANSLATOR, state):
                yield events

    # -- the native Messages path (native.py; dialects/messages/relay.py calls these)

    async def open_messages(
        self,
        stack: AsyncExitStack,
        body: bytes,
        client_headers: Mapping[str, str],
        client_model: str,
        model: str,
        stream: bool,
        gateway_thinking: bool,
    ) -> UpstreamResponse:
        url = self._url_for(model, stream)
        sent = native.rewrite_body(self, body, client_model, model, gateway_thinking)
        return await native.open_native(self, stack, url, sent, client_headers)

    async def count_messages_tokens(
        self, body: bytes, client_headers: Mapping[str, str], model: str
    ) -> bytes:
        return await native.count_tokens(self, body, client_headers, model)


class VertexAnthropicBackend(AnthropicBackend):
    type: ClassVar[str] = "vertex-anthropic"
    vertex: ClassVar[bool] = True

    def validate_config(self, config: BackendConfig) -> tuple[bool, list[str]]:
        errors = self._check_common(config)
        if not config.project_id:
            errors.append("projectId is required")
        self._url = model_prefix(config, "anthropic", None, errors)
        headers = {"content-type": "application/json"}
        extra = _lower(config.additional_headers)
        # Vertex takes the API version in the body (anthropic_version); the header is not its mechanism.
        extra.pop("anthropic-version", None)
        headers.update(extra)
        self._headers = headers
        self._fetch_remote = True  # Vertex rejects URL image sources
        if "authorization" not in headers and not errors:
            from chromagent_proxy.auth.google import GoogleAuth

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
