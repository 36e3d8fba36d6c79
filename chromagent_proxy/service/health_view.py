"""``GET /health/backends``: each backend's breaker state, as this replica routes by it.

With backend health shared through Redis (breaker_redis.py) the cooldown end is
the shared deadline on Redis' clock, so every replica shows the same instant.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from chromagent_proxy.backends.registry import genai_provider_name
from chromagent_proxy.core import codec
from chromagent_proxy.service.state import STATE


def _iso(epoch_s: float) -> str:
    return (
        datetime.fromtimestamp(epoch_s, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


async def backends_health(request: web.Request) -> web.Response:
    state = request.app[STATE]
    router = state.router
    now = router.clock()
    wall = time.time()
    rows: list[dict[str, Any]] = []
    for b in state.backends.values():
        h = router.health[b.id]
        # Cooling while the shared/local deadline has not passed, or while held for another
        # replica's half-open probe (until > now); "probing" while this replica's probe runs.
        if h.probing:
            status = "probing"
        elif h.until > now or (h.deadline and h.deadline > wall):
            status = "cooling"
        else:
            status = "healthy"
        rows.append(
            {
                "id": b.id,
                "type": b.config.type,
                # The gen_ai.provider.name of its metrics and spans (a custom type: itself).
                "provider": genai_provider_name(b.config.type),
                "enabled": b.config.enabled,
                "state": status,
                "coolingUntil": _iso(h.deadline) if status == "cooling" and h.deadline else None,
                "failures": h.failures,
                "cooldowns": h.opened,
                "lastError": h.error or None,
            }
        )
    shared = state.shared
    body = {
        "configVersion": state.version,
        "shared": None if shared is None else ("redis" if shared.up else "local (Redis down)"),
        "backends": rows,
    }
    return web.Response(body=codec.dumps(body), content_type="application/json")
