"""A bad routing rule stops the real CLI with exit 2 and one line naming the rule."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from chromagent_proxy import GatewayServer
from chromagent_proxy.core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]

BACKENDS = [
    {"id": "a", "type": "mock", "modelMapping": {"m": "m"}},
    {"id": "off", "type": "mock", "enabled": False},
]


def run(tmp_path: Path, cfg: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "c.json"
    path.write_text(json.dumps(cfg))
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    return subprocess.run(
        [sys.executable, "-m", "chromagent_proxy", "--config", str(path), "--port", "0"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=30,
    )


CASES = [
    ({"condition": "model: x", "backend": "a"}, "$.routingRules[0]", "unknown field `backend`"),
    (
        {"condition": "model: claude-[", "backendId": "a"},
        "routingRules[0] ('model: claude-[')",
        "bad glob",
    ),
    ({"condition": "model: ", "backendId": "a"}, "routingRules[0]", "bad glob"),
    (
        {"condition": "model: x", "backendId": "nope"},
        "routingRules[0] ('model: x')",
        "backend 'nope' does not exist",
    ),
    (
        {"condition": "model: x", "backendIds": ["a", "off"]},
        "routingRules[0]",
        "backend 'off' is disabled",
    ),
    ({"condition": "modle: x", "backendId": "a"}, "routingRules[0]", "unknown condition 'modle'"),
    (
        {"condition": "has_tools = true", "backendId": "a"},
        "routingRules[0]",
        "expected 'key: value'",
    ),
    (
        {"condition": "stream: yes", "backendId": "a"},
        "routingRules[0]",
        "stream must be true or false",
    ),
    ({"condition": "model: x &&", "backendId": "a"}, "routingRules[0]", "expected 'key: value'"),
    ({"condition": "model: x"}, "routingRules[0]", "needs backendId or a non-empty backendIds"),
    (
        {"condition": "model: x", "backendId": "a", "backendIds": ["a"]},
        "routingRules[0]",
        "not both",
    ),
]


GOOD = {"condition": "has_tools: true", "backendId": "a"}
# Each kind of mistake the issue names goes through the real CLI; the rest in process (faster).
THROUGH_CLI = [CASES[i] for i in (0, 1, 3, 4, 5, 6)]


@pytest.mark.parametrize(("rule", "where", "what"), CASES)
def test_bad_rule_is_a_config_error_naming_it(rule: dict[str, Any], where: str, what: str) -> None:
    with pytest.raises(ConfigError) as info:
        GatewayServer({"backends": BACKENDS, "routingRules": [rule, GOOD]})
    assert where in str(info.value) and what in str(info.value)


@pytest.mark.parametrize(("rule", "where", "what"), THROUGH_CLI)
def test_bad_rule_exits_2_naming_it(
    tmp_path: Path, rule: dict[str, Any], where: str, what: str
) -> None:
    proc = run(tmp_path, {"backends": BACKENDS, "routingRules": [rule, GOOD]})
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert where in lines[0] and what in lines[0], lines[0]


def test_bad_failover_setting_exits_2(tmp_path: Path) -> None:
    proc = run(tmp_path, {"backends": BACKENDS, "failover": {"cooldownMs": 0}})
    assert proc.returncode == 2
    assert "$.failover.cooldownMs: must be a positive integer" in proc.stderr
