"""Rate limits shared through a real redis-server: exact across 4 gateway processes, and the
two failOpen modes while Redis is down (then back)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.cli_process import CliProcess, start_gateway
from tests.support.gateway import run_gateway
from tests.support.redis import RedisServer, free_port

pytestmark = pytest.mark.redis

MOCK = {"backends": [{"id": "mock", "type": "mock", "modelMapping": {"echo": "echo"}}]}
BODY = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
async def redis(tmp_path: Path) -> AsyncIterator[RedisServer]:
    server = await RedisServer(tmp_path / "redis").start()
    yield server
    await server.stop()


async def post(s: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, str]]:
    async with s.post(f"{url}/v1/chat/completions", json=BODY) as r:
        await r.read()
        return r.status, dict(r.headers)


@pytest.mark.slow
async def test_four_processes_share_one_exact_budget(redis: RedisServer, tmp_path: Path) -> None:
    cfg = tmp_path / "gw.json"
    cfg.write_text(
        json.dumps(
            {**MOCK, "rateLimit": {"windowMs": 3_600_000, "max": 100, "redisUrl": redis.url}}
        )
    )
    args = ["--config", str(cfg), "--port", "0", "--log-level", "warning"]
    procs: list[CliProcess] = list(
        await asyncio.gather(*(start_gateway(args, tmp_path, f"gw{i}") for i in range(4)))
    )
    try:
        sem = asyncio.Semaphore(64)
        async with aiohttp.ClientSession() as s:

            async def one(i: int) -> tuple[int, dict[str, str]]:
                async with sem:
                    return await post(s, procs[i % 4].url)

            results = await asyncio.gather(*(one(i) for i in range(1000)))
        statuses = [r[0] for r in results]
        assert statuses.count(200) == 100 and statuses.count(429) == 900
        # Allowed requests landed on every process and drew from ONE budget: 99 ... 0.
        remaining = sorted(int(h["X-RateLimit-Remaining"]) for st, h in results if st == 200)
        assert remaining == list(range(100))
        # Without a shared budget each process would allow 100 (400 in all). Which process
        # wins the first 100 slots is up to scheduling; that more than one did shows sharing.
        served_by = {i % 4 for i, (st, _) in enumerate(results) if st == 200}
        assert len(served_by) >= 2
    finally:
        for p in procs:
            p.signal()
        codes = await asyncio.gather(*(p.wait_exit() for p in procs))
        assert codes == [0, 0, 0, 0]


def limited(redis_url: str, fail_open: bool, max_: int = 2) -> dict[str, Any]:
    return {
        **MOCK,
        "rateLimit": {
            "windowMs": 60_000,
            "max": max_,
            "redisUrl": redis_url,
            "failOpen": fail_open,
        },
    }


async def test_redis_down_fail_open_keeps_serving_and_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    caplog.set_level(logging.WARNING, logger="chromagent_proxy")
    async with run_gateway(limited(dead, True)) as gw, aiohttp.ClientSession() as s:
        results = [await post(s, gw.url) for _ in range(5)]
    assert [r[0] for r in results] == [200] * 5  # more than max=2: nothing can count them
    assert all("X-RateLimit-Limit" not in h for _, h in results)
    # (The shared backend health logs its own line about the same Redis; not counted here.)
    warnings = [r.getMessage() for r in caplog.records if "rate limiter" in r.getMessage()]
    assert len(warnings) == 1 and "unreachable" in warnings[0]  # logged once, not per request


async def test_redis_down_fail_closed_answers_503() -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    async with run_gateway(limited(dead, False)) as gw, aiohttp.ClientSession() as s:
        async with s.post(f"{gw.url}/v1/chat/completions", json=BODY) as r:
            body = await r.json()
            assert r.status == 503 and r.headers["Retry-After"] == "1"
            assert "Redis" in body["error"]["message"]
        async with s.get(f"{gw.url}/health") as r:
            assert r.status == 200  # /health never depends on the limiter


async def test_redis_dies_and_comes_back(redis: RedisServer, tmp_path: Path) -> None:
    async with run_gateway(limited(redis.url, True, max_=3)) as gw, aiohttp.ClientSession() as s:
        assert [(await post(s, gw.url))[0] for _ in range(4)] == [200, 200, 200, 429]
        await redis.stop()
        assert [(await post(s, gw.url))[0] for _ in range(3)] == [200, 200, 200]  # fail open
        revived = await RedisServer(tmp_path / "redis2", port=redis.port).start()
        try:
            await asyncio.sleep(1.1)  # the limiter retries Redis after 1 s
            # Fresh Redis, fresh budget: exactly 3 again.
            assert [(await post(s, gw.url))[0] for _ in range(4)] == [200, 200, 200, 429]
        finally:
            await revived.stop()
