"""Backend health shared by four real gateway processes through one real redis-server.

A 429 with Retry-After seen by one replica cools the backend on every replica with
the same deadline; a shorter Retry-After never shortens it; one replica sends the
half-open probe and all re-admit on its verdict; with Redis killed each replica
keeps its local breaker, and the state is re-synced when Redis returns.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.support.cli_process import CliProcess, launch
from tests.support.gateway import run_gateway
from tests.support.redis import RedisServer
from tests.support.routing import answer, backend, body, error_reply, hits
from tests.support.upstream import FakeUpstream, Handler

pytestmark = pytest.mark.redis

WAIT_S = 10.0  # bound on every "until" below; conditions are polled, never slept for


@pytest.fixture
async def redis(tmp_path: Path) -> AsyncIterator[RedisServer]:
    server = await RedisServer(tmp_path / "redis").start()
    yield server
    await server.stop()


class Switch:
    """An upstream handler the test can change while the gateways run."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        return await self.handler(request)


async def until(check: Callable[[], Awaitable[bool]], what: str) -> float:
    """Poll ``check`` until true (bounded); returns the seconds it took."""
    start = time.monotonic()
    while not await check():
        if time.monotonic() - start > WAIT_S:
            raise AssertionError(f"not within {WAIT_S} s: {what}")
        await asyncio.sleep(0.005)
    return time.monotonic() - start


