"""The Dockerfile's ENTRYPOINT and HEALTHCHECK commands, run exactly as written (no Docker
engine here): the entrypoint serves with the image's env, the health check passes against
it and fails once it is gone."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.cli_process import ROOT, launch
from tests.support.redis import free_port

DOCKERFILE = (ROOT / "Dockerfile").read_text()


def instruction(name: str) -> str:
    """The text of one instruction, line continuations joined."""
    joined = DOCKERFILE.replace("\\\n", " ")
    m = re.search(rf"^{name}\s+(.*)$", joined, re.M)
    assert m, name
    return m.group(1).strip()


def image_env() -> dict[str, str]:
    pairs = re.findall(r"(\w+)=(\S+)", instruction("ENV"))
    return dict(pairs)


def test_dockerfile_shape() -> None:
    assert re.search(r"^FROM python:3\.\d+-slim$", DOCKERFILE, re.M)
    assert re.search(r"^USER 10001$", DOCKERFILE, re.M)  # non-root
    assert image_env()["GATEWAY_HOST"] == "0.0.0.0"


@pytest.mark.slow
async def test_entrypoint_serves_and_healthcheck_passes(tmp_path: Path) -> None:
    entry = json.loads(instruction("ENTRYPOINT")) + json.loads(instruction("CMD"))
    script = shutil.which(entry[0], path=str(Path(sys.executable).parent))
    assert script, "the console script the image runs must exist"
    port = free_port()
    cfg = tmp_path / "config.json"  # what an operator would mount
    cfg.write_text(
        json.dumps({"backends": [{"id": "m", "type": "mock", "modelMapping": {"echo": "echo"}}]})
    )
    env = {**image_env(), "GATEWAY_PORT": str(port), "GATEWAY_CONFIG": str(cfg)}
    p = launch([], tmp_path, "image", env, cmd=[script, *entry[1:]])
    health = json.loads(re.sub(r"^--\S+\s+", "", instruction("HEALTHCHECK").split(" CMD ", 1)[1]))
    health = [sys.executable if health[0] == "python" else health[0], *health[1:]]
    try:
        # The image binds every interface (GATEWAY_HOST=0.0.0.0), and the start line says so.
        await p.wait_for(rf"listening on http://0\.0\.0\.0:{port} .*all interfaces", stream="out")
        ok = subprocess.run(health, env=env, capture_output=True, timeout=10)
        assert ok.returncode == 0, ok.stderr
    finally:
        p.signal()
        assert await p.wait_exit() == 0
    down = subprocess.run(health, env=env, capture_output=True, timeout=10)
    assert down.returncode != 0
