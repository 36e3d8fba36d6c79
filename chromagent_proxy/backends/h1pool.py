"""The keep-alive pool of the upstream HTTP/1.1 client (``h1client.py`` is one connection).

One pool per origin (scheme, host, port). ``limit`` caps connections in use in total and
``limit_per_host`` per origin (0: no cap), as aiohttp's ``TCPConnector`` does; an idle
connection is closed after ``keepalive_timeout`` seconds. A pooled connection the server
had closed before answering is retried once on a fresh connection (nothing of the request
was answered, as aiohttp does). DNS answers are kept for ``dns_ttl`` seconds.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections import deque
from collections.abc import Mapping
from urllib.parse import urlsplit

from chromagent_proxy.backends.h1client import (
    ConnectError,
    Connection,
    ConnectTimeout,
    InvalidURL,
    _Stale,
)
from chromagent_proxy.backends.h1response import Response
from chromagent_proxy.core.body import Body

Key = tuple[str, str, int]
_TARGETS_MAX = 1024


def _head_prefix(method: str, path: str, host: str, headers: Mapping[str, str]) -> bytes:
    """The request line and header lines, without Content-Length and the blank line."""
    lines = [f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n"]
    for k, v in headers.items():
        lines.append(f"{k}: {v}\r\n")
    head = "".join(lines).encode("latin-1")
    if head.count(b"\n") != len(lines) + 1:
        raise ValueError("a request header contains a line break")
    return head


class H1Client:
    def __init__(
        self,
        *,
        limit: int = 0,
        limit_per_host: int = 0,
        keepalive_timeout: float = 15.0,
        ssl_context: ssl.SSLContext | None = None,
        dns_ttl: float = 300.0,
    ) -> None:
        self._limit = limit
        self._limit_per_host = limit_per_host
        self._keepalive = keepalive_timeout
        # Made here, at start: loading the CA store blocks (aiohttp does it at import).
        self._ssl = ssl_context or ssl.create_default_context()
        self._dns_ttl = dns_ttl
        self._idle: dict[Key, list[Connection]] = {}
        self._all: set[Connection] = set()
        self._in_use = 0
        self._in_use_host: dict[Key, int] = {}
        self._waiters: deque[tuple[Key, asyncio.Future[None]]] = deque()
        self._targets: dict[str, tuple[Key, str, str]] = {}
        self._heads: dict[str, tuple[str, dict[str, str], bytes]] = {}
        self._dns: dict[tuple[str, int], tuple[float, list[tuple[str, int]]]] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False

    # the request ------------------------------------------------------------------
    async def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: Body,
        *,
        connect_timeout: float | None,
        read_timeout: float | None,
        total_timeout: float | None = None,
        head_timeout: float | None = None,
    ) -> Response:
        """Send one request; returns once the response head arrived. The caller must
        ``release()`` (fully read: back to the pool) or ``close()`` the response.

        ``head_timeout`` bounds everything up to the response head (waiting for a free
        connection, connecting, sending, the head itself) and raises ``TimeoutError``:
        one timer on the connection, not an ``asyncio.timeout`` per request."""
        key, path, host = self._target(url)
        # The head up to Content-Length is the same for every request of a backend with
        # the same headers: encoded once, and reused while the headers compare equal (in
        # any order: the order of different field names has no meaning, RFC 9110 §5.3).
        # Only plain dicts: a multidict may repeat a name, and compares case-insensitively.
        plain = type(headers) is dict
        hit = self._heads.get(url) if plain else None
        if hit is not None and hit[0] == method and hit[1] == headers:
            prefix = hit[2]
        else:
            prefix = _head_prefix(method, path, host, headers)
            if plain:
                if len(self._heads) >= _TARGETS_MAX:
                    self._heads.clear()
                self._heads[url] = (method, dict(headers), prefix)
        head = prefix + b"Content-Length: %d\r\n\r\n" % len(body)
        now = asyncio.get_running_loop().time()
        head_by = now + head_timeout if head_timeout else float("inf")
        if not self._free(key):
            async with asyncio.timeout_at(head_by if head_timeout else None):
                await self._acquire(key)
            now = asyncio.get_running_loop().time()
        else:
            self._take_slot(key)
        idle = read_timeout or 0.0
        conn: Connection | None = None
        try:
            conn = self._take_idle(key, now)
            if conn is not None:
                try:
                    return await conn.send(head, body, idle, total_timeout, head_by)
                except _Stale:
                    conn.close()
                    self._all.discard(conn)
            conn = await self._connect(key, connect_timeout, head_by)
            return await conn.send(head, body, idle, total_timeout, head_by)
        except BaseException:
            # Cancelled (client gone), timed out or failed: the connection is not reusable.
            if conn is not None:
                conn.close()
                self._all.discard(conn)
            self._release_slot(key)
            raise

    def _target(self, url: str) -> tuple[Key, str, str]:
        t = self._targets.get(url)
        if t is None:
            u = urlsplit(url)
            try:
                port = u.port or (443 if u.scheme == "https" else 80)
            except ValueError:
                raise InvalidURL(url[:80]) from None
            if u.scheme not in ("http", "https") or not u.hostname:
                raise InvalidURL(url[:80])
            default = (u.scheme == "https" and port == 443) or (u.scheme == "http" and port == 80)
            host = u.hostname if ":" not in u.hostname else f"[{u.hostname}]"
            path = (u.path or "/") + (f"?{u.query}" if u.query else "")
            if len(self._targets) >= _TARGETS_MAX:
                self._targets.clear()
            t = self._targets[url] = (
                (u.scheme, u.hostname, port),
                path,
                host if default else f"{host}:{port}",
            )
        return t

    # connections ------------------------------------------------------------------
    async def _connect(self, key: Key, connect_timeout: float | None, head_by: float) -> Connection:
        scheme, host, port = key
        loop = asyncio.get_running_loop()
        left = head_by - loop.time()
        async with asyncio.timeout(left if left != float("inf") else None):
            addrs = await self._resolve(loop, host, port)
        tls = self._ssl if scheme == "https" else None
        err: OSError | None = None
        left = head_by - loop.time()
        by_connect = connect_timeout is not None and connect_timeout <= left
        try:
            limit = connect_timeout if by_connect else None if left == float("inf") else left
            async with asyncio.timeout(limit):
                for addr, p in addrs:
                    try:
                        _, proto = await loop.create_connection(
                            lambda: Connection(self, key),
                            addr,
                            p,
                            ssl=tls,
                            server_hostname=host if tls else None,
                        )
                    except OSError as exc:
                        err = exc
                        continue
                    self._all.add(proto)
                    return proto
        except TimeoutError:
            if not by_connect:
                raise  # the head's deadline (first-byte timeout) came first
            raise ConnectTimeout(f"Connection timeout to host {host}:{port}") from None
        raise ConnectError(err or OSError("no address"))

    async def _resolve(
        self, loop: asyncio.AbstractEventLoop, host: str, port: int
    ) -> list[tuple[str, int]]:
        hit = self._dns.get((host, port))
        now = loop.time()
        if hit is not None and hit[0] > now:
            return hit[1]
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise ConnectError(exc) from None
        addrs = list(dict.fromkeys((str(i[4][0]), int(i[4][1])) for i in infos))
        self._dns[(host, port)] = (now + self._dns_ttl, addrs)
        return addrs

    def _take_idle(self, key: Key, now: float) -> Connection | None:
        idle = self._idle.get(key)
        if not idle:
            return None
        while idle:
            conn = idle.pop()  # the most recently used: least likely closed by the server
            if conn.closed or now - conn.idle_since > self._keepalive:
                conn.close()
                self._all.discard(conn)
                continue
            conn.reused = True
            return conn
        return None

    def put_back(self, conn: Connection) -> None:
        """Called by a connection whose response is finished (closed or reusable)."""
        self._release_slot(conn.key)
        if conn.closed or self._closed:
            conn.close()
            self._all.discard(conn)
            return
        loop = asyncio.get_running_loop()
        conn.idle_since = loop.time()
        self._idle.setdefault(conn.key, []).append(conn)
        if self._sweeper is None:
            self._sweeper = loop.call_later(self._keepalive, self._sweep)

    def lost(self, conn: Connection) -> None:
        if not conn.busy:
            self._all.discard(conn)  # an idle one: dropped from its pool when next looked at

    def _sweep(self) -> None:
        """Close idle connections past the keep-alive timeout (one timer for the client)."""
        self._sweeper = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        left = False
        for key, idle in list(self._idle.items()):
            keep = []
            for c in idle:
                if not c.closed and now - c.idle_since <= self._keepalive:
                    keep.append(c)
                else:
                    c.close()
                    self._all.discard(c)
            if keep:
                self._idle[key] = keep
                left = True
            else:
                del self._idle[key]
        if left:
            self._sweeper = loop.call_later(self._keepalive / 2, self._sweep)

    # limits -----------------------------------------------------------------------
    def _free(self, key: Key) -> bool:
        if self._limit and self._in_use >= self._limit:
            return False
        return not self._limit_per_host or self._in_use_host.get(key, 0) < self._limit_per_host

    async def _acquire(self, key: Key) -> None:
        if not self._free(key):
            fut = asyncio.get_running_loop().create_future()
            self._waiters.append((key, fut))
            try:
                await fut
            except BaseException:
                if fut.done() and not fut.cancelled():
                    self._release_slot(key)  # it was handed a slot it will not use
                else:
                    self._waiters.remove((key, fut))
                raise
            return  # the slot was taken for us by _wake_next
        self._take_slot(key)

    def _take_slot(self, key: Key) -> None:
        self._in_use += 1
        self._in_use_host[key] = self._in_use_host.get(key, 0) + 1

    def _release_slot(self, key: Key) -> None:
        self._in_use -= 1
        n = self._in_use_host[key] - 1
        if n:
            self._in_use_host[key] = n
        else:
            del self._in_use_host[key]
        if self._waiters:
            self._wake_next()

    def _wake_next(self) -> None:
        for i, (key, fut) in enumerate(self._waiters):
            if fut.done():
                continue
            if self._free(key):
                del self._waiters[i]
                self._take_slot(key)
                fut.set_result(None)
                return

    @property
    def in_use(self) -> int:
        return self._in_use

    @property
    def open_connections(self) -> int:
        return len(self._all)

    async def close(self) -> None:
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for conn in list(self._all):
            conn.close()
        self._all.clear()
        self._idle.clear()
        await asyncio.sleep(0)  # let the transports run connection_lost
