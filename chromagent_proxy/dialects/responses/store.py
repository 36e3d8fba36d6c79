"""Stored responses (``store: true``): in memory (bounded, with a TTL) or in Redis, so
every replica serves ``previous_response_id`` and ``GET /v1/responses/{id}``.

A record holds the response object, its whole input (history included) and its output
items with reasoning state sealed, which is all a later turn needs.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import Any, Protocol

from chromagent_proxy.core import codec

log = logging.getLogger("chromagent_proxy")


class ResponseStore(Protocol):
    async def get(self, response_id: str) -> dict[str, Any] | None: ...

    async def put(self, response_id: str, record: dict[str, Any]) -> None: ...

    async def delete(self, response_id: str) -> bool: ...

    async def close(self) -> None: ...


class MemoryStore:
    def __init__(self, max_items: int, ttl_s: float) -> None:
        self._items: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()
        self._max = max_items
        self._ttl = ttl_s

    async def get(self, response_id: str) -> dict[str, Any] | None:
        hit = self._items.get(response_id)
        if hit is None:
            return None
        if hit[0] < time.monotonic():
            del self._items[response_id]
            return None
        return hit[1]

    async def put(self, response_id: str, record: dict[str, Any]) -> None:
        self._items[response_id] = (time.monotonic() + self._ttl, record)
        self._items.move_to_end(response_id)
        while len(self._items) > self._max:
            self._items.popitem(last=False)

    async def delete(self, response_id: str) -> bool:
        return self._items.pop(response_id, None) is not None

    async def close(self) -> None:
        self._items.clear()


class RedisStore:
    """One key per response, expiring by itself (``PX``)."""

    def __init__(self, url: str, ttl_s: float, prefix: str = "chromagent:response:") -> None:
        import redis.asyncio as aioredis

        self._redis = aioredis.from_url(url)
        self._ttl_ms = int(ttl_s * 1000)
        self._prefix = prefix

    async def get(self, response_id: str) -> dict[str, Any] | None:
        raw = await self._redis.get(self._prefix + response_id)
        if raw is None:
            return None
        value = codec.loads(raw)
        return value if isinstance(value, dict) else None

    async def put(self, response_id: str, record: dict[str, Any]) -> None:
        await self._redis.set(self._prefix + response_id, codec.dumps(record), px=self._ttl_ms)

    async def delete(self, response_id: str) -> bool:
        return bool(await self._redis.delete(self._prefix + response_id))

    async def close(self) -> None:
        await self._redis.aclose()
