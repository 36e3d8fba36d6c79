"""Per-client rate limits: GCRA in memory or in Redis (one atomic Lua call per request).

GCRA (the generic cell rate algorithm) keeps ONE number per client, the
"theoretical arrival time" (TAT). With ``max`` requests per ``window``, each
request pushes the TAT forward by ``window / max``; a request is allowed while
the TAT stays within one window of now. That allows a burst of exactly ``max``
and then a steady ``max`` per window, never more in any window — exact, with
O(1) memory and time per client, and an idle client's state expires on its own.

The Redis variant runs the same arithmetic in a Lua script (atomic, one round
trip, Redis' own clock so replicas with skewed clocks agree). If Redis is
unreachable, ``failOpen`` decides: let requests through (default) or answer 503.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

from .config import RateLimitConfig

log = logging.getLogger("chromagent_proxy")

# Float slack for the TAT sums (window / max is rarely exact in binary).
_EPS = 1e-6


@dataclass(slots=True, frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_s: int  # seconds until the client's full budget is back
    retry_after_s: int  # seconds until the next request would pass (0 if allowed)
    # None: the limiter could not decide (Redis down); the caller applies failOpen.
    unavailable: bool = False

    def headers(self) -> dict[str, str]:
        return {
            "x-ratelimit-limit": str(self.limit),
            "x-ratelimit-remaining": str(self.remaining),
            "x-ratelimit-reset": str(self.reset_s),
        }


def _decide(tat: float, now: float, window: float, limit: int) -> tuple[Decision, float | None]:
    """GCRA step in ms: returns the decision and the new TAT (None when denied)."""
    interval = window / limit
    base = tat if tat > now else now
    new_tat = base + interval
    if new_tat - now > window + _EPS:
        retry = (new_tat - window) - now
        return (
            Decision(
                False, limit, 0, math.ceil((base - now) / 1000), max(1, math.ceil(retry / 1000))
            ),
            None,
        )
    remaining = int((window - (new_tat - now)) / interval + _EPS)
    return Decision(True, limit, remaining, math.ceil((new_tat - now) / 1000), 0), new_tat


class MemoryLimiter:
    """GCRA in this process. One float per active client; idle clients are swept."""

    def __init__(self, window_ms: int, limit: int) -> None:
        self.window = float(window_ms)
        self.limit = limit
        self._tat: dict[str, float] = {}
        self._next_sweep = 0.0

    def __len__(self) -> int:
        return len(self._tat)

    async def hit(self, client: str, limit: int | None = None) -> Decision:
        return self.hit_now(client, time.monotonic() * 1000.0, limit)

    def hit_now(self, client: str, now: float, limit: int | None = None) -> Decision:
        if now >= self._next_sweep:
            self._sweep(now)
        lim = limit or self.limit
        decision, new_tat = _decide(self._tat.get(client, 0.0), now, self.window, lim)
        if new_tat is not None:
            self._tat[client] = new_tat
        return decision

    def _sweep(self, now: float) -> None:
        # A TAT in the past means a full budget: the entry carries no information.
        # One pass per window keeps the cost amortised O(1) per request.
        self._tat = {k: v for k, v in self._tat.items() if v > now}
        self._next_sweep = now + self.window

    async def close(self) -> None:
        return None


# KEYS[1] = client key; ARGV = window_ms, limit. Returns {allowed, remaining, reset_ms, retry_ms}.
# TIME is Redis' clock, so every gateway replica agrees on "now". Redis 5+ replicates the
# script's effects, which makes the non-deterministic TIME call legal before a write.
_LUA = """
local window = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local interval = window / limit
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local base = tat
if base < now then base = now end
local new_tat = base + interval
if new_tat - now > window + 1e-6 then
  return {0, 0, math.ceil(base - now), math.ceil(new_tat - window - now)}
end
redis.call('SET', KEYS[1], string.format('%.17g', new_tat), 'PX', math.ceil(new_tat - now) + 1)
local remaining = math.floor((window - (new_tat - now)) / interval + 1e-6)
return {1, remaining, math.ceil(new_tat - now), 0}
"""

# After a failure, skip Redis for this long so a dead Redis costs no connect timeout per request.
_RETRY_AFTER_FAILURE_S = 1.0


def redis_driver_info() -> dict[str, Any]:
    """redis-py's client identity, given so that it does not look its own version up in the
    installed package metadata (a file-system scan) on the event loop when it first connects."""
    import redis

    try:
        from redis.driver_info import DriverInfo
    except ImportError:  # redis < 7 has no DriverInfo
        return {}
    return {"driver_info": DriverInfo(lib_version=redis.__version__)}


class RedisLimiter:
    """GCRA in Redis, shared by every process and replica that points at the same Redis."""

    def __init__(
        self, url: str, window_ms: int, limit: int, prefix: str = "chromagent:rl:"
    ) -> None:
        import redis.asyncio as aioredis

        self.window = window_ms
        self.limit = limit
        self.prefix = prefix
        self.url = url
        self._redis: Any = aioredis.Redis.from_url(
            url,
            socket_connect_timeout=0.5,
            socket_timeout=0.5,
            retry_on_timeout=False,
            **redis_driver_info(),
        )
        self._script: Any = self._redis.register_script(_LUA)
        self._down_until = 0.0
        self._down = False

    async def hit(self, client: str, limit: int | None = None) -> Decision:
        lim = limit or self.limit
        if self._down and time.monotonic() < self._down_until:
            return Decision(True, lim, 0, 0, 0, unavailable=True)
        try:
            res = await self._script(keys=[self.prefix + client], args=[self.window, lim])
        except Exception as exc:  # redis errors, OSError, timeouts: all mean "cannot decide"
            if not self._down:
                log.warning(
                    "rate limiter: Redis at %s is unreachable (%s); rateLimit.failOpen decides",
                    _safe_url(self.url),
                    exc.__class__.__name__,
                )
            self._down = True
            self._down_until = time.monotonic() + _RETRY_AFTER_FAILURE_S
            return Decision(True, lim, 0, 0, 0, unavailable=True)
        if self._down:
            self._down = False
            log.warning("rate limiter: Redis at %s is reachable again", _safe_url(self.url))
        allowed, remaining, reset_ms, retry_ms = (int(x) for x in res)
        return Decision(
            bool(allowed),
            lim,
            remaining,
            math.ceil(reset_ms / 1000),
            0 if allowed else max(1, math.ceil(retry_ms / 1000)),
        )

    async def close(self) -> None:
        await self._redis.aclose()


def _safe_url(url: str) -> str:
    """The Redis URL without a password."""
    if "@" in url:
        scheme, _, rest = url.partition("://")
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return url


Limiter = MemoryLimiter | RedisLimiter


def build_limiter(cfg: RateLimitConfig | None) -> Limiter | None:
    """None when rate limiting is off: the request path then skips it entirely."""
    if cfg is None or not cfg.enabled:
        return None
    if cfg.redis_url:
        return RedisLimiter(cfg.redis_url, cfg.window_ms, cfg.max)
    return MemoryLimiter(cfg.window_ms, cfg.max)
