"""A real redis-server on a free loopback port, for the rate-limit tests.

Without a redis-server binary the tests that need one are skipped with a clear
reason locally, and FAIL when CHROMAGENT_REQUIRE_REDIS=1 (set by .ci/run, which
installs redis-server), so CI never silently skips them.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

REQUIRE_ENV = "CHROMAGENT_REQUIRE_REDIS"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_binary() -> str:
    """The redis-server path, or skip (locally) / fail (CI) the calling test."""
    path = shutil.which("redis-server")
    if path is None:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(
                f"redis-server is not installed but {REQUIRE_ENV}=1: the Redis rate-limit "
                "tests must run here (install it with: apt-get install redis-server)"
            )
        pytest.skip(
            "redis-server is not installed; install it (apt-get install redis-server) to run "
            "the Redis rate-limit tests (CI sets CHROMAGENT_REQUIRE_REDIS=1 and never skips)"
        )
    return path


class RedisServer:
    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.binary = redis_binary()
        self.workdir = workdir
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> RedisServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(250):
            if await self.ping():
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with code {self.proc.returncode}")
            await asyncio.sleep(0.02)
        raise RuntimeError("redis-server did not answer PING within 5 s")

    async def ping(self) -> bool:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            return False
        try:
            writer.write(b"PING\r\n")
            await writer.drain()
            return (await reader.readline()).startswith(b"+PONG")
        except OSError:
            return False
        finally:
            writer.close()

    async def flushall(self) -> None:
        """Empty every key (as a freshly started, persistence-less server is)."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            writer.write(b"FLUSHALL\r\n")
            await writer.drain()
            reply = await reader.readline()
            assert reply.startswith(b"+OK"), reply
        finally:
            writer.close()
            await writer.wait_closed()

    async def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            for _ in range(250):
                if self.proc.poll() is not None:
                    break
                await asyncio.sleep(0.02)
        self.proc = None
