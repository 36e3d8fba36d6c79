"""GatewayServer: build the app, own the one shared ClientSession, start and stop."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import aiohttp
from aiohttp import web

from chromagent_proxy.backends.base import BackendRuntime
from chromagent_proxy.backends.h1pool import H1Client
from chromagent_proxy.backends.registry import DefaultBackendRegistry
from chromagent_proxy.core.config import GatewayConfig, validate
from chromagent_proxy.core.config_load import build_config
from chromagent_proxy.core.errors import ConfigError
from chromagent_proxy.core.seal import Sealer
from chromagent_proxy.dialects.responses.dialect import ResponsesDialect
from chromagent_proxy.dialects.responses.store import MemoryStore, RedisStore, ResponseStore
from chromagent_proxy.media.fetcher import make_fetcher
from chromagent_proxy.ops.breaker_redis import SharedHealth
from chromagent_proxy.ops.headerguard import connection_cap, guard_connections
from chromagent_proxy.ops.originguard import is_loopback
from chromagent_proxy.routing.router import Backend, Router
from chromagent_proxy.routing.rules import compile_rules, labelled_models
from chromagent_proxy.service.edge import Edge
from chromagent_proxy.service.handlers import API_PATHS, add_routes
from chromagent_proxy.service.reload import config_version
from chromagent_proxy.service.state import STATE, GatewayState

log = logging.getLogger("chromagent_proxy")


def make_config(
    config: GatewayConfig | Mapping[str, Any], registry: DefaultBackendRegistry
) -> GatewayConfig:
    if isinstance(config, GatewayConfig):
        validate(config, registry.types())
        return config
    return build_config(config, env={}, known_types=registry.types())


def startup_warnings(cfg: GatewayConfig) -> None:
    """Configurations that work but are probably not what the operator meant."""
    if not cfg.api_keys and not is_loopback(cfg.host):
        log.warning(
            "listening on %s without apiKeys: anyone who can reach this port can spend the "
            "backends' provider keys; set apiKeys (GATEWAY_API_KEYS) or bind 127.0.0.1",
            cfg.host,
        )
    cors = cfg.cors
    if (
        cors is not None
        and cors.credentials
        and "*" in ([cors.origin] if isinstance(cors.origin, str) else cors.origin)
    ):
        log.warning(
            'cors: origin "*" with credentials lets every web site call the gateway with its '
            "users' credentials; list your origins in cors.origin instead"
        )


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
        self.edge.metrics.label_models(*labelled_models(self.config, rules))
        # Backend health shared with every replica through Redis (failover.redisUrl).
        redis_url = self.config.health_redis_url
        self.shared = (
            SharedHealth(
                redis_url,
                sync_interval_s=self.config.failover.sync_interval_ms / 1000,
                # Long enough for a probe's verdict (its first byte) before others retry.
                probe_hold_s=self.config.first_byte_timeout_s + 1.0,
                metrics=self.edge.metrics,
            )
            if redis_url
            else None
        )
        self._retired: list[Backend] = []
        self._retire_tasks: set[asyncio.Task[None]] = set()
        self._sock = sock
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._client: H1Client | None = None
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
        self.edge.watch(router)
        self.state = GatewayState(cfg, self.backends, router, cfg.first_byte_timeout_s)
        self.state.responses = make_responses_dialect(cfg)
        self.state.version = self.edge.metrics.config_version = config_version(cfg)
        if self.shared is not None:
            self.state.shared = self.shared
            self.shared.bind(router)
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
        # The built-in backends' upstream requests (README "Upstream client").
        self._client = H1Client(limit=cfg.upstream_connection_limit)
        if self._images is not None:
            await self._images.start()
        runtime = self.runtime(cfg)
        for b in self.backends.values():
            await b.provider.start(runtime)

    def runtime(self, cfg: GatewayConfig) -> BackendRuntime:
        """What providers get at start: the one shared session and ``cfg``'s timeouts."""
        assert self._session is not None
        t = cfg.timeouts
        timeout = aiohttp.ClientTimeout(
            total=t.total_ms / 1000 if t.total_ms else None,
            sock_connect=t.connect_ms / 1000,
            sock_read=t.idle_ms / 1000,
        )
        return BackendRuntime(
            self._session,
            cfg,
            timeout,
            cfg.first_byte_timeout_s,
            images=self._images,
            client=self._client,
        )

    def retire(self, backends: list[Backend], grace: float) -> None:
        """Backends a hot reload replaced: closed after ``grace`` (or at stop)."""
        self._retired.extend(backends)

        async def later() -> None:
            await asyncio.sleep(grace)
            for b in backends:
                if b in self._retired:
                    self._retired.remove(b)
                    await self._close_backend(b)

        task = asyncio.get_running_loop().create_task(later())
        self._retire_tasks.add(task)
        task.add_done_callback(self._retire_tasks.discard)

    async def _close_backend(self, b: Backend) -> None:
        try:
            await b.provider.close()
        except Exception:
            log.exception("closing backend %s failed", b.id)

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
        # aiohttp has no header/body read timeouts nor a connection cap (headerguard.py).
        cfg = self.config
        guard_connections(
            self._runner.server,
            cfg.header_timeout_ms / 1000,
            cfg.body_timeout_ms / 1000,
            connection_cap(cfg.max_connections),
        )
        backlog = self.config.backlog
        if self._sock is not None:
            site: web.BaseSite = web.SockSite(self._runner, self._sock, backlog=backlog)
        else:
            site = web.TCPSite(self._runner, self.config.host, self.config.port, backlog=backlog)
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
        startup_warnings(self.config)
        if self.shared is not None:
            self.shared.start()

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
        if self.shared is not None:
            await self.shared.close()
        for task in list(self._retire_tasks):
            task.cancel()
        for b in [*self.backends.values(), *self._retired]:
            await self._close_backend(b)
        self._retired.clear()
        if self._client is not None:
            await self._client.close()
            self._client = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._images is not None:
            await self._images.close()
        if self.state is not None and self.state.responses is not None:
            store = self.state.responses.store
            if store is not None:
                await store.close()

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
        host = self.config.host
        if host in ("0.0.0.0", "::"):
            # Bound to every interface: say so, and how to reach it from this machine.
            shown = f"http://{'[::]' if host == '::' else host}:{self.port}"
            return (
                f"chromagent_proxy listening on {shown} with backends: {names or 'none'} "
                f"(all interfaces; from this machine: {self.url})"
            )
        return f"chromagent_proxy listening on {self.url} with backends: {names or 'none'}"


def make_responses_dialect(cfg: GatewayConfig) -> ResponsesDialect:
    """The Responses dialect with its sealer (stateSecret) and response store."""
    rc = cfg.responses
    store: ResponseStore | None = None
    if rc.store == "memory":
        store = MemoryStore(rc.max_stored, rc.ttl_ms / 1000)
    elif rc.store == "redis":
        url = rc.redis_url or (cfg.rate_limit.redis_url if cfg.rate_limit else None)
        if not url:
            raise ConfigError(
                'config $.responses.store: "redis" needs responses.redisUrl (or rateLimit.redisUrl)'
            )
        store = RedisStore(url, rc.ttl_ms / 1000)
    return ResponsesDialect(Sealer(cfg.state_secret), store, rc.hosted_tools == "refuse")
