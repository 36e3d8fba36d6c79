"""The ``ollama`` backend: native ``{baseUrl}/api/chat`` with NDJSON streaming.

The native API (not Ollama's /v1 layer) is used so tools, images, thinking and
``options`` such as ``num_ctx`` all work. ``GET {baseUrl}/api/tags`` tells
``/v1/models`` which models are pulled.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import ClassVar

import aiohttp

from chromagent_proxy.backends.base import BackendProvider, RequestContext
from chromagent_proxy.backends.ollama import embed as embedding
from chromagent_proxy.backends.ollama import stream
from chromagent_proxy.backends.ollama.errors import error_parser
from chromagent_proxy.backends.ollama.request import build_body
from chromagent_proxy.backends.shell import stream_events
from chromagent_proxy.backends.upstream import open_response
from chromagent_proxy.backends.upstream_read import ACCEPT_ENCODING, DEFAULT_BODY_LIMIT, read_capped
from chromagent_proxy.core import codec, ir
from chromagent_proxy.core.config import BackendConfig
from chromagent_proxy.core.errors import UpstreamHTTPError, UpstreamProtocolError
from chromagent_proxy.media.inline import inline_images
from chromagent_proxy.schema.ollama import TagList

DEFAULT_BASE_URL = "http://localhost:11434"
# /api/tags is asked while a client waits for GET /v1/models: keep it short.
TAGS_TIMEOUT = aiohttp.ClientTimeout(total=2.0, sock_connect=1.0)
TAGS_BODY_LIMIT = 4 * 1024 * 1024

_decode_tags = codec.decoder(TagList).decode


class OllamaBackend(BackendProvider):
    type: ClassVar[str] = "ollama"
    dialect: ClassVar[str] = "ollama"
    translates: ClassVar[bool] = True

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

    async def _open(
        self, request: ir.Request, ctx: RequestContext, *, stream: bool
    ) -> open_response:
        """POST the body to /api/chat (``async with`` it for the response)."""
        assert self.runtime is not None and self.config is not None
        await inline_images(request, self.runtime.images, self.runtime.gateway.media)
        config = self.config
        body = build_body(
            request,
            stream=stream,
            default_options=config.options,
            keep_alive=config.keep_alive,
            default_max_tokens=config.default_max_tokens,
        )
        return open_response(
            self.runtime,
            ctx.backend_id,
            self._chat_url,
            self._headers,
            codec.dumps(body),
            error_parser=error_parser(request.model),
            hint=self._hint,
            extra_headers=ctx.upstream_headers,
        )

    async def generate(self, request: ir.Request, ctx: RequestContext) -> list[ir.Event]:
        async with await self._open(request, ctx, stream=False) as resp:
            data = await read_capped(resp, DEFAULT_BODY_LIMIT, ctx.backend_id)
        try:
            parsed = stream.decode_line(data)
        except (codec.DecodeError, codec.ValidationError) as exc:
            raise UpstreamProtocolError(
                f"backend '{ctx.backend_id}' sent an answer that is not an Ollama chat object: {exc}"
            ) from None
        return stream.answer(parsed, ctx.backend_id)

    async def generate_stream(
        self, request: ir.Request, ctx: RequestContext
    ) -> AsyncIterator[list[ir.Event]]:
        state = stream.StreamState(ctx.backend_id)
        async with await self._open(request, ctx, stream=True) as resp:
            async for events in stream_events(resp, ctx.backend_id, stream.TRANSLATOR, state):
                yield events

    async def embed(self, request: ir.EmbedRequest, ctx: RequestContext) -> ir.EmbedResult:
        assert self.runtime is not None and self.config is not None
        return await embedding.embed(
            self.runtime,
            self.config.id,
            self._embed_url,
            self._headers,
            request,
            self.config.keep_alive,
            error_parser(request.model),
            self._hint,
        )

    async def list_models(self) -> list[str]:
        """The models pulled into this Ollama (``GET /api/tags``); raises when it is down."""
        assert self.runtime is not None and self.config is not None
        headers = {k: v for k, v in self._headers.items() if k != "Content-Type"}
        headers["Accept-Encoding"] = ACCEPT_ENCODING
        async with self.runtime.session.get(
            # read_capped inflates (bounded), as for every upstream answer
            self._tags_url,
            headers=headers,
            timeout=TAGS_TIMEOUT,
            allow_redirects=False,
            auto_decompress=False,
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
