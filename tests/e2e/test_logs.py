"""Access logs from the real CLI: one JSON line per request with every field, parsed and
checked against the requests sent; never an API key, Authorization header or message
content; the text format for terminals; --log-level warning silences them."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.cli_process import CliProcess, start_gateway

KEY = "sk-gw-very-secret-key-7f3a"
WRONG = "sk-wrong-secret-key-91bc"
CONTENT = "top secret content words"
FIELDS = {
    "time",
    "request_id",
    "client_ip",
    "method",
    "path",
    "status",
    "backend",
    "model",
    "stream",
    "latency_ms",
    "ttft_ms",
    "tokens_in",
    "tokens_out",
    "attempts",
    "session_id",
}


def write_config(tmp_path: Path) -> Path:
    cfg = tmp_path / "gw.json"
    cfg.write_text(
        json.dumps(
            {
                "backends": [{"id": "mock", "type": "mock", "modelMapping": {"echo": "echo"}}],
                "apiKeys": ["${MY_GATEWAY_KEY}"],
            }
        )
    )
    return cfg


async def traffic(url: str) -> list[dict[str, Any]]:
    """Send a fixed mix; return what each response said."""
    out = []
    msg = [{"role": "user", "content": CONTENT}]
    good = {"Authorization": f"Bearer {KEY}"}
    async with aiohttp.ClientSession() as s:
        reqs: list[tuple[str, str, dict[str, Any] | None, dict[str, str]]] = [
            (
                "POST",
                "/v1/chat/completions",
                {"model": "echo", "messages": msg},
                {**good, "x-request-id": "trace-abc"},
            ),
            (
                "POST",
                "/v1/chat/completions",
                {
                    "model": "echo",
                    "messages": msg,
                    "stream": True,
                    "stream_options": {"include_usage": True},
                },
                good,
            ),
            (
                "POST",
                "/v1/chat/completions",
                {"model": "echo", "messages": msg},
                {"Authorization": f"Bearer {WRONG}"},
            ),
            ("POST", "/v1/chat/completions", {"model": "missing", "messages": msg}, good),
            ("GET", "/v1/models", None, good),
        ]
        for method, path, body, headers in reqs:
            async with s.request(method, url + path, json=body, headers=headers) as r:
                await r.read()
                out.append({"status": r.status, "rid": r.headers["x-request-id"], "path": path})
        async with s.get(f"{url}/health") as r:
            assert r.status == 200
    return out


async def stop(p: CliProcess) -> None:
    p.signal()
    assert await p.wait_exit() == 0


async def test_json_access_lines_match_requests_and_hold_no_secrets(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    env = {"MY_GATEWAY_KEY": KEY}
    p = await start_gateway(["--config", str(cfg), "--port", "0"], tmp_path, "json", env)
    try:
        sent = await traffic(p.url)
    finally:
        await stop(p)
    out, err = p.stdout(), p.stderr()
    for secret in (KEY, WRONG, "top secret", "Bearer"):
        assert secret not in out and secret not in err, secret
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    access = [x for x in lines if "request_id" in x]
    assert len(access) == len(sent)  # one line per API request; /health is not logged
    for line, req in zip(access, sent, strict=True):
        assert set(line) == FIELDS
        assert line["request_id"] == req["rid"] and line["status"] == req["status"]
        assert line["path"] == req["path"] and line["client_ip"] == "127.0.0.1"
        assert line["time"].endswith("Z") and line["latency_ms"] > 0
    chat, stream, wrong, missing, models = access
    assert chat["request_id"] == "trace-abc"
    assert (chat["method"], chat["backend"], chat["model"], chat["stream"]) == (
        "POST",
        "mock",
        "echo",
        False,
    )
    assert (chat["tokens_in"], chat["tokens_out"], chat["attempts"], chat["ttft_ms"]) == (
        4,
        4,
        1,
        None,
    )
    assert stream["stream"] is True and stream["ttft_ms"] is not None and stream["tokens_out"] == 4
    assert 0 < stream["ttft_ms"] <= stream["latency_ms"]
    assert (wrong["status"], wrong["backend"], wrong["attempts"]) == (401, None, 0)
    assert (missing["status"], missing["model"]) == (404, None)
    assert (models["method"], models["status"]) == ("GET", 200)
    # App logs on stderr are JSON too
    for line in err.splitlines():
        rec = json.loads(line)
        assert {"time", "level", "logger", "message"} <= set(rec)


async def test_text_format_and_log_level(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    env = {"MY_GATEWAY_KEY": KEY}
    text, quiet = await asyncio.gather(
        start_gateway(
            ["--config", str(cfg), "--port", "0", "--log-format", "text"], tmp_path, "text", env
        ),
        start_gateway(
            ["--config", str(cfg), "--port", "0", "--log-level", "warning"],
            tmp_path,
            "quiet",
            {**env, "GATEWAY_LOG_FORMAT": "json"},
        ),
    )
    try:
        sent = await traffic(text.url)
        await traffic(quiet.url)
    finally:
        await stop(text)
        await stop(quiet)
    lines = [line for line in text.stdout().splitlines() if "/v1/" in line]
    assert len(lines) == len(sent)
    assert " 127.0.0.1 POST /v1/chat/completions 200 mock/echo " in lines[0]
    assert "tokens=4/4 attempts=1 id=trace-abc" in lines[0]
    assert " stream " in lines[1] and "ttft=" in lines[1]
    assert KEY not in text.stdout() + text.stderr() and CONTENT not in text.stdout()
    assert not [line for line in quiet.stdout().splitlines() if "request_id" in line]
