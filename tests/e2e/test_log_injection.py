"""``logFormat: text`` from the real CLI: a client's model name or path with a newline (or
any control character) stays on its own record's line, escaped; it cannot forge a line."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest

from tests.support.cli_process import CliProcess, start_gateway

FORGED = "2026-01-01T00:00:00.000Z 10.0.0.1 POST /v1/admin 200 mock/forged 1ms"


async def _start(tmp_path: Path, fmt: str) -> CliProcess:
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
    return await start_gateway(
        ["--config", str(cfg), "--port", "0", "--log-format", fmt], tmp_path, fmt
    )


async def test_control_characters_cannot_forge_text_log_lines(tmp_path: Path) -> None:
    p = await _start(tmp_path, "text")
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


async def _raw_post(url: str, path: str, headers: bytes, body: bytes) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b"POST " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + headers
        + b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n"
        + body
    )  # fmt: skip
    answer = await reader.read()
    writer.close()
    return answer


@pytest.mark.parametrize("fmt", ["json", "text"])
async def test_a_session_header_that_is_not_utf8_is_answered_and_logged(
    tmp_path: Path, fmt: str
) -> None:
    # Clients name their session in a header (Codex: session-id); its bytes are theirs.
    p = await _start(tmp_path, fmt)
    body = json.dumps({"model": "echo", "input": "hi"}).encode()
    try:
        answers = [
            await _raw_post(p.url, "/v1/responses", b"session-id: caf\xe9\xff\r\n", body),
            await _raw_post(p.url, "/v1/responses", b"session-id: " + b"s" * 5000 + b"\r\n", body),
            await _raw_post(p.url, "/v1/responses", b"session-id: ok-1\r\n", body),
        ]
    finally:
        p.signal()
        assert await p.wait_exit() == 0
    assert all(a.startswith(b"HTTP/1.1 200") for a in answers), answers
    out = p.stdout()
    lines = [line for line in out.splitlines() if "/v1/responses" in line]
    assert len(lines) == 3, out
    assert "Traceback" not in out and "error" not in out.lower(), out
    assert all(len(line) < 2000 for line in lines)  # a client cannot fill the log
    if fmt == "json":
        logged = [json.loads(line)["session_id"] for line in lines]
        assert logged == [None, "s" * 128, "ok-1"]
