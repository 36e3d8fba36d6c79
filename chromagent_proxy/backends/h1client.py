"""A small HTTP/1.1 keep-alive client for upstream requests (asyncio Protocol + httptools).

Built as the A/B of issue 20 against aiohttp's ``ClientSession`` (bench/README.md): one
request = one ``transport.write`` of pre-encoded bytes, a C parser, no per-request
request/connector/timer objects beyond what the exchange needs. Connections and the pool
are in ``h1pool.py``; this module is one connection and its response.

Response bodies arrive through ``iter_any()`` (all bytes buffered so far per step, like
aiohttp's ``StreamReader.iter_any``) with flow control: reading pauses while more than
``HIGH_WATER`` bytes wait for a slow consumer. The timeouts (idle, total, first byte) share
one timer per connection that outlives requests: a wait leaves an armed timer alone when it
fires no later than the wait's deadline (it re-checks and re-arms when it fires), so a
keep-alive connection arms about one timer per timeout period instead of one per request
(``call_at`` + ``cancel`` were ≈ 4 % of a pass-through request, bench/README.md).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, cast

import httptools

from chromagent_proxy.backends.h1response import Response, head_end
from chromagent_proxy.core.body import Body, Buffer, buffers

if TYPE_CHECKING:
    from chromagent_proxy.backends.h1pool import H1Client

HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024
WRITE_PIECE = 256 * 1024  # large request bodies go out in pieces, waiting for the socket


class ClientError(Exception):
    """Base of what the client raises (besides TimeoutError subclasses)."""


class ConnectError(ClientError):
    def __init__(self, os_error: OSError) -> None:
        super().__init__(str(os_error))
        self.os_error = os_error


class ConnectTimeout(TimeoutError):
    """The connection (TCP, then TLS) was not set up within the connect timeout."""


class ReadTimeout(TimeoutError):
    """Nothing arrived within the idle (sock_read) timeout, or the total ran out."""


class ServerDisconnectedError(ClientError):
    """The connection closed before a response head arrived."""


class InvalidURL(ClientError):
    """A backend URL that is not http(s)://host[:port]/path (aiohttp's class name)."""


class ResponseError(ClientError):
    """The response head could not be parsed."""


class PayloadError(ClientError):
    """The body ended early (connection closed mid-body) or could not be parsed."""


class _Stale(Exception):
    """A pooled connection the server had closed before answering: retry on a fresh one."""


