"""Secrets in the config (issue 13, item 3): an empty, blank or whitespace-carrying key never
silently turns authentication off or reaches an upstream; the gateway refuses to start with
one line naming the field (never the value), and warns when it listens beyond loopback
without keys or allows any origin with credentials."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from chromagent_proxy.core.config_load import build_config
from chromagent_proxy.core.errors import ConfigError
from tests.support.cli_process import start_gateway
from tests.unit.test_cli_config import BASE, run_cli, write

SECRET = "sk-gw-0123456789"


@pytest.mark.parametrize(
    ("data", "env", "field"),
    [
        ({"apiKeys": ["${K}"]}, {"K": ""}, "$.apiKeys[0]"),
        ({"apiKeys": [SECRET, "   "]}, {}, "$.apiKeys[1]"),
        ({"apiKeys": [SECRET + "\n"]}, {}, "$.apiKeys[0]"),
        ({"apiKeys": ["${K}"]}, {"K": SECRET + "\r\n"}, "$.apiKeys[0]"),
        ({"apiKeys": [SECRET[:5] + " " + SECRET[5:]]}, {}, "$.apiKeys[0]"),
        ({"apiKeys": [SECRET + "\x00"]}, {}, "$.apiKeys[0]"),
        ({}, {"GATEWAY_API_KEYS": " , "}, "GATEWAY_API_KEYS"),
        ({}, {"GATEWAY_API_KEYS": f"{SECRET},"}, "GATEWAY_API_KEYS"),
        ({}, {"GATEWAY_API_KEYS": ""}, "GATEWAY_API_KEYS"),
        (
            {"backends": [{"id": "o", "type": "openai", "apiKey": "${P}"}]},
            {"P": SECRET + "\n"},
            "$.backends[0].apiKey",
        ),
        (
            {"backends": [{"id": "o", "type": "openai", "apiKey": ""}]},
            {},
            "$.backends[0].apiKey",
        ),
        (
            {
                "backends": [
                    {
                        "id": "o",
                        "type": "openai",
                        "additionalHeaders": {"Authorization": f"Bearer {SECRET}\n"},
                    }
                ]
            },
            {},
            "$.backends[0].additionalHeaders.Authorization",
        ),
        ({"rateLimit": {"redisUrl": "redis://:pw@localhost:6379/0\n"}}, {}, "$.rateLimit.redisUrl"),
    ],
)
def test_bad_secret_is_refused_naming_the_field_not_the_value(
    data: dict[str, Any], env: dict[str, str], field: str
) -> None:
    with pytest.raises(ConfigError) as info:
        build_config(data, env=env)
    message = str(info.value)
    assert field in message
    assert SECRET not in message and "pw@" not in message
    assert "\n" not in message


def test_good_secrets_are_kept_as_given() -> None:
    cfg = build_config(
        {
            "backends": [
                {
                    "id": "o",
                    "type": "openai",
                    "apiKey": SECRET,
                    "additionalHeaders": {"Authorization": f"Bearer {SECRET}"},
                }
            ]
        },
        env={"GATEWAY_API_KEYS": f"{SECRET}, other-key"},
    )
    assert cfg.api_keys == [SECRET, "other-key"]
    assert cfg.backends[0].api_key == SECRET


@pytest.mark.parametrize(
    ("cfg", "env"),
    [
        ({**BASE, "apiKeys": ["${EMPTY_KEY}"]}, {"EMPTY_KEY": ""}),
        (BASE, {"GATEWAY_API_KEYS": " , "}),
        ({**BASE, "apiKeys": [SECRET + "\n"]}, {}),
    ],
)
def test_cli_refuses_to_start_with_one_line_and_exit_2(
    tmp_path: Path, cfg: dict[str, Any], env: dict[str, str]
) -> None:
    proc = run_cli(["--config", write(tmp_path, cfg), "--port", "0"], env=env)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "apiKeys" in lines[0] or "GATEWAY_API_KEYS" in lines[0]
    assert SECRET not in proc.stderr and "listening" not in proc.stdout


async def _start_and_read_stderr(tmp_path: Path, cfg: dict[str, Any], host: str) -> str:
    gw = await start_gateway(
        ["--config", write(tmp_path, cfg), "--port", "0", "--host", host], tmp_path
    )
    try:
        await asyncio.sleep(0.2)
        return gw.stderr()
    finally:
        gw.signal()
        await gw.wait_exit()


async def test_warns_when_auth_is_off_beyond_loopback(tmp_path: Path) -> None:
    assert "without apiKeys" in await _start_and_read_stderr(tmp_path, BASE, "0.0.0.0")
    assert "without apiKeys" not in await _start_and_read_stderr(tmp_path, BASE, "127.0.0.1")
    with_keys = {**BASE, "apiKeys": [SECRET]}
    assert "without apiKeys" not in await _start_and_read_stderr(tmp_path, with_keys, "0.0.0.0")


async def test_warns_about_cors_any_origin_with_credentials(tmp_path: Path) -> None:
    cfg = {**BASE, "cors": {"origin": "*", "credentials": True}}
    assert "credentials" in await _start_and_read_stderr(tmp_path, cfg, "127.0.0.1")
    cfg = {**BASE, "cors": {"origin": ["https://app.example"], "credentials": True}}
    assert "cors" not in await _start_and_read_stderr(tmp_path, cfg, "127.0.0.1")
