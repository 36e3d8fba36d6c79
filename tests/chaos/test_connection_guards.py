"""Connection-level guards (issue 13, item 7 and the low items): a stalled body gets a 408,
connections past maxConnections get a 503, malformed HTTP gets a JSON 400 and one warning
line, and ``Expect: 100-continue`` with an oversized body gets a 413 instead of 100 Continue.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

import pytest

from tests.chaos.test_client_faults import (
    HELLO,
    MOCK,
    closed_by_server,
    read_response,
    request_bytes,
)
from tests.support.chaos import scaled
from tests.support.gateway import run_gateway


async def test_a_stalled_body_gets_a_408_and_other_requests_carry_on() -> None:
    async with run_gateway({**MOCK, "bodyTimeoutMs": 400}) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        raw = request_bytes(HELLO)
        writer.write(raw[: raw.index(b"\r\n\r\n") + 10])  # the head and 6 body bytes, then silence
        await writer.drain()
        other_r, other_w = await asyncio.open_connection("127.0.0.1", gw.port)
        other_w.write(request_bytes(HELLO))
        assert (await read_response(other_r))[0] == 200
        start = time.monotonic()
        status, body = await asyncio.wait_for(read_response(reader), 5)
        assert status == 408
        err = json.loads(body)["error"]
        assert err["code"] == "request_timeout" and "bodyTimeoutMs" in err["message"]
        assert time.monotonic() - start < 3
        assert await closed_by_server(reader, 2.0)
        writer.close()
        other_w.close()


async def test_a_slow_but_steady_body_inside_the_body_timeout_is_served() -> None:
    async with run_gateway({**MOCK, "bodyTimeoutMs": 3000, "headerTimeoutMs": 300}) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        raw = request_bytes(HELLO)
        split = raw.index(b"\r\n\r\n") + 4
        writer.write(raw[:split])
        for i in range(split, len(raw), 8):  # longer than the header timeout, inside the body one
            writer.write(raw[i : i + 8])
            await writer.drain()
            await asyncio.sleep(0.05)
        status, body = await asyncio.wait_for(read_response(reader), 5)
        assert status == 200, body
        writer.close()


async def test_connections_past_max_connections_get_a_503_json() -> None:
    async with run_gateway({**MOCK, "maxConnections": 3}) as gw:
        held = [await asyncio.open_connection("127.0.0.1", gw.port) for _ in range(3)]
        await asyncio.sleep(0.1)
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(request_bytes(HELLO))
        status, body = await asyncio.wait_for(read_response(reader), 5)
        assert status == 503
        assert json.loads(body)["error"]["code"] == "too_many_connections"
        assert await closed_by_server(reader, 2.0)
        writer.close()
        # The connections under the cap work, and a slot freed is usable again.
        r0, w0 = held[0]
        w0.write(request_bytes(HELLO))
        assert (await read_response(r0))[0] == 200
        for _, w in held:
            w.close()
        await asyncio.sleep(0.2)
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(request_bytes(HELLO))
        assert (await read_response(reader))[0] == 200
        writer.close()


async def test_malformed_requests_get_json_400_and_one_warning_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with run_gateway(MOCK) as gw:
        with caplog.at_level(logging.DEBUG, logger="chromagent_proxy"):
            for _ in range(20):
                reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
                writer.write(
                    b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n"
                    b"Content-Length: nope\r\n\r\n"
                )
                status, body = await asyncio.wait_for(read_response(reader), 5)
                assert status == 400
                err = json.loads(body)["error"]
                assert err["type"] == "invalid_request_error"
                assert err["code"] == "malformed_request"
                writer.close()
            # The gateway still serves.
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
            writer.write(request_bytes(HELLO))
            assert (await read_response(reader))[0] == 200
            writer.close()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]
    warnings = [r for r in caplog.records if "malformed HTTP request" in r.getMessage()]
    assert 1 <= len(warnings) <= 3, len(warnings)  # rate-limited: one a second
    assert all(r.levelno == logging.WARNING and r.exc_info is None for r in warnings)


async def test_expect_100_continue_with_an_oversized_body_is_413_not_100() -> None:
    async with run_gateway({**MOCK, "maxBodyBytes": 1000}) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            b"Content-Length: 5000000\r\nExpect: 100-continue\r\n\r\n"
        )
        status, body = await asyncio.wait_for(read_response(reader), 5)
        assert status == 413
        assert json.loads(body)["error"]["code"] == "request_too_large"
        writer.close()
        # Within the limit, the client is told to go on and is served.
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        raw = request_bytes(HELLO, Expect="100-continue")
        split = raw.index(b"\r\n\r\n") + 4
        writer.write(raw[:split])
        assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).startswith(
            b"HTTP/1.1 100"
        )
        writer.write(raw[split:])
        assert (await read_response(reader))[0] == 200
        writer.close()


async def test_many_slow_answers_with_split_bodies_outlive_the_header_timeout() -> None:
    """Issue 13, item 1 at scale: every request's head and body arrive in separate reads and
    its answer takes 3x headerTimeoutMs; none may be cut."""
    from aiohttp import web

    from tests.support.upstream import FakeUpstream

    completion = {
        "id": "c",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
        ],
    }

    async def slow(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(0.9)
        return web.json_response(completion)

    up = await FakeUpstream().start()
    up.route("/v1/chat/completions", slow)
    cfg = {
        "headerTimeoutMs": 300,
        "backends": [{"id": "o", "type": "openai", "baseUrl": f"{up.url}/v1"}],
        "defaultBackend": "o",
    }
    try:
        async with run_gateway(cfg) as gw:

            async def one() -> int:
                reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
                raw = request_bytes(HELLO)
                split = raw.index(b"\r\n\r\n") + 4
                writer.write(raw[:split])
                await writer.drain()
                await asyncio.sleep(0.05)
                writer.write(raw[split:])
                try:
                    return (await asyncio.wait_for(read_response(reader), 30))[0]
                except (asyncio.IncompleteReadError, ConnectionError):
                    return -1
                finally:
                    writer.close()

            statuses = await asyncio.gather(*(one() for _ in range(scaled(500, 20))))
        assert statuses == [200] * len(statuses)
    finally:
        await up.close()
