"""A real gateway (and one fake upstream speaking every provider's wire format) on a
background event loop, so synchronous Hypothesis tests can drive it over plain HTTP.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from chromagent_proxy import GatewayServer
from chromagent_proxy.core.sse import SSEDecoder
from tests.support.fixtures import chunks_as_sse, fixture_path, load, load_chunks
from tests.support.upstream import FakeUpstream

# Client model name → backend that serves it.
MODELS = {
    "c-mock": "mock",
    "c-openai": "openai",
    "c-ollama": "ollama",
    "c-anthropic": "anthropic",
    "c-gemini": "gemini",
}


def recorded() -> dict[str, tuple[bytes, bytes]]:
    """(non-stream body, stream body) per provider, from the recorded fixtures."""
    openai_text = load_chunks(fixture_path("openai", "vercel-ai--openai-text.chunks.txt"))
    ollama_stream = load(
        fixture_path("ollama", "langchaingo--TestClient_GenerateChatStream.httprr")
    )
    gemini_json = load(fixture_path("gemini", "pydantic-ai--test_google_model_max_tokens.yaml"))
    ollama_final = {
        "model": "gemma3:1b",
        "created_at": "2025-08-20T13:48:23.241046Z",
        "message": {"role": "assistant", "content": "Hello there!"},
        "done": True,
        "done_reason": "stop",
        "prompt_eval_count": 5,
        "eval_count": 3,
    }
    return {
        "openai": (
            load(fixture_path("openai", "envoy-ai-gateway--chat-basic.yaml"))[0].body,
            chunks_as_sse(openai_text) + b"data: [DONE]\n\n",
        ),
        "ollama": (json.dumps(ollama_final).encode(), ollama_stream[0].body),
        "anthropic": (
            fixture_path("anthropic", "vercel-ai--anthropic-text.json").read_bytes(),
            chunks_as_sse(
                load_chunks(fixture_path("anthropic", "vercel-ai--anthropic-text.chunks.txt")),
                with_event_type=True,
            ),
        ),
        "gemini": (
            gemini_json[0].body,
            chunks_as_sse(load_chunks(fixture_path("gemini", "vercel-ai--google-text.chunks.txt"))),
        ),
    }


def _provider_of(path: str) -> tuple[str, bool | None]:
    if path.endswith("/chat/completions"):
        return "openai", None
    if path == "/api/chat":
        return "ollama", None
    if path.endswith("/messages"):
        return "anthropic", None
    if ":streamGenerateContent" in path:
        return "gemini", True
    return "gemini", False


def make_upstream_handler(
    recorded: dict[str, tuple[bytes, bytes]],
) -> Callable[[web.Request], Any]:
    async def handler(request: web.Request) -> web.StreamResponse:
        provider, stream = _provider_of(request.path)
        if stream is None:
            body = json.loads(await request.read())
            # Ollama streams unless told not to; the others only when asked.
            stream = bool(body.get("stream", provider == "ollama"))
        plain, streamed = recorded[provider]
        if not stream:
            return web.Response(body=plain, content_type="application/json")
        ctype = "application/x-ndjson" if provider == "ollama" else "text/event-stream"
        return web.Response(body=streamed, headers={"Content-Type": ctype})

    return handler


def contract_config(upstream_url: str) -> dict[str, Any]:
    def backend(bid: str, **kw: Any) -> dict[str, Any]:
        model = next(m for m, b in MODELS.items() if b == bid)
        return {"id": bid, "type": bid, "modelMapping": {model: f"{bid}-model"}, **kw}

    return {
        "host": "127.0.0.1",
        "port": 0,
        "defaultBackend": "mock",
        # No network in tests: a generated remote image URL must be a clear 400, not a fetch.
        "media": {"remoteFetch": False},
        "backends": [
            backend("mock"),
            backend("openai", baseUrl=f"{upstream_url}/v1", apiKey="k"),
            backend("ollama", baseUrl=upstream_url),
            backend("anthropic", baseUrl=upstream_url, apiKey="k"),
            backend("gemini", baseUrl=upstream_url, apiKey="k"),
        ],
    }


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def events(self) -> list[bytes]:
        dec = SSEDecoder()
        return [e.data for e in dec.feed(self.body) + dec.flush()]


class ThreadedGateway:
    """``with ThreadedGateway() as gw: gw.post(body)`` — gateway + fake upstream in a thread."""

    def __init__(self, config: Callable[[str], dict[str, Any]] = contract_config) -> None:
        self._config = config
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gateway", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self.port = 0

    def __enter__(self) -> ThreadedGateway:
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # surfaced to the test thread
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        upstream = await FakeUpstream().start()
        upstream.route("*", make_upstream_handler(recorded()))
        server = GatewayServer(self._config(upstream.url))
        await server.start()
        self.port = server.port
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await server.stop()
            await upstream.close()

    def get(self, path: str) -> Reply:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
        finally:
            conn.close()

    def post(
        self, body: bytes, path: str = "/v1/chat/completions", headers: dict[str, str] | None = None
    ) -> Reply:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(
                "POST",
                path,
                body=body,
                headers={"Content-Type": "application/json", **(headers or {})},
            )
            resp = conn.getresponse()
            return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
        finally:
            conn.close()
