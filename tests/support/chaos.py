"""Chaos test support: a raw-socket fault server, leak checks, metrics, scale knob.

The fault server speaks HTTP/1.1 by hand (asyncio streams, not aiohttp.web) so a
test can do what no real server library allows: stall before the status line,
send headers and go quiet, cut an event in half, send one endless line. It
counts open connections, so "the gateway closed the upstream request" is a
number that must go back to zero.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import re
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

# CHAOS_SCALE=1 (make chaos / make soak) runs the heavy counts at full size; CI scales down.
SCALE = float(os.environ.get("CHAOS_SCALE", "0.1"))


def scaled(full: int, minimum: int = 1) -> int:
    return max(minimum, int(full * SCALE))


@dataclass
class Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    head: bytes = b""
    body: bytes = b""
    sent: int = 0

    @property
    def path(self) -> str:
        return self.head.split(b" ", 2)[1].decode()

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        self.sent += len(data)
        await self.writer.drain()

    async def headers(
        self,
        status: int = 200,
        ctype: str = "text/event-stream",
        extra: dict[str, str] | None = None,
    ) -> None:
        """Status line and headers for a chunked body."""
        lines = [f"HTTP/1.1 {status} X", f"Content-Type: {ctype}", "Transfer-Encoding: chunked"]
        lines += [f"{k}: {v}" for k, v in (extra or {}).items()]
        await self.send(("\r\n".join(lines) + "\r\n\r\n").encode())

    async def chunk(self, data: bytes) -> None:
        if data:
            await self.send(b"%x\r\n%s\r\n" % (len(data), data))

    async def end(self) -> None:
        await self.send(b"0\r\n\r\n")

    async def reply(
        self,
        status: int,
        body: bytes,
        ctype: str = "application/json",
        extra: dict[str, str] | None = None,
    ) -> None:
        lines = [f"HTTP/1.1 {status} X", f"Content-Type: {ctype}", f"Content-Length: {len(body)}"]
        lines += [f"{k}: {v}" for k, v in (extra or {}).items()]
        await self.send(("\r\n".join(lines) + "\r\n\r\n").encode() + body)

    async def until_peer_closes(self, limit: float = 60.0) -> None:
        """Stay silent until the gateway drops the connection (how every stall ends)."""
        with contextlib.suppress(ConnectionError, TimeoutError):
            async with asyncio.timeout(limit):
                while await self.reader.read(65536):
                    pass


Script = Callable[[Conn], Awaitable[None]]


@dataclass
class FaultServer:
    """One script per connection; ``open`` is the number of connections still open."""

    script: Script | None = None
    open: int = 0
    accepted: int = 0
    requests: int = 0
    conns: list[Conn] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> FaultServer:
        self._server = await asyncio.start_server(self._on_conn, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for c in self.conns:
                c.writer.close()
            await self._server.wait_closed()

    async def _on_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open += 1
        self.accepted += 1
        conn = Conn(reader, writer)
        self.conns.append(conn)
        try:
            while True:  # keep-alive: one script run per request on this connection
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
                conn.head = head
                conn.body = await reader.readexactly(int(m.group(1))) if m else b""
                self.requests += 1
                assert self.script is not None
                await self.script(conn)
                if writer.is_closing():
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.open -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def eventually(check: Callable[[], bool], timeout: float = 5.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout}s: {what}")
        await asyncio.sleep(0.01)


def live_tasks() -> set[asyncio.Task[Any]]:
    return {t for t in asyncio.all_tasks() if not t.done()}


async def assert_no_leaked_tasks(baseline: set[asyncio.Task[Any]], timeout: float = 5.0) -> None:
    """Every task started since ``baseline`` (gateway handlers, upstream readers) has ended."""
    current = asyncio.current_task()

    def extra() -> set[asyncio.Task[Any]]:
        # A fake upstream's own connection task lives as long as the gateway keeps that
        # keep-alive connection in its pool; that is the fake's task, not a gateway leak.
        return {
            t
            for t in live_tasks() - baseline
            if t is not current and "FaultServer._on_conn" not in repr(t.get_coro())
        }

    try:
        await eventually(lambda: not extra(), timeout, "tasks back to the starting set")
    except AssertionError:
        names = sorted(repr(t.get_coro()) for t in extra())
        raise AssertionError(f"{len(names)} leaked tasks: {names[:10]}") from None


def acquired_upstream_connections(gw: Any) -> int:
    """Upstream connections the gateway holds for a request right now (idle pooled ones excluded)."""
    session = getattr(gw, "_session", None)
    connector = getattr(session, "connector", None)
    return len(getattr(connector, "_acquired", ()))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_bytes(pid: int | None = None) -> int:
    """Resident set size from /proc (Linux)."""
    with open(f"/proc/{pid or 'self'}/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def open_fds(pid: int | None = None) -> int:
    return len(os.listdir(f"/proc/{pid or 'self'}/fd"))


def tcp_connections_to(port: int) -> int:
    """ESTABLISHED-ish TCP connections whose remote end is 127.0.0.1:``port`` (from /proc/net/tcp)."""
    want = f"0100007F:{port:04X}"
    n = 0
    with open("/proc/net/tcp") as fh:
        next(fh)
        for line in fh:
            parts = line.split()
            if parts[2] == want and parts[3] == "01":  # 01 = ESTABLISHED
                n += 1
    return n


async def metric(url: str, name: str, **labels: str) -> float:
    """One sample from the gateway's /metrics (0 when absent)."""
    async with aiohttp.ClientSession() as s, s.get(f"{url}/metrics") as r:
        text = await r.text()
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        sample, _, value = line.rpartition(" ")
        got_name, _, rest = sample.partition("{")
        if got_name != name:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', rest))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(value)
    return total


def collect() -> None:
    gc.collect()


class CliGateway:
    """The real CLI (``python -m chromagent_proxy``) as a subprocess on a fixed free port.

    Output goes to files, not pipes: a busy gateway must never block on a full pipe.
    """

    def __init__(self, config: dict[str, Any], tmp: Any, *flags: str) -> None:
        import json
        import subprocess
        import sys
        from pathlib import Path

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        path = Path(tmp) / "gateway.json"
        path.write_text(json.dumps({"host": "127.0.0.1", "logLevel": "warning", **config}))
        self.out = Path(tmp) / "gateway.out"
        self.err = Path(tmp) / "gateway.err"
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        root = Path(__file__).resolve().parents[2]
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "chromagent_proxy",
                    "--config",
                    str(path),
                    "--port",
                    str(self.port),
                    *flags,
                ],
                stdout=out,
                stderr=err,
                env=env,
                cwd=root,
            )

    async def ready(self, timeout: float = 20.0) -> CliGateway:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as s:
            while True:
                if self.proc.poll() is not None:
                    raise AssertionError(
                        f"gateway exited {self.proc.returncode}: {self.err.read_text()[-2000:]}"
                    )
                try:
                    async with s.get(f"{self.url}/health") as r:
                        if r.status == 200:
                            return self
                except aiohttp.ClientError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"gateway not ready: {self.err.read_text()[-2000:]}")
                await asyncio.sleep(0.05)

    def children(self) -> list[int]:
        """Worker pids (direct children of the supervisor)."""
        pids: list[int] = []
        for task in os.listdir(f"/proc/{self.proc.pid}/task"):
            with (
                contextlib.suppress(OSError),
                open(f"/proc/{self.proc.pid}/task/{task}/children") as fh,
            ):
                pids += [int(p) for p in fh.read().split()]
        return pids

    async def wait(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError("gateway did not exit in time")
            await asyncio.sleep(0.05)
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
