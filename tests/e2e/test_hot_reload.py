"""Hot reload through the real CLI: SIGHUP swaps routing under load (``--workers 2``), open
streams finish on the old config, a broken config is refused and the old one keeps serving,
and ``configWatchMs`` reloads a changed file by itself."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from chromagent_proxy.errors import ConfigError
from chromagent_proxy.reload import apply as reload_apply
from chromagent_proxy.server import make_config
from tests.support.cli_process import CliProcess, launch, start_gateway
from tests.support.gateway import run_gateway
from tests.support.routing import answer, backend, body, error_reply, hits, sse
from tests.support.upstream import FakeUpstream, stream_reply

WAIT_S = 15.0
STREAMS = 200


def config(up: FakeUpstream, serving: str, gate: asyncio.Event) -> dict[str, Any]:
    """Backends old and new on the same fake upstream; ``serving`` gets model m."""
    out = []
    for name in ("old", "new"):
        # Streams send their first chunk, then wait for the gate (open streams during reload).
        streamed = stream_reply(
            [sse(name)[: sse(name).index(b"\n\n") + 2], sse(name)[sse(name).index(b"\n\n") + 2 :]],
            gate=gate,
        )
        plain = answer(name)

        async def handler(request: Any, streamed: Any = streamed, plain: Any = plain) -> Any:
            data = await request.json()
            return await (streamed if data.get("stream") else plain)(request)

        out.append(backend(up, name, handler, modelMapping={"m": "m"} if name == serving else {}))
    return {"backends": out, "failover": {"failureThreshold": 1000}}


async def until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    start = time.monotonic()
    while not await check():
        if time.monotonic() - start > WAIT_S:
            raise AssertionError(f"not within {WAIT_S} s: {what}")
        await asyncio.sleep(0.01)


async def health(url: str) -> dict[str, Any]:
    # A new connection each time, so SO_REUSEPORT picks a worker afresh.
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s,
        s.get(f"{url}/health") as r,
    ):
        data: dict[str, Any] = await r.json()
    return data


def worker_pids(p: CliProcess) -> set[int]:
    return {int(m.group(1)) for m in re.finditer(r"worker \d+ started \(pid (\d+)\)", p.stderr())}


async def versions_by_worker(url: str, pids: set[int]) -> dict[int, str]:
    """/health of every worker (polled until each has answered once)."""
    seen: dict[int, str] = {}

    async def all_seen() -> bool:
        h = await health(url)
        seen[int(h["pid"])] = h["configVersion"]
        return set(seen) >= pids

    await until(all_seen, "every worker answered /health")
    return seen


async def config_info(url: str) -> set[str]:
    async with aiohttp.ClientSession() as s, s.get(f"{url}/metrics") as r:
        text = await r.text()
    return {
        smp.labels["version"]
        for fam in text_string_to_metric_families(text)
        if fam.name == "chromagent_config_info"
        for smp in fam.samples
    }


async def test_sighup_swaps_routing_under_load_with_two_workers(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    gate = asyncio.Event()
    path = tmp_path / "gw.json"
    path.write_text(json.dumps(config(upstream, "old", gate)))
    sup = launch(
        ["--config", str(path), "--port", "0", "--workers", "2", "--log-format", "text"],
        tmp_path,
        "sup",
    )
    try:
        m = await sup.wait_for(r"supervisor: 2 workers on (http://\S+)", stream="err")
        url = m.group(1)
        await sup.wait_for(r"(?s)listening on .*listening on", stream="out")
        pids = worker_pids(sup)
        assert len(pids) == 2
        before = await versions_by_worker(url, pids)
        assert len(set(before.values())) == 1
        old_version = next(iter(before.values()))
        assert await config_info(url) == {old_version}

        streams = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=True))
        steady = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
        answers: list[tuple[float, int, str]] = []
        stop_steady = asyncio.Event()

        async def one_stream() -> bytes:
            async with streams.post(f"{url}/v1/chat/completions", json=body(stream=True)) as r:
                assert r.status == 200
                return await r.read()

        async def steady_client() -> None:
            while not stop_steady.is_set():
                started = time.monotonic()  # requests sent after convergence must go to new
                async with steady.post(f"{url}/v1/chat/completions", json=body()) as r:
                    data = await r.json()
                    name = data["choices"][0]["message"]["content"] if r.status == 200 else ""
                    answers.append((started, r.status, name))

        try:
            open_streams = [asyncio.create_task(one_stream()) for _ in range(STREAMS)]
            clients = [asyncio.create_task(steady_client()) for _ in range(4)]

            async def all_open() -> bool:
                n = sum(
                    1
                    for r in upstream.received
                    if r.path == "/old/v1/chat/completions" and r.json.get("stream")
                )
                return n == STREAMS

            await until(all_open, f"{STREAMS} streams open")
            path.write_text(json.dumps(config(upstream, "new", gate)))
            sup.signal(signal.SIGHUP)  # the supervisor forwards it to both workers

            async def converged() -> bool:
                v = await versions_by_worker(url, pids)
                return len(set(v.values())) == 1 and old_version not in v.values()

            await until(converged, "both workers on the new config")
            switched = time.monotonic()
            new_version = next(iter((await versions_by_worker(url, pids)).values()))
            assert await config_info(url) == {new_version}

            async def enough_after() -> bool:
                return sum(1 for t, _, _ in answers if t > switched) >= 20

            await until(enough_after, "steady requests after the switch")
            gate.set()  # the open streams may finish now
            done = await asyncio.gather(*open_streams)
            stop_steady.set()
            await asyncio.gather(*clients)
        finally:
            await streams.close()
            await steady.close()

        # Every stream opened before the reload finished, complete, on the old backend.
        for data in done:
            assert len(re.findall(rb'"content": ?"old"', data)) == 1
            assert data.endswith(b"data: [DONE]\n\n")
        # Zero failed requests; each steady answer came from old, then new once converged.
        assert answers and all(st == 200 for _, st, _ in answers)
        assert {n for t, _, n in answers if t > switched} == {"new"}
        assert "old" in {n for _, _, n in answers}
        assert sup.stderr().count("now serving version " + new_version) == 2

        # A broken config is refused (one line per worker) and the new config keeps serving.
        path.write_text(json.dumps({"backends": [{"id": "x", "type": "nope"}]}))
        sup.signal(signal.SIGHUP)
        await sup.wait_for(r"(?s)(reload \(SIGHUP\) refused.*){2}", stream="err")
        refused = [ln for ln in sup.stderr().splitlines() if "refused" in ln]
        assert len(refused) == 2 and all("unknown backend type 'nope'" in ln for ln in refused)
        assert all(f"still serving version {new_version}" in ln for ln in refused)
        assert set((await versions_by_worker(url, pids)).values()) == {new_version}
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
            for _ in range(10):
                async with s.post(f"{url}/v1/chat/completions", json=body()) as r:
                    assert r.status == 200
                    assert (await r.json())["choices"][0]["message"]["content"] == "new"
        assert worker_pids(sup) == pids  # no worker restarted along the way
    finally:
        sup.signal()
        assert await sup.wait_exit() == 0


async def test_config_watch_reloads_a_changed_file(upstream: FakeUpstream, tmp_path: Path) -> None:
    gate = asyncio.Event()
    gate.set()
    path = tmp_path / "gw.json"
    path.write_text(json.dumps({**config(upstream, "old", gate), "configWatchMs": 50}))
    gw = await start_gateway(["--config", str(path), "--port", "0"], tmp_path)
    try:
        first = (await health(gw.url))["configVersion"]
        path.write_text(json.dumps({**config(upstream, "new", gate), "configWatchMs": 50}))

        async def reloaded() -> bool:
            return bool((await health(gw.url))["configVersion"] != first)

        await until(reloaded, "the changed file is reloaded")
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{gw.url}/v1/chat/completions", json=body()) as r:
                assert (await r.json())["choices"][0]["message"]["content"] == "new"
        assert "config reload (config file changed): now serving version" in gw.stderr()
    finally:
        gw.signal()
        assert await gw.wait_exit() == 0


SLOW = {
    "id": "x",
    "object": "chat.completion",
    "created": 1,
    "model": "m",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "slow"}, "finish_reason": "stop"}
    ],
}


async def test_reload_keeps_health_and_unchanged_providers_and_refuses_bad_rules(
    upstream: FakeUpstream,
) -> None:
    gate = asyncio.Event()
    # Answers only once the gate opens: a request in flight across the reload.
    held = stream_reply(
        json.dumps(SLOW).encode(), gate=gate, gate_after=0, content_type="application/json"
    )
    cold = error_reply(429, {"Retry-After": "60"})
    cfg: dict[str, Any] = {
        "backends": [
            backend(upstream, "slow", held, modelMapping={"m": "m"}),
            backend(upstream, "cold", cold, modelMapping={"c": "c"}),
        ],
    }
    async with run_gateway(cfg) as gw, aiohttp.ClientSession() as s:
        state = gw.state
        assert state is not None
        async with s.post(f"{gw.url}/v1/chat/completions", json=body("c")) as r:
            assert r.status == 429
        assert state.router.health["cold"].until > 0
        cold_provider = gw.backends["cold"].provider
        inflight = asyncio.create_task(s.post(f"{gw.url}/v1/chat/completions", json=body()))

        async def arrived() -> bool:
            return hits(upstream, "slow") == 1

        await until(arrived, "a request in flight on backend slow")

        # A rule naming a backend that does not exist: refused, nothing changes.
        first = state.version
        bad = {**cfg, "routingRules": [{"condition": "model: m", "backendId": "ghost"}]}
        with pytest.raises(ConfigError, match="ghost"):
            await reload_apply(gw, make_config({**bad, "host": "127.0.0.1"}, gw.registry))
        assert state.version == first and set(gw.backends) == {"slow", "cold"}

        fresh = backend(upstream, "fresh", modelMapping={"m": "m"})
        new_cfg = {**cfg, "host": "127.0.0.1", "port": 0, "backends": [fresh, cfg["backends"][1]]}
        version = await reload_apply(gw, make_config(new_cfg, gw.registry))
        assert state.version == version != first
        assert gw.backends["cold"].provider is cold_provider  # unchanged: kept, not rebuilt
        assert state.router.health["cold"].until > 0  # still cooling after the reload
        async with s.post(f"{gw.url}/v1/chat/completions", json=body()) as r:
            assert r.status == 200 and r.headers["x-chromagent-backend"] == "fresh"
        gate.set()
        async with await inflight as r:  # planned before the swap: finishes on the old backend
            assert r.status == 200 and r.headers["x-chromagent-backend"] == "slow"
            assert (await r.json())["choices"][0]["message"]["content"] == "slow"
        # The kept provider is instrumented once: one request counted once in /metrics.
        async with s.post(f"{gw.url}/v1/chat/completions", json=body("c")) as r:
            assert r.status == 429  # cooling, but the only backend for c: tried anyway
        async with s.get(f"{gw.url}/metrics") as r:
            text = await r.text()
        counted = [
            smp.value
            for fam in text_string_to_metric_families(text)
            if fam.name == "chromagent_upstream_errors"
            for smp in fam.samples
            if smp.labels.get("backend") == "cold" and smp.name.endswith("_total")
        ]
        assert counted == [2.0]
