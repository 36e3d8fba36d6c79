"""Graceful shutdown of the real CLI: SIGTERM during 50 open streams — it stops accepting,
/health answers 503 draining, every stream completes, exit 0; streams that outlive
shutdownTimeoutMs end with an error event, still exit 0."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.cli_process import CliProcess, start_gateway
from tests.support.upstream import FakeUpstream, stream_reply

WORDS = [f"w{i}" for i in range(10)]


def sse_pieces() -> list[bytes]:
    chunks = [
        {
            "id": "c",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "m",
            "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}],
        }
        for w in WORDS
    ]
    return [f"data: {json.dumps(c)}\n\n".encode() for c in chunks] + [b"data: [DONE]\n\n"]


async def start(upstream: FakeUpstream, tmp_path: Path, shutdown_ms: int) -> CliProcess:
    cfg = tmp_path / "gw.json"
    cfg.write_text(
        json.dumps(
            {
                "backends": [
                    {
                        "id": "up",
                        "type": "openai",
                        "baseUrl": f"{upstream.url}/v1",
                        "modelMapping": {"m": "m"},
                    }
                ],
                "shutdownTimeoutMs": shutdown_ms,
            }
        )
    )
    return await start_gateway(
        ["--config", str(cfg), "--port", "0", "--log-level", "warning"], tmp_path
    )


async def open_stream(s: aiohttp.ClientSession, url: str, started: asyncio.Queue[int]) -> str:
    body = {"model": "m", "messages": [{"role": "user", "content": "go"}], "stream": True}
    async with s.post(f"{url}/v1/chat/completions", json=body) as r:
        assert r.status == 200
        got = b""
        signalled = False
        async for data in r.content.iter_any():
            got += data
            if not signalled and b"data: {" in got:
                signalled = True
                await started.put(1)
        return got.decode()


async def wait_started(started: asyncio.Queue[int], n: int) -> None:
    async with asyncio.timeout(10):
        for _ in range(n):
            await started.get()


@pytest.mark.slow
async def test_sigterm_during_50_open_streams(upstream: FakeUpstream, tmp_path: Path) -> None:
    upstream.route("/v1/chat/completions", stream_reply(sse_pieces(), delay=0.08))
    p = await start(upstream, tmp_path, 10_000)
    started: asyncio.Queue[int] = asyncio.Queue()
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as s, aiohttp.ClientSession() as keepalive:
        async with keepalive.get(f"{p.url}/health") as r:  # an idle keep-alive connection
            assert r.status == 200
        streams = [asyncio.ensure_future(open_stream(s, p.url, started)) for _ in range(50)]
        await wait_started(started, 50)
        p.signal()
        await asyncio.sleep(0.2)
        # Draining: the listening socket is closed; an existing connection sees 503 draining.
        async with keepalive.get(f"{p.url}/health") as r:
            assert r.status == 503 and (await r.json())["status"] == "draining"
        async with aiohttp.ClientSession() as fresh:
            with pytest.raises(aiohttp.ClientConnectionError):
                async with fresh.get(f"{p.url}/health") as r:
                    pass
        assert p.proc.poll() is None  # still finishing the streams
        bodies = await asyncio.gather(*streams)
    for body in bodies:
        text = "".join(
            json.loads(line[6:])["choices"][0]["delta"]["content"]
            for line in body.split("\n")
            if line.startswith("data: {")
        )
        assert text == "".join(WORDS)
        assert body.endswith("data: [DONE]\n\n")
    assert await p.wait_exit(10) == 0


@pytest.mark.slow
async def test_streams_past_the_shutdown_timeout_get_an_error_event(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    upstream.route("/v1/chat/completions", stream_reply(sse_pieces()[:2], then_hang=True))
    p = await start(upstream, tmp_path, 300)
    started: asyncio.Queue[int] = asyncio.Queue()
    async with aiohttp.ClientSession() as s:
        streams = [asyncio.ensure_future(open_stream(s, p.url, started)) for _ in range(3)]
        await wait_started(started, 3)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        p.signal()
        bodies = await asyncio.gather(*streams)
        assert await p.wait_exit(10) == 0
        assert loop.time() - t0 < 3.0
    for body in bodies:
        events: list[dict[str, Any]] = [
            json.loads(line[6:]) for line in body.split("\n") if line.startswith("data: {")
        ]
        assert [e["choices"][0]["delta"]["content"] for e in events[:-1]] == ["w0", "w1"]
        assert "shutting down" in events[-1]["error"]["message"]
        assert "[DONE]" not in body
