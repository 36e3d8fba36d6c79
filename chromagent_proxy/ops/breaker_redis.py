"""Backend health shared by every replica through Redis (``failover.redisUrl``).

Each backend has one Redis hash: ``until`` (the cooldown end, ms on Redis' clock),
``opened`` (cooldowns in a row), ``failures``, ``error`` (last error class) and
``epoch`` (recoveries so far). Every change is one Lua script (atomic, Redis' own
clock, so replicas with skewed clocks agree on the instant) that extends ``until``
with max(old, new) — a shorter Retry-After never shortens a longer cooldown —
and PUBLISHes the resulting state; every replica applies it on arrival (well
under 100 ms) and re-reads all hashes every ``failover.syncIntervalMs`` as a
backstop for a missed message.

At the deadline exactly one replica wins a ``SET NX PX`` lock and sends the
half-open probe; the others keep the backend held until the probe's verdict
(a recovery bumps ``epoch``; a failure extends ``until``), or until the lock
expires and they try for it again.

The request path never waits on Redis: the router changes its local Health at
once (routing.py) and tells this class, which does the I/O in background tasks.
If Redis is unreachable each replica keeps its local breaker (logged once, the
``chromagent_breaker_redis_up`` gauge drops to 0); when Redis returns, the local
cooldowns are pushed (max again) and the shared state is read back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Coroutine
from typing import Any

import orjson

from chromagent_proxy.ops import breaker_lua as lua
from chromagent_proxy.ops.metrics import Metrics
from chromagent_proxy.ops.ratelimit import _safe_url, redis_driver_info
from chromagent_proxy.routing.router import Health, Router

log = logging.getLogger("chromagent_proxy")

RETRY_S = 0.5  # how often a replica tries a Redis that is down


class SharedHealth:
    """Implements routing.BreakerSync over Redis; one per process, bound to the live Router."""

    def __init__(
        self,
        url: str,
        *,
        sync_interval_s: float,
        probe_hold_s: float,
        metrics: Metrics | None = None,
        prefix: str = "chromagent:cb:",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        import redis.asyncio as aioredis

        self.url = url
        self.prefix = prefix
        self.channel = prefix + "events"
        self.sync_interval = sync_interval_s
        self.hold = probe_hold_s
        self.metrics = metrics
        self.clock = clock
        self.replica = f"{socket.gethostname()}:{os.getpid()}"
        self._redis: Any = aioredis.Redis.from_url(
            url,
            socket_connect_timeout=0.5,
            socket_timeout=1.0,
            retry_on_timeout=False,
            **redis_driver_info(),  # no package-metadata scan on the loop at first connect
        )
        self._trip: Any = self._redis.register_script(lua.TRIP)
        self._fail: Any = self._redis.register_script(lua.FAIL)
        self._recover: Any = self._redis.register_script(lua.RECOVER)
        self._read: Any = self._redis.register_script(lua.READ)
        self.router: Router | None = None
        self.up = False
        self._was_down = False  # an outage was logged; log the return once too
        self._tasks: set[asyncio.Task[Any]] = set()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        # backend id → (shared deadline in Redis ms, the same on this clock) being waited on
        self._due: dict[str, tuple[float, float]] = {}
        self._runner: asyncio.Task[None] | None = None
        self._set_up_gauge(None)

    # -- wiring ---------------------------------------------------------------------------

    def bind(self, router: Router) -> None:
        """Serve ``router`` (at start, and again after each hot reload)."""
        self.router = router
        router.shared = self
        if self.up:
            self._spawn(self._pull())

    def start(self) -> None:
        self._runner = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        for t in list(self._tasks):
            t.cancel()
        for handle in self._timers.values():
            handle.cancel()
        with contextlib.suppress(Exception):
            await self._redis.aclose()

    # -- routing.BreakerSync (synchronous; I/O in the background) ---------------------------

    def tripped(self, backend_id: str, wait: float, health: Health) -> None:
        if self.up:
            args = [backend_id, self.channel, int(wait * 1000), health.opened, health.error]
            self._spawn(self._call(self._trip, backend_id, args))

    def failure(self, backend_id: str, health: Health) -> None:
        if self.up and self.router is not None:
            f = self.router.config.failover
            args = [
                backend_id,
                self.channel,
                health.error,
                f.failure_threshold,
                f.cooldown_ms,
                f.max_cooldown_ms,
            ]
            self._spawn(self._call(self._fail, backend_id, args))

    def recovered(self, backend_id: str, health: Health) -> None:
        if self.up:
            self._spawn(self._call(self._recover, backend_id, [backend_id, self.channel]))

    # -- Redis I/O ----------------------------------------------------------------------

    def _keys(self, backend_id: str) -> list[str]:
        return [self.prefix + backend_id, self.prefix + "probe:" + backend_id]

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _call(self, script: Any, backend_id: str, args: list[Any]) -> None:
        try:
            raw = await script(keys=self._keys(backend_id), args=args)
        except Exception as exc:  # redis errors, OSError, timeouts: Redis is unusable now
            self._down(exc)
            return
        self.apply(orjson.loads(raw))

    async def _pull(self) -> None:
        """Read every backend's shared state (the backstop for a missed message)."""
        router = self.router
        if router is None:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for backend_id in router.health:
                await self._read(keys=self._keys(backend_id), args=[backend_id, ""], client=pipe)
            results = await pipe.execute()
        for raw in results:
            self.apply(orjson.loads(raw))

    async def _push_local(self) -> None:
        """After an outage: share the cooldowns this replica decided alone (max again)."""
        router = self.router
        if router is None:
            return
        now = self.clock()
        for backend_id, h in list(router.health.items()):
            if h.until > now:
                args = [backend_id, self.channel, int((h.until - now) * 1000), h.opened, h.error]
                await self._trip(keys=self._keys(backend_id), args=args)

    async def _run(self) -> None:
        """Subscribe, re-sync, then apply messages and re-read periodically; on any Redis
        error fall back to local breakers and retry every RETRY_S."""
        while True:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                await self._push_local()
                await self._pull()
                self._mark_up()
                next_pull = self.clock() + self.sync_interval
                while True:
                    if not self.up:
                        # A command failed meanwhile (its _down logged it): re-sync from scratch.
                        raise ConnectionError("a shared-health command failed")
                    timeout = max(0.0, min(next_pull - self.clock(), 0.5))
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=timeout)
                    if msg is not None and msg.get("type") == "message":
                        self.apply(orjson.loads(msg["data"]))
                    if self.clock() >= next_pull:
                        await self._pull()
                        next_pull = self.clock() + self.sync_interval
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._down(exc)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(RETRY_S)

    def _mark_up(self) -> None:
        if not self.up and self._was_down:
            log.warning(
                "backend health: Redis at %s is reachable again; shared state re-synced",
                _safe_url(self.url),
            )
            self._was_down = False
        self.up = True
        self._set_up_gauge(True)

    def _down(self, exc: BaseException) -> None:
        if self.up or not self._was_down:
            log.warning(
                "backend health: Redis at %s is unreachable (%s); each replica uses its local "
                "breaker until it returns",
                _safe_url(self.url),
                exc.__class__.__name__,
            )
            self._was_down = True
            if self.metrics is not None:
                self.metrics.breaker_redis_outages += 1
        self.up = False
        self._set_up_gauge(False)
        # Held backends wait on a probe lock nobody can take now: the local breaker decides.
        router = self.router
        for backend_id, (_, due) in list(self._due.items()):
            handle = self._timers.pop(backend_id, None)
            if handle is not None:
                handle.cancel()
            h = router.health.get(backend_id) if router is not None else None
            if h is not None and h.until > due:
                h.until = due
        self._due.clear()

    def _set_up_gauge(self, up: bool | None) -> None:
        if self.metrics is not None:
            self.metrics.breaker_redis_up = None if up is None else int(up)

    # -- applying the shared state ------------------------------------------------------------

    def apply(self, state: dict[str, Any]) -> None:
        router = self.router
        if router is None:
            return
        backend_id = str(state.get("id", ""))
        h = router.health.get(backend_id)
        if h is None:
            return
        until_ms = float(state["until"])
        now_ms = float(state["now"])
        epoch = int(state["epoch"])
        if state.get("error"):
            h.error = str(state["error"])
        h.failures = int(state["failures"])
        if until_ms > now_ms:
            # Cooling: hold the backend past the deadline until the probe's verdict.
            h.opened = max(h.opened, int(state["opened"]))
            h.deadline = until_ms / 1000
            known = self._due.get(backend_id)
            if known is None or known[0] != until_ms:
                due = self.clock() + (until_ms - now_ms) / 1000
                h.probing = False
                h.until = max(h.until, due + self.hold)
                self._schedule(backend_id, until_ms, due)
            elif self.clock() < known[1] and h.until < known[1]:
                h.until = known[1] + self.hold  # cleared here early (a last-resort success)
        elif epoch != h.epoch:
            # Recovered somewhere (a new epoch): re-admit here too.
            h.epoch = epoch
            if h.until:
                log.info("backend %s recovered (shared)", backend_id)
            h.until = h.deadline = 0.0
            h.opened = 0
            h.probing = False
            self._forget(backend_id)

    def _forget(self, backend_id: str) -> None:
        self._due.pop(backend_id, None)
        handle = self._timers.pop(backend_id, None)
        if handle is not None:
            handle.cancel()

    def _schedule(self, backend_id: str, until_ms: float, due: float) -> None:
        self._forget(backend_id)
        self._due[backend_id] = (until_ms, due)
        self._timers[backend_id] = asyncio.get_running_loop().call_later(
            max(0.0, due - self.clock()), lambda: self._spawn(self._claim(backend_id, until_ms))
        )

    async def _claim(self, backend_id: str, until_ms: float) -> None:
        """The deadline passed: whoever takes the lock sends the half-open probe."""
        self._timers.pop(backend_id, None)
        lock = self._keys(backend_id)[1]
        try:
            won = await self._redis.set(lock, self.replica, nx=True, px=int(self.hold * 1000))
            if not won:  # ours already (a re-read re-armed the timer)?
                won = await self._redis.get(lock) == self.replica.encode()
        except Exception as exc:
            self._down(exc)  # releases the hold: the local breaker decides
            return
        router = self.router
        h = router.health.get(backend_id) if router is not None else None
        known = self._due.get(backend_id)
        if h is None or known is None or known[0] != until_ms:
            return  # the shared state changed meanwhile
        now = self.clock()
        if won:
            h.until = min(h.until, now)  # ready: the next request here is the probe
        else:
            # Another replica probes; if its verdict never comes, try again when the lock ends.
            h.until = max(h.until, now + 2 * self.hold)
            self._timers[backend_id] = asyncio.get_running_loop().call_later(
                self.hold, lambda: self._spawn(self._claim(backend_id, until_ms))
            )
