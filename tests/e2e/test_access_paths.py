"""Both ways an access line leaves the gateway: rendered straight into the stdout handler's
buffer (the CLI's logging setup), or as a dict record through ``logging`` for the handlers
an embedding application configured. Same fields either way, one line per request, in order."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from chromagent_proxy.accesslog import ACCESS_LOGGER, setup_logging
from tests.support.gateway import run_gateway

CFG: dict[str, Any] = {"backends": [{"id": "m", "type": "mock", "modelMapping": {"echo": "echo"}}]}
FIELDS = ["time", "request_id", "client_ip", "method", "path", "status", "backend", "model"]
FIELDS += ["stream", "latency_ms", "ttft_ms", "tokens_in", "tokens_out", "attempts", "session_id"]


async def send(url: str) -> list[str]:
    ids = []
    async with aiohttp.ClientSession() as s:
        for i, model in enumerate(["echo", "nope", "echo"]):
            body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
            headers = {"x-request-id": f"req-{i}"}
            async with s.post(f"{url}/v1/chat/completions", json=body, headers=headers) as r:
                await r.read()
                ids.append(r.headers["x-request-id"])
    return ids


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """setup_logging replaces global handlers and levels: put the test runner's back."""
    saved = [
        (lg, lg.handlers[:], lg.level, lg.propagate)
        for lg in map(logging.getLogger, ("", ACCESS_LOGGER))
    ]
    yield
    for lg, handlers, level, propagate in saved:
        lg.handlers[:] = handlers
        lg.setLevel(level)
        lg.propagate = propagate


async def test_cli_setup_writes_rendered_lines_in_order() -> None:
    out = io.StringIO()  # no binary buffer: the handler writes text then
    setup_logging("info", "json", stream=out)
    async with run_gateway(CFG) as gw:
        ids = await send(gw.url)
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    assert [x["request_id"] for x in lines] == ids
    assert all(list(x) == FIELDS for x in lines)
    assert [x["status"] for x in lines] == [200, 404, 200]


async def test_embedded_gateway_logs_dict_records_to_configured_handlers() -> None:
    got: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            got.append(record)

    access = logging.getLogger(ACCESS_LOGGER)
    access.addHandler(Keep())
    access.setLevel(logging.INFO)
    async with run_gateway(CFG) as gw:
        ids = await send(gw.url)
    assert [r.msg["request_id"] for r in got if isinstance(r.msg, dict)] == ids
    assert all(isinstance(r.msg, dict) and list(r.msg) == FIELDS for r in got)
