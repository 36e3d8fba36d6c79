"""A real Prometheus (Debian's ``prometheus`` package) on a free loopback port, for the
dashboard and alert-rule tests.

Without the binaries the tests that need them are skipped with a clear reason locally, and
FAIL when CHROMAGENT_REQUIRE_PROMETHEUS=1 (set by .ci/run, which installs prometheus), so CI
never silently skips them.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.support.redis import free_port

REQUIRE_ENV = "CHROMAGENT_REQUIRE_PROMETHEUS"


def prometheus_binary(name: str = "prometheus") -> str:
    """The path of ``prometheus`` / ``promtool``, or skip (locally) / fail (CI) the test."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(
                f"{name} is not installed but {REQUIRE_ENV}=1: the dashboard and alert tests "
                "must run here (install it with: apt-get install prometheus)"
            )
        pytest.skip(
            f"{name} is not installed; install it (apt-get install prometheus) to run the "
            f"dashboard and alert tests (CI sets {REQUIRE_ENV}=1 and never skips)"
        )
    return path


class Prometheus:
    """Scrapes ``targets`` every second as job "chromagent", evaluating ``rule_files``."""

    def __init__(self, workdir: Path, targets: list[str], rule_files: list[Path]) -> None:
        self.binary = prometheus_binary()
        self.workdir = workdir
        self.port = free_port()
        self.targets = targets
        self.rule_files = rule_files
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> Prometheus:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(p) for p in self.rule_files],
            "scrape_configs": [
                {"job_name": "chromagent", "static_configs": [{"targets": self.targets}]}
            ],
        }
        cfg = self.workdir / "prometheus.yml"
        cfg.write_text(yaml.safe_dump(config))
        self.log = (self.workdir / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            [
                self.binary,
                f"--config.file={cfg}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        async with aiohttp.ClientSession() as s:
            for _ in range(500):
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"prometheus exited with {self.proc.returncode}: "
                        + (self.workdir / "prometheus.log").read_text()[-2000:]
                    )
                try:
                    async with s.get(f"{self.url}/-/ready") as r:
                        if r.status == 200:
                            return self
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
        raise RuntimeError("prometheus was not ready within 25 s")

    async def api(self, path: str, **params: str) -> Any:
        async with (
            aiohttp.ClientSession() as s,
            s.get(f"{self.url}/api/v1/{path}", params=params) as r,
        ):
            body = await r.json()
        if body.get("status") != "success":
            raise AssertionError(f"{path} {params}: {body}")
        return body["data"]

    async def query(self, expr: str) -> list[dict[str, Any]]:
        data = await self.api("query", query=expr)
        result = data["result"]
        return result if isinstance(result, list) else [result]

    async def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            for _ in range(200):
                if self.proc.poll() is not None:
                    break
                await asyncio.sleep(0.05)
            else:
                self.proc.kill()
        self.proc = None
        self.log.close()
