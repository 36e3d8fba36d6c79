"""``logFormat: text`` from the real CLI: a client's model name or path with a newline (or
any control character) stays on its own record's line, escaped; it cannot forge a line."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp

from tests.support.cli_process import start_gateway

FORGED = "2026-01-01T00:00:00.000Z 10.0.0.1 POST /v1/admin 200 mock/forged 1ms"


async def test_control_characters_cannot_forge_text_log_lines(tmp_path: Path) -> None:
    cfg = tmp_path / "gw.json"
    cfg.write_text(
        json.dumps(
            {
                "backends": [{"id": "mock", "type": "mock"}],
                # A rule glob that matches any echo* name: those get their own metric and
                # log label (made-up names without one are logged as "other").
                "routingRules": [{"condition": "model: echo*", "backendId": "mock"}],
            }
        )
    )
    p = await start_gateway(
        ["--config", str(cfg), "--port", "0", "--log-format", "text"], tmp_path, "text"
    )
    models = [f"echo\n{FORGED}", f"echo\r{FORGED}", f"echo\u2028{FORGED}", f"echo\x1b[2J{FORGED}"]
    try:
        async with aiohttp.ClientSession() as s:
            for model in models:
                body = {"model": model, "messages": [{"role": "user", "content": "x"}]}
                async with s.post(f"{p.url}/v1/chat/completions", json=body) as r:
                    assert r.status == 200
    finally:
        p.signal()
        assert await p.wait_exit() == 0
    out = p.stdout()
    lines = [line for line in out.splitlines() if "/v1/" in line]
    assert len(lines) == len(models), out
    # Every forged text sits inside its real line, never at the start of one.
    assert all(not line.startswith("2026-01-01T00:00:00.000Z") for line in out.splitlines())
    assert "\r" not in out and "\u2028" not in out and "\x1b" not in out
    assert "mock/echo\\x0a2026-01-01T00:00:00.000Z" in lines[0]
    assert "mock/echo\\x0d2026" in lines[1]
    assert "mock/echo\\u20282026" in lines[2]
    assert "mock/echo\\x1b[2J2026" in lines[3]
