"""A fake upstream server on 127.0.0.1 that speaks whatever the test scripts.

It records every request it receives (path, headers, JSON body), can replay
recorded bodies in pieces with pauses, wait on an event before continuing, and
notices when the gateway drops the connection.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Received:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class FakeUpstream:
    routes: dict[str, Handler] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)
    connections: int = 0
    runner: web.AppRunner | None = None
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def route(self, path: str, handler: Handler) -> None:
        self.routes[path] = handler

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.received.append(
            Received(request.method, request.path, dict(request.query), dict(request.headers), body)
        )
        handler = self.routes.get(request.path) or self.routes.get("*")
        if handler is None:
            return web.json_response({"error": {"message": f"no route {request.path}"}}, status=404)
        try:
            return await handler(request)
        except (asyncio.CancelledError, ConnectionResetError):
            self.disconnected.set()
            raise

    async def start(self) -> FakeUpstream:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self.runner = web.AppRunner(app, handler_cancellation=True)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        return self

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


def json_reply(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Handler:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=body, status=status, content_type="application/json", headers=headers
        )

    return handler


def stream_reply(
    body: bytes | list[bytes],
    *,
    content_type: str = "text/event-stream",
    split: int | None = None,
    delay: float = 0.0,
    gate: asyncio.Event | None = None,
    gate_after: int = 1,
    status: int = 200,
    then_hang: bool = False,
) -> Handler:
    """Send ``body`` in pieces (a list, or ``split``-byte slices), pausing ``delay`` between.

    With ``gate``, waits for the event after ``gate_after`` pieces; with
    ``then_hang``, never finishes (for idle-timeout and disconnect tests).
    """
    if isinstance(body, bytes):
        step = split or len(body) or 1
        pieces = [body[i : i + step] for i in range(0, len(body), step)]
    else:
        pieces = list(body)

    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(status=status, headers={"Content-Type": content_type})
        await resp.prepare(request)
        for i, piece in enumerate(pieces):
            if gate is not None and i == gate_after:
                await gate.wait()
            await resp.write(piece)
            if delay:
                await asyncio.sleep(delay)
        if then_hang:
            await asyncio.sleep(3600)
        await resp.write_eof()
        return resp

    return handler


def hang(before_headers: bool = True) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        if not before_headers:
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    return handler
