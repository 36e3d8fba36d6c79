"""Run the real gateway (production handler settings) on 127.0.0.1:0 for a test."""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import openai

from chromagent_proxy import DefaultBackendRegistry, GatewayServer


@asynccontextmanager
async def run_gateway(
    config: dict[str, Any], registry: DefaultBackendRegistry | None = None
) -> AsyncIterator[GatewayServer]:
    cfg = {"host": "127.0.0.1", **config, "port": 0}
    server = GatewayServer(cfg, registry)
    await server.start()
    _clients[server] = []
    try:
        yield server
    finally:
        # The SDK clients made for this gateway: their pooled connections closed, not leaked.
        for client in _clients.pop(server, []):
            await client.close()
        await server.stop()


# SDK clients per running gateway (run_gateway closes them when the gateway stops).
_clients: weakref.WeakKeyDictionary[GatewayServer, list[openai.AsyncOpenAI]] = (
    weakref.WeakKeyDictionary()
)


def sdk(server: GatewayServer, **kw: Any) -> openai.AsyncOpenAI:
    """The official SDK pointed at the gateway, no retries so every failure is visible.
    Closed by run_gateway when the gateway stops."""
    client = openai.AsyncOpenAI(
        base_url=f"{server.url}/v1", api_key=kw.pop("api_key", "test-key"), max_retries=0, **kw
    )
    _clients.setdefault(server, []).append(client)
    return client
