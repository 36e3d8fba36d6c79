"""Gemini backends: ``gemini`` (Gemini API) and ``vertex-gemini`` (Vertex AI).

Both speak the same body format; config decides the URL and the credentials:
- no ``projectId``: ``{baseUrl}/models/{m}:generateContent``, ``x-goog-api-key``
  header (never the query string); baseUrl defaults to the Gemini API.
- ``projectId``: ``{baseUrl}/projects/{p}/locations/{l}/publishers/google/models/{m}:…``
  with ``Authorization: Bearer`` from ``apiKey``, ``credentialsFile`` or ADC
  (auth/google.py); a 401 refreshes the token once and retries once (vertex.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial
from typing import Any, ClassVar
from urllib.parse import quote

from chromagent_proxy.auth.google import GoogleAuth
from chromagent_proxy.backends.base import BackendProvider, RequestContext
from chromagent_proxy.backends.gemini import count, stream
from chromagent_proxy.backends.gemini import embed as embedding
from chromagent_proxy.backends.gemini.errors import gemini_error, trailing_error
from chromagent_proxy.backends.gemini.request import build_body
from chromagent_proxy.backends.shell import stream_events
from chromagent_proxy.backends.upstream_read import DEFAULT_BODY_LIMIT, read_capped
from chromagent_proxy.backends.vertex import model_prefix, post, retrying_parser
from chromagent_proxy.core import codec, ir
from chromagent_proxy.core.config import BackendConfig
from chromagent_proxy.core.errors import InvalidRequest, UpstreamProtocolError
from chromagent_proxy.core.jsonlimits import unencodable
from chromagent_proxy.media.inline import inline_images

GEMINI_API = "https://generativelanguage.googleapis.com/v1beta"
_PARSER = retrying_parser(gemini_error)


class GeminiBackend(BackendProvider):
    type: ClassVar[str] = "gemini"
    dialect: ClassVar[str] = "gemini"
    translates: ClassVar[bool] = True

    def __init__(self) -> None:
        super().__init__()
        self._prefix = ""  # URL up to and excluding the model name
        self._headers: dict[str, str] = {}
        self._auth: GoogleAuth | None = None
        self._include_thoughts = False
        self._safety: list[Any] | None = None

    def supports_tools(self) -> bool:
        return True

    def supports_images(self) -> bool:
        return True

    @property
    def vertex(self) -> bool:
        return self._auth is not None

    def validate_config(self, config: BackendConfig) -> tuple[bool, list[str]]:
        errors: list[str] = []
        headers = {"Content-Type": "application/json"}
        if config.project_id:
            self._prefix = model_prefix(config, "google", "global", errors)
            try:
                self._auth = GoogleAuth(
                    api_key=config.api_key,
                    credentials_file=config.credentials_file,
                    label=f"backend '{config.id}'",
                )
            except ValueError as exc:
                errors.append(str(exc))
        else:
            base = config.base_url or GEMINI_API
            if not base.startswith(("http://", "https://")):
                errors.append(f"baseUrl must start with http:// or https:// (got {base!r})")
            self._prefix = base.rstrip("/") + "/models/"
            if not config.api_key:
                errors.append(
                    "apiKey is required for the Gemini API (or set projectId to use Vertex AI)"
                )
            else:
                headers["x-goog-api-key"] = config.api_key
            if config.credentials_file:
                errors.append("credentialsFile needs projectId (Vertex AI)")
        headers.update(config.additional_headers)
        self._headers = headers
        opts = config.options
        self._include_thoughts = bool(opts.get("includeThoughts", False))
        safety = opts.get("safetySettings")
        if safety is not None and not isinstance(safety, list):
            errors.append("options.safetySettings must be a list")
        self._safety = safety
        return not errors, errors

    def url(self, model: str, *, stream: bool) -> str:
        model = model.removeprefix("models/")
        method = ":streamGenerateContent?alt=sse" if stream else ":generateContent"
        return self._prefix + quote(model, safe="-_.@") + method

    async def _post(self, request: ir.Request, ctx: RequestContext, *, stream: bool) -> post:
        assert self.runtime is not None and self.config is not None
        await inline_images(request, self.runtime.images, self.runtime.gateway.media)
        body = build_body(
            request,
            default_max_tokens=self.config.default_max_tokens,
            include_thoughts=self._include_thoughts,
            safety_settings=self._safety,
        )
        try:
            data = codec.dumps(body)
        except TypeError:  # orjson's limits: nesting past 254, integers past 64 bits
            raise unencodable(ctx.raw_body) or InvalidRequest(
                "the request is nested too deeply for Gemini"
            ) from None
        url = self.url(request.model, stream=stream)
        return post(self.runtime, ctx.backend_id, url, self._headers, data, self._auth, _PARSER)

    async def generate(self, request: ir.Request, ctx: RequestContext) -> list[ir.Event]:
        async with await self._post(request, ctx, stream=False) as resp:
            data = await read_capped(resp, DEFAULT_BODY_LIMIT, ctx.backend_id)
        try:
            parsed = stream.decode_event(data)
        except (codec.DecodeError, codec.ValidationError) as exc:
            raise UpstreamProtocolError(
                f"backend '{ctx.backend_id}' sent a response that is not a Gemini answer: {exc}"
            ) from None
        return stream.answer(parsed, ctx.backend_id)

    async def generate_stream(
        self, request: ir.Request, ctx: RequestContext
    ) -> AsyncIterator[list[ir.Event]]:
        backend_id = ctx.backend_id
        async with await self._post(request, ctx, stream=True) as resp:
            async for events in stream_events(
                resp,
                backend_id,
                stream.TRANSLATOR,
                stream.StreamState(backend_id),
                trailing_error=partial(trailing_error, backend_id),
            ):
                yield events

    async def count_tokens(self, request: ir.Request, ctx: RequestContext) -> int:
        """Gemini's countTokens (POST /v1/messages/count_tokens; count.py)."""
        return await count.count_tokens(self, request, ctx, _PARSER)

    async def embed(self, request: ir.EmbedRequest, ctx: RequestContext) -> ir.EmbedResult:
        return await embedding.embed(self, request, ctx, _PARSER)


class VertexGeminiBackend(GeminiBackend):
    """Same translator; the name users configure for Vertex AI (needs ``projectId``
    for the Vertex URL shape; without it, it talks to the Gemini API like ``gemini``)."""

    type: ClassVar[str] = "vertex-gemini"
