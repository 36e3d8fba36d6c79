"""The listen backlog (``backlog``): a burst of connections arriving while the gateway is
busy waits in the kernel's queue instead of being dropped (aiohttp's default is 128)."""

from __future__ import annotations

import contextlib
import select
import socket
import time
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.gateway import run_gateway

MOCK: dict[str, Any] = {"backends": [{"id": "m", "type": "mock", "modelMapping": {"m": "m"}}]}


def burst(port: int, n: int, wait_s: float) -> int:
    """Open ``n`` connections while the caller's event loop is blocked (nothing accepts):
    how many does the kernel complete? The rest sit in SYN_SENT, their SYN dropped."""
    socks = []
    poller = select.poll()
    try:
        for _ in range(n):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            socks.append(s)
            poller.register(s, select.POLLOUT)
        done: set[int] = set()
        deadline = time.monotonic() + wait_s
        while len(done) < n and time.monotonic() < deadline:
            for fd, _ in poller.poll(100):
                poller.unregister(fd)
                done.add(fd)
        by_fd = {s.fileno(): s for s in socks}
        return sum(
            1 for fd in done if by_fd[fd].getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
        )
    finally:
        for s in socks:
            s.close()


def somaxconn() -> int:
    with contextlib.suppress(OSError, ValueError):
        return int(Path("/proc/sys/net/core/somaxconn").read_text())
    return 128


async def test_default_backlog_queues_a_burst_and_a_small_one_does_not() -> None:
    n = min(600, somaxconn() - 1)  # the kernel caps any backlog at somaxconn
    async with run_gateway(MOCK) as gw:
        assert gw.config.backlog == 4096
        # The loop is blocked inside burst(): every connection must wait in the queue.
        assert burst(gw.port, n, 1.5) == n
        async with aiohttp.ClientSession() as s, s.get(f"{gw.url}/health") as r:
            assert r.status == 200  # and the gateway serves on afterwards
    async with run_gateway({**MOCK, "backlog": 16}) as gw:
        got = burst(gw.port, n, 1.5)
        assert got < n and got <= 16 + 2  # Linux queues backlog + 1
