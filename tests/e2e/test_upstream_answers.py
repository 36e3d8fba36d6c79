"""What upstreams send back, end to end (official SDK → real gateway → fake upstream):
compressed answers are inflated step by step and bounded (a gzip bomb is an error and the
gateway carries on), and an HTTP 200 carrying an error body is an error, not an answer.
"""

from __future__ import annotations

import asyncio
import json
import zlib
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp import web

from chromagent_proxy.backends.upstream_read import DECOMPRESSED_LIMIT
from tests.support.gateway import run_gateway, sdk
from tests.support.upstream import FakeUpstream, Handler, stream_reply

MSG: Any = [{"role": "user", "content": "hi"}]
ANSWER: dict[str, Any] = {
    "id": "c1",
    "object": "chat.completion",
    "created": 1,
    "model": "m",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "fine"}, "finish_reason": "stop"}
    ],
}


def chunk(text: str) -> bytes:
    body = {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
    }
    return b"data: " + json.dumps(body).encode() + b"\n\n"


SSE = chunk("hel") + chunk("lo") + b"data: [DONE]\n\n"


def compress(data: bytes, encoding: str) -> bytes:
    wbits = {"gzip": 31, "deflate": 15, "raw-deflate": -15}[encoding]
    c = zlib.compressobj(9, zlib.DEFLATED, wbits)
    return c.compress(data) + c.flush()


def compressed(body: bytes, encoding: str, content_type: str) -> Handler:
    wire = "deflate" if encoding == "raw-deflate" else encoding

    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": content_type, "Content-Encoding": wire})
        await resp.prepare(request)
        for i in range(0, len(body), 7):  # small writes: inflating must work across reads
            await resp.write(body[i : i + 7])
        await resp.write_eof()
        return resp

    return handler


def openai_config(up: FakeUpstream) -> dict[str, Any]:
    return {
        "backends": [{"id": "o", "type": "openai", "baseUrl": f"{up.url}/v1", "apiKey": "k"}],
        "defaultBackend": "o",
        "maxAttempts": 1,
    }


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "raw-deflate"])
async def test_compressed_answers_are_inflated(upstream: FakeUpstream, encoding: str) -> None:
    async with run_gateway(openai_config(upstream)) as gw:
        client = sdk(gw)
        upstream.route(
            "*",
            compressed(
                compress(json.dumps(ANSWER).encode(), encoding), encoding, "application/json"
            ),
        )
        answer = await client.chat.completions.create(model="m", messages=MSG)
        assert answer.choices[0].message.content == "fine"
        upstream.route("*", compressed(compress(SSE, encoding), encoding, "text/event-stream"))
        text = ""
        async for part in await client.chat.completions.create(
            model="m", messages=MSG, stream=True
        ):
            text += part.choices[0].delta.content or ""
        assert text == "hello"
    # The gateway offers only what it can inflate step by step.
    assert upstream.received[0].headers["Accept-Encoding"] == "gzip, deflate"


