"""Answers slower than headerTimeoutMs are never cut (issue 13, item 1).

The header timeout guards the wait for a request head only. Through the real
CLI with production settings, the official SDK (which writes head and body
separately), a 300 KB body, and a raw client writing head and body in two
writes must all get their whole answer when the upstream takes three times
the header timeout.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import openai
from aiohttp import web

from tests.support.cli_process import CliProcess, start_gateway
from tests.support.upstream import FakeUpstream

HEADER_TIMEOUT_MS = 500
SLOW_S = 3 * HEADER_TIMEOUT_MS / 1000  # every answer below takes 3x the header timeout

COMPLETION = {
    "id": "chatcmpl-slow",
    "object": "chat.completion",
    "created": 1,
    "model": "slow-model",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "late but whole"},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6},
}


def _chunk(content: str | None, finish: str | None = None) -> bytes:
    delta = {"content": content} if content is not None else {}
    data = {
        "id": "chatcmpl-slow",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "slow-model",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(data).encode() + b"\n\n"


async def slow_upstream(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    if not body.get("stream"):
        await asyncio.sleep(SLOW_S)
        return web.json_response(COMPLETION)
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    words = ["one ", "two ", "three ", "four ", "five ", "six"]
    for word in words:  # spread over SLOW_S
        await asyncio.sleep(SLOW_S / len(words))
        await resp.write(_chunk(word))
    await resp.write(_chunk(None, "stop"))
    await resp.write(b"data: [DONE]\n\n")
    await resp.write_eof()
    return resp


@asynccontextmanager
async def gateway(tmp_path: Path) -> AsyncIterator[tuple[CliProcess, FakeUpstream]]:
    up = await FakeUpstream().start()
    up.route("/v1/chat/completions", slow_upstream)
    cfg = tmp_path / "gw.json"
    cfg.write_text(
        json.dumps(
            {
                "headerTimeoutMs": HEADER_TIMEOUT_MS,
                "backends": [
                    {
                        "id": "slow",
                        "type": "openai",
                        "baseUrl": f"{up.url}/v1",
                        "apiKey": "sk-upstream",
                        "modelMapping": {"slow-model": "slow-model"},
                    }
                ],
            }
        )
    )
    gw = await start_gateway(["--config", str(cfg), "--port", "0"], tmp_path)
    try:
        yield gw, up
    finally:
        gw.signal()
        await gw.wait_exit()
        await up.close()


def client(gw: CliProcess) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{gw.url}/v1", api_key="unused", max_retries=0)


async def test_sdk_non_stream_answer_slower_than_the_header_timeout(tmp_path: Path) -> None:
    async with gateway(tmp_path) as (gw, _):
        async with client(gw) as c:
            answer = await c.chat.completions.create(
                model="slow-model", messages=[{"role": "user", "content": "take your time"}]
            )
    assert answer.choices[0].message.content == "late but whole"


async def test_sdk_stream_slower_than_the_header_timeout_ends_normally(tmp_path: Path) -> None:
    async with gateway(tmp_path) as (gw, _):
        async with client(gw) as c:
            stream = await c.chat.completions.create(
                model="slow-model",
                messages=[{"role": "user", "content": "stream slowly"}],
                stream=True,
            )
            text, finish = "", None
            async for chunk in stream:
                if chunk.choices:
                    text += chunk.choices[0].delta.content or ""
                    finish = chunk.choices[0].finish_reason or finish
    assert text == "one two three four five six"
    assert finish == "stop"


async def test_sdk_300_kb_body_with_a_slow_answer(tmp_path: Path) -> None:
    big = "x" * (300 * 1024)
    async with gateway(tmp_path) as (gw, up):
        async with client(gw) as c:
            answer = await c.chat.completions.create(
                model="slow-model", messages=[{"role": "user", "content": big}]
            )
        assert answer.choices[0].message.content == "late but whole"
        assert up.received[-1].json["messages"][0]["content"] == big


async def test_head_and_body_in_separate_writes_with_a_slow_answer(tmp_path: Path) -> None:
    body = json.dumps(
        {"model": "slow-model", "messages": [{"role": "user", "content": "two writes"}]}
    ).encode()
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    async with gateway(tmp_path) as (gw, _):
        port = int(gw.url.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(head)
            await writer.drain()
            await asyncio.sleep(0.1)  # the body comes in a read of its own
            writer.write(body)
            await writer.drain()
            async with asyncio.timeout(SLOW_S * 5):
                status_line = await reader.readline()
                headers = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in headers.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                payload = await reader.readexactly(length)
        finally:
            writer.close()
    assert status_line.startswith(b"HTTP/1.1 200"), status_line
    assert json.loads(payload)["choices"][0]["message"]["content"] == "late but whole"