class Connection(asyncio.Protocol):
    """One upstream connection; it parses one response at a time (no pipelining)."""

    __slots__ = (
        "_chunks",
        "_client",
        "_deadline",
        "_exc",
        "_head",
        "_head_by",
        "_idle",
        "_last",
        "_loop",
        "_parser",
        "_paused",
        "_size",
        "_timer",
        "_timer_at",
        "_waiter",
        "_wpaused",
        "body_framed",
        "busy",
        "closed",
        "cut",
        "done",
        "encoding",
        "got_head",
        "idle_since",
        "keep",
        "key",
        "raw_head",
        "reused",
        "status",
        "transport",
    )

    def __init__(self, client: H1Client, key: tuple[str, str, int]) -> None:
        self._client = client
        self.key = key
        self._loop = asyncio.get_running_loop()
        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reused = False
        self.busy = False  # an exchange is running on it
        self.idle_since = 0.0
        self._waiter: asyncio.Future[None] | None = None
        self._wpaused = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0  # when _timer fires
        # Empty whenever a request starts (a connection goes back to the pool only once
        # its body was read whole): one deque for the connection's life.
        self._chunks: deque[bytes] = deque()
        self._reset(0.0, None, float("inf"))

    def _reset(self, idle: float, total: float | None, head_by: float) -> None:
        self.status = 0
        self.got_head = False  # any byte of a response seen
        self.done = False  # the response is complete
        self.keep = False  # and the connection may carry another one
        self.cut = False  # the request body was not written whole
        self.body_framed = False  # Content-Length or chunked (else: ends at close)
        self._head = b""  # the bytes received until the response head is complete
        self.raw_head = b""  # the head's header lines (a Response keeps them)
        self.encoding: str | None = None  # the first Content-Encoding header's value
        self._size = 0
        self._paused = False
        self._exc: BaseException | None = None
        self._idle = idle
        self._last = self._loop.time()
        self._deadline = self._last + total if total else None
        self._head_by = head_by  # loop time by which the response head must be in

    # asyncio.Protocol -------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: no isinstance check.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._last = self._loop.time()
        if not self.busy:
            self.close()  # bytes on an idle pooled connection: not ours to read
            return
        self.got_head = True
        if not self.status:
            self._head = self._head + data if self._head else data
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(ResponseError("the upstream switched protocols"))
        except httptools.HttpParserError as exc:
            if self.status:
                self._fail(PayloadError(f"malformed response body: {exc}"))
            else:
                self._fail(ResponseError(f"malformed response head: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._cancel_timer()
        self._client.lost(self)
        if self.done:
            return
        if self.status and not self.body_framed and exc is None:
            self.on_message_complete()  # a close-delimited body ends here
        elif self.status:
            self._fail(PayloadError("Response payload is not completed: the connection closed"))
        elif self.reused and not self.got_head:
            self._fail(_Stale())
        else:
            self._fail(ServerDisconnectedError("Server disconnected"))

    def pause_writing(self) -> None:
        self._wpaused = True

    def resume_writing(self) -> None:
        self._wpaused = False
        self._wake()

    # httptools callbacks ----------------------------------------------------------
    # No on_header: httptools would call it once per header line (providers send 15-25),
    # ≈ 0.5 µs each; the head's bytes are kept instead and read only for what is needed.
    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        head = self._head
        end = head_end(head)
        if 100 <= status < 200:
            self._head = head[end:]  # an interim answer (100 Continue): the real one follows
            return
        self._head = b""
        self.raw_head = raw = head[head.find(b"\n") + 1 : end]  # after the status line
        low = b"\n" + raw.lower()  # names found at line starts only
        self.body_framed = b"\ncontent-length:" in low or b"\ntransfer-encoding:" in low
        i = low.find(b"\ncontent-encoding:")
        if i != -1:
            j = raw.find(b"\n", i)  # raw is low without its first byte: i + 17 is the value
            self.encoding = raw[i + 17 : j if j != -1 else len(raw)].strip().decode("latin-1")
        self.status = status
        self._wake()

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._size += len(body)
        if self._size > HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        w = self._waiter  # _wake inlined: once per HTTP chunk of a stream
        if w is not None and not w.done():
            w.set_result(None)

    def on_message_complete(self) -> None:
        if not self.status:
            return  # the end of an interim answer
        self.done = True
        # Asked here: llhttp forgets the message's flags once its callback returns.
        self.keep = self._parser.should_keep_alive()
        self._wake()

    # the exchange -------------------------------------------------------------------
    async def send(
        self, head: bytes, body: Body, idle: float, total: float | None, head_by: float
    ) -> Response:
        """Write the request, wait for the response head; raise ``_Stale`` to retry."""
        self._reset(idle, total, head_by)
        self.busy = True
        t = self.transport
        if self.closed or t is None or t.is_closing():
            raise _Stale if self.reused else ServerDisconnectedError("Server disconnected")
        if len(body) <= WRITE_PIECE:  # one write; joining a small body costs less
            t.write(head + body if isinstance(body, bytes) else b"".join((head, *body.parts)))
        else:
            await self._send_large(t, head, body)
        while not self.status:
            await self._wait()
        return Response(self)

    async def _send_large(self, t: asyncio.Transport, head: bytes, body: Body) -> None:
        """Write the head and body in groups of about WRITE_PIECE bytes, waiting for the
        socket to take each (the timeouts run: an upstream that stops reading cannot hold
        the request forever). A group's buffers (views of the body's pieces, never
        joined here) go in one ``writelines``: uvloop sends them with one writev."""
        group: list[Buffer] = [head]
        room = WRITE_PIECE
        left = len(body)
        for part in buffers(body):
            view = memoryview(part)
            size = len(view)
            at = 0
            while at < size:
                n = min(room, size - at)
                group.append(view[at : at + n] if n < size else view)
                at += n
                left -= n
                room -= n
                if room and left:
                    continue
                t.writelines(group)
                group = []
                room = WRITE_PIECE
                while self._wpaused and not self.status and not self.closed:
                    await self._wait()
                if self.status or self.closed:
                    # Answered (or gone) before the body was sent: stop writing; the
                    # connection is mid-request and cannot carry another one.
                    self.cut = left > 0
                    return

    async def _wait(self) -> None:
        if self._exc is not None:
            raise self._exc
        self._waiter = self._loop.create_future()
        # An armed timer that fires no later than this wait's deadline will do: it
        # re-checks when it fires. Only a later one (or none) is replaced.
        timer = self._timer
        if timer is None:
            self._arm(self._due())
        elif self._timer_at > (due := self._due()):
            timer.cancel()
            self._timer = None
            self._arm(due)
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _due(self) -> float:
        """When the wait in progress times out: idle gap, total, or the head's deadline."""
        at = self._last + self._idle if self._idle else float("inf")
        if self._deadline is not None and self._deadline < at:
            at = self._deadline
        if not self.status and self._head_by < at:
            at = self._head_by
        return at

    def _arm(self, due: float) -> None:
        if due != float("inf"):  # no timeout configured at all: nothing to arm
            self._timer = self._loop.call_at(due, self._on_timer)
            self._timer_at = due

    def _on_timer(self) -> None:
        self._timer = None
        w = self._waiter
        if w is None or w.done():
            return  # not waiting (between reads, or idle in the pool): the next wait arms
        # call_at may fire up to the clock's resolution early: allow for it.
        if self._loop.time() >= self._due() - 0.001:
            w.set_exception(ReadTimeout("Timeout on reading data from socket"))
        else:
            self._arm(self._due())

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        if self._exc is None:
            self._exc = exc
        self._cancel_timer()
        w = self._waiter
        if w is not None and not w.done():
            w.set_exception(exc)
        if not self.closed and self.transport is not None:
            self.transport.abort()

    async def read(self) -> bytes:
        """All bytes buffered (at least one), or b"" at the end of the body."""
        while not self._chunks:
            if self.done:
                return b""
            await self._wait()
        return self.take()

    def at_eof(self) -> bool:
        """The whole body has arrived and been read."""
        return self.done and not self._chunks

    def take(self) -> bytes:
        """All bytes buffered now (b"" if none), without waiting."""
        chunks = self._chunks
        if not chunks:
            return b""
        data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._size = 0
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return data

    def finish(self, reuse: bool) -> None:
        """The consumer is done: back to the pool if fully read and keep-alive, else close.
        The timer stays armed on a pooled connection (the next request's wait reuses it;
        if it fires first it finds no wait and lapses)."""
        self.busy = False
        if reuse and self.done and self.keep and not self.cut and not self._chunks:
            self._client.put_back(self)
        else:
            self.close()
            self._client.put_back(self)

    def close(self) -> None:
        """Drop the connection now: abort, not close, so that request bytes still queued
        (an upstream that stopped reading) are not waited for."""
        self._cancel_timer()
        if self.transport is not None and not self.closed:
            self.transport.abort()
        self.closed = True
