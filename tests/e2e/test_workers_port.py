"""A ``--workers`` gateway never silently shares a port with another gateway (issue 13, low
items): the second one exits 2 with one line; ``workers`` has an upper bound."""

from __future__ import annotations

import re
from pathlib import Path

from tests.support.cli_process import launch


async def test_second_workers_gateway_on_an_occupied_port_fails_to_start(tmp_path: Path) -> None:
    first = launch(["--port", "0", "--workers", "2", "--log-format", "text"], tmp_path, "first")
    try:
        m = await first.wait_for(
            r"supervisor: 2 workers on http://127\.0\.0\.1:(\d+)", stream="err"
        )
        port = m.group(1)
        await first.wait_for(r"(?s)listening on .*listening on", stream="out")
        for workers in ("2", "1"):
            second = launch(["--port", port, "--workers", workers], tmp_path, f"second{workers}")
            try:
                assert await second.wait_exit(20) == 2
                lines = second.stderr().strip().splitlines()
                assert len(lines) == 1 and re.search(
                    rf"cannot listen on 127\.0\.0\.1:{port}", lines[0]
                )
                assert "listening on" not in second.stdout()
            finally:
                await second.close()
        assert first.proc.poll() is None  # the first one is untouched
    finally:
        first.signal()
        await first.wait_exit(15)


async def test_workers_has_an_upper_bound(tmp_path: Path) -> None:
    p = launch(["--port", "0", "--workers", "100000"], tmp_path, "many")
    assert await p.wait_exit(20) == 2
    assert p.stderr().strip().splitlines() == [
        "chromagent-gateway: error: config $.workers: must be between 1 and 64"
    ]