async def view(s: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with s.get(f"{url}/health/backends") as r:
        assert r.status == 200
        data: dict[str, Any] = await r.json()
    return data


def row(data: dict[str, Any], backend_id: str) -> dict[str, Any]:
    found: dict[str, Any] = next(b for b in data["backends"] if b["id"] == backend_id)
    return found


async def post(s: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with s.post(f"{url}/v1/chat/completions", json=body()) as r:
        await r.read()
        return r.status, r.headers.get("x-chromagent-backend", "")


async def start_four(tmp_path: Path, cfg: dict[str, Any]) -> list[CliProcess]:
    path = tmp_path / "gw.json"
    path.write_text(json.dumps(cfg))
    args = ["--config", str(path), "--port", "0", "--log-level", "warning"]
    procs = [launch(args, tmp_path, f"gw{i}") for i in range(4)]
    try:
        for p in procs:
            p.url = (await p.wait_for(r"listening on (http://\S+)", stream="out")).group(1)
    except BaseException:
        for p in procs:  # none left running if one fails to start
            await p.close()
        raise
    return procs


async def stop_all(procs: list[CliProcess]) -> None:
    for p in procs:
        p.signal()
    await asyncio.gather(*(p.wait_exit() for p in procs))


async def test_retry_after_is_shared_never_shortened_and_survives_redis_outage(
    upstream: FakeUpstream, redis: RedisServer, tmp_path: Path
) -> None:
    a, b, c = Switch(answer("a")), Switch(answer("b")), Switch(answer("c"))
    cfg = {
        "backends": [
            backend(upstream, "a", a, modelMapping={"m": "m"}),
            backend(upstream, "b", b, modelMapping={"m": "m"}),
            backend(upstream, "c", c, modelMapping={"m": "m"}),
        ],
        "failover": {"redisUrl": redis.url, "syncIntervalMs": 200},
    }
    procs = await start_four(tmp_path, cfg)
    urls = [p.url for p in procs]
    try:
        async with aiohttp.ClientSession() as s:

            async def all_shared(mode: str) -> bool:
                views = await asyncio.gather(*(view(s, u) for u in urls))
                return all(v["shared"] == mode for v in views)

            async def cooling_everywhere(backend_id: str) -> list[str | None]:
                views = await asyncio.gather(*(view(s, u) for u in urls))
                return [
                    row(v, backend_id)["coolingUntil"]
                    if row(v, backend_id)["state"] == "cooling"
                    else None
                    for v in views
                ]

            async def same_deadline(backend_id: str) -> bool:
                got = await cooling_everywhere(backend_id)
                return None not in got and len(set(got)) == 1

            async def all_row_value(backend_id: str, key: str, value: Any) -> bool:
                views = await asyncio.gather(*(view(s, u) for u in urls))
                return all(row(v, backend_id)[key] == value for v in views)

            await until(lambda: all_shared("redis"), "every replica connected to Redis")

            # One replica sees a 429 with Retry-After: 30 (round robin puts a first).
            a.handler = error_reply(429, {"Retry-After": "30"})
            assert await post(s, urls[0]) == (200, "b")
            took = await until(lambda: same_deadline("a"), "a cooling on all four")
            deadline = (await cooling_everywhere("a"))[0]
            assert deadline is not None
            assert 20 < datetime.fromisoformat(deadline).timestamp() - time.time() <= 30
            print(f"all four replicas cooling a {took * 1000:.1f} ms after the 429 answer")
            views = await asyncio.gather(*(view(s, u) for u in urls))
            assert {row(v, "a")["lastError"] for v in views} == {"429"}
            # No replica sends to a while b and c serve (4 × 20 requests).
            before = hits(upstream, "a")
            results = await asyncio.gather(*(post(s, urls[i % 4]) for i in range(80)))
            assert all(st == 200 and name in ("b", "c") for st, name in results)
            assert hits(upstream, "a") == before

            # A later Retry-After: 1 (a as the last resort after b and c fail) keeps 30 s.
            a.handler = error_reply(503, {"Retry-After": "1"})
            b.handler = c.handler = error_reply(500)
            assert (await post(s, urls[2]))[0] == 503
            assert hits(upstream, "a") == before + 1
            b.handler, c.handler = answer("b"), answer("c")
            # Its error class reaching every replica shows the trip went through Redis.
            await until(lambda: all_row_value("a", "lastError", "5xx"), "second trip shared")
            assert await cooling_everywhere("a") == [deadline] * 4

            # Redis dies: every replica notices and keeps its local breaker.
            await redis.stop()
            await until(lambda: all_shared("local (Redis down)"), "replicas fall back")
            assert await cooling_everywhere("a") == [deadline] * 4  # still cooling locally
            c.handler = error_reply(429, {"Retry-After": "20"})
            before_c = hits(upstream, "c")
            served = [await post(s, urls[1]) for _ in range(6)]
            assert all(st == 200 and name == "b" for st, name in served)
            assert hits(upstream, "c") == before_c + 1  # gw1 cooled c alone, at once
            views = await asyncio.gather(*(view(s, u) for u in urls))
            assert [row(v, "c")["state"] for v in views] == ["healthy", "cooling"] + ["healthy"] * 2

            # Redis returns (empty): the replicas push their local cooldowns and agree again.
            revived = await RedisServer(tmp_path / "redis2", port=redis.port).start()
            try:
                await until(lambda: all_shared("redis"), "replicas reconnect")
                await until(lambda: same_deadline("c"), "c's local cooldown is now everyone's")
                await until(lambda: same_deadline("a"), "a still cooling everywhere")
                before_c = hits(upstream, "c")
                results = await asyncio.gather(*(post(s, urls[i % 4]) for i in range(40)))
                assert all(st == 200 and name == "b" for st, name in results)
                assert hits(upstream, "c") == before_c
                for p in procs:  # the outage and the return logged once each, per replica
                    assert p.stderr().count("is unreachable") == 1
                    assert p.stderr().count("reachable again") == 1
            finally:
                await revived.stop()

    finally:
        await stop_all(procs)


async def test_one_replica_probes_and_all_readmit_on_its_verdict(
    upstream: FakeUpstream, redis: RedisServer, tmp_path: Path
) -> None:
    arrivals: list[float] = []
    answered: list[float] = []
    ok = answer("a")

    async def slow_ok(request: web.Request) -> web.StreamResponse:
        arrivals.append(time.monotonic())
        await asyncio.sleep(0.3)  # a slow probe: the others must wait for its verdict
        resp = await ok(request)
        answered.append(time.monotonic())
        return resp

    a = Switch(error_reply(429, {"Retry-After": "1"}))
    cfg = {
        "backends": [
            backend(upstream, "a", a, modelMapping={"m": "m"}),
            backend(upstream, "b", modelMapping={"m": "m"}),
        ],
        "failover": {"redisUrl": redis.url},
    }
    procs = await start_four(tmp_path, cfg)
    urls = [p.url for p in procs]
    try:
        async with aiohttp.ClientSession() as s:

            async def connected() -> bool:
                views = await asyncio.gather(*(view(s, u) for u in urls))
                return all(v["shared"] == "redis" for v in views)

            await until(connected, "every replica connected to Redis")
            assert await post(s, urls[3]) == (200, "b")

            async def cooling() -> bool:
                views = await asyncio.gather(*(view(s, u) for u in urls))
                return all(row(v, "a")["state"] == "cooling" for v in views)

            await until(cooling, "every replica cools a")
            a.handler = slow_ok

            async def traffic_until_probe_answered() -> bool:
                await asyncio.gather(*(post(s, u) for u in urls))
                return bool(answered)

            await until(traffic_until_probe_answered, "one replica probes a")
            # Exactly one request reached a before the probe's verdict: one probe in all.
            assert len([t for t in arrivals if t < answered[0]]) == 1

            async def readmitted() -> bool:
                views = await asyncio.gather(*(view(s, u) for u in urls))
                return all(row(v, "a")["state"] == "healthy" for v in views)

            await until(readmitted, "every replica re-admits a")
            for u in urls:  # round robin gives a its turn again on every replica
                names = [(await post(s, u))[1] for _ in range(2)]
                assert sorted(names) == ["a", "b"]
    finally:
        await stop_all(procs)


async def test_health_backends_view_needs_the_api_key(upstream: FakeUpstream) -> None:
    cfg = {
        "backends": [backend(upstream, "a", error_reply(503), modelMapping={"m": "m"})],
        "apiKeys": ["k1"],
    }
    async with run_gateway(cfg) as gw, aiohttp.ClientSession() as s:
        async with s.get(f"{gw.url}/health/backends") as r:
            assert r.status == 401
        auth = {"Authorization": "Bearer k1"}
        async with s.post(f"{gw.url}/v1/chat/completions", json=body(), headers=auth) as r:
            assert r.status == 503
        async with s.get(f"{gw.url}/health/backends", headers=auth) as r:
            data = await r.json()
        assert data["shared"] is None  # no Redis: this process's own breaker
        assert gw.state is not None and data["configVersion"] == gw.state.version
        assert row(data, "a") == {
            "id": "a",
            "type": "openai",
            "provider": "openai",
            "enabled": True,
            "state": "healthy",
            "coolingUntil": None,
            "failures": 1,
            "cooldowns": 0,
            "lastError": "5xx",
        }


async def test_failures_on_different_replicas_add_up_to_the_threshold(
    upstream: FakeUpstream, redis: RedisServer, tmp_path: Path
) -> None:
    a = Switch(error_reply(500))
    cfg = {
        "backends": [
            backend(upstream, "a", a, modelMapping={"m": "m"}),
            backend(upstream, "b", modelMapping={"m": "m"}),
        ],
        "failover": {"redisUrl": redis.url, "failureThreshold": 3},
    }
    procs = await start_four(tmp_path, cfg)
    urls = [p.url for p in procs]
    try:
        async with aiohttp.ClientSession() as s:

            async def states(key: str) -> list[Any]:
                views = await asyncio.gather(*(view(s, u) for u in urls))
                return [row(v, "a")[key] for v in views]

            async def connected() -> bool:
                views = await asyncio.gather(*(view(s, u) for u in urls))
                return all(v["shared"] == "redis" for v in views)

            await until(connected, "every replica connected to Redis")
            # One failure on each of three replicas: none reaches 3 alone, together they do.
            for i in range(2):
                assert await post(s, urls[i]) == (200, "b")
                want = i + 1

                async def counted(want: int = want) -> bool:
                    return await states("failures") == [want] * 4

                await until(counted, f"{want} failure(s) shared")
            assert await states("state") == ["healthy"] * 4
            assert await post(s, urls[2]) == (200, "b")

            async def all_cooling() -> bool:
                return await states("state") == ["cooling"] * 4

            await until(all_cooling, "the third failure cools a everywhere")
            assert len(set(await states("coolingUntil"))) == 1
            before = hits(upstream, "a")
            results = await asyncio.gather(*(post(s, urls[i % 4]) for i in range(20)))
            assert all(r == (200, "b") for r in results)
            assert hits(upstream, "a") == before
    finally:
        await stop_all(procs)


async def test_redis_unreachable_at_start_means_local_breakers_and_a_metric(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    from tests.support.redis import free_port

    dead = f"redis://127.0.0.1:{free_port()}/0"
    cfg = {
        "backends": [
            backend(
                upstream, "a", error_reply(429, {"Retry-After": "30"}), modelMapping={"m": "m"}
            ),
            backend(upstream, "b", modelMapping={"m": "m"}),
        ],
        "failover": {"redisUrl": dead},
    }
    async with run_gateway(cfg) as gw, aiohttp.ClientSession() as s:

        async def fell_back() -> bool:
            return bool((await view(s, gw.url))["shared"] == "local (Redis down)")

        await until(fell_back, "the gateway notices Redis is down")
        for _ in range(4):
            assert await post(s, gw.url) == (200, "b")
        assert hits(upstream, "a") == 1  # the local breaker cooled a at once
        assert row(await view(s, gw.url), "a")["state"] == "cooling"
        async with s.get(f"{gw.url}/metrics") as r:
            text = await r.text()
        assert "chromagent_breaker_redis_up 0.0" in text
        assert "chromagent_breaker_redis_outages_total 1.0" in text


async def test_a_hot_reloaded_replica_keeps_sharing_health(
    upstream: FakeUpstream, redis: RedisServer
) -> None:
    from chromagent_proxy.service.reload import apply
    from chromagent_proxy.service.server import make_config

    backends = [
        backend(upstream, "a", modelMapping={"m": "m"}),
        backend(upstream, "b", modelMapping={"m": "m"}),
    ]
    cfg = {"backends": backends, "failover": {"redisUrl": redis.url}}
    async with (
        run_gateway(cfg) as one,
        run_gateway(cfg) as two,
        aiohttp.ClientSession() as s,
    ):

        async def connected() -> bool:
            views = await asyncio.gather(view(s, one.url), view(s, two.url))
            return all(v["shared"] == "redis" for v in views)

        await until(connected, "both connected to Redis")
        # Both reload to a config with a new backend c: its health exists only in the new
        # routers, so one learning of c's cooldown shows the shared state follows the reload.
        c = Switch(answer("c"))
        extra = backend(upstream, "c", c, modelMapping={"m": "m"})
        for gw in (one, two):
            new = {**cfg, "host": "127.0.0.1", "backends": [*backends, extra]}
            await apply(gw, make_config(new, gw.registry))
        c.handler = error_reply(429, {"Retry-After": "30"})
        for _ in range(3):  # round robin over a, b, c: the third goes to c, then fails over
            assert (await post(s, two.url))[0] == 200
        assert hits(upstream, "c") == 1

        async def one_cools_c() -> bool:
            return bool(row(await view(s, one.url), "c")["state"] == "cooling")

        await until(one_cools_c, "the reloaded replica learns of the cooldown")
        rows = [row(await view(s, gw.url), "c")["coolingUntil"] for gw in (one, two)]
        assert rows[0] == rows[1] is not None
        results = [await post(s, one.url) for _ in range(6)]
        assert {name for _, name in results} == {"a", "b"} and hits(upstream, "c") == 1
