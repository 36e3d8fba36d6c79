"""``--workers 2`` through the real CLI: one port (SO_REUSEPORT), a killed worker is
restarted, /metrics totals are the sum over workers whichever worker answers, SIGTERM stops
everything with exit 0."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.cli_process import CliProcess, launch

BODY = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}

pytestmark = pytest.mark.slow  # real processes and waits: `make test-all`


def worker_pids(p: CliProcess) -> dict[int, int]:
    """slot → pid of the latest start of that slot."""
    out: dict[int, int] = {}
    for m in re.finditer(r"worker (\d+) started \(pid (\d+)\)", p.stderr()):
        out[int(m.group(1))] = int(m.group(2))
    return out


async def burst(url: str, n: int) -> list[int]:
    # A new connection per request, so SO_REUSEPORT spreads them over the workers.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:

        async def one() -> int:
            async with s.post(f"{url}/v1/chat/completions", json=BODY) as r:
                await r.read()
                return r.status

        return list(await asyncio.gather(*(one() for _ in range(n))))


async def total_requests(url: str) -> float:
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s,
        s.get(f"{url}/metrics") as r,
    ):
        text = await r.text()
    return sum(
        smp.value
        for fam in text_string_to_metric_families(text)
        if fam.name == "chromagent_requests"
        for smp in fam.samples
    )


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_two_workers_restart_and_summed_metrics(tmp_path: Path) -> None:
    p = launch(["--port", "0", "--workers", "2", "--log-format", "text"], tmp_path, "sup")
    try:
        m = await p.wait_for(r"supervisor: 2 workers on (http://\S+)", stream="err")
        url = m.group(1)
        await p.wait_for(r"(?s)listening on .*listening on", stream="out")
        first = worker_pids(p)
        assert set(first) == {0, 1} and p.proc.pid not in first.values()

        assert await burst(url, 40) == [200] * 40
        # A scrape makes every worker write a fresh snapshot first: the total is exact at once.
        assert await total_requests(url) == 40
        os.kill(first[0], signal.SIGKILL)  # its 40-or-fewer requests stay in the totals
        await p.wait_for(r"worker 0 \(pid \d+\) exited with code -9; restarting", stream="err")
        await p.wait_for(r"(?s)(listening on .*){3}", stream="out")
        restarted = worker_pids(p)
        assert restarted[0] != first[0] and restarted[1] == first[1]
        assert await burst(url, 40) == [200] * 40

        # Every scrape, whichever worker answers it, sees the sum over all workers, the dead
        # one included (counters stay monotonic) — right away, no waiting for a flush.
        assert [await total_requests(url) for _ in range(6)] == [80.0] * 6

        p.signal(signal.SIGTERM)
        assert await p.wait_exit(15) == 0
        assert not any(alive(pid) for pid in restarted.values())
    finally:
        await p.close()
