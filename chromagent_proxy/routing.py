"""Which backend serves a request: an ordered list of attempts.

Candidates, in order:
1. the first routing rule (see rules.py) whose condition matches (its ``backendId``/``backendIds``),
   then the other backends whose ``modelMapping`` has the model;
2. with no matching rule: the backends whose ``modelMapping`` has the model;
3. with neither: ``defaultBackend`` (the model passes through unchanged).
Within a group the first pick rotates by smooth weighted round robin. Backends
lacking a capability the request needs are dropped (none left: a 400 naming the
capability); cooling-down backends go last, soonest-ready first; the list is
cut at ``maxAttempts``.

Health is a small circuit breaker per backend: retryable failures count up;
``failover.failureThreshold`` in a row, or an upstream ``Retry-After``, cool the
backend down; after the cooldown the next request is a single half-open probe
whose outcome closes the circuit or cools it down again for twice as long.
A plan that depends on nothing but the model and the request's needs (no rotation among
several ready backends, every candidate's circuit closed) is cached per (model, needs),
and reused only while every backend in it is still closed, whoever changed its health.
With ``failover.redisUrl`` these changes are also told to ``Router.shared``
(breaker_redis.py), which shares them with every replica in the background.
Everything here is synchronous: on one event loop a plan is computed and the
rotation advanced with no await in between, so concurrent requests never share
a turn.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from .backends.base import BackendProvider
from .config import BackendConfig, GatewayConfig
from .errors import (
    GatewayError,
    ModelNotFound,
    UnsupportedFeature,
    UpstreamProtocolError,
    UpstreamTimeout,
    UpstreamUnavailable,
    parse_retry_after,
)
from .rules import Condition, Needs, compile_rules, needs_of
from .schema.openai import ChatCompletionRequest

log = logging.getLogger("chromagent_proxy")


@dataclass(slots=True)
class Backend:
    config: BackendConfig
    provider: BackendProvider

    @property
    def id(self) -> str:
        return self.config.id


@dataclass(slots=True, frozen=True)
class Attempt:
    backend: Backend
    upstream_model: str


# ---------------------------------------------------------------- health


@dataclass(slots=True)
class Health:
    """Circuit breaker state of one backend (times are time.monotonic seconds)."""

    failures: int = 0  # consecutive retryable failures
    opened: int = 0  # cooldowns in a row, the backoff exponent
    until: float = 0.0  # cooldown end; > 0 once opened, until a success
    probing: bool = False  # a half-open probe is in flight
    deadline: float = 0.0  # the cooldown end as wall-clock epoch seconds (for /health/backends)
    error: str = ""  # class of the last retryable failure (error_class)
    epoch: int = 0  # recoveries seen in the shared state (breaker_redis.py)

    def ready(self, now: float) -> bool:
        return not self.probing and now >= self.until


def error_class(err: GatewayError) -> str:
    """A short, bounded name for what went wrong (shown by /health/backends)."""
    if isinstance(err, UpstreamTimeout):
        return "timeout"
    if isinstance(err, UpstreamUnavailable):
        return "connect"
    if isinstance(err, UpstreamProtocolError):
        return "protocol"
    if err.status == 429:
        return "429"
    return "5xx" if err.status >= 500 else "4xx"


class BreakerSync(Protocol):
    """Shares health changes with other replicas (breaker_redis.py); told synchronously,
    it does its I/O in the background so the request path never waits on it."""

    def tripped(self, backend_id: str, wait: float, health: Health) -> None: ...

    def failure(self, backend_id: str, health: Health) -> None: ...

    def recovered(self, backend_id: str, health: Health) -> None: ...


class Pool:
    """Backends sharing traffic, picked by smooth weighted round robin (nginx's algorithm).

    Each pick adds every ready member's weight to its running score, takes the
    highest score and subtracts the total: over any sum(weights) picks each
    member gets exactly its weight, interleaved; equal weights give strict
    rotation.
    """

    __slots__ = ("current", "members", "weights")

    def __init__(self, members: list[Backend]) -> None:
        self.members = members
        self.weights = [b.config.weight for b in members]
        self.current = [0] * len(members)

    def ordered(self, ready: list[bool], rotate: bool) -> list[Backend]:
        """Ready members, the pick first (others by score); unready ones are left out."""
        idx = [i for i, ok in enumerate(ready) if ok]
        if not rotate or len(idx) <= 1:
            return [self.members[i] for i in idx]
        cur, total, best = self.current, 0, idx[0]
        for i in idx:
            cur[i] += self.weights[i]
            total += self.weights[i]
            if cur[i] > cur[best]:
                best = i
        cur[best] -= total
        rest = sorted((i for i in idx if i != best), key=lambda i: -cur[i])
        return [self.members[best], *(self.members[i] for i in rest)]


@dataclass(slots=True)
class Rule:
    index: int
    text: str
    condition: Condition
    pool: Pool


FailoverListener = Callable[[str, GatewayError], None]


class Router:
    def __init__(
        self,
        config: GatewayConfig,
        backends: dict[str, Backend],
        clock: Callable[[], float] = time.monotonic,
        carry: dict[str, Health] | None = None,
    ) -> None:
        self.config = config
        self.backends = backends
        self.clock = clock
        enabled = [b for b in backends.values() if b.config.enabled]
        by_model: dict[str, list[Backend]] = {}
        for b in enabled:
            for model in b.config.model_mapping:
                by_model.setdefault(model, []).append(b)
        self._by_model = {m: Pool(bs) for m, bs in by_model.items()}
        self._rules = [
            Rule(i, cfg_rule.condition, cond, Pool([backends[bid] for bid in ids]))
            for i, ((cond, ids), cfg_rule) in enumerate(
                zip(compile_rules(config), config.routing_rules, strict=True)
            )
        ]
        default = backends.get(config.default_backend or "")
        self._default = Pool([default]) if default is not None and default.config.enabled else None
        self._discovered: dict[str, Pool] = {}
        # Health survives a hot reload for backends that keep their id (``carry``).
        carry = carry or {}
        self.health: dict[str, Health] = {
            b.id: carry.get(b.id) or Health() for b in backends.values()
        }
        # Capabilities are read once: asking three methods per backend per request adds up.
        self._caps: dict[str, tuple[bool, bool, bool]] = {
            b.id: (
                b.provider.supports_streaming(),
                b.provider.supports_tools(),
                b.provider.supports_images(),
            )
            for b in enabled
        }
        f = config.failover
        self._threshold = f.failure_threshold
        self._cooldown = f.cooldown_ms / 1000
        self._max_cooldown = f.max_cooldown_ms / 1000
        # For metrics: failovers so far, and callbacks told (backend id, error) on each one.
        self.failovers = 0
        self.failover_listeners: list[FailoverListener] = []
        # (model, stream, tools, images) → a plan that cannot change while its backends stay
        # healthy (plan_for).
        self._plans: dict[tuple[str, bool, bool, bool], list[Attempt]] = {}
        # Set by the server when backend health is shared through Redis (breaker_redis.py).
        self.shared: BreakerSync | None = None

    def models(self) -> dict[str, str]:
        """Served model name → id of the first backend serving it."""
        return {m: pool.members[0].id for m, pool in self._by_model.items()}

    # -------------------------------------------------------------- planning

    def plan(
        self, req: ChatCompletionRequest, discovered: Mapping[str, str] | None = None
    ) -> list[Attempt]:
        return self.plan_for(req.model, needs_of(req), discovered)

    def plan_for(
        self, model: str, needs: Needs, discovered: Mapping[str, str] | None = None
    ) -> list[Attempt]:
        """The attempts for a request of any dialect: its model and what it needs.
        ``discovered`` (model → backend id, from the backends' own listings, e.g. pulled
        Ollama models) serves a model nothing else matches, so what /v1/models lists is served.
        Callers must not change the list (it may be the cached one)."""
        key = (model, needs.stream, needs.tools, needs.images)
        cached = self._plans.get(key)
        if cached is not None:
            health = self.health
            for a in cached:
                h = health.get(a.backend.id)
                if h is None or h.until or h.probing:
                    break  # its health changed (here or from another replica): recompute
            else:
                return cached
        groups: list[Pool] = []
        for rule in self._rules:
            if rule.condition.matches(model, needs):
                groups.append(rule.pool)
                break
        mapped = self._by_model.get(model)
        if mapped is not None:
            groups.append(mapped)
        if not groups and self._default is not None:
            groups.append(self._default)
        stable = bool(groups)  # a discovered model's plan depends on the listing: not cached
        if not groups and discovered and model in discovered:
            found = self.backends.get(discovered[model])
            if found is not None and found.config.enabled:
                groups.append(self._discovered.setdefault(found.id, Pool([found])))
        if not groups:
            raise ModelNotFound(
                f"The model '{model}' is not served by this gateway; "
                "GET /v1/models lists the models it serves.",
                param="model",
            )
        now = self.clock()
        seen: set[str] = set()
        ready: list[Backend] = []
        cooling: list[Backend] = []
        missing: str | None = None
        for n, pool in enumerate(groups):
            flags: list[bool] = []
            for b in pool.members:
                lack = self._lacks(b.id, needs)
                ok = lack is None and b.id not in seen
                if lack is not None and missing is None:
                    missing = lack
                if ok:
                    seen.add(b.id)
                    h = self.health[b.id]
                    if not h.ready(now):
                        cooling.append(b)
                        ok = False
                    elif h.until:
                        stable = False  # the next request is its half-open probe
                flags.append(ok)
            if n == 0 and sum(flags) > 1:
                stable = False  # round robin: each request rotates
            ready.extend(pool.ordered(flags, rotate=n == 0))
        if cooling:
            health = self.health
            cooling.sort(key=lambda b: health[b.id].until)
            ready.extend(cooling)
        if not ready:
            raise UnsupportedFeature(
                f"No backend serving model '{model}' supports {missing}.",
                param=_PARAM_OF.get(missing or ""),
            )
        plan = [
            Attempt(b, b.config.model_mapping.get(model, model))
            for b in ready[: self.config.max_attempts]
        ]
        if stable and not cooling:
            if len(self._plans) >= _PLAN_CACHE_MAX:  # model names come from clients
                self._plans.clear()
            self._plans[key] = plan
        return plan

    def _lacks(self, backend_id: str, needs: Needs) -> str | None:
        streaming, tools, images = self._caps[backend_id]
        if needs.stream and not streaming:
            return "streaming"
        if needs.tools and not tools:
            return "tools"
        if needs.images and not images:
            return "images"
        return None

    # -------------------------------------------------------------- health reports

    def begin(self, backend: Backend) -> None:
        """An attempt on ``backend`` starts; after a cooldown it is the half-open probe."""
        # .get: a request planned before a hot reload may report on a backend since removed.
        h = self.health.get(backend.id)
        if h is not None and h.until and self.clock() >= h.until:
            h.probing = True

    def succeeded(self, backend: Backend) -> None:
        h = self.health.get(backend.id)
        if h is None or not (h.until or h.failures or h.probing):
            return  # the common case: nothing to reset, nothing to share
        if h.until:
            log.info("backend %s recovered", backend.id)
        h.failures = h.opened = 0
        h.until = h.deadline = 0.0
        h.probing = False
        if self.shared is not None:
            self.shared.recovered(backend.id, h)

    def abandoned(self, backend: Backend) -> None:
        """The client went away mid-attempt: no verdict, let the next request probe."""
        h = self.health.get(backend.id)
        if h is not None:
            h.probing = False

    def failed(self, backend: Backend, err: GatewayError) -> None:
        """Record a failed attempt; only retryable errors say anything about health."""
        if not err.retryable:
            # The backend answered (a 400, say): it is alive.
            self.succeeded(backend)
            return
        h = self.health.get(backend.id)
        if h is None:
            return
        h.failures += 1
        h.error = error_class(err)
        retry_after = parse_retry_after(err.headers.get("Retry-After"))
        if retry_after is None and not h.probing and h.failures < self._threshold:
            if self.shared is not None:
                self.shared.failure(backend.id, h)
            return
        h.opened += 1
        if retry_after is not None:
            wait = retry_after
        else:
            wait = self._cooldown * 2 ** min(h.opened - 1, 20)
        wait = min(wait, self._max_cooldown)
        # A shorter Retry-After never shortens a cooldown already running.
        h.until = max(h.until, self.clock() + wait)
        h.deadline = max(h.deadline, time.time() + wait)
        h.failures = 0
        h.probing = False
        log.warning("backend %s cooled down for %.3gs: %s", backend.id, wait, err.message)
        if self.shared is not None:
            self.shared.tripped(backend.id, wait, h)

    def failover(self, backend: Backend, err: GatewayError) -> None:
        """The handler moves past ``backend`` to the next attempt."""
        self.failovers += 1
        for listener in self.failover_listeners:
            try:
                listener(backend.id, err)
            except Exception:
                log.exception("failover listener raised")


_PLAN_CACHE_MAX = 4096
_PARAM_OF = {"streaming": "stream", "tools": "tools", "images": "messages"}
