"""The real CLI (``python -m chromagent_proxy``) as a subprocess, driven from async tests.

Output goes to files (never to an unread pipe that could fill and block the
gateway); waiting is done with asyncio so a FakeUpstream in the test's loop
keeps serving meanwhile.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class CliProcess:
    proc: subprocess.Popen[bytes]
    out: Path
    err: Path
    url: str = ""

    def stdout(self) -> str:
        return self.out.read_text(errors="replace")

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    async def wait_for(
        self, pattern: str, *, stream: str = "both", timeout: float = 15.0
    ) -> re.Match[str]:
        rx = re.compile(pattern)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            text = {"out": self.stdout, "err": self.stderr}.get(stream)
            texts = [text()] if text else [self.stdout(), self.stderr()]
            for t in texts:
                m = rx.search(t)
                if m:
                    return m
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"process exited with {self.proc.returncode} before {pattern!r}:\n"
                    f"stdout: {self.stdout()[-2000:]}\nstderr: {self.stderr()[-2000:]}"
                )
            if loop.time() > deadline:
                raise AssertionError(
                    f"timed out waiting for {pattern!r}:\nstdout: {self.stdout()[-2000:]}\n"
                    f"stderr: {self.stderr()[-2000:]}"
                )
            await asyncio.sleep(0.02)

    async def wait_exit(self, timeout: float = 20.0) -> int:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.proc.poll() is None:
            if loop.time() > deadline:
                self.proc.kill()
                raise AssertionError(f"process did not exit within {timeout} s")
            await asyncio.sleep(0.02)
        return self.proc.returncode

    def signal(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    async def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            await self.wait_exit(10)


def launch(
    args: list[str],
    workdir: Path,
    name: str,
    env: dict[str, Any] | None = None,
    cmd: list[str] | None = None,
) -> CliProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    out, err = workdir / f"{name}.out", workdir / f"{name}.err"
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    full_env.update({k: str(v) for k, v in (env or {}).items()})
    with out.open("wb") as o, err.open("wb") as e:
        proc = subprocess.Popen(
            cmd or [sys.executable, "-m", "chromagent_proxy", *args],
            stdout=o,
            stderr=e,
            env=full_env,
            cwd=ROOT,
        )
    return CliProcess(proc, out, err)


async def start_gateway(
    args: list[str], workdir: Path, name: str = "gw", env: dict[str, Any] | None = None
) -> CliProcess:
    """Start the CLI and wait for its ``listening on`` line."""
    p = launch(args, workdir, name, env)
    m = await p.wait_for(r"listening on (http://\S+)", stream="out")
    p.url = m.group(1)
    return p
