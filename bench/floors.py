"""What a relay with no gateway logic costs, on aiohttp's server and on a bare protocol.

    python -m bench.ab nginx relay-aiohttp openai-json:64 -r 5 -d 4
    python -m bench.ab relay-aiohttp relay-protocol openai-json:64 -r 5 -d 4

Two floors for issue 20's pass-through JSON target (≤ 5× nginx's CPU per request), as
``bench.ab`` targets beside ``nginx`` and the gateway, so their ratios come from one
interleaved run:

- ``relay-aiohttp``: a ``web.Application`` with one route that reads the body and sends
  it, unchanged, through the gateway's own upstream client (``H1Client``) to the fake
  upstream, and answers with the upstream's body. No routing, parse, rename, metrics or
  access line: what the product card's server plus our client cost by themselves.
- ``relay-protocol``: the same relay on a bare ``asyncio.Protocol`` with httptools' C
  parser (what a purpose-built server for the hot POST paths would start from).
  Keep-alive, Content-Length bodies, one request at a time per connection: enough for
  the bench's clients, not a server for anything else.

If ``relay-aiohttp`` alone is near 5× nginx, the target leaves nothing for the gateway's
logic on aiohttp's server; bench/README.md ("The floors") has the run.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from bench import scenarios as sc
from bench import targets as tg
from bench.load import Job
from chromagent_proxy.backends.h1pool import H1Client
from chromagent_proxy.backends.upstream import _release
from chromagent_proxy.backends.upstream_read import read_capped

KINDS = ("relay-aiohttp", "relay-protocol")
_HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer bench"}
_LIMIT = 64 << 20


class Floor(tg.Target):
    """One of ``KINDS`` as a bench target (pinned and measured like the gateway)."""

    def __init__(self, kind: str, workdir: Path) -> None:
        super().__init__(kind, tg.PORTS["gateway"], workdir)
        self.kind = kind
        for scen in sc.all_scenarios():
            if scen.dialect != "openai" or scen.client != "chat" or scen.stream:
                self.skip[scen.name] = "the floors relay whole JSON answers only"

    def command(self) -> list[str]:
        url = f"http://{tg.HOST}:{tg.UPSTREAM_PORT}/v1/chat/completions"
        return [sys.executable, "-m", "bench.floors", self.kind, str(self.port), url]

    def env(self) -> dict[str, str]:
        return dict(super().env(), PYTHONPATH=str(tg.ROOT))

    def job(self, scen: sc.Scenario) -> Job | None:
        return None if scen.name in self.skip else super().job(scen)


async def _forward(client: H1Client, url: str, body: bytes) -> bytes:
    resp = await client.request(
        "POST", url, _HEADERS, body, connect_timeout=10.0, read_timeout=60.0
    )
    try:
        return await read_capped(resp, _LIMIT, "floor")
    finally:
        _release(resp)


async def _serve_aiohttp(port: int, url: str) -> None:
    from aiohttp import web

    client = H1Client(keepalive_timeout=15.0)

    async def chat(request: web.Request) -> web.Response:
        data = await _forward(client, url, await request.read())
        return web.Response(body=data, content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app, access_log=None, backlog=4096)
    await runner.setup()
    await web.TCPSite(runner, tg.HOST, port, backlog=4096).start()
    await asyncio.Event().wait()


class _Relay(asyncio.Protocol):
    """HTTP/1.1 keep-alive, one request in flight per connection, Content-Length bodies."""

    def __init__(self, client: H1Client, url: str) -> None:
        import httptools

        self._client = client
        self._url = url
        self._parser = httptools.HttpRequestParser(self)
        self._parts: list[bytes] = []
        self._transport: asyncio.WriteTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # a TCP transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except Exception:  # a bench client never sends bad HTTP
            if self._transport is not None:
                self._transport.close()

    def on_body(self, body: bytes) -> None:
        self._parts.append(body)

    def on_message_complete(self) -> None:
        body = b"".join(self._parts)
        self._parts = []
        asyncio.get_running_loop().create_task(self._answer(body))

    async def _answer(self, body: bytes) -> None:
        data = await _forward(self._client, self._url, body)
        if self._transport is not None:
            head = (
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
            )
            self._transport.write(head % len(data) + data)


async def _serve_protocol(port: int, url: str) -> None:
    client = H1Client(keepalive_timeout=15.0)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Relay(client, url), tg.HOST, port, backlog=4096)
    async with server:
        await server.serve_forever()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("kind", choices=KINDS)
    p.add_argument("port", type=int)
    p.add_argument("upstream_url")
    args = p.parse_args()
    serve = _serve_aiohttp if args.kind == "relay-aiohttp" else _serve_protocol
    import uvloop

    uvloop.run(serve(args.port, args.upstream_url))


if __name__ == "__main__":
    main()
