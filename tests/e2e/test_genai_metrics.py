"""GenAI semantic-convention metrics on /metrics against the traffic actually sent: a real
gateway in front of fake OpenAI, Anthropic and Gemini upstreams, driven by the openai SDK.
Tokens split by type (cache read / write and reasoning from each provider's own usage
fields), request duration / TTFT / time per output token with the semconv buckets, errors by
cause, the in-flight and backend-cooling gauges, and the same numbers summed over --workers."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

import aiohttp
import openai
from aiohttp import web

from chromagent_proxy.ops.genai import DURATION_BUCKETS, ERROR_TYPES, TPOT_BUCKETS, TTFT_BUCKETS
from tests.e2e.test_metrics import scrape, value
from tests.support.cli_process import launch
from tests.support.gateway import run_gateway
from tests.support.traffic import (
    ANTHROPIC_TOKENS,
    API_KEY,
    GEMINI_USAGE,
    MSG,
    OPENAI_TOKENS,
    drive,
    gateway_config,
    start_upstream,
)
from tests.support.upstream import stream_reply

TYPES = ("input", "output", "cache_read", "cache_write", "reasoning")


def tokens(m: dict[str, list[tuple[dict[str, str], float]]], backend: str) -> tuple[float, ...]:
    return tuple(
        value(m, "gen_ai_tokens_total", backend=backend, gen_ai_token_type=t) for t in TYPES
    )


def les(m: dict[str, list[tuple[dict[str, str], float]]], name: str) -> list[float]:
    return sorted({float(lab["le"]) for lab, _ in m.get(name, [])})


async def test_genai_metrics_match_the_traffic() -> None:
    up = await start_upstream()
    try:
        async with run_gateway(gateway_config(up)) as gw, aiohttp.ClientSession() as s:
            sent = await drive(gw.url, rounds=2)
            async with s.get(f"{gw.url}/metrics") as r:
                m = scrape(await r.text())
    finally:
        await up.close()

    rounds = 2
    statuses = Counter(sent)
    assert statuses[("gpt stream", 200)] == 3 * rounds and statuses[("claude", 200)] == rounds

    # Tokens by type, from each provider's own usage fields: OpenAI's cached/reasoning
    # details, Anthropic's cache_read/cache_creation_input_tokens, Gemini's
    # cachedContentTokenCount/thoughtsTokenCount.
    assert tokens(m, "oa") == tuple(4 * rounds * n for n in OPENAI_TOKENS)
    assert tokens(m, "anth") == tuple(rounds * n for n in ANTHROPIC_TOKENS)
    gem = tokens(m, "gem")
    assert gem[0] == rounds * GEMINI_USAGE["promptTokenCount"]
    assert gem[2] == rounds * GEMINI_USAGE["cachedContentTokenCount"]
    assert gem[4] == rounds * GEMINI_USAGE["thoughtsTokenCount"]
    assert gem[3] == 0 and gem[1] >= rounds * GEMINI_USAGE["candidatesTokenCount"]
    providers = {lab["backend"]: lab["gen_ai_provider_name"] for lab, _ in m["gen_ai_tokens_total"]}
    assert providers == {"oa": "openai", "anth": "anthropic", "gem": "gcp.gemini"}
    models = {lab["gen_ai_request_model"] for lab, _ in m["gen_ai_tokens_total"]}
    assert models == {"gpt", "claude", "gem"}

    # Durations: every /v1/chat/completions request, with the semconv buckets.
    assert les(m, "gen_ai_server_request_duration_seconds_bucket") == [
        *DURATION_BUCKETS,
        float("inf"),
    ]
    assert value(m, "gen_ai_server_request_duration_seconds_count") == len(sent)
    assert (
        value(m, "gen_ai_server_request_duration_seconds_count", backend="oa", error_type="")
        == 4 * rounds
    )
    assert (
        value(m, "gen_ai_server_request_duration_seconds_count", error_type="upstream_server_error")
        == rounds
    )
    assert {lab["gen_ai_operation_name"] for lab, _ in m["gen_ai_server_request_duration_seconds_count"]} == {"chat"}  # fmt: skip
    # TTFT and time per output token: the successful streams.
    assert les(m, "gen_ai_server_time_to_first_token_seconds_bucket") == [*TTFT_BUCKETS, float("inf")]  # fmt: skip
    assert les(m, "gen_ai_server_time_per_output_token_seconds_bucket") == [*TPOT_BUCKETS, float("inf")]  # fmt: skip
    assert value(m, "gen_ai_server_time_to_first_token_seconds_count") == 3 * rounds
    assert value(m, "gen_ai_server_time_to_first_token_seconds_count", backend="oa") == 3 * rounds
    assert value(m, "gen_ai_server_time_per_output_token_seconds_count") == 3 * rounds
    # The fake streams pause 5 ms between chunks: 3 pauses after the first over 8 more tokens.
    tpot = value(m, "gen_ai_server_time_per_output_token_seconds_sum") / (3 * rounds)
    assert tpot >= 0.015 / 8

    # Errors by cause; every error_type is in the closed set, with its cause.
    errors = {
        (lab["backend"], lab["cause"], lab["error_type"]): v
        for lab, v in m["chromagent_errors_total"]
    }
    assert errors == {
        ("oa-limited", "upstream", "upstream_rate_limited"): rounds,
        ("oa", "upstream", "upstream_server_error"): rounds,
        ("oa", "upstream", "upstream_rejected"): rounds,
        ("dead", "network", "connect"): rounds,
        ("none", "client", "invalid_request"): rounds,
        ("none", "client", "unauthorized"): rounds,
    }
    assert all(ERROR_TYPES[t] == cause for _, cause, t in errors)

    # Backend health: the backend that answered 429 with Retry-After: 30 is cooling down.
    cooling = {lab["backend"]: v for lab, v in m["chromagent_backend_cooling"]}
    assert cooling == {"oa": 0, "oa-limited": 1, "anth": 0, "gem": 0, "dead": 0}
    assert value(m, "chromagent_inflight_requests") == 0


async def test_inflight_gauge_counts_open_requests() -> None:
    up = await start_upstream()
    gate = asyncio.Event()
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt"}
    first = dict(chunk, choices=[{"index": 0, "delta": {"content": "a"}, "finish_reason": None}])
    body = [f"data: {json.dumps(first)}\n\n".encode(), b"data: [DONE]\n\n"]
    held = stream_reply(body, gate=gate)

    async def route(request: web.Request) -> web.StreamResponse:
        return await held(request)

    up.route("/v1/chat/completions", route)
    try:
        async with run_gateway(gateway_config(up)) as gw, aiohttp.ClientSession() as s:
            client = openai.AsyncOpenAI(base_url=f"{gw.url}/v1", api_key=API_KEY, max_retries=0)

            async def one() -> None:
                stream = await client.chat.completions.create(
                    model="gpt",
                    messages=MSG,
                    stream=True,
                )
                async for _ in stream:
                    pass

            tasks = [asyncio.ensure_future(one()) for _ in range(3)]
            seen = 0.0
            for _ in range(300):
                async with s.get(f"{gw.url}/metrics") as r:
                    seen = value(scrape(await r.text()), "chromagent_inflight_requests")
                if seen == 3:
                    break
                await asyncio.sleep(0.01)
            assert seen == 3
            gate.set()
            await asyncio.gather(*tasks)
            async with s.get(f"{gw.url}/metrics") as r:
                assert value(scrape(await r.text()), "chromagent_inflight_requests") == 0
            await client.close()
    finally:
        await up.close()


async def test_genai_metrics_are_summed_over_workers(tmp_path: Path) -> None:
    up = await start_upstream()
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(gateway_config(up)))
    p = launch(
        ["--config", str(cfg), "--port", "0", "--workers", "2", "--log-format", "text"],
        tmp_path,
        "sup",
    )
    try:
        m = await p.wait_for(r"supervisor: 2 workers on (http://\S+)", stream="err")
        url = m.group(1)
        await p.wait_for(r"(?s)listening on .*listening on", stream="out")
        # New connections per request spread the requests over both workers.
        conn = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=conn) as s:

            async def one() -> int:
                body = {"model": "claude", "messages": MSG}
                headers = {"Authorization": f"Bearer {API_KEY}"}
                async with s.post(f"{url}/v1/chat/completions", json=body, headers=headers) as r:
                    await r.read()
                    return r.status

            assert await asyncio.gather(*(one() for _ in range(30))) == [200] * 30
            for _ in range(3):  # whichever worker answers the scrape sees the sum
                async with s.get(f"{url}/metrics") as r:
                    got = scrape(await r.text())
                assert tokens(got, "anth") == tuple(30 * n for n in ANTHROPIC_TOKENS)
                assert value(got, "gen_ai_server_request_duration_seconds_count") == 30
                assert value(got, "gen_ai_server_request_duration_seconds_bucket", le="+Inf") == 30
                # Each worker has its own breaker: each reports its view of every backend.
                assert value(got, "chromagent_backend_cooling", backend="anth") == 0
                assert len(got["chromagent_backend_cooling"]) == 5
    finally:
        await p.close()
        await up.close()
