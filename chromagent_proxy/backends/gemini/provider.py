"""Gemini backends: ``gemini`` (Gemini API) and ``vertex-gemini`` (Vertex AI).

Both speak the same body format; config decides the URL and the credentials:
- no ``projectId``: ``{baseUrl}/models/{m}:generateContent``, ``x-goog-api-key``
  header (never the query string); baseUrl defaults to the Gemini API.
- ``projectId``: ``{baseUrl}/projects/{p}/locations/{l}/publishers/google/models/{m}:…``
  with ``Authorization: Bearer`` from ``apiKey``, ``credentialsFile`` or ADC
  (auth/google.py); a 401 refreshes the token once and retries once.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, ClassVar
from urllib.parse import quote

import aiohttp

from ... import codec
from ...auth.google import GoogleAuth
from ...config import BackendConfig
from ...errors import InvalidRequest, UpstreamProtocolError
from ...media import collect_images
from ...schema.gemini import GenerateContentResponse
from ...schema.openai import ChatCompletionRequest
from ...sse import SSEDecoder
from ...upstream import DEFAULT_BODY_LIMIT, iter_body, open_response, read_capped
from ..base import BackendProvider, CompletionResult, StreamPart, current_context
from ..vertex import location_of, vertex_base_url
from . import stream
from .request import build_body, check_extras
from .response import Unauthorized, decode_response, gemini_error, to_completion, trailing_error

GEMINI_API = "https://generativelanguage.googleapis.com/v1beta"
_TAIL = 8192


class GeminiBackend(BackendProvider):
    type: ClassVar[str] = "gemini"

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
            location = config.location
            if config.base_url:
                host_location = location_of(config.base_url)
                if location and host_location and location != host_location:
                    errors.append(
                        f"location {location!r} does not match the baseUrl host "
                        f"(region {host_location!r})"
                    )
                if not location and not host_location:
                    errors.append(
                        "location is required when the baseUrl host does not name a region"
                    )
                location = location or host_location or "global"
                base = config.base_url
            else:
                location = location or "global"
                base = vertex_base_url(location)
            self._prefix = (
                f"{base.rstrip('/')}/projects/{quote(config.project_id, safe='')}"
                f"/locations/{quote(location, safe='')}/publishers/google/models/"
            )
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
            self._prefix = base.rstrip("/") + "/models/"
            if not config.api_key:
                errors.append(
                    "apiKey is required for the Gemini API (or set projectId to use Vertex AI)"
                )
            else:
                headers["x-goog-api-key"] = config.api_key
            if config.credentials_file:
                errors.append("credentialsFile needs projectId (Vertex AI)")
        if not base.startswith(("http://", "https://")):
            errors.append(f"baseUrl must start with http:// or https:// (got {base!r})")
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

    async def _body(self, request: ChatCompletionRequest, config: BackendConfig) -> bytes:
        assert self.runtime is not None
        check_extras(current_context().raw_body)
        images = await collect_images(
            request, self.runtime.images, limits=self.runtime.gateway.media
        )
        body = build_body(
            request,
            request.model,
            images,
            default_max_tokens=config.default_max_tokens,
            include_thoughts=self._include_thoughts,
            safety_settings=self._safety,
        )
        try:
            return codec.dumps(body)
        except TypeError:  # orjson's nesting limit (254), e.g. in replayed tool arguments
            raise InvalidRequest("the request is nested too deeply for Gemini") from None

    @asynccontextmanager
    async def _post(
        self, config: BackendConfig, url: str, body: bytes
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        assert self.runtime is not None
        async with AsyncExitStack() as stack:
            for attempt in (1, 2):
                headers = self._headers
                if self._auth is not None:
                    headers = {**headers, **await self._auth.headers()}
                try:
                    resp = await stack.enter_async_context(
                        open_response(
                            self.runtime,
                            config.id,
                            url,
                            headers,
                            body,
                            error_parser=gemini_error,
                            extra_headers=current_context().upstream_headers,
                        )
                    )
                except Unauthorized as exc:
                    if attempt == 2 or self._auth is None or not self._auth.refreshable:
                        raise exc.mapped from None
                    # The token was revoked or expired early: fetch a new one, retry once.
                    await self._auth.invalidate(headers.get("Authorization"))
                    continue
                yield resp
                return

    async def chat_completion(
        self, request: ChatCompletionRequest, config: BackendConfig
    ) -> CompletionResult:
        ctx = current_context()
        body = await self._body(request, config)
        async with self._post(config, self.url(request.model, stream=False), body) as resp:
            data = await read_capped(resp, DEFAULT_BODY_LIMIT, config.id)
        try:
            parsed = decode_response(data)
        except (codec.DecodeError, codec.ValidationError) as exc:
            raise UpstreamProtocolError(
                f"backend '{config.id}' sent a response that is not a Gemini answer: {exc}"
            ) from None
        return to_completion(parsed, f"chatcmpl-{ctx.request_id}", int(time.time()), request.model)

    async def chat_completion_stream(
        self, request: ChatCompletionRequest, config: BackendConfig
    ) -> AsyncIterator[StreamPart]:
        ctx = current_context()
        body = await self._body(request, config)
        state = stream.StreamState(
            id=f"chatcmpl-{ctx.request_id}",
            created=int(time.time()),
            model=request.model,
            backend_id=config.id,
            include_usage=ctx.include_usage,
        )
        decoder = SSEDecoder()
        tail = b""
        async with self._post(config, self.url(request.model, stream=True), body) as resp:
            async for data in iter_body(resp, config.id):
                # The last bytes, to find a raw JSON error appended after the last event.
                tail = data[-_TAIL:] if len(data) >= _TAIL else (tail + data)[-_TAIL:]
                for event in decoder.feed(data):
                    for chunk in stream.step(state, _decode_event(config.id, event.data)):
                        yield chunk
            for event in decoder.flush():
                for chunk in stream.step(state, _decode_event(config.id, event.data)):
                    yield chunk
        try:
            final = stream.finish(state)
        except UpstreamProtocolError:
            err = trailing_error(config.id, tail)
            if err is not None:
                raise err from None
            raise
        for chunk in final:
            yield chunk


def _decode_event(backend_id: str, payload: bytes) -> GenerateContentResponse:
    try:
        return stream.decode_event(payload)
    except (codec.DecodeError, codec.ValidationError) as exc:
        raise UpstreamProtocolError(
            f"backend '{backend_id}' sent a stream event that is not a Gemini answer: {exc}"
        ) from None


class VertexGeminiBackend(GeminiBackend):
    """Same translator; the name users configure for Vertex AI (needs ``projectId``
    for the Vertex URL shape; without it, it talks to the Gemini API like ``gemini``)."""

    type: ClassVar[str] = "vertex-gemini"
