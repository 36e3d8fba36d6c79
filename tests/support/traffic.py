"""Mixed traffic for the metrics tests: one fake upstream speaking OpenAI, Anthropic and Gemini,
a gateway config with a backend of each kind (plus one that cools down and one that cannot be
reached), and a driver that sends successes, streams and every cause of error through the
official openai SDK. Used by the GenAI-metrics test and the Prometheus dashboard/alerts test.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import openai
from aiohttp import web
from openai.types.chat import ChatCompletionMessageParam

from tests.support.redis import free_port
from tests.support.upstream import FakeUpstream, json_reply, stream_reply

API_KEY = "k-traffic"
MSG: list[ChatCompletionMessageParam] = [{"role": "user", "content": "one two three"}]
# What each successful request's usage says, as (input, output, cache_read, cache_write, reasoning).
OPENAI_USAGE = {
    "prompt_tokens": 40,
    "completion_tokens": 9,
    "total_tokens": 49,
    "prompt_tokens_details": {"cached_tokens": 16},
    "completion_tokens_details": {"reasoning_tokens": 4},
}
OPENAI_TOKENS = (40, 9, 16, 0, 4)
ANTHROPIC_USAGE = {
    "input_tokens": 10,
    "output_tokens": 5,
    "cache_read_input_tokens": 30,
    "cache_creation_input_tokens": 20,
}
ANTHROPIC_TOKENS = (60, 5, 30, 20, 0)  # input = uncached + cache read + cache write
GEMINI_USAGE = {
    "promptTokenCount": 25,
    "candidatesTokenCount": 6,
    "thoughtsTokenCount": 3,
    "cachedContentTokenCount": 12,
    "totalTokenCount": 34,
}


def _chunk(content: str | None, usage: dict[str, Any] | None = None) -> bytes:
    choices = [] if usage else [{"index": 0, "delta": {"content": content}, "finish_reason": None}]
    body: dict[str, Any] = {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt",
        "choices": choices,
    }
    if usage:
        body["usage"] = usage
    return f"data: {json.dumps(body)}\n\n".encode()


def _completion() -> dict[str, Any]:
    return {
        "id": "x",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
        ],
        "usage": OPENAI_USAGE,
    }


async def _openai(request: web.Request) -> web.StreamResponse:
    body = json.loads(await request.read())
    model = body["model"]
    if model == "gpt-limited":
        reply = json_reply({"error": {"message": "slow down"}}, 429, {"Retry-After": "30"})
        return await reply(request)
    if model == "gpt-broken":
        return await json_reply({"error": {"message": "boom"}}, status=500)(request)
    if model == "gpt-picky":
        return await json_reply({"error": {"message": "bad temperature"}}, status=400)(request)
    if body.get("stream"):
        pieces = [_chunk("a"), _chunk("b"), _chunk("c"), _chunk(None, OPENAI_USAGE)]
        return await stream_reply([*pieces, b"data: [DONE]\n\n"], delay=0.005)(request)
    return await json_reply(_completion())(request)


def _anthropic_message() -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "content": [{"type": "text", "text": "ok"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": ANTHROPIC_USAGE,
    }


def _gemini_response() -> dict[str, Any]:
    return {
        "candidates": [
            {"content": {"role": "model", "parts": [{"text": "ok"}]}, "finishReason": "STOP"}
        ],
        "usageMetadata": GEMINI_USAGE,
        "modelVersion": "gemini-x",
    }


async def start_upstream() -> FakeUpstream:
    up = await FakeUpstream().start()
    up.route("/v1/chat/completions", _openai)
    up.route("/v1/messages", json_reply(_anthropic_message()))
    up.route("/v1beta/models/gemini-x:generateContent", json_reply(_gemini_response()))
    return up


def gateway_config(up: FakeUpstream) -> dict[str, Any]:
    return {
        "apiKeys": [API_KEY],
        "backends": [
            {
                "id": "oa",
                "type": "openai",
                "baseUrl": f"{up.url}/v1",
                "modelMapping": {
                    "gpt": "gpt",
                    "gpt-broken": "gpt-broken",
                    "gpt-picky": "gpt-picky",
                },
            },
            {
                "id": "oa-limited",
                "type": "openai",
                "baseUrl": f"{up.url}/v1",
                "modelMapping": {"gpt-limited": "gpt-limited"},
            },
            {
                "id": "anth",
                "type": "anthropic",
                "baseUrl": up.url,
                "apiKey": "sk-ant-test",
                "modelMapping": {"claude": "claude-x"},
            },
            {
                "id": "gem",
                "type": "gemini",
                "baseUrl": f"{up.url}/v1beta",
                "apiKey": "AIza-test",
                "modelMapping": {"gem": "gemini-x"},
            },
            {
                "id": "dead",
                "type": "openai",
                "baseUrl": f"http://127.0.0.1:{free_port()}/v1",
                "modelMapping": {"dead": "dead"},
            },
        ],
    }


async def drive(url: str, rounds: int = 1) -> list[tuple[str, int]]:
    """Send the mix ``rounds`` times; returns (what, HTTP status) per request."""
    out: list[tuple[str, int]] = []
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=API_KEY, max_retries=0)
    async with client, aiohttp.ClientSession() as s:

        async def call(model: str, stream: bool = False) -> None:
            try:
                if stream:
                    chunks = await client.chat.completions.create(
                        model=model,
                        messages=MSG,
                        stream=True,
                        stream_options={"include_usage": True},
                    )
                    async for _ in chunks:
                        pass
                else:
                    await client.chat.completions.create(model=model, messages=MSG)
                out.append((model + (" stream" if stream else ""), 200))
            except openai.APIStatusError as exc:
                out.append((model, exc.status_code))

        for _ in range(rounds):
            for model in ("gpt", "claude", "gem"):
                await call(model)
            await asyncio.gather(*(call("gpt", stream=True) for _ in range(3)))
            for model in ("gpt-limited", "gpt-broken", "gpt-picky", "dead", "no-such-model"):
                await call(model)
            async with s.post(
                f"{url}/v1/chat/completions",
                json={"model": "gpt", "messages": MSG},
                headers={"Authorization": "Bearer wrong"},
            ) as r:
                out.append(("wrong key", r.status))
    return out
