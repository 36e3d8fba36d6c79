"""Upstream faults through the real gateway: each has one defined client-visible result.

For every fault: the status (before the first byte) or the error event (after
it), the error type and code, the metrics label (chromagent_upstream_errors_total
{class=...}), and afterwards no task of the gateway still alive and no
connection to the upstream still open.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from email.utils import formatdate
from typing import Any

import aiohttp
import pytest

from chromagent_proxy import GatewayServer
from chromagent_proxy.backends.upstream_read import DEFAULT_BODY_LIMIT
from chromagent_proxy.core.sse import MAX_LINE_BYTES, SSEDecoder
from tests.support.chaos import (
    Conn,
    FaultServer,
    acquired_upstream_connections,
    assert_no_leaked_tasks,
    eventually,
    free_port,
    live_tasks,
    metric,
    rss_bytes,
)
from tests.support.gateway import run_gateway

TIMEOUT_MS = 400  # first byte and idle gap: faults must resolve fast


def chunk_event(text: str = "Hi", role: bool = True) -> bytes:
    delta: dict[str, Any] = {"content": text}
    if role:
        delta["role"] = "assistant"
    payload = {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
    }
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


COMPLETION = json.dumps(
    {
        "id": "c1",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
).encode()


def relay(url: str, bid: str = "up", **extra: Any) -> dict[str, Any]:
    return {"id": bid, "type": "openai", "baseUrl": f"{url}/v1", "apiKey": "k", **extra}


def config(*backends: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "backends": list(backends),
        "defaultBackend": backends[0]["id"],
        "timeout": TIMEOUT_MS,
        "timeouts": {"idleMs": TIMEOUT_MS, "connectMs": 1000},
        **extra,
    }


@asynccontextmanager
async def gateway(cfg: dict[str, Any]) -> AsyncIterator[GatewayServer]:
    """The real gateway; on exit, no task it started is still alive."""
    async with run_gateway(cfg) as gw:
        baseline = live_tasks()
        yield gw
        await assert_no_leaked_tasks(baseline)
        assert acquired_upstream_connections(gw) == 0


class Answer:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    @property
    def events(self) -> list[bytes]:
        dec = SSEDecoder()
        return [e.data for e in dec.feed(self.body) + dec.flush()]

    @property
    def error(self) -> dict[str, Any]:
        """The error object: the JSON body before the first byte, else the last stream event."""
        data = self.events[-1] if self.status == 200 else self.body
        err: dict[str, Any] = json.loads(data)["error"]
        assert set(err) >= {"message", "type", "param", "code"}, err
        return err


async def call(gw: GatewayServer, stream: bool, model: str = "m") -> Answer:
    payload = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    async with (
        aiohttp.ClientSession() as s,
        s.post(f"{gw.url}/v1/chat/completions", json=payload) as r,
    ):
        return Answer(r.status, dict(r.headers), await r.read())


async def upstream_errors(gw: GatewayServer, klass: str, backend: str = "up") -> float:
    return await metric(
        gw.url, "chromagent_upstream_errors_total", backend=backend, **{"class": klass}
    )


async def closed(fault: FaultServer) -> None:
    await eventually(lambda: fault.open == 0, 5, "the gateway closed its upstream connection")


# ------------------------------------------------------------ before any byte reaches the client


@pytest.mark.parametrize("stream", [False, True])
async def test_connection_refused_is_502_unavailable(stream: bool) -> None:
    async with gateway(config(relay(f"http://127.0.0.1:{free_port()}"))) as gw:
        a = await call(gw, stream)
        assert a.status == 502
        assert a.error["type"] == "api_error" and a.error["code"] == "upstream_unavailable"
        assert "unreachable" in a.error["message"]
        assert await upstream_errors(gw, "connect") == 1


@pytest.mark.parametrize("stream", [False, True])
async def test_dns_failure_is_502_unavailable(stream: bool) -> None:
    async with gateway(config(relay("http://no-such-upstream.invalid:9"))) as gw:
        a = await call(gw, stream)
        assert a.status == 502
        assert a.error["code"] == "upstream_unavailable"
        assert "does not resolve" in a.error["message"]
        assert "no-such-upstream" not in a.error["message"]  # the address stays in the log
        assert await upstream_errors(gw, "connect") == 1


@pytest.mark.parametrize("stream", [False, True])
async def test_accepted_but_silent_before_headers_is_504(fault: FaultServer, stream: bool) -> None:
    fault.script = Conn.until_peer_closes
    async with gateway(config(relay(fault.url))) as gw:
        a = await call(gw, stream)
        assert a.status == 504
        assert a.error["code"] == "upstream_timeout"
        assert await upstream_errors(gw, "timeout") == 1
        await closed(fault)


async def test_headers_then_silent_before_first_chunk_is_504(fault: FaultServer) -> None:
    async def script(c: Conn) -> None:
        await c.headers()
        await c.until_peer_closes()

    fault.script = script
    async with gateway(config(relay(fault.url))) as gw:
        a = await call(gw, stream=True)
        assert a.status == 504
        assert a.error["code"] == "upstream_timeout"
        assert await upstream_errors(gw, "timeout") == 1
        await closed(fault)


async def test_stream_first_byte_timeout_is_counted_in_metrics(fault: FaultServer) -> None:
    fault.script = Conn.until_peer_closes
    async with gateway(config(relay(fault.url))) as gw:
        assert (await call(gw, stream=True)).status == 504
        assert await upstream_errors(gw, "timeout") == 1


async def test_headers_then_silent_fails_over_to_the_other_backend(fault: FaultServer) -> None:
    healthy = await FaultServer().start()

    async def good(c: Conn) -> None:
        await c.headers()
        await c.chunk(chunk_event() + b"data: [DONE]\n\n")
        await c.end()

    async def silent(c: Conn) -> None:
        await c.headers()
        await c.until_peer_closes()

    fault.script, healthy.script = silent, good
    same = {"modelMapping": {"m": "m"}}
    try:
        async with gateway(
            config(relay(fault.url, "a", **same), relay(healthy.url, "b", **same))
        ) as gw:
            a = await call(gw, stream=True)
            assert a.status == 200 and a.events[-1] == b"[DONE]"
            assert a.headers["x-chromagent-backend"] == "b"
            assert await metric(gw.url, "chromagent_failovers_total") == 1
            assert await upstream_errors(gw, "timeout", "a") == 1
            await closed(fault)
    finally:
        await healthy.close()


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("when", ["seconds", "http-date"])
async def test_429_keeps_retry_after(fault: FaultServer, stream: bool, when: str) -> None:
    value = (
        "7" if when == "seconds" else formatdate(usegmt=True, timeval=None)[:-12] + "23:59:59 GMT"
    )

    async def script(c: Conn) -> None:
        err = {
            "error": {
                "message": "slow down",
                "type": "rate_limit_error",
                "code": "rate_limit_exceeded",
            }
        }
        await c.reply(429, json.dumps(err).encode(), extra={"Retry-After": value})

    fault.script = script
    async with gateway(config(relay(fault.url))) as gw:
        a = await call(gw, stream)
        assert a.status == 429
        assert a.headers["Retry-After"] == value
        assert a.error["type"] == "rate_limit_error" and a.error["code"] == "rate_limit_exceeded"
        assert "slow down" in a.error["message"]
        assert await upstream_errors(gw, "429") == 1


async def test_503_storm_on_one_of_two_backends_every_request_succeeds(fault: FaultServer) -> None:
    healthy = await FaultServer().start()

    async def storm(c: Conn) -> None:
        await c.reply(503, b'{"error": {"message": "overloaded", "type": "server_error"}}')

    async def good(c: Conn) -> None:
        if b'"stream": true' in c.body:
            await c.headers()
            await c.chunk(chunk_event() + b"data: [DONE]\n\n")
            await c.end()
        else:
            await c.reply(200, COMPLETION)

    fault.script, healthy.script = storm, good
    same = {"modelMapping": {"m": "m"}}
    try:
        # No timeout is under test here: the healthy backend gets a first-byte budget that a
        # loaded 2-core machine cannot miss (0.4 s was missed under load, failing a request).
        async with gateway(
            config(relay(fault.url, "a", **same), relay(healthy.url, "b", **same), timeout=5000)
        ) as gw:
            answers = []
            for _ in range(10):  # waves of 10 concurrent requests
                answers += await asyncio.gather(*(call(gw, stream=i % 2 == 0) for i in range(10)))
            assert [a.status for a in answers] == [200] * 100
            assert {a.headers["x-chromagent-backend"] for a in answers} == {"b"}
            assert all(a.events[-1] == b"[DONE]" for a in answers[::2])
            # The storm was seen (failovers counted) and the backend cooled down: after the
            # first wave, far fewer than its round-robin share (50) still reached it.
            assert 3 <= fault.requests <= 15
            assert await metric(gw.url, "chromagent_failovers_total") == fault.requests
            assert await upstream_errors(gw, "5xx", "a") == fault.requests
    finally:
        await healthy.close()


async def test_huge_non_stream_body_is_capped(fault: FaultServer) -> None:
    async def script(c: Conn) -> None:
        total = DEFAULT_BODY_LIMIT * 4
        await c.send(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n{"
            % total
        )
        block = b" " * 256 * 1024
        with pytest.raises(ConnectionError):
            while c.sent < total:
                await c.send(block)

    fault.script = script
    async with gateway(config(relay(fault.url))) as gw:
        a = await call(gw, stream=False)
        assert a.status == 502
        assert a.error["code"] == "upstream_protocol_error"
        assert f"larger than {DEFAULT_BODY_LIMIT} bytes" in a.error["message"]
        assert await upstream_errors(gw, "protocol") == 1
        await closed(fault)
    # The gateway stopped reading at its cap (plus what sat in socket buffers).
    assert fault.conns[0].sent < DEFAULT_BODY_LIMIT + 16 * 1024 * 1024


async def test_non_stream_body_cut_short_is_502(fault: FaultServer) -> None:
    async def script(c: Conn) -> None:
        await c.send(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n"
        )
        await c.send(COMPLETION[:40])
        c.writer.close()

    fault.script = script
    async with gateway(config(relay(fault.url))) as gw:
        a = await call(gw, stream=False)
        assert a.status == 502
        assert a.error["code"] == "upstream_protocol_error"
        assert await upstream_errors(gw, "protocol") == 1
        await closed(fault)


# ------------------------------------------------------------ after the first byte: error events


def mid_stream(*steps: bytes | str) -> Any:
    """A script: headers, then each step (bytes as one chunk; "close" / "hang")."""

    async def script(c: Conn) -> None:
        await c.headers()
        for step in steps:
            if step == "close":
                c.writer.close()
                return
            if step == "hang":
                await c.until_peer_closes()
                return
            assert isinstance(step, bytes)
            await c.chunk(step)
        await c.end()

    return script


async def test_silent_mid_stream_is_an_idle_timeout_error_event(fault: FaultServer) -> None:
    fault.script = mid_stream(chunk_event(), "hang")
    async with gateway(config(relay(fault.url))) as gw:
        a = await call(gw, stream=True)
        assert a.status == 200
        assert json.loads(a.events[0])["choices"][0]["delta"]["content"] == "Hi"
        assert a.error["code"] == "upstream_timeout" and "idle" in a.error["message"]
        assert b"[DONE]" not in a.events
        assert await upstream_errors(gw, "timeout") == 1
        await closed(fault)


async def test_close_mid_event_is_a_protocol_error_event(fault: FaultServer) -> None:
    half = chunk_event(role=False)[:30]
    fault.script = mid_stream(chunk_event(), half, "close")
    async with gateway(config(relay(fault.url))) as gw:
        a = await call(gw, stream=True)
        assert a.status == 200
        assert len(a.events) == 2  # the whole event, then the error; never the half event
        assert a.error["code"] == "upstream_protocol_error"
        assert await upstream_errors(gw, "protocol") == 1
        await closed(fault)


async def test_clean_eof_without_done_is_a_protocol_error_event(fault: FaultServer) -> None:
    fault.script = mid_stream(chunk_event())  # ends the body properly, but no [DONE]
    async with gateway(config(relay(fault.url))) as gw:
        a = await call(gw, stream=True)
        assert a.status == 200
        assert a.error["code"] == "upstream_protocol_error" and "[DONE]" in a.error["message"]


async def test_error_event_first_is_an_http_error(fault: FaultServer) -> None:
    err = {"error": {"message": "context too long", "type": "invalid_request_error", "code": "ctx"}}
    fault.script = mid_stream(b"data: " + json.dumps(err).encode() + b"\n\n", "hang")
    async with gateway(config(relay(fault.url))) as gw:
        a = await call(gw, stream=True)
        assert a.status == 502
        assert a.error["type"] == "invalid_request_error" and a.error["code"] == "ctx"
        assert "context too long" in a.error["message"]
        await closed(fault)


async def test_200_then_error_event_mid_stream(fault: FaultServer) -> None:
    err = {"error": {"message": "model crashed", "type": "server_error"}}
    fault.script = mid_stream(chunk_event(), b"data: " + json.dumps(err).encode() + b"\n\n", "hang")
    async with gateway(config(relay(fault.url))) as gw:
        a = await call(gw, stream=True)
        assert a.status == 200
        assert len(a.events) == 2
        assert a.error["type"] == "server_error" and "model crashed" in a.error["message"]
        await closed(fault)


async def test_unknown_sse_lines_are_ignored_per_the_sse_spec(fault: FaultServer) -> None:
    """A line without a known field is not an error in SSE: it is skipped, the stream goes on."""
    junk = b"this line has no colon\n: a comment\nretry: 5\nid: 7\n\n"
    fault.script = mid_stream(junk, chunk_event(), junk, b"data: [DONE]\n\n")
    async with gateway(config(relay(fault.url))) as gw:
        a = await call(gw, stream=True)
        assert a.status == 200
        assert a.events[-1] == b"[DONE]" and len(a.events) == 2


async def test_relay_passes_invalid_json_events_through_unchanged(fault: FaultServer) -> None:
    """The openai relay is byte-transparent by design (no decode per event on the hot path):
    an event that is not JSON reaches the client exactly as the upstream sent it."""
    fault.script = mid_stream(chunk_event(), b"data: {not json\n\n", b"data: [DONE]\n\n")
    async with gateway(config(relay(fault.url))) as gw:
        a = await call(gw, stream=True)
        assert a.status == 200
        assert a.events[1] == b"{not json" and a.events[-1] == b"[DONE]"


@pytest.mark.parametrize("after_first", [False, True])
async def test_endless_line_is_capped_with_bounded_memory(
    fault: FaultServer, after_first: bool
) -> None:
    async def script(c: Conn) -> None:
        await c.headers()
        if after_first:
            await c.chunk(chunk_event())
        await c.chunk(b"data: ")
        block = b"x" * 256 * 1024
        with pytest.raises(ConnectionError):
            while c.sent < 20 * MAX_LINE_BYTES:
                await c.chunk(block)

    fault.script = script
    async with gateway(config(relay(fault.url))) as gw:
        before = rss_bytes()
        a = await call(gw, stream=True)
        grown = rss_bytes() - before
        if after_first:
            assert a.status == 200 and len(a.events) == 2
        else:
            assert a.status == 502
        assert a.error["code"] == "upstream_protocol_error"
        assert f"longer than {MAX_LINE_BYTES} bytes" in a.error["message"]
        assert await upstream_errors(gw, "protocol") == 1
        await closed(fault)
    # Refused at the cap: the upstream got to send the cap plus socket buffers, not more,
    # and the gateway's memory grew by about the cap (a few copies of it at most).
    assert fault.conns[0].sent < MAX_LINE_BYTES + 16 * 1024 * 1024
    assert grown < 6 * MAX_LINE_BYTES, grown
