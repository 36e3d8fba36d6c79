"""Client faults against the real gateway: aborts, slow readers, slowloris, huge bodies.

Runs the gateway in process (tests/support/gateway.py, production settings) so
its tasks and its upstream connections can be counted from here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import signal
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.test_upstream_faults import COMPLETION, chunk_event, config, relay
from tests.support.chaos import (
    CliGateway,
    Conn,
    FaultServer,
    acquired_upstream_connections,
    assert_no_leaked_tasks,
    eventually,
    live_tasks,
    rss_bytes,
    scaled,
)
from tests.support.gateway import run_gateway

MOCK = {"backends": [{"id": "m", "type": "mock"}], "defaultBackend": "m"}


def request_bytes(
    body: dict[str, Any] | bytes, path: str = "/v1/chat/completions", **headers: str
) -> bytes:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    head = [
        f"POST {path} HTTP/1.1",
        "Host: localhost",
        "Content-Type: application/json",
        f"Content-Length: {len(data)}",
    ]
    head += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + data


HELLO = {"model": "m", "messages": [{"role": "user", "content": "hello there"}]}


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    return status, await reader.readexactly(length)


async def closed_by_server(reader: asyncio.StreamReader, within: float) -> bool:
    try:
        async with asyncio.timeout(within):
            return await reader.read(65536) == b""
    except ConnectionError:
        return True


# ----------------------------------------------------------------------------- slowloris


async def test_slowloris_trickled_head_is_closed_after_the_header_timeout() -> None:
    async with run_gateway({**MOCK, "headerTimeoutMs": 300}) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        start = time.monotonic()
        head = request_bytes(HELLO)[:60]
        closed = False
        for byte in head:  # one byte every 50 ms: the head would take 3 s
            try:
                writer.write(bytes([byte]))
                await writer.drain()
            except ConnectionError:
                closed = True
                break
            if reader.at_eof():
                closed = True
                break
            await asyncio.sleep(0.05)
            if time.monotonic() - start > 2:
                break
        closed = closed or await closed_by_server(reader, 1.0)
        elapsed = time.monotonic() - start
        writer.close()
        assert closed, "the trickling client was never disconnected"
        assert 0.25 < elapsed < 1.5, elapsed


async def test_a_silent_connection_is_closed_after_the_header_timeout() -> None:
    async with run_gateway({**MOCK, "headerTimeoutMs": 300}) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        start = time.monotonic()
        assert await closed_by_server(reader, 2.0)
        assert 0.25 < time.monotonic() - start < 1.5
        writer.close()


@pytest.mark.slow
async def test_idle_keep_alive_and_slow_bodies_are_not_cut_by_the_header_timeout() -> None:
    async with run_gateway({**MOCK, "headerTimeoutMs": 300}) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(request_bytes(HELLO))
        assert (await read_response(reader))[0] == 200
        await asyncio.sleep(0.6)  # idle for twice the header timeout: still open
        # A fast head with a body trickled over 0.8 s is a slow upload, not slowloris.
        raw = request_bytes(HELLO)
        split = raw.index(b"\r\n\r\n") + 4
        writer.write(raw[:split])
        for i in range(split, len(raw), max(1, (len(raw) - split) // 8)):
            writer.write(raw[i : i + max(1, (len(raw) - split) // 8)])
            await writer.drain()
            await asyncio.sleep(0.1)
        status, body = await read_response(reader)
        assert (
            status == 200 and json.loads(body)["choices"][0]["message"]["content"] == "hello there"
        )
        # The next head trickled on the same keep-alive connection is cut.
        start = time.monotonic()
        try:
            for byte in request_bytes(HELLO)[:40]:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.05)
        except ConnectionError:
            pass
        assert await closed_by_server(reader, 1.5)
        assert time.monotonic() - start < 1.6
        writer.close()


async def test_many_slowloris_clients_do_not_stop_real_requests() -> None:
    n = scaled(2000, 100)
    async with run_gateway({**MOCK, "headerTimeoutMs": 500}) as gw:
        baseline = live_tasks()
        conns = []
        for _ in range(n):
            r, w = await asyncio.open_connection("127.0.0.1", gw.port)
            w.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n")
            conns.append((r, w))
        # A real client is served while they hang.
        r, w = await asyncio.open_connection("127.0.0.1", gw.port)
        w.write(request_bytes(HELLO))
        start = time.monotonic()
        assert (await read_response(r))[0] == 200
        assert time.monotonic() - start < 0.5
        w.close()
        results = await asyncio.gather(*(closed_by_server(r, 3.0) for r, _ in conns))
        assert all(results), f"{results.count(False)} of {n} slowloris connections still open"
        for _, w in conns:
            w.close()
        await assert_no_leaked_tasks(baseline)


# ----------------------------------------------------------------------------- huge body


async def test_100_mb_body_is_413_without_reading_it_all() -> None:
    limit = 1024 * 1024
    total = 100 * 1024 * 1024
    async with run_gateway({**MOCK, "maxBodyBytes": limit}) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % total
        )
        sent = 0
        block = b" " * 65536
        response = asyncio.ensure_future(reader.readuntil(b"\r\n\r\n"))
        try:
            while sent < total and not response.done():
                writer.write(block)
                sent += len(block)
                await writer.drain()
        except ConnectionError:
            pass
        head = await asyncio.wait_for(response, 5)
        assert head.startswith(b"HTTP/1.1 413"), head
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        err = json.loads(await reader.readexactly(length))["error"]
        assert err["code"] == "request_too_large" and err["type"] == "invalid_request_error"
        writer.close()
        # The gateway answered after about its limit, not after the whole 100 MB.
        assert sent < total / 2, sent
        # and does not keep swallowing the rest of the body afterwards.
        assert await closed_by_server(reader, 3.0)


# ----------------------------------------------------------------------------- aborts


def slow_upstream(events: int = 100, gap: float = 0.02) -> Any:
    """Streams ``events`` chunks ``gap`` apart (2 s); non-stream answers after 0-100 ms.
    ``Connection: close`` so no upstream connection may legitimately stay open afterwards."""

    async def script(c: Conn) -> None:
        if b'"stream": true' in c.body:
            await c.headers(extra={"Connection": "close"})
            await c.chunk(chunk_event())
            for _ in range(events):
                await asyncio.sleep(gap)
                await c.chunk(chunk_event("x", role=False))
            await c.chunk(b"data: [DONE]\n\n")
            await c.end()
        else:
            await asyncio.sleep(random.random() / 10)
            await c.reply(200, COMPLETION, extra={"Connection": "close"})
        c.writer.close()

    return script


async def one_client(port: int, rng: random.Random) -> str:
    """One request, abandoned at a random point (or, sometimes, completed)."""
    stream = rng.random() < 0.6
    # Connection: close, so a completed response ends with EOF instead of keep-alive idling.
    raw = request_bytes({**HELLO, "stream": stream}, Connection="close")
    split = raw.index(b"\r\n\r\n") + 4
    how = rng.choice(
        ["mid-head", "mid-body", "after-request", "mid-response", "mid-response-rst", "complete"]
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        async with asyncio.timeout(10):
            await _act(how, raw, split, rng, reader, writer)
    finally:
        writer.close()
    return how


async def _act(
    how: str,
    raw: bytes,
    split: int,
    rng: random.Random,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
) -> None:
    if how == "mid-head":
        writer.write(raw[: rng.randrange(1, split)])
    elif how == "mid-body":
        writer.write(raw[: rng.randrange(split, len(raw))])
    else:
        writer.write(raw)
    await writer.drain()
    if how == "after-request":
        await asyncio.sleep(rng.random() / 20)
    elif how.startswith("mid-response"):
        want = rng.randrange(1, 3000)
        got = 0
        while got < want:
            data = await reader.read(want - got)
            if not data:
                break
            got += len(data)
        if how.endswith("rst"):
            sock = writer.get_extra_info("socket")
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
    elif how == "complete":
        while await reader.read(65536):
            pass


@pytest.mark.slow
async def test_random_aborts_leave_no_task_and_no_upstream_connection(
    fault: FaultServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    n = scaled(1000, 100)
    rng = random.Random(1234)
    fault.script = slow_upstream()
    async with run_gateway(config(relay(fault.url), timeouts={"idleMs": 5000})) as gw:
        baseline = live_tasks()
        sem = asyncio.Semaphore(50)

        async def limited() -> str:
            async with sem:
                return await one_client(gw.port, rng)

        kinds = await asyncio.gather(*(limited() for _ in range(n)))
        assert len(set(kinds)) == 6
        # Every abandoned upstream request was closed at once (a stream would run 2 s more).
        await eventually(lambda: fault.open == 0, 1.5, f"upstream connections open: {fault.open}")
        assert acquired_upstream_connections(gw) == 0
        await assert_no_leaked_tasks(baseline, timeout=2.0)
        # And the gateway is fine afterwards.
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(request_bytes(HELLO))
        status, body = await read_response(reader)
        assert status == 200 and json.loads(body)["choices"][0]["message"]["content"] == "ok"
        writer.close()
    assert fault.requests > n / 3  # most requests did reach the upstream before being dropped
    # A client leaving is normal: no "Error handling request" traceback per abort.
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, errors[:3]


# ----------------------------------------------------------------------------- slow reader


async def test_slow_reader_slows_the_upstream_read_no_unbounded_queue(fault: FaultServer) -> None:
    event = (
        b"data: "
        + json.dumps({"choices": [{"index": 0, "delta": {"content": "y" * 4000}}]}).encode()
        + b"\n\n"
    )
    limit = 256 * 1024 * 1024

    async def firehose(c: Conn) -> None:
        await c.headers()
        batch = event * 16
        try:
            while c.sent < limit:
                await c.chunk(batch)
        except ConnectionError:
            pass

    fault.script = firehose
    async with run_gateway(config(relay(fault.url), timeouts={"idleMs": 10_000})) as gw:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", gw.port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=64 * 1024)
        writer.write(request_bytes({**HELLO, "stream": True}))
        before = rss_bytes()
        got = 0

        async def read(amount: int) -> None:
            nonlocal got
            target = got + amount
            while got < target:
                data = await reader.read(16 * 1024)
                assert data
                got += len(data)
                await asyncio.sleep(0.001)  # a slow client: ~16 MB/s at most

        await read(2 * 1024 * 1024)
        # The client stops reading: the upstream must stop being read too (buffers fill, then stall).
        await asyncio.sleep(0.5)
        stalled_at = fault.conns[0].sent
        await asyncio.sleep(0.5)
        assert fault.conns[0].sent == stalled_at, (
            "the gateway kept reading an upstream its client was not draining"
        )
        in_flight = stalled_at - got
        assert in_flight < 32 * 1024 * 1024, in_flight
        assert rss_bytes() - before < 64 * 1024 * 1024
        # Reading again resumes the upstream: the stream was paused, not dead.
        await read(2 * 1024 * 1024)
        await eventually(lambda: fault.conns[0].sent > stalled_at, 2, "upstream resumed")
        writer.close()
        await eventually(lambda: fault.open == 0, 2, "upstream closed after the client left")
    assert fault.conns[0].sent < limit


async def test_clients_leaving_mid_stream_are_not_logged_as_errors(
    fault: FaultServer, tmp_path: Path
) -> None:
    """A client that leaves while the upstream is sending flat out races the gateway's next
    write; that is normal traffic, not an "Error handling request" traceback. The real CLI
    (uvloop, production settings), where this race showed up in the soak test."""

    async def firehose(c: Conn) -> None:
        await c.headers()
        with contextlib.suppress(ConnectionError):
            while True:
                await c.chunk(chunk_event("z", role=False) * 4)
                await asyncio.sleep(0.001)

    fault.script = firehose
    gw = await CliGateway(config(relay(fault.url)), tmp_path).ready()
    try:

        async def leave() -> None:
            r, w = await asyncio.open_connection("127.0.0.1", gw.port)
            w.write(request_bytes({**HELLO, "stream": True}))
            await r.read(random.randrange(200, 20000))
            w.close()

        for _ in range(scaled(1000, 200) // 20):
            await asyncio.gather(*(leave() for _ in range(20)))
        await eventually(lambda: fault.open == 0, 5, "upstreams closed")
    finally:
        gw.proc.send_signal(signal.SIGTERM)
        await gw.wait(10)
    assert "Error handling request" not in gw.err.read_text(), gw.err.read_text()[-1500:]
