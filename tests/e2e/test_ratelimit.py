"""Per-client rate limits in memory, through the real GatewayServer: exactness, headers,
trusted proxies, per-key budgets, /health and /metrics never limited."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
from typing import Any

import aiohttp
import openai
import pytest

from chromagent_proxy.ratelimit import MemoryLimiter
from tests.support.cli_process import ROOT
from tests.support.gateway import run_gateway, sdk

MOCK = {"backends": [{"id": "mock", "type": "mock", "modelMapping": {"echo": "echo"}}]}
BODY = {"model": "echo", "messages": [{"role": "user", "content": "hi there"}]}
HOUR = 3_600_000


def config(**rate_limit: Any) -> dict[str, Any]:
    return {**MOCK, "rateLimit": {"windowMs": HOUR, **rate_limit}}


async def fire(
    session: aiohttp.ClientSession, url: str, n: int, concurrency: int = 50, **kw: Any
) -> list[tuple[int, dict[str, str], Any]]:
    sem = asyncio.Semaphore(concurrency)

    async def one() -> tuple[int, dict[str, str], Any]:
        async with sem, session.post(f"{url}/v1/chat/completions", json=BODY, **kw) as r:
            return r.status, dict(r.headers), await r.json()

    return await asyncio.gather(*(one() for _ in range(n)))


async def test_memory_limit_is_exact_under_concurrency() -> None:
    async with run_gateway(config(max=100)) as gw, aiohttp.ClientSession() as s:
        results = await fire(s, gw.url, 1000)
    ok = [r for r in results if r[0] == 200]
    limited = [r for r in results if r[0] == 429]
    assert len(ok) == 100 and len(limited) == 900
    # Each allowed request saw a distinct remaining budget: 99, 98, ..., 0.
    assert sorted(int(h["X-RateLimit-Remaining"]) for _, h, _ in ok) == list(range(100))
    for _, h, body in limited:
        assert body["error"]["type"] == "rate_limit_error"
        assert body["error"]["code"] == "rate_limit_exceeded"
        assert int(h["Retry-After"]) >= 1
        assert h["X-RateLimit-Limit"] == "100" and h["X-RateLimit-Remaining"] == "0"


async def test_headers_on_every_limited_route_and_never_on_health_or_metrics() -> None:
    async with run_gateway(config(max=3, windowMs=60_000)) as gw, aiohttp.ClientSession() as s:
        seen = []
        async with s.post(f"{gw.url}/v1/chat/completions", json={**BODY, "stream": True}) as r:
            assert r.status == 200
            await r.read()
            seen.append(r.headers)
        async with s.get(f"{gw.url}/v1/models") as r:
            assert r.status == 200
            seen.append(r.headers)
        async with s.post(
            f"{gw.url}/v1/chat/completions",
            json={"model": "nope", **{"messages": BODY["messages"]}},
        ) as r:
            assert r.status == 404
            seen.append(r.headers)
        async with s.post(f"{gw.url}/v1/chat/completions", json=BODY) as r:
            assert r.status == 429
            seen.append(r.headers)
        assert [h["x-ratelimit-remaining"] for h in seen] == ["2", "1", "0", "0"]
        for h in seen:
            assert h["x-ratelimit-limit"] == "3"
            # GCRA: the full budget of 3 is back one window (60 s) after the last allowed request.
            assert 0 < int(h["x-ratelimit-reset"]) <= 60
        assert int(seen[-1]["Retry-After"]) == 20  # one slot frees every window / max = 20 s
        for _ in range(10):
            async with s.get(f"{gw.url}/health") as r:
                assert r.status == 200 and "x-ratelimit-limit" not in r.headers
            async with s.get(f"{gw.url}/metrics") as r:
                assert r.status == 200 and "x-ratelimit-limit" not in r.headers


async def test_sdk_sees_rate_limit_error() -> None:
    async with run_gateway(config(max=1)) as gw:
        client = sdk(gw)
        await client.chat.completions.create(**BODY)  # type: ignore[call-overload]
        with pytest.raises(openai.RateLimitError) as info:
            await client.chat.completions.create(**BODY)  # type: ignore[call-overload]
        assert info.value.response.headers["retry-after"]
        await client.close()


async def test_forwarded_for_is_used_only_from_trusted_proxies() -> None:
    async with aiohttp.ClientSession() as s:
        # 127.0.0.1 is trusted: each X-Forwarded-For client has its own budget of 1.
        async with run_gateway(config(max=1, trustedProxies=["127.0.0.0/8", "10.0.0.1"])) as gw:
            for client in ("1.1.1.1", "2.2.2.2", "3.3.3.3"):
                got = await fire(s, gw.url, 2, headers={"X-Forwarded-For": client})
                assert sorted(r[0] for r in got) == [200, 429]
            # The client is the first untrusted hop from the right: a spoofed left part
            # does not buy a new budget (5.5.5.5 appended by the trusted 10.0.0.1 proxy).
            first = await fire(
                s, gw.url, 1, headers={"X-Forwarded-For": "6.6.6.6, 5.5.5.5, 10.0.0.1"}
            )
            spoof = await fire(s, gw.url, 1, headers={"X-Forwarded-For": "7.7.7.7, 5.5.5.5"})
            assert [first[0][0], spoof[0][0]] == [200, 429]
        # The peer is not a trusted proxy: X-Forwarded-For is ignored, one budget for all.
        async with run_gateway(config(max=1, trustedProxies=["10.0.0.0/8"])) as gw:
            a = await fire(s, gw.url, 1, headers={"X-Forwarded-For": "1.1.1.1"})
            b = await fire(s, gw.url, 1, headers={"X-Forwarded-For": "2.2.2.2"})
            assert [a[0][0], b[0][0]] == [200, 429]


async def test_forwarded_for_on_two_header_lines_is_read_as_one_list() -> None:
    """A proxy that adds its own X-Forwarded-For line (instead of appending to the client's)
    must not let the client's line choose the budget (issue 13, item 8)."""
    body = json.dumps(BODY).encode()
    statuses = []
    async with run_gateway(config(max=5, trustedProxies=["127.0.0.0/8"])) as gw:
        for i in range(12):
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
            writer.write(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n"
                b"Content-Type: application/json\r\nContent-Length: %d\r\n"
                b"X-Forwarded-For: 198.51.100.%d\r\n"  # the client's own, a new one each time
                b"X-Forwarded-For: 203.0.113.7\r\n"  # the line the trusted proxy added
                b"\r\n%s" % (len(body), i + 1, body)
            )
            head = await reader.readuntil(b"\r\n\r\n")
            statuses.append(int(head.split(b" ", 2)[1]))
            writer.close()
    assert statuses == [200] * 5 + [429] * 7


async def test_per_key_budget_and_the_tighter_budget_in_headers() -> None:
    cfg = {**config(max=100, perKeyMax=2), "apiKeys": ["key-one", "key-two"]}
    async with run_gateway(cfg) as gw, aiohttp.ClientSession() as s:
        one = await fire(s, gw.url, 3, concurrency=1, headers={"Authorization": "Bearer key-one"})
        two = await fire(s, gw.url, 2, concurrency=1, headers={"Authorization": "Bearer key-two"})
        async with s.post(
            f"{gw.url}/v1/chat/completions", json=BODY, headers={"Authorization": "Bearer bad"}
        ) as r:
            # A wrong key is refused after the IP budget was charged; the 401 shows that budget.
            assert r.status == 401 and r.headers["X-RateLimit-Limit"] == "100"
            assert r.headers["X-RateLimit-Remaining"] == "94"
    assert [r[0] for r in one] == [200, 200, 429]
    assert [r[0] for r in two] == [200, 200]
    assert one[0][1]["X-RateLimit-Limit"] == "2" and one[0][1]["X-RateLimit-Remaining"] == "1"


async def test_off_without_rate_limit_config() -> None:
    async with run_gateway(MOCK) as gw, aiohttp.ClientSession() as s:
        results = await fire(s, gw.url, 150)
    assert {r[0] for r in results} == {200}
    assert all("X-RateLimit-Limit" not in r[1] for r in results)


def test_gcra_bound_holds_for_every_interval() -> None:
    """GCRA: a burst of ``max``, then one request per window/max. Over ANY interval of length
    t at most max + t*max/window requests pass — and a steady client gets exactly that rate."""
    lim = MemoryLimiter(window_ms=1000, limit=10)
    allowed: list[float] = []
    t = 0.0
    while t < 5000:  # a request every 7 ms for 5 s, from one client
        if lim.hit_now("c", t).allowed:
            allowed.append(t)
        t += 7
    assert allowed[:10] == [i * 7.0 for i in range(10)]  # the burst
    gaps = [b - a for a, b in itertools.pairwise(allowed[10:])]
    assert all(93 <= g <= 107 for g in gaps)  # then one per 100 ms (7 ms polling steps)
    assert len(allowed) == 10 + 49  # steady rate: 10 per 1000 ms after the burst
    for i, start in enumerate(allowed):
        for end in allowed[i:]:
            assert allowed.index(end) - i + 1 <= 10 + (end - start) / 100 + 1e-9


def test_idle_clients_are_evicted() -> None:
    lim = MemoryLimiter(window_ms=1000, limit=5)
    for i in range(1000):
        lim.hit_now(f"client-{i}", 0.0)
    assert len(lim) == 1000
    lim.hit_now("late", 2500.0)  # past every TAT: the sweep drops the idle ones
    assert len(lim) == 1


def test_workers_without_redis_refuse_to_start() -> None:
    env = {"GATEWAY_RATE_LIMIT_MAX": "10"}
    proc = subprocess.run(
        [sys.executable, "-m", "chromagent_proxy", "--workers", "2", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=20,
        cwd=ROOT,
        env={
            **{k: v for k, v in __import__("os").environ.items() if not k.startswith("GATEWAY_")},
            **env,
        },
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "workers" in lines[0] and "rateLimit.redisUrl" in lines[0]
    assert json.dumps(lines[0])  # one plain line, no traceback
