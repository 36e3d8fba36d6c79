"""The purpose-built upstream client (backends/h1client.py, h1pool.py) against real local
servers: raw asyncio ones where the test must control the bytes and the connection, and
TLS with a trustme certificate. The whole gateway suite drives it through the SDKs too."""

from __future__ import annotations

import asyncio
import gzip
import ssl
from collections.abc import Awaitable, Callable

import pytest
import trustme

from chromagent_proxy.backends.h1client import (
    HIGH_WATER,
    ConnectError,
    ConnectTimeout,
    PayloadError,
    ReadTimeout,
    ServerDisconnectedError,
)
from chromagent_proxy.backends.h1pool import H1Client
from chromagent_proxy.backends.h1response import Response
from chromagent_proxy.backends.upstream_read import read_capped
from chromagent_proxy.core.body import Body
from chromagent_proxy.core.errors import UpstreamProtocolError

Handler = Callable[[int, int, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[bool]]
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello"


class RawServer:
    """Counts connections; ``handler(conn_no, request_no, reader, writer)`` answers one
    request already read (head + Content-Length body) and returns False to stop reading."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.open = 0
        self.max_open = 0
        self.requests: list[tuple[int, bytes, bytes]] = []
        self.closed = asyncio.Event()
        self.server: asyncio.Server | None = None

    async def start(self, tls: ssl.SSLContext | None = None) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=tls)
        port = self.server.sockets[0].getsockname()[1]
        return f"{'https' if tls else 'http'}://localhost:{port}/v1/x?q=1"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        no = self.connections
        self.open += 1
        self.max_open = max(self.max_open, self.open)
        try:
            n = 0
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    break
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = await reader.readexactly(length)
                self.requests.append((no, head, body))
                n += 1
                if not await self.handler(no, n, reader, writer):
                    break
        finally:
            self.open -= 1
            writer.close()
            self.closed.set()

    async def settled(self) -> None:
        assert self.server is not None
        await settled(self.server)

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()


async def settled(server: asyncio.Server) -> None:
    """Wait until the server holds no transport (one a failed TLS handshake left too)."""
    for _ in range(500):
        if not getattr(server, "_active_count", 0):
            return
        await asyncio.sleep(0.01)


async def ok(no: int, n: int, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
    w.write(OK)
    return True


async def _read(resp: Response) -> bytes:
    out = b"".join([d async for d in resp.content.iter_any()])
    resp.release()
    return out


async def request(client: H1Client, url: str, body: Body = b"{}", **kw: float) -> Response:
    return await client.request(
        "POST",
        url,
        {"Content-Type": "application/json", "Authorization": "Bearer k"},
        body,
        connect_timeout=kw.get("connect", 5.0),
        read_timeout=kw.get("read", 5.0),
        total_timeout=kw.get("total"),
        head_timeout=kw.get("head"),
    )


async def test_keep_alive_reuses_one_connection_and_sends_the_request_as_given() -> None:
    srv = RawServer(ok)
    url = await srv.start()
    client = H1Client()
    try:
        for _ in range(3):
            resp = await request(client, url, b'{"a":1}')
            assert resp.status == 200
            assert resp.headers.get("content-type") == "text/plain"
            assert await _read(resp) == b"hello"
        assert srv.connections == 1
        _, head, body = srv.requests[0]
        assert head.startswith(b"POST /v1/x?q=1 HTTP/1.1\r\nHost: localhost:")
        assert b"\r\nAuthorization: Bearer k\r\n" in head and b"Content-Length: 7\r\n" in head
        assert body == b'{"a":1}'
        big = bytes(range(256)) * (12 * 1024)  # 3 MB: written in pieces, waiting for the socket
        assert await _read(await request(client, url, big)) == b"hello"
        assert srv.requests[-1][2] == big and srv.connections == 1
    finally:
        await client.close()
        await srv.close()


async def test_each_request_carries_its_own_headers_and_length_when_heads_are_reused() -> None:
    # The head up to Content-Length is kept per URL while the headers compare equal: a
    # changed header, another body length or method must still go out as given.
    srv = RawServer(ok)
    url = await srv.start()
    client = H1Client()
    sent = [
        ("POST", {"Authorization": "Bearer a", "X-T": "1"}, b"{}"),
        ("POST", {"Authorization": "Bearer a", "X-T": "1"}, b'{"long":true}'),
        ("POST", {"Authorization": "Bearer b", "X-T": "1"}, b"{}"),
        ("PUT", {"Authorization": "Bearer b", "X-T": "1"}, b"{}"),
        ("POST", {"Authorization": "Bearer b"}, b"{}"),
    ]
    try:
        for method, headers, body in sent:
            resp = await client.request(
                method, url, headers, body, connect_timeout=5.0, read_timeout=5.0
            )
            assert await _read(resp) == b"hello"
        for (method, headers, body), (_, head, got) in zip(sent, srv.requests, strict=True):
            lines = head.decode().split("\r\n")
            assert lines[0] == f"{method} /v1/x?q=1 HTTP/1.1"
            assert sorted(lines[2:-2]) == sorted(
                [f"{k}: {v}" for k, v in headers.items()] + [f"Content-Length: {len(body)}"]
            )
            assert got == body
        with pytest.raises(ValueError, match="line break"):
            await client.request(
                "POST", url, {"X-T": "1\r\nX-Evil: 1"}, b"{}", connect_timeout=5.0, read_timeout=5.0
            )
    finally:
        await client.close()
        await srv.close()


async def test_chunked_and_close_delimited_bodies() -> None:
    async def chunked(no: int, n: int, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        if n == 1:
            w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for part in (b"data: 1\n\n", b"data: 2\n\n"):
                w.write(b"%x\r\n%s\r\n" % (len(part), part))
                await w.drain()
            w.write(b"0\r\n\r\n")
            return True
        w.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")
        return False  # the body ends with the connection

    srv = RawServer(chunked)
    url = await srv.start()
    client = H1Client()
    try:
        assert await _read(await request(client, url)) == b"data: 1\n\ndata: 2\n\n"
        assert await _read(await request(client, url)) == b"until the end"
        assert srv.connections == 1  # the chunked answer left it reusable
        assert await _read(await request(client, url)) == b"data: 1\n\ndata: 2\n\n"
        assert srv.connections == 2  # the close-delimited one did not
    finally:
        await client.close()
        await srv.close()


async def test_a_pooled_connection_the_server_dropped_is_retried_once_on_a_new_one() -> None:
    async def drop_second(
        no: int, n: int, r: asyncio.StreamReader, w: asyncio.StreamWriter
    ) -> bool:
        if no == 1 and n == 2:
            return False  # read the request, closed without a byte of answer
        w.write(OK)
        return True

    srv = RawServer(drop_second)
    url = await srv.start()
    client = H1Client()
    try:
        assert await _read(await request(client, url)) == b"hello"
        assert await _read(await request(client, url, b'{"n":2}')) == b"hello"
        assert srv.connections == 2
        assert [(no, body) for no, _, body in srv.requests[1:]] == [
            (1, b'{"n":2}'),
            (2, b'{"n":2}'),
        ]
    finally:
        await client.close()
        await srv.close()


async def test_a_fresh_connection_closed_before_answering_is_not_retried() -> None:
    async def drop(no: int, n: int, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        return False

    srv = RawServer(drop)
    url = await srv.start()
    client = H1Client()
    try:
        with pytest.raises(ServerDisconnectedError):
            await request(client, url)
        assert srv.connections == 1
        assert client.in_use == 0
    finally:
        await client.close()
        await srv.close()


async def test_connection_closed_mid_body_is_a_protocol_error() -> None:
    async def cut(no: int, n: int, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
        await w.drain()
        return False

    srv = RawServer(cut)
    url = await srv.start()
    client = H1Client()
    try:
        resp = await request(client, url)
        with pytest.raises(PayloadError):
            await _read(resp)
        resp.close()
        resp = await request(client, url)
        with pytest.raises(UpstreamProtocolError, match="closed the connection mid-response"):
            await read_capped(resp, 1000, "b1")
        resp.close()
        assert client.in_use == 0 and srv.connections == 2
    finally:
        await client.close()
        await srv.close()


async def test_response_heads_are_read_whole_however_they_arrive() -> None:
    """The client keeps the head's bytes instead of a callback per header: an interim
    100 Continue, a head trickled byte by byte, header values that mention framing or
    encoding names, and a provider-sized head all read as sent."""
    many = b"".join(b"x-h%d: v%d\r\n" % (i, i) for i in range(30))
    heads = [
        b"HTTP/1.1 100 Continue\r\nContent-Encoding: gzip\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nX-Note: content-length: 9\r\nX-E: content-encoding: br\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n" + many + b"Content-Length: 5\r\n\r\nhello",
        # Close-delimited: a value naming content-length must not make it look framed.
        b"HTTP/1.1 200 OK\r\nX-Note: content-length: 9\r\nConnection: close\r\n\r\nhello",
    ]

    async def answer(no: int, n: int, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        data = heads[n - 1]
        for i in range(len(data)):  # one byte per write: heads split at every point
            w.write(data[i : i + 1])
            await w.drain()
            if i % 7 == 0:
                await asyncio.sleep(0)
        return n < len(heads)

    srv = RawServer(answer)
    url = await srv.start()
    client = H1Client()
    try:
        for k in range(len(heads)):
            resp = await request(client, url)
            assert resp.status == 200
            assert resp.encoding is None  # none of the final heads is compressed
            assert await read_capped(resp, 1 << 20, "b") == b"hello"
            resp.release()
            if k == 0:
                assert dict(resp.headers) == {"Content-Length": "5", "X-A": "1"}
            if k == 1:
                assert resp.headers["x-note"] == "content-length: 9"
                assert resp.headers["X-E"] == "content-encoding: br"
            if k == 2:
                assert len(resp.headers) == 31 and resp.headers["X-H29"] == "v29"
    finally:
        await client.close()
        await srv.close()


async def test_read_capped_takes_a_whole_body_at_once_and_still_caps_it() -> None:
    """A small answer that came with its head is taken whole (no iteration), still capped,
    and its connection goes back to the pool; one that trickles in is read in pieces."""

    async def answer(no: int, n: int, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        if n == 3:  # the head first, the body later, in pieces
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
            await w.drain()
            for part in (b"hello", b"world"):
                await asyncio.sleep(0.05)
                w.write(part)
            return True
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhelloworld")
        return True

    srv = RawServer(answer)
    url = await srv.start()
    client = H1Client()
    try:
        resp = await request(client, url)
        await asyncio.sleep(0.05)  # the whole answer is in
        assert await read_capped(resp, 10, "b") == b"helloworld"
        assert resp.content.is_eof()
        resp.release()
        resp = await request(client, url)
        await asyncio.sleep(0.05)
        with pytest.raises(UpstreamProtocolError, match="larger than 9 bytes"):
            await read_capped(resp, 9, "b")
        resp.close()
        resp = await request(client, url)
        assert await read_capped(resp, 10, "b") == b"helloworld"
        resp.release()
        assert srv.connections == 2  # the capped one was closed; the others reused
    finally:
        await client.close()
        await srv.close()


async def test_compressed_answers_are_inflated_and_headers_stay_readable_after_release() -> None:
    """Content-Encoding is read while parsing (no headers object per answer); the first
    such header counts, in any case and with blanks, and the headers are still there
    once the connection went back to the pool."""
    plain = b'{"choices":[]}' * 50
    packed = gzip.compress(plain)

    async def gz(no: int, n: int, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        if n == 1:
            w.write(
                b"HTTP/1.1 200 OK\r\nContent-Encoding:  GZip \r\nContent-Encoding: br\r\n"
                b"Content-Length: %d\r\n\r\n" % len(packed) + packed
            )
        else:
            w.write(OK)
        return True

    srv = RawServer(gz)
    url = await srv.start()
    client = H1Client()
    try:
        resp = await request(client, url)
        assert resp.encoding is not None and resp.encoding.strip() == "GZip"
        assert await read_capped(resp, 1 << 20, "b") == plain
        resp.release()
        assert [v.strip() for v in resp.headers.getall("content-encoding")] == ["GZip", "br"]
        resp = await request(client, url)  # the same connection, an uncompressed answer
        assert resp.encoding is None
        assert await read_capped(resp, 1 << 20, "b") == b"hello"
        resp.release()
        assert resp.headers["Content-Type"] == "text/plain"
        assert srv.connections == 1
    finally:
        await client.close()
        await srv.close()


async def test_timeouts_hold_on_a_reused_connection_whatever_the_last_request_armed() -> None:
    """The connection's timer outlives its requests: a request after one with longer
    timeouts still times out on its own, and one after a request with shorter timeouts
    is not cut by the earlier deadline (the timer fires, re-checks, re-arms)."""

    async def second_silent(
        no: int, n: int, r: asyncio.StreamReader, w: asyncio.StreamWriter
    ) -> bool:
        if n == 1:
            w.write(OK)
            return True
        if n == 2 and no == 2:  # answers late, but within the second request's timeouts
            await asyncio.sleep(0.5)
            w.write(OK)
            return True
        await r.read()  # never answers
        return False

    srv = RawServer(second_silent)
    url = await srv.start()
    client = H1Client()
    loop = asyncio.get_running_loop()
    try:
        # Long timeouts first (their timer stays armed), then a short first-byte timeout.
        assert await _read(await request(client, url, read=30, head=30)) == b"hello"
        t = loop.time()
        with pytest.raises(ReadTimeout):
            await request(client, url, read=30, head=0.2)
        assert loop.time() - t < 10  # the 0.2 s deadline, not the 30 s timer left armed
        assert srv.connections == 1
        # Short timeouts first, then a request whose answer comes after that earlier
        # deadline has passed: the left-over timer must not cut it.
        assert await _read(await request(client, url, read=0.3, head=0.3)) == b"hello"
        assert await _read(await request(client, url, read=2, head=2)) == b"hello"
        assert srv.connections == 2
        assert client.in_use == 0
    finally:
        await client.close()
        await srv.close()


async def test_timeouts_of_each_phase() -> None:
    async def silent(no: int, n: int, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        # A timed-out connection is closed: each request comes on a new one (``no``).
        if no == 2:  # the head and a part of the body, then nothing
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")
        if no == 3:  # a trickle: never idle, but past the total
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
            for _ in range(40):
                await asyncio.sleep(0.02)
                w.write(b"x")
        await r.read()  # never answers the first request
        return False

    srv = RawServer(silent)
    url = await srv.start()
    client = H1Client()
    try:
        # Idle before the head (first request), mid-body (second), and the total (third).
        with pytest.raises(ReadTimeout):
            await request(client, url, read=0.2)
        srv.connections = 0  # the first-byte (head) timeout: the same silent server
        with pytest.raises(ReadTimeout):
            await request(client, url, read=5, head=0.2)
        srv.connections = 1
        resp = await request(client, url, read=0.2)
        it = resp.content.iter_any()
        assert await it.__anext__() == b"abc"
        with pytest.raises(ReadTimeout):
            await it.__anext__()
        resp.close()
        resp = await request(client, url, read=0.2, total=0.3)
        with pytest.raises(ReadTimeout):
            await _read(resp)
        resp.close()
        assert client.in_use == 0
    finally:
        await client.close()
        await srv.close()

    # The head's deadline also bounds sending: an upstream that stops reading the body.
    heard = asyncio.Event()

    async def deaf(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await heard.wait()
        w.close()

    stuck = await asyncio.start_server(deaf, "127.0.0.1", 0)
    port = stuck.sockets[0].getsockname()[1]
    client = H1Client()
    try:
        with pytest.raises(ReadTimeout):
            await request(client, f"http://127.0.0.1:{port}/", b"x" * (64 << 20), head=0.3)
        assert client.in_use == 0 and client.open_connections == 0
    finally:
        await client.close()
        heard.set()
        stuck.close()
        await settled(stuck)

    # Connect: a server that takes the TCP connection and never completes the TLS handshake.
    async def mute(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.read()
        w.close()

    hang = await asyncio.start_server(mute, "127.0.0.1", 0)
    port = hang.sockets[0].getsockname()[1]
    client = H1Client()
    try:
        with pytest.raises(ConnectTimeout):
            await request(client, f"https://127.0.0.1:{port}/", connect=0.2)
        assert client.in_use == 0 and client.open_connections == 0
    finally:
        await client.close()
        hang.close()


async def test_tls_with_a_verified_certificate_and_refusal_of_an_unknown_one() -> None:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    srv = RawServer(ok)
    url = await srv.start(server_ctx)
    client = H1Client(ssl_context=client_ctx)
    stranger = H1Client()  # the system's CAs: the test CA is not among them
    try:
        assert await _read(await request(client, url)) == b"hello"
        assert await _read(await request(client, url)) == b"hello"
        assert srv.connections == 1
        with pytest.raises(ConnectError) as info:
            await request(stranger, url)
        assert isinstance(info.value.os_error, ssl.SSLCertVerificationError)
        await srv.settled()  # the server's side of the failed handshake closes
    finally:
        await client.close()
        await stranger.close()
        await srv.close()


async def test_pool_limit_caps_connections_in_use() -> None:
    gate = asyncio.Event()

    async def held(no: int, n: int, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        await gate.wait()
        w.write(OK)
        return True

    srv = RawServer(held)
    url = await srv.start()
    client = H1Client(limit=2)
    try:
        tasks = [asyncio.create_task(_request_and_read(client, url)) for _ in range(5)]
        for _ in range(100):
            if len(srv.requests) == 2:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        assert len(srv.requests) == 2 and client.in_use == 2
        gate.set()
        assert await asyncio.gather(*tasks) == [b"hello"] * 5
        assert srv.max_open == 2 and client.in_use == 0
    finally:
        await client.close()
        await srv.close()


async def _request_and_read(client: H1Client, url: str) -> bytes:
    return await _read(await request(client, url))


async def test_a_slow_reader_pauses_the_upstream_instead_of_buffering_it() -> None:
    total = 16 * 1024 * 1024
    sent = 0

    async def flood(no: int, n: int, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        nonlocal sent
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % total)
        piece = b"x" * 65536
        while sent < total:
            w.write(piece)
            sent += len(piece)
            await w.drain()
        return True

    srv = RawServer(flood)
    url = await srv.start()
    client = H1Client()
    try:
        resp = await request(client, url)
        got = 0
        biggest = 0
        ahead = 0  # how far the server got beyond what was read
        async for data in resp.content.iter_any():
            got += len(data)
            biggest = max(biggest, len(data))
            await asyncio.sleep(0.002)  # a consumer slower than the local socket
            ahead = max(ahead, sent - got)
        resp.release()
        assert got == total
        # Held by the client at once: about the high-water mark, never the body.
        assert biggest < HIGH_WATER + 1024 * 1024
        assert ahead < 8 * 1024 * 1024  # socket buffers and the mark, not the 16 MB
    finally:
        await client.close()
        await srv.close()


async def test_closing_an_unfinished_response_closes_the_upstream_connection() -> None:
    async def stream(no: int, n: int, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nfirs\r\n")
        await r.read()  # until the client goes away
        return False

    srv = RawServer(stream)
    url = await srv.start()
    client = H1Client()
    try:
        resp = await request(client, url)
        assert await resp.content.iter_any().__anext__() == b"firs"
        assert not resp.content.is_eof()
        resp.close()  # what open_response does when the gateway's client is gone
        await asyncio.wait_for(srv.closed.wait(), 5)
        assert srv.open == 0 and client.open_connections == 0

        # Cancelled while waiting for the head (the client left before the first byte).
        srv.closed.clear()

        async def held(no: int, n: int, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
            await r.read()
            return False

        srv.handler = held
        task = asyncio.create_task(request(client, url))
        while len(srv.requests) < 2:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(srv.closed.wait(), 5)
        assert client.in_use == 0 and client.open_connections == 0
    finally:
        await client.close()
        await srv.close()


async def test_idle_connections_are_closed_after_the_keepalive_timeout() -> None:
    srv = RawServer(ok)
    url = await srv.start()
    client = H1Client(keepalive_timeout=0.2)
    try:
        assert await _read(await request(client, url)) == b"hello"
        assert client.open_connections == 1
        await asyncio.wait_for(srv.closed.wait(), 5)  # the sweep closed the idle one
        assert client.open_connections == 0
        assert await _read(await request(client, url)) == b"hello"
        assert srv.connections == 2
    finally:
        await client.close()
        await srv.close()
