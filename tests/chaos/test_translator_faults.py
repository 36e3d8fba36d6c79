"""The same stream faults against the translating backends (anthropic, gemini, ollama):
their decoders must turn a broken upstream into one defined error, never a hang or a 500."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest

from tests.chaos.test_upstream_faults import call, closed, config, gateway, upstream_errors
from tests.support.chaos import Conn, FaultServer
from tests.support.fixtures import chunks_as_sse, fixture_path, load_chunks

ANTHROPIC = load_chunks(fixture_path("anthropic", "vercel-ai--anthropic-text.chunks.txt"))
GEMINI = load_chunks(fixture_path("gemini", "vercel-ai--google-text.chunks.txt"))

PROVIDERS: dict[str, dict[str, Any]] = {
    "anthropic": {
        "backend": {"type": "anthropic", "apiKey": "k"},
        "ctype": "text/event-stream",
        # message_start, content_block_start, ping, first text delta
        "good": chunks_as_sse(ANTHROPIC[:4], with_event_type=True),
        "invalid": b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{\n\n',
        "error": b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n',
    },
    "gemini": {
        "backend": {"type": "gemini", "apiKey": "k"},
        "ctype": "text/event-stream",
        "good": chunks_as_sse(GEMINI[:1]),
        "invalid": b'data: {"candidates": [{"content": \n\n',
        "error": b'data: {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}\n\n',
    },
    "ollama": {
        "backend": {"type": "ollama"},
        "ctype": "application/x-ndjson",
        "good": b'{"model":"m","created_at":"2025-08-20T13:48:24Z","message":{"role":"assistant","content":"Okay"},"done":false}\n',
        "invalid": b'{"model":"m","message":{"role":\n',
        "error": b'{"error":"model runner has unexpectedly stopped"}\n',
    },
}


def backend(provider: str, url: str) -> dict[str, Any]:
    return {"id": "up", "baseUrl": url, **PROVIDERS[provider]["backend"]}


def script(provider: str, *steps: bytes | str) -> Any:
    p = PROVIDERS[provider]

    async def run(c: Conn) -> None:
        await c.headers(ctype=p["ctype"])
        for step in steps:
            if step == "close":
                c.writer.close()
                return
            if step == "hang":
                await c.until_peer_closes()
                return
            await c.chunk(p[step] if isinstance(step, str) else step)
        await c.end()

    return run


providers = pytest.mark.parametrize("provider", sorted(PROVIDERS))


@providers
async def test_invalid_json_first_is_502(fault: FaultServer, provider: str) -> None:
    fault.script = script(provider, "invalid", "hang")
    async with gateway(config(backend(provider, fault.url))) as gw:
        a = await call(gw, stream=True)
        assert a.status == 502, a.body
        assert a.error["code"] == "upstream_protocol_error"
        assert await upstream_errors(gw, "protocol") == 1
        await closed(fault)


@providers
async def test_invalid_json_mid_stream_is_an_error_event(fault: FaultServer, provider: str) -> None:
    fault.script = script(provider, "good", "invalid", "hang")
    async with gateway(config(backend(provider, fault.url))) as gw:
        a = await call(gw, stream=True)
        assert a.status == 200, a.body
        assert len(a.events) >= 2 and b"[DONE]" not in a.events
        assert a.error["code"] == "upstream_protocol_error"
        assert await upstream_errors(gw, "protocol") == 1
        await closed(fault)


@providers
async def test_close_mid_event_is_an_error_event(fault: FaultServer, provider: str) -> None:
    half = PROVIDERS[provider]["good"][:25]
    fault.script = script(provider, "good", half, "close")
    async with gateway(config(backend(provider, fault.url))) as gw:
        a = await call(gw, stream=True)
        assert a.status == 200, a.body
        assert a.error["code"] == "upstream_protocol_error"
        assert b"[DONE]" not in a.events
        assert await upstream_errors(gw, "protocol") == 1
        await closed(fault)


@providers
async def test_silent_mid_stream_is_an_idle_timeout_event(
    fault: FaultServer, provider: str
) -> None:
    fault.script = script(provider, "good", "hang")
    async with gateway(config(backend(provider, fault.url))) as gw:
        a = await call(gw, stream=True)
        assert a.status == 200, a.body
        assert a.error["code"] == "upstream_timeout"
        assert await upstream_errors(gw, "timeout") == 1
        await closed(fault)


@providers
async def test_error_event_mid_stream_ends_the_stream_with_it(
    fault: FaultServer, provider: str
) -> None:
    fault.script = script(provider, "good", "error", "hang")
    async with gateway(config(backend(provider, fault.url))) as gw:
        a = await call(gw, stream=True)
        assert a.status == 200, a.body
        assert b"[DONE]" not in a.events
        err = a.error
        assert err["type"] and err["message"]
        # The upstream's own words reach the client.
        assert any(
            w in err["message"] for w in ("Overloaded", "overloaded", "unexpectedly stopped")
        ), err
        await closed(fault)


@providers
async def test_endless_line_is_capped(fault: FaultServer, provider: str) -> None:
    from chromagent_proxy.sse import MAX_LINE_BYTES

    async def run(c: Conn) -> None:
        await c.headers(ctype=PROVIDERS[provider]["ctype"])
        await c.chunk(PROVIDERS[provider]["good"])
        await c.chunk(b"data: " if provider != "ollama" else b"{")
        block = b"x" * 256 * 1024
        with pytest.raises(ConnectionError):
            while c.sent < 20 * MAX_LINE_BYTES:
                await c.chunk(block)

    fault.script = run
    async with gateway(config(backend(provider, fault.url))) as gw:
        a = await call(gw, stream=True)
        assert a.status == 200
        assert a.error["code"] == "upstream_protocol_error"
        await closed(fault)
    assert fault.conns[0].sent < MAX_LINE_BYTES + 16 * 1024 * 1024


REPEAT = {
    "anthropic": b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
    b'"delta":{"type":"text_delta","text":"x"}}\n\n',
    "gemini": PROVIDERS["gemini"]["good"],
    "ollama": PROVIDERS["ollama"]["good"],
}


@providers
async def test_aborted_streams_leave_no_task_and_no_upstream_connection(
    fault: FaultServer, provider: str
) -> None:
    """Clients leave mid-stream at random points while each translator is mid-translation."""
    import asyncio
    import random

    from tests.chaos.test_client_faults import HELLO, request_bytes
    from tests.support.chaos import eventually, scaled

    async def endless(c: Conn) -> None:
        await c.headers(ctype=PROVIDERS[provider]["ctype"])
        await c.chunk(PROVIDERS[provider]["good"])
        with contextlib.suppress(ConnectionError):
            for _ in range(2000):
                await c.chunk(REPEAT[provider])
                await asyncio.sleep(0.002)
        await c.until_peer_closes()

    fault.script = endless
    rng = random.Random(5)
    async with gateway(config(backend(provider, fault.url))) as gw:

        async def leave() -> None:
            r, w = await asyncio.open_connection("127.0.0.1", gw.port)
            w.write(request_bytes({**HELLO, "stream": True}))
            await r.read(rng.randrange(1, 5000))
            w.close()

        for _ in range(scaled(300, 60) // 20):
            await asyncio.gather(*(leave() for _ in range(20)))
        await eventually(lambda: fault.open == 0, 3, f"{provider}: upstream connections closed")
    assert fault.requests >= scaled(300, 60) // 2
