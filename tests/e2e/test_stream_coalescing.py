"""Events that arrive in one upstream read leave the gateway in one write (sse.Framed).

The bytes on the wire must be exactly what one write per event produced; a
usage event still reaches the metrics layer on its own; an error event after
good ones still ends the stream the OpenAI way, after the good ones.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from chromagent_proxy.core.sse import Framed, frame, framed
from tests.support.gateway import run_gateway, sdk
from tests.support.upstream import FakeUpstream, stream_reply


def _chunk(i: int, content: str) -> bytes:
    return json.dumps(
        {
            "id": "c",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "m",
            "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}],
        },
        separators=(",", ":"),
    ).encode()


USAGE = json.dumps(
    {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [],
        "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8},
    },
    separators=(",", ":"),
).encode()


def _config(up: FakeUpstream) -> dict[str, Any]:
    backend = {"id": "up", "type": "openai", "baseUrl": f"{up.url}/v1", "modelMapping": {"m": "m"}}
    return {"backends": [backend]}


def test_framed_is_the_concatenation_of_frames() -> None:
    parts = [b'{"a":1}', b'{"b":2}', b"{}"]
    out = framed(parts)
    assert type(out) is Framed
    assert out == b"".join(frame(p) for p in parts)


async def test_one_read_many_events_same_bytes_and_usage(upstream: FakeUpstream) -> None:
    payloads = [_chunk(i, f"w{i} ") for i in range(20)]
    body = b"".join(frame(p) for p in [*payloads, USAGE]) + b"data: [DONE]\n\n"
    upstream.route("/v1/chat/completions", stream_reply([body]))  # all in one piece
    async with run_gateway(_config(upstream)) as server:
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{server.url}/v1/chat/completions",
                json={
                    "model": "m",
                    "stream": True,
                    "stream_options": {"include_usage": True},
                    "messages": [{"role": "user", "content": "hi"}],
                },
            ) as resp,
        ):
            assert resp.status == 200
            raw = await resp.read()
        assert raw == body  # byte for byte what one write per event would have sent

        stream = await sdk(server).chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        text, usage = "", None
        async for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
            if chunk.usage:
                usage = chunk.usage
        assert text == "".join(f"w{i} " for i in range(20))
        assert usage is not None and usage.total_tokens == 8


async def test_error_after_good_events_in_the_same_read(upstream: FakeUpstream) -> None:
    good = [_chunk(i, f"w{i} ") for i in range(3)]
    err = b'{"error":{"message":"overloaded","type":"server_error"}}'
    body = b"".join(frame(p) for p in [*good, err])
    upstream.route("/v1/chat/completions", stream_reply([body]))
    async with run_gateway(_config(upstream)) as server, aiohttp.ClientSession() as http:
        async with http.post(
            f"{server.url}/v1/chat/completions",
            json={"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
        ) as resp:
            raw = await resp.read()
    events = [e[6:] for e in raw.split(b"\n\n") if e]
    assert events[:3] == good
    assert b"overloaded" in events[3] and events[3].startswith(b'{"error"')
    assert b"[DONE]" not in raw


async def _chunked_response(reader: asyncio.StreamReader) -> tuple[bytes, list[bytes]]:
    """One HTTP/1.1 response read strictly: its head and its chunks (the last one empty)."""
    head = await reader.readuntil(b"\r\n\r\n")
    chunks: list[bytes] = []
    while True:
        size = int((await reader.readuntil(b"\r\n"))[:-2], 16)
        data = await reader.readexactly(size + 2)
        assert data[-2:] == b"\r\n"
        chunks.append(data[:-2])
        if size == 0:
            return head, chunks


async def test_the_end_of_a_stream_is_framed_once_and_the_connection_carries_on(
    upstream: FakeUpstream,
) -> None:
    """The tail ([DONE]) and the chunked terminator leave together from the request path;
    aiohttp must not add a second terminator (the next response on the same keep-alive
    connection would then not start with its status line)."""
    payloads = [_chunk(i, f"w{i} ") for i in range(3)]
    body = b"".join(frame(p) for p in payloads) + b"data: [DONE]\n\n"
    upstream.route("/v1/chat/completions", stream_reply([body]))
    req = json.dumps(
        {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    ).encode()
    async with run_gateway(_config(upstream)) as server:
        host, port = server.url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            for _ in range(2):
                writer.write(
                    b"POST /v1/chat/completions HTTP/1.1\r\nHost: %s:%s\r\n"
                    b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                    % (host.encode(), port.encode(), len(req))
                    + req
                )
                head, chunks = await _chunked_response(reader)
                assert head.startswith(b"HTTP/1.1 200 ")
                assert b"\r\ntransfer-encoding: chunked\r\n" in head.lower()
                assert b"".join(chunks) == body
                assert chunks[-1] == b"" and chunks[-2].endswith(b"data: [DONE]\n\n")
        finally:
            writer.close()
