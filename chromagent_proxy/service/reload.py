"""Hot reload: SIGHUP (or a changed config file, ``configWatchMs``) swaps the config in place.

The new config is read and validated completely first — file, env, flags,
backends (their providers are created and started), routing rules — and only
then swapped in one synchronous step (no await between the assignments, so no
request sees half of it). A request already running keeps the plan, backends
and providers it started with; new requests use the new ones. Anything wrong
refuses the reload with one log line and the old config keeps serving.

What is rebuilt: backends whose config changed (unchanged ones keep their
provider and its caches), the router (round robin starts afresh),
routing rules. What survives: the listening socket, the shared ClientSession,
metrics, the edge (rate limiter, API keys, CORS, access log) and backend health
for ids that remain. Settings of the process itself need a restart (listed in
the README); a reload that changes them applies the rest and logs which ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from chromagent_proxy.core.config import GatewayConfig
from chromagent_proxy.core.errors import ConfigError
from chromagent_proxy.routing.router import Backend, Router
from chromagent_proxy.routing.rules import compile_rules, labelled_models

if TYPE_CHECKING:
    from chromagent_proxy.service.server import GatewayServer

log = logging.getLogger("chromagent_proxy")

# Process-level settings: not part of the version (replicas on other ports still agree),
# and a reload cannot change them.
_PROCESS_KEYS = ("port", "host", "workers", "logLevel", "logFormat")
_RESTART_KEYS = (
    *_PROCESS_KEYS,
    "rateLimit",
    "apiKeys",
    "cors",
    "maxBodyBytes",
    "headerTimeoutMs",
    "tracing",
    "upstreamConnectionLimit",
    "backlog",
    "media",
    "shutdownTimeoutMs",
    "configWatchMs",
    "responses",
    "stateSecret",
    "bodyTimeoutMs",
    "maxConnections",
)
# A provider is reused only if these are unchanged too (its runtime was built from them).
_RUNTIME_KEYS = ("timeout", "timeouts", "media")


def _as_dict(cfg: GatewayConfig) -> dict[str, object]:
    return msgspec.to_builtins(cfg)  # type: ignore[no-any-return]


def config_version(cfg: GatewayConfig) -> str:
    """A short hash of what the config serves (process-level keys left out)."""
    data = {k: v for k, v in _as_dict(cfg).items() if k not in _PROCESS_KEYS}
    return hashlib.sha256(msgspec.json.encode(data, order="sorted")).hexdigest()[:12]


async def apply(server: GatewayServer, new: GatewayConfig) -> str:
    """Swap ``new`` into a running server; ConfigError (nothing changed) if it is unusable."""
    state = server.state
    if state is None:
        raise ConfigError("the gateway is not running")
    old = server.config
    rules = compile_rules(new)
    before, after = _as_dict(old), _as_dict(new)
    same_runtime = all(before.get(k) == after.get(k) for k in _RUNTIME_KEYS)
    if new.health_redis_url != old.health_redis_url:
        raise ConfigError("config $.failover.redisUrl: changing it needs a restart")
    backends: dict[str, Backend] = {}
    fresh: list[Backend] = []
    try:
        for b in new.backends:
            prev = server.backends.get(b.id)
            if same_runtime and prev is not None and prev.config == b:
                backends[b.id] = prev
            else:
                # Creating a provider may read files (credentials): off the event loop.
                provider = await asyncio.to_thread(server.registry.create, b)
                backends[b.id] = Backend(b, provider)
                fresh.append(backends[b.id])
        runtime = server.runtime(new)
        for started in fresh:
            await started.provider.start(runtime)
    except Exception as exc:
        await _close(fresh)
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"config: backend set-up failed: {exc}") from None
    old_router = state.router
    carry = {i: h for i, h in old_router.health.items() if i in backends}
    router = Router(new, backends, carry=carry)
    router.failover_listeners = old_router.failover_listeners
    version = config_version(new)
    retired = [b for i, b in server.backends.items() if backends.get(i) is not b]
    # The swap: no await from here to the end of the block.
    if state.shared is not None:
        state.shared.bind(router)
    state.config, state.backends, state.router = new, backends, router
    state.first_byte_timeout = new.first_byte_timeout_s
    state.version = server.edge.metrics.config_version = version
    server.edge.metrics.label_models(*labelled_models(new, rules))
    state._models_cache = (0.0, {})
    # Provider labels (metrics, spans) and the cooling gauge follow the new router: without
    # this, backends added by the reload are counted under gen_ai_provider_name="none".
    server.edge.watch(router)
    server.config, server.backends = new, backends
    changed = [k for k in _RESTART_KEYS if before.get(k) != after.get(k)]
    if changed:
        log.warning("config reload: %s change only at restart", ", ".join(changed))
    if retired:
        # Requests planned before the swap may still use these: closed after a grace.
        server.retire(retired, new.shutdown_timeout_ms / 1000)
    return version


async def _close(backends: list[Backend]) -> None:
    for b in backends:
        try:
            await b.provider.close()
        except Exception:
            log.exception("closing backend %s failed", b.id)


class Reloader:
    """Runs reloads one at a time, from SIGHUP or from watching the config file."""

    def __init__(
        self,
        server: GatewayServer,
        load: Callable[[], GatewayConfig],
        path: str | None,
        watch_ms: int = 0,
    ) -> None:
        self.server = server
        self.load = load
        self.path = path
        self.watch_s = watch_ms / 1000
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[bool]] = set()
        self._watcher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.path and self.watch_s > 0:
            # The file as served now, read before start() returns: a change made right after
            # start-up is a change.
            first = await asyncio.to_thread(_digest, self.path)
            self._watcher = asyncio.get_running_loop().create_task(self._watch(self.path, first))

    def request(self, why: str = "SIGHUP") -> None:
        """From a signal handler: reload soon, in a task."""
        task = asyncio.get_running_loop().create_task(self.reload(why))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def reload(self, why: str) -> bool:
        async with self._lock:
            current = self.server.state.version if self.server.state else ""
            try:
                # Reading and validating the file is blocking work: off the event loop.
                new = await asyncio.to_thread(self.load)
                version = await apply(self.server, new)
            except ConfigError as exc:
                line = str(exc).replace("\r", "\\r").replace("\n", "\\n")
                log.error(
                    "config reload (%s) refused, still serving version %s: %s", why, current, line
                )
                return False
            log.warning("config reload (%s): now serving version %s", why, version)
            return True

    async def _watch(self, path: str, last: bytes | None) -> None:
        """Poll the file's bytes (a ConfigMap update replaces a symlink, so mtime alone is
        not enough) and reload when they change."""
        while True:
            await asyncio.sleep(self.watch_s)
            now = await asyncio.to_thread(_digest, path)
            if now is not None and now != last:
                last = now
                await self.reload("config file changed")

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        for t in list(self._tasks):
            t.cancel()


def _digest(path: str) -> bytes | None:
    try:
        return hashlib.sha256(Path(path).read_bytes()).digest()
    except OSError:
        return None  # mid-replacement: try again next poll
