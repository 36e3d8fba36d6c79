"""Cached and reasoning tokens are never counted twice, per backend and per client dialect
(Chat Completions and Responses through the official openai SDK), and in /metrics.

Each upstream reports a prompt of 1000 tokens of which some were read from (or written to)
the prompt cache, and 65 completion tokens of which 25 were reasoning where the provider
says so. ``prompt_tokens`` / ``input_tokens`` must be 1000 (not 1000 + cached),
``completion_tokens`` / ``output_tokens`` 65, and the cached / reasoning details the parts.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.e2e.test_metrics import scrape, value
from tests.support.fidelity import (
    ANTHROPIC_USAGE,
    GEMINI_USAGE,
    OPENAI_USAGE,
    anthropic_answer,
    config,
    serve_all,
)
from tests.support.gateway import run_gateway, sdk
from tests.support.upstream import FakeUpstream, stream_reply

# model → (cached read, cache write, reasoning) the backend's usage amounts to
CASES = {
    "g:gemini-2.5-flash": (600, 0, 25),
    "vg:gemini-2.5-flash": (600, 0, 25),
    "a:claude-sonnet-4-5": (500, 200, 0),  # thinking is inside Anthropic's output_tokens
    "va:claude-sonnet-4-6": (500, 200, 0),
}
USAGE: dict[str, dict[str, Any]] = {
    "gemini": GEMINI_USAGE,
    "anthropic": ANTHROPIC_USAGE,
    "openai": OPENAI_USAGE,
}


@pytest.mark.parametrize("model", list(CASES))
async def test_chat_and_responses_usage(upstream: FakeUpstream, model: str) -> None:
    cached, written, reasoning = CASES[model]
    serve_all(upstream, usage=USAGE)
    async with run_gateway(config(upstream)) as gw:
        client = sdk(gw)
        chat = await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hi"}]
        )
        resp = await client.responses.create(model=model, input="hi", store=False)
        async with aiohttp.ClientSession() as s, s.get(f"{gw.url}/metrics") as r:
            m = scrape(await r.text())
    u = chat.usage
    assert u is not None and u.prompt_tokens_details is not None
    assert (u.prompt_tokens, u.completion_tokens, u.total_tokens) == (1000, 65, 1065)
    assert u.prompt_tokens_details.cached_tokens == cached
    assert (u.prompt_tokens_details.model_extra or {}).get("cache_creation_tokens") == (
        written or None
    )
    details = u.completion_tokens_details
    assert ((details.reasoning_tokens if details else 0) or 0) == reasoning
    ru = resp.usage
    assert ru is not None
    assert (ru.input_tokens, ru.output_tokens, ru.total_tokens) == (1000, 65, 1065)
    assert ru.input_tokens_details.cached_tokens == cached
    assert ru.output_tokens_details.reasoning_tokens == reasoning
    backend = model.split(":", 1)[0]
    got = {
        t: value(m, "gen_ai_tokens_total", backend=backend, gen_ai_token_type=t)
        for t in ("input", "output", "cache_read", "cache_write", "reasoning")
    }
    # two requests; input is the whole prompt (cached included), never prompt + cached
    assert got == {
        "input": 2000,
        "output": 130,
        "cache_read": 2 * cached,
        "cache_write": 2 * written,
        "reasoning": 2 * reasoning,
    }


async def test_openai_upstream_for_a_responses_client(upstream: FakeUpstream) -> None:
    serve_all(upstream, usage=USAGE)
    async with run_gateway(config(upstream)) as gw:
        client = sdk(gw)
        resp = await client.responses.create(model="oa:gpt", input="hi", store=False)
        chat = await client.chat.completions.create(
            model="oa:gpt", messages=[{"role": "user", "content": "hi"}]
        )
    ru = resp.usage
    assert ru is not None
    assert (ru.input_tokens, ru.output_tokens, ru.total_tokens) == (1000, 65, 1065)
    assert ru.input_tokens_details.cached_tokens == 600
    assert ru.output_tokens_details.reasoning_tokens == 25
    # a chat client in front of an openai backend gets the upstream's usage as it was
    assert chat.usage is not None and chat.usage.model_dump(exclude_none=True) == OPENAI_USAGE


async def test_ollama_usage(upstream: FakeUpstream) -> None:
    serve_all(upstream)
    async with run_gateway(config(upstream)) as gw:
        chat = await sdk(gw).chat.completions.create(
            model="o:qwen3:8b", messages=[{"role": "user", "content": "hi"}]
        )
    assert chat.usage is not None
    assert (chat.usage.prompt_tokens, chat.usage.completion_tokens) == (5, 1)
    assert chat.usage.prompt_tokens_details is None


def _sse(*events: dict[str, Any]) -> bytes:
    return b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)


async def test_anthropic_stream_repeating_the_input_side_is_counted_once(
    upstream: FakeUpstream,
) -> None:
    """message_start carries the input side and message_delta repeats it with the final
    output count (as the real API does): the total is still one prompt."""
    start_usage = {**ANTHROPIC_USAGE, "output_tokens": 1}
    body = _sse(
        {"type": "message_start", "message": {"id": "msg_1", "type": "message",
         "role": "assistant", "model": "claude", "content": [], "stop_reason": None,
         "usage": start_usage}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0,
         "delta": {"type": "text_delta", "text": "ok"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": ANTHROPIC_USAGE},
        {"type": "message_stop"},
    )  # fmt: skip
    upstream.route("/v1/messages", stream_reply(body, split=17))
    async with run_gateway(config(upstream)) as gw:
        stream = await sdk(gw).chat.completions.create(
            model="a:claude-sonnet-4-5",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        usages = [c.usage async for c in stream if c.usage is not None]
    assert len(usages) == 1
    u = usages[0]
    assert (u.prompt_tokens, u.completion_tokens, u.total_tokens) == (1000, 65, 1065)
    assert u.prompt_tokens_details is not None and u.prompt_tokens_details.cached_tokens == 500


async def test_anthropic_reported_thinking_tokens_are_reasoning(upstream: FakeUpstream) -> None:
    usage = {**ANTHROPIC_USAGE, "output_tokens_details": {"thinking_tokens": 25}}

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.json_response(anthropic_answer("ok", usage))

    upstream.route("/v1/messages", handler)
    async with run_gateway(config(upstream)) as gw:
        chat = await sdk(gw).chat.completions.create(
            model="a:claude-sonnet-4-5", messages=[{"role": "user", "content": "hi"}]
        )
    u = chat.usage
    assert u is not None and u.completion_tokens_details is not None
    assert (u.prompt_tokens, u.completion_tokens) == (1000, 65)
    assert u.completion_tokens_details.reasoning_tokens == 25
