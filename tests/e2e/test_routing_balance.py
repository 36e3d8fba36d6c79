"""Round robin through the real gateway: strict evenness (sequential and concurrent), weights."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import aiohttp
import pytest

from tests.support.gateway import run_gateway
from tests.support.routing import backend, body, hits
from tests.support.upstream import FakeUpstream

N = 20


async def served_by(session: aiohttp.ClientSession, url: str, payload: dict[str, Any]) -> str:
    async with session.post(f"{url}/v1/chat/completions", json=payload) as r:
        assert r.status == 200, await r.text()
        await r.read()
        return r.headers["x-chromagent-backend"]


def three(up: FakeUpstream, **weights: int) -> dict[str, Any]:
    def weight(name: str) -> dict[str, Any]:
        return {"weight": weights[name]} if name in weights else {}

    return {
        "backends": [
            backend(
                up,
                name,
                modelMapping={"m": "m"},
                **weight(name),
            )
            for name in ("a", "b", "c")
        ]
    }


@pytest.mark.parametrize("stream", [False, True])
async def test_sequential_round_robin_is_strict(upstream: FakeUpstream, stream: bool) -> None:
    async with run_gateway(three(upstream)) as gw, aiohttp.ClientSession() as s:
        got = [await served_by(s, gw.url, body(stream=stream)) for _ in range(3 * N)]
    assert got[:6] == ["a", "b", "c", "a", "b", "c"]
    assert Counter(got) == {"a": N, "b": N, "c": N}
    assert [hits(upstream, x) for x in "abc"] == [N, N, N]


async def test_concurrent_round_robin_is_exactly_even(upstream: FakeUpstream) -> None:
    async with run_gateway(three(upstream)) as gw, aiohttp.ClientSession() as s:
        got = await asyncio.gather(*(served_by(s, gw.url, body()) for _ in range(3 * N)))
    assert Counter(got) == {"a": N, "b": N, "c": N}


async def test_weights_give_smooth_proportional_shares(upstream: FakeUpstream) -> None:
    async with run_gateway(three(upstream, a=3, b=1, c=1)) as gw, aiohttp.ClientSession() as s:
        got = [await served_by(s, gw.url, body()) for _ in range(5 * 4)]
        # Smooth: a's three turns per cycle of five are spread out, never three in a row.
        assert "aaa" not in "".join(got)
        assert Counter(got) == {"a": 12, "b": 4, "c": 4}
        got = await asyncio.gather(*(served_by(s, gw.url, body()) for _ in range(5 * N)))
        assert Counter(got) == {"a": 3 * N, "b": N, "c": N}


async def test_disabled_backend_never_gets_traffic(upstream: FakeUpstream) -> None:
    cfg = three(upstream)
    cfg["backends"][1]["enabled"] = False
    async with run_gateway(cfg) as gw, aiohttp.ClientSession() as s:
        got = [await served_by(s, gw.url, body()) for _ in range(10)]
        assert Counter(got) == {"a": 5, "c": 5}
        got = [await served_by(s, gw.url, body(stream=True)) for _ in range(4)]
        assert "b" not in got
        async with s.get(f"{gw.url}/v1/models") as r:
            assert {m["owned_by"] for m in (await r.json())["data"]} <= {"a", "c"}
    assert hits(upstream, "b") == 0