async def test_gzip_bomb_stream_is_an_error_and_other_streams_carry_on(
    upstream: FakeUpstream,
) -> None:
    # ~650 KB on the wire, 96 MB of events once inflated (the limit is 64 MB).
    c = zlib.compressobj(1, zlib.DEFLATED, 31)
    block = chunk("a" * 200) * 4000
    bomb = b"".join(c.compress(block) for _ in range(96 * 1024 * 1024 // len(block))) + c.flush()
    gate = asyncio.Event()

    async def route(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if body["model"] == "bomb":
            return await compressed(bomb, "gzip", "text/event-stream")(request)
        return await stream_reply(
            [chunk("slow"), chunk(" but fine"), b"data: [DONE]\n\n"], gate=gate
        )(request)

    upstream.route("*", route)
    async with run_gateway(openai_config(upstream)) as gw:
        client = sdk(gw)
        other = await client.chat.completions.create(model="ok", messages=MSG, stream=True)
        first = await other.__anext__()
        assert first.choices[0].delta.content == "slow"
        # Raw HTTP for the bomb: the SDK would spend minutes parsing 64 MB of events.
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{gw.url}/v1/chat/completions",
                json={"model": "bomb", "messages": MSG, "stream": True},
            ) as resp,
        ):
            relayed = await resp.read()
        assert len(relayed) <= DECOMPRESSED_LIMIT + 64 * 1024
        last = relayed.rstrip().rsplit(b"\n\n", 1)[-1]
        assert last.startswith(b'data: {"error"')
        assert f"inflates to more than {DECOMPRESSED_LIMIT} bytes".encode() in last
        # The stream that was open meanwhile finishes normally; new requests are served.
        gate.set()
        rest = [p.choices[0].delta.content async for p in other]
        assert rest == [" but fine"]
        upstream.route(
            "*",
            compressed(compress(json.dumps(ANSWER).encode(), "gzip"), "gzip", "application/json"),
        )
        answer = await client.chat.completions.create(model="m", messages=MSG)
        assert answer.choices[0].message.content == "fine"


async def test_unoffered_encoding_is_a_502_naming_it(upstream: FakeUpstream) -> None:
    async def brotli(request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=b"\x1b\x00", headers={"Content-Encoding": "br"}, content_type="application/json"
        )

    upstream.route("*", brotli)
    async with run_gateway(openai_config(upstream)) as gw:
        with pytest.raises(openai.APIStatusError) as exc:
            await sdk(gw).chat.completions.create(model="m", messages=MSG)
    assert exc.value.status_code == 502
    assert "'br'" in exc.value.message and "'o'" in exc.value.message


# -- HTTP 200 with an error body


async def test_relay_200_with_an_error_body_is_an_error(upstream: FakeUpstream) -> None:
    async def error_200(request: web.Request) -> web.StreamResponse:
        code = 429 if (await request.json())["model"] == "busy" else "model_overloaded"
        return web.json_response(
            {"error": {"message": "try later", "type": "server_error", "code": code}}
        )

    upstream.route("*", error_200)
    async with run_gateway(openai_config(upstream)) as gw:
        client = sdk(gw)
        with pytest.raises(openai.APIStatusError) as exc:
            await client.chat.completions.create(model="m", messages=MSG)
        assert exc.value.status_code == 502
        assert "try later" in exc.value.message and "'o'" in exc.value.message
        # A numeric HTTP-like code in the error is the status it stands for.
        with pytest.raises(openai.RateLimitError):
            await client.chat.completions.create(model="busy", messages=MSG)


async def test_an_answer_mentioning_error_is_still_an_answer(upstream: FakeUpstream) -> None:
    body: dict[str, Any] = {**ANSWER, "error": None, "choices": [{**ANSWER["choices"][0]}]}
    body["choices"][0]["message"] = {"role": "assistant", "content": 'say "error"'}

    async def reply(request: web.Request) -> web.StreamResponse:
        return web.json_response(body)

    upstream.route("*", reply)
    async with run_gateway(openai_config(upstream)) as gw:
        answer = await sdk(gw).chat.completions.create(model="m", messages=MSG)
    assert answer.choices[0].message.content == 'say "error"'


@pytest.mark.parametrize(
    ("etype", "status"),
    [("overloaded_error", 503), ("invalid_request_error", 400), ("api_error", 502)],
)
async def test_anthropic_200_with_an_error_envelope_is_an_error(
    upstream: FakeUpstream, etype: str, status: int
) -> None:
    async def error_200(request: web.Request) -> web.StreamResponse:
        return web.json_response({"type": "error", "error": {"type": etype, "message": "nope"}})

    upstream.route("*", error_200)
    cfg = {
        "backends": [{"id": "a", "type": "anthropic", "baseUrl": upstream.url, "apiKey": "k"}],
        "defaultBackend": "a",
        "maxAttempts": 1,
    }
    async with run_gateway(cfg) as gw:
        with pytest.raises(openai.APIStatusError) as exc:
            await sdk(gw).chat.completions.create(model="claude-x", messages=MSG)
    assert exc.value.status_code == status
    assert "nope" in exc.value.message
