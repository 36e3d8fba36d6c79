"""Hostile work per request, many at once, through the real gateway: compression bombs from
the upstream, exponential ``$ref`` schemas and image floods from clients. Each is refused
with its defined error while ordinary requests beside them succeed, and afterwards no
gateway task or upstream connection is left over.
"""

from __future__ import annotations

import asyncio
import json
import zlib
from typing import Any

import aiohttp
import pytest

from chromagent_proxy.backends.upstream_read import DECOMPRESSED_LIMIT
from tests.chaos.test_upstream_faults import COMPLETION, config, gateway
from tests.e2e.test_gemini_schema_budget import ref_dag
from tests.support.chaos import Conn, FaultServer, scaled

GEMINI_ANSWER = json.dumps(
    {
        "candidates": [
            {"content": {"role": "model", "parts": [{"text": "ok"}]}, "finishReason": "STOP"}
        ],
        "usageMetadata": {"promptTokenCount": 1, "candidatesTokenCount": 1, "totalTokenCount": 2},
    }
).encode()

# ~100 KB of gzip that inflates to 96 MiB of JSON whitespace (the cap is 64 MiB).
_c = zlib.compressobj(9, zlib.DEFLATED, 31)
BOMB = b"".join(_c.compress(b" " * (1 << 20)) for _ in range(96)) + _c.flush()

BACKENDS: dict[str, Any] = {
    "openai": lambda url: {"type": "openai", "baseUrl": f"{url}/v1", "apiKey": "k"},
    "gemini": lambda url: {"type": "gemini", "baseUrl": f"{url}/v1beta", "apiKey": "k"},
    "anthropic": lambda url: {"type": "anthropic", "baseUrl": url, "apiKey": "k"},
    "ollama": lambda url: {"type": "ollama", "baseUrl": url},
}


async def post(gw: Any, body: dict[str, Any]) -> tuple[int, bytes]:
    async with (
        aiohttp.ClientSession() as s,
        s.post(f"{gw.url}/v1/chat/completions", json=body) as r,
    ):
        return r.status, await r.read()


@pytest.mark.parametrize("kind", sorted(BACKENDS))
async def test_gzip_bombs_are_refused_and_ordinary_requests_carry_on(
    fault: FaultServer, kind: str
) -> None:
    good = FaultServer()
    await good.start()

    async def bomb(c: Conn) -> None:
        await c.send(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
            b"Content-Length: %d\r\n\r\n" % len(BOMB) + BOMB
        )

    async def ok(c: Conn) -> None:
        await c.reply(200, COMPLETION)

    fault.script, good.script = bomb, ok
    backends = [
        {"id": "up", **BACKENDS[kind](fault.url), "modelMapping": {"bomb": "bomb"}},
        {"id": "ok", "type": "openai", "baseUrl": f"{good.url}/v1", "modelMapping": {"m": "m"}},
    ]
    msg = [{"role": "user", "content": "hi"}]
    # Inflating four bombs to the 64 MiB cap at once takes longer than the suite's 0.4 s
    # timeout on a busy 2-core machine (a 504 instead of the 502 under test): a budget that
    # does not depend on the machine's load.
    slow_ok = {"timeout": 30_000, "timeouts": {"idleMs": 30_000, "connectMs": 30_000}}
    try:
        async with gateway(config(*backends, maxAttempts=1, **slow_ok)) as gw:
            # Not scaled up: each bomb may hold up to the 64 MiB cap until it is refused.
            results = await asyncio.gather(
                *(post(gw, {"model": "bomb", "messages": msg}) for _ in range(4)),
                *(post(gw, {"model": "m", "messages": msg}) for _ in range(20)),
            )
            bombs, oks = results[:4], results[4:]
            for status, body in bombs:
                assert status == 502, body
                err = json.loads(body)["error"]
                assert err["code"] == "upstream_protocol_error"
                assert f"inflates to more than {DECOMPRESSED_LIMIT} bytes" in err["message"]
            assert all(status == 200 for status, _ in oks)
    finally:
        await good.close()


async def test_schema_dags_and_image_floods_are_400s_beside_ordinary_requests(
    fault: FaultServer,
) -> None:
    async def answer(c: Conn) -> None:
        await c.reply(200, GEMINI_ANSWER)

    fault.script = answer
    backend = {"id": "up", "type": "gemini", "baseUrl": f"{fault.url}/v1beta", "apiKey": "k"}
    msg = [{"role": "user", "content": "hi"}]
    dag = {"type": "function", "function": {"name": "dag", "parameters": ref_dag(30)}}
    flood = [{"type": "image_url", "image_url": {"url": "data:image/png;base64,!!"}}] * 5_000
    n = scaled(100, 5)
    # Ordinary timeouts: 100 refusals of a few ms each are CPU the others queue behind.
    slow_ok = {"timeout": 30_000, "timeouts": {"idleMs": 30_000, "connectMs": 30_000}}
    async with gateway(config(backend, **slow_ok)) as gw:
        results = await asyncio.gather(
            *(post(gw, {"model": "g", "messages": msg, "tools": [dag]}) for _ in range(n)),
            *(
                post(gw, {"model": "g", "messages": [{"role": "user", "content": flood}]})
                for _ in range(n)
            ),
            *(post(gw, {"model": "g", "messages": msg}) for _ in range(n)),
        )
    codes = [
        json.loads(body)["error"]["code"] if status != 200 else "ok" for status, body in results
    ]
    assert codes == ["schema_too_large"] * n + ["too_many_images"] * n + ["ok"] * n, [
        body for status, body in results if status != 200 and b"upstream" in body
    ][:2]
    assert fault.requests == n  # only the ordinary requests reached the upstream
