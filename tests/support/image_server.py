"""A raw HTTP/1.1 image server on loopback that counts every TCP connection it accepts.

Raw asyncio (not aiohttp.web) so a test can lie in headers, omit
Content-Length, stall mid-body, or redirect anywhere, and so "zero
connections" really means no TCP connection reached the port.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

# A real 1x1 PNG, and the smallest byte strings the signature sniffer accepts.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 32 + b"\xff\xd9"
GIF = b"GIF89a\x01\x00\x01\x00\x00\x00\x00;"
WEBP = b"RIFF\x1a\x00\x00\x00WEBPVP8L" + b"\x00" * 14

Writer = asyncio.StreamWriter
Route = Callable[[Writer], Awaitable[None]]


@dataclass
class Seen:
    path: str
    headers: dict[str, str]


@dataclass
class CountingServer:
    routes: dict[str, Route] = field(default_factory=dict)
    connections: int = 0
    requests: list[Seen] = field(default_factory=list)
    disconnects: int = 0
    port: int = 0
    ipv6: bool = False
    _servers: list[asyncio.Server] = field(default_factory=list)

    def url(self, path: str = "/img.png", host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    async def start(self) -> CountingServer:
        srv = await asyncio.start_server(self._on_connection, "127.0.0.1", 0)
        self.port = srv.sockets[0].getsockname()[1]
        self._servers.append(srv)
        # Same port on ::1 when the host has IPv6, so [::1] tests would be seen too.
        with contextlib.suppress(OSError):
            self._servers.append(await asyncio.start_server(self._on_connection, "::1", self.port))
            self.ipv6 = True
        return self

    async def close(self) -> None:
        for srv in self._servers:
            srv.close()
            await srv.wait_closed()

    async def _on_connection(self, reader: asyncio.StreamReader, writer: Writer) -> None:
        self.connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1]
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                self.requests.append(Seen(path, headers))
                route = self.routes.get(path.split("?")[0])
                if route is None:
                    await reply(404, b"not found", content_type="text/plain")(writer)
                else:
                    await route(writer)
                if writer.is_closing():
                    return
        except (ConnectionError, asyncio.CancelledError):
            self.disconnects += 1
        finally:
            writer.close()


def reply(
    status: int,
    body: bytes = b"",
    *,
    content_type: str = "image/png",
    headers: dict[str, str] | None = None,
    content_length: bool = True,
    close: bool = False,
) -> Route:
    """A complete response; without Content-Length the body ends when the connection closes."""

    async def route(writer: Writer) -> None:
        lines = [f"HTTP/1.1 {status} X", f"Content-Type: {content_type}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        if content_length:
            lines.append(f"Content-Length: {len(body)}")
        if close or not content_length:
            lines.append("Connection: close")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        await writer.drain()
        if close or not content_length:
            writer.close()

    return route


def redirect(location: str, status: int = 302) -> Route:
    return reply(status, content_type="text/plain", headers={"Location": location})


def stall(head: bytes, first: bytes = b"", seconds: float = 30.0) -> Route:
    """Send the head and ``first`` body bytes, then go quiet (slow-body and timeout tests)."""

    async def route(writer: Writer) -> None:
        writer.write(head + first)
        await writer.drain()
        await asyncio.sleep(seconds)
        writer.close()

    return route
