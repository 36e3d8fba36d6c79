"""A backend added by a hot reload is labelled with its real provider, like one configured at
start: ``/health/backends`` shows its type and GenAI provider name, and after traffic
``/metrics`` counts it under ``gen_ai_provider_name="anthropic"`` / ``"gcp.gemini"``, not
``"none"``. Through the real CLI: the file watch (``configWatchMs``) and SIGHUP."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import openai

from tests.e2e.test_metrics import scrape
from tests.support.cli_process import CliProcess, start_gateway
from tests.support.traffic import MSG, gateway_config, start_upstream
from tests.support.upstream import FakeUpstream

WAIT_S = 15.0


def initial(up: FakeUpstream) -> dict[str, Any]:
    """Only the OpenAI backend of the traffic config (no keys: plain requests)."""
    cfg = gateway_config(up)
    return {"backends": [b for b in cfg["backends"] if b["id"] == "oa"], "configWatchMs": 50}


def grown(up: FakeUpstream) -> dict[str, Any]:
    """The same, plus an Anthropic and a Gemini backend: what the reload adds."""
    cfg = gateway_config(up)
    keep = ("oa", "anth", "gem")
    return {"backends": [b for b in cfg["backends"] if b["id"] in keep], "configWatchMs": 50}


async def get_json(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        assert r.status == 200
        data: dict[str, Any] = await r.json()
    return data


async def reloaded(gw: CliProcess, first: str) -> None:
    start = time.monotonic()
    while (await get_json(f"{gw.url}/health"))["configVersion"] == first:
        if time.monotonic() - start > WAIT_S:
            raise AssertionError(f"config not reloaded within {WAIT_S} s")
        await asyncio.sleep(0.02)


async def check_providers(gw: CliProcess) -> None:
    health = await get_json(f"{gw.url}/health/backends")
    rows = {r["id"]: (r["type"], r["provider"]) for r in health["backends"]}
    assert rows == {
        "oa": ("openai", "openai"),
        "anth": ("anthropic", "anthropic"),
        "gem": ("gemini", "gcp.gemini"),
    }
    client = openai.AsyncOpenAI(base_url=f"{gw.url}/v1", api_key="unused", max_retries=0)
    async with client:
        for model in ("gpt", "claude", "gem"):
            done = await client.chat.completions.create(model=model, messages=MSG)
            assert done.choices[0].message.content
    async with aiohttp.ClientSession() as s, s.get(f"{gw.url}/metrics") as r:
        m = scrape(await r.text())
    providers = {lab["backend"]: lab["gen_ai_provider_name"] for lab, _ in m["gen_ai_tokens_total"]}
    assert providers == {"oa": "openai", "anth": "anthropic", "gem": "gcp.gemini"}
    seconds = {
        lab["backend"]: lab["gen_ai_provider_name"]
        for lab, _ in m["gen_ai_server_request_duration_seconds_count"]
    }
    assert seconds == providers


async def test_backends_added_by_the_file_watch_show_their_provider(tmp_path: Path) -> None:
    up = await start_upstream()
    path = tmp_path / "gw.json"
    path.write_text(json.dumps(initial(up)))
    gw = await start_gateway(["--config", str(path), "--port", "0"], tmp_path)
    try:
        first = (await get_json(f"{gw.url}/health"))["configVersion"]
        path.write_text(json.dumps(grown(up)))
        await reloaded(gw, first)
        await check_providers(gw)
    finally:
        gw.signal()
        assert await gw.wait_exit() == 0
        await up.close()


async def test_backends_added_by_sighup_show_their_provider(tmp_path: Path) -> None:
    up = await start_upstream()
    path = tmp_path / "gw.json"
    path.write_text(json.dumps({**initial(up), "configWatchMs": 0}))
    gw = await start_gateway(["--config", str(path), "--port", "0"], tmp_path)
    try:
        first = (await get_json(f"{gw.url}/health"))["configVersion"]
        path.write_text(json.dumps({**grown(up), "configWatchMs": 0}))
        gw.signal(signal.SIGHUP)
        await reloaded(gw, first)
        await check_providers(gw)
    finally:
        gw.signal()
        assert await gw.wait_exit() == 0
        await up.close()
