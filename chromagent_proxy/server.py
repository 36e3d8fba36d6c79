"""GatewayServer: build the app, own the one shared ClientSession, start and stop."""

from __future__ import annotations

import logging
import socket
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import aiohttp
from aiohttp import web

from .backends.base import BackendRuntime
from .backends.registry import DefaultBackendRegistry
from .config import GatewayConfig, build_config, validate
from .edge import Edge
from .errors import ConfigError
from .fetcher import make_fetcher
from .handlers import API_PATHS, add_routes
from .headerguard import guard_headers
from .routing import Backend, Router
from .rules import compile_rules
from .state import STATE, GatewayState

log = logging.getLogger("chromagent_proxy")


def make_config(
    config: GatewayConfig | Mapping[str, Any], registry: DefaultBackendRegistry
) -> GatewayConfig:
    if isinstance(config, GatewayConfig):
        validate(config, registry.types())
        return config
    return build_config(config, env={}, known_types=registry.types())


class GatewayServer:
    """Embed the gateway: ``async with GatewayServer(config) as server: ... server.port``."""

    def __init__(
        self,
        config: GatewayConfig | Mapping[str, Any],
        registry: DefaultBackendRegistry | None = None,
        *,
        sock: socket.socket | None = None,
    ) -> None:
        self.registry = registry or DefaultBackendRegistry()
        self.config = make_config(config, self.registry)
        # Validate every backend now, before anything binds a port.
        self.backends = {b.id: Backend(b, self.registry.create(b)) for b in self.config.backends}
        # The guarded image fetcher (None when media.remoteFetch is off); checks media.allowCidrs now.
        self._images = make_fetcher(self.config.media)
        rules = compile_rules(self.config)  # a bad routing rule stops start-up here
        # Rate limit, API keys, metrics, access log, drain (edge.py); bad edge config stops here.
        self.edge = Edge(self.config)
        # Metric labels: configured model names, and names matching a rule's model glob.
        self.edge.metrics.label_models(
            (m for b in self.config.backends for m in b.model_mapping),
            (cond.model for cond, _ in rules if cond.model is not None),
        )
        self.edge.instrument(self.backends)
        self._sock = sock
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.state: GatewayState | None = None
        self.port: int = self.config.port
        self.app: web.Application | None = None

    @property
    def url(self) -> str:
        host = self.config.host if self.config.host not in ("0.0.0.0", "::") else "127.0.0.1"
        return f"http://{host}:{self.port}"

    def build_app(self) -> web.Application:
        cfg = self.config
        app = web.Application(client_max_size=cfg.max_body_bytes)
        router = Router(cfg, self.backends)
        self.state = GatewayState(cfg, self.backends, router, cfg.first_byte_timeout_s)
        self.state.on_upstream_error = self.edge.upstream_error
        self.state.on_models_listed = self.edge.metrics.listed_models
        app[STATE] = self.state
        add_routes(app, self.edge.wrap, self.edge.metrics_handler, cors=cfg.cors is not None)
        self.edge.install(app, cfg, API_PATHS)
        self.app = app
        return app

    async def _start_backends(self) -> None:
        cfg = self.config
        connector = aiohttp.TCPConnector(
            limit=cfg.upstream_connection_limit, ttl_dns_cache=300, enable_cleanup_closed=True
        )
        # No total timeout: long streams must not be cut at aiohttp's 300 s default.
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None),
            trust_env=False,
            skip_auto_headers=("User-Agent",),
            # One session serves every client: never keep an upstream's cookies (they would
            # leak between users), and skip the jar's per-request work.
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        t = cfg.timeouts
        timeout = aiohttp.ClientTimeout(
            total=t.total_ms / 1000 if t.total_ms else None,
            sock_connect=t.connect_ms / 1000,
            sock_read=t.idle_ms / 1000,
        )
        if self._images is not None:
            await self._images.start()
        runtime = BackendRuntime(
            self._session, cfg, timeout, cfg.first_byte_timeout_s, images=self._images
        )
        for b in self.backends.values():
            await b.provider.start(runtime)

    async def start(self) -> None:
        app = self.build_app()
        await self._start_backends()
        # Production cancels a handler when its client goes away, so the upstream
        # request is closed at once instead of running to completion.
        # stop() drains first (edge.drain), so aiohttp's own wait only meets stragglers.
        self._runner = web.AppRunner(
            app, handler_cancellation=True, access_log=None, shutdown_timeout=1.0
        )
        await self._runner.setup()
        # aiohttp has no header-read timeout: close slowloris connections (headerTimeoutMs).
        guard_headers(self._runner.server, self.config.header_timeout_ms / 1000)
        if self._sock is not None:
            site: web.BaseSite = web.SockSite(self._runner, self._sock)
        else:
            site = web.TCPSite(self._runner, self.config.host, self.config.port)
        try:
            await site.start()
        except OSError as exc:
            await self.stop()
            raise ConfigError(
                f"cannot listen on {self.config.host}:{self.config.port}: {exc.strerror or exc}"
            ) from None
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.port = sockets[0].getsockname()[1]
        self.edge.start()

    async def stop(self) -> None:
        if self.state is not None:
            self.state.draining = True
        if self._runner is not None:
            # Stop accepting, let in-flight requests and streams finish (shutdownTimeoutMs).
            for site in list(self._runner.sites):
                await site.stop()
            await self.edge.drain()
            await self._runner.cleanup()
            self._runner = None
        await self.edge.close()
        for b in self.backends.values():
            try:
                await b.provider.close()
            except Exception:
                log.exception("closing backend %s failed", b.id)
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._images is not None:
            await self._images.close()

    async def __aenter__(self) -> GatewayServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def describe(self) -> str:
        names = ", ".join(
            f"{b.id} ({b.config.type}{'' if b.config.enabled else ', disabled'})"
            for b in self.backends.values()
        )
        return f"chromagent_proxy listening on {self.url} with backends: {names or 'none'}"
