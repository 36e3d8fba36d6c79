"""What handlers share: config, router, backends. Stored on the app under one AppKey."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from chromagent_proxy.core.config import GatewayConfig
from chromagent_proxy.dialects.responses.dialect import ResponsesDialect
from chromagent_proxy.ops.breaker_redis import SharedHealth
from chromagent_proxy.routing.router import Backend, Router
from chromagent_proxy.service.deadlines import Deadlines

log = logging.getLogger("chromagent_proxy")

MODEL_LIST_TTL = 30.0


@dataclass(slots=True)
class GatewayState:
    config: GatewayConfig
    backends: dict[str, Backend]
    router: Router
    first_byte_timeout: float
    draining: bool = False
    # The Responses dialect (sealer and response store built from the config).
    responses: ResponsesDialect | None = None
    # The config version (reload.config_version); config, backends and router are swapped
    # together, with no await in between, by a hot reload (reload.py).
    version: str = ""
    # Backend health shared through Redis (failover.redisUrl), or None.
    shared: SharedHealth | None = None
    # Told of the model names backends list (served by GET /v1/models), which then get
    # their own metrics label; set by the server.
    on_models_listed: Callable[[list[str]], None] | None = None
    # The streams' first-byte waits (attempts.stream): one timer, not one per stream.
    deadlines: Deadlines = field(default_factory=Deadlines)
    _models_cache: tuple[float, dict[str, list[str]]] = (0.0, {})
    _models_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def extra_models(self) -> dict[str, list[str]]:
        """Models backends discover at run time (e.g. pulled Ollama models), cached briefly."""
        stamp, cached = self._models_cache
        if time.monotonic() - stamp < MODEL_LIST_TTL:
            return cached
        async with self._models_lock:
            stamp, cached = self._models_cache
            if time.monotonic() - stamp < MODEL_LIST_TTL:
                return cached
            enabled = [b for b in self.backends.values() if b.config.enabled]
            results = await asyncio.gather(
                *(b.provider.list_models() for b in enabled), return_exceptions=True
            )
            found: dict[str, list[str]] = {}
            for b, res in zip(enabled, results, strict=True):
                if isinstance(res, BaseException):
                    log.info("listing models of backend %s failed: %s", b.id, res)
                elif res:
                    found[b.id] = list(res)
            self._models_cache = (time.monotonic(), found)
            if self.on_models_listed is not None:
                self.on_models_listed([m for names in found.values() for m in names])
            return found

    async def discovered_models(self) -> dict[str, str]:
        """Discovered model → the first backend listing it (as /v1/models shows it)."""
        out: dict[str, str] = {}
        for backend_id, names in (await self.extra_models()).items():
            for name in names:
                out.setdefault(name, backend_id)
        return out


STATE = web.AppKey("chromagent_state", GatewayState)
