"""Prompt-cache markers and deterministic prompts, through the real gateway and the official
openai SDK: ``cache_control`` on Chat Completions content parts (system, user, assistant,
tool) and on tools reaches Anthropic and Vertex Anthropic as the block's ``cache_control``
(a marked system prompt as a list of text blocks); Gemini and Ollama ignore the markers; the
same request gives the same upstream bytes on every backend."""

from __future__ import annotations

from typing import Any

from tests.support.fidelity import config, serve_all
from tests.support.gateway import run_gateway, sdk
from tests.support.upstream import FakeUpstream

EPH = {"type": "ephemeral"}
HOUR = {"type": "ephemeral", "ttl": "1h"}
LONG = "You are a careful assistant. " * 40

MESSAGES: Any = [
    {
        "role": "system",
        "content": [
            {"type": "text", "text": LONG, "cache_control": HOUR},
            {"type": "text", "text": "Answer briefly."},
        ],
    },
    {
        "role": "user",
        "content": [{"type": "text", "text": "Weather in Paris?", "cache_control": EPH}],
    },
    {
        "role": "assistant",
        "content": [{"type": "text", "text": "Let me check.", "cache_control": EPH}],
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            }
        ],
    },
    {
        "role": "tool",
        "tool_call_id": "call_1",
        "content": [{"type": "text", "text": "18C, sunny", "cache_control": EPH}],
    },
    # a message-level marker marks the message's last part
    {"role": "user", "content": "And tomorrow?", "cache_control": EPH},
]
PARAMS = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "unit": {"enum": ["C", "F"]}},
    "required": ["city"],
}
TOOLS: Any = [
    {
        "type": "function",
        "function": {"name": "get_weather", "description": "Weather", "parameters": PARAMS},
        "cache_control": EPH,
    }
]

ANTHROPIC_REST = {
    "max_tokens": 4096,
    "system": [
        {"type": "text", "text": LONG, "cache_control": HOUR},
        {"type": "text", "text": "Answer briefly."},
    ],
    "messages": [
        {
            "role": "user",
            "content": [{"type": "text", "text": "Weather in Paris?", "cache_control": EPH}],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me check.", "cache_control": EPH},
                {
                    "type": "tool_use",
                    "id": "call_1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "call_1",
                    "content": [{"type": "text", "text": "18C, sunny", "cache_control": EPH}],
                },
                {"type": "text", "text": "And tomorrow?", "cache_control": EPH},
            ],
        },
    ],
    "tools": [
        {
            "name": "get_weather",
            "description": "Weather",
            "input_schema": PARAMS,
            "cache_control": EPH,
        }
    ],
}


async def _twice(up: FakeUpstream, model: str) -> tuple[bytes, bytes]:
    serve_all(up)
    async with run_gateway(config(up)) as gw:
        for _ in range(2):
            await sdk(gw).chat.completions.create(model=model, messages=MESSAGES, tools=TOOLS)
    return up.received[-2].body, up.received[-1].body


async def test_markers_reach_anthropic_blocks(upstream: FakeUpstream) -> None:
    first, second = await _twice(upstream, "a:claude-sonnet-4-5")
    assert first == second  # same request, same bytes: the provider's prefix cache hits
    assert upstream.received[-1].json == {"model": "claude-sonnet-4-5", **ANTHROPIC_REST}


async def test_markers_reach_vertex_anthropic_blocks(upstream: FakeUpstream) -> None:
    first, second = await _twice(upstream, "va:claude-sonnet-4-6")
    assert first == second
    assert upstream.received[-1].json == {
        "anthropic_version": "vertex-2023-10-16",
        **ANTHROPIC_REST,
    }


async def test_unmarked_system_prompt_stays_a_string(upstream: FakeUpstream) -> None:
    serve_all(upstream)
    async with run_gateway(config(upstream)) as gw:
        await sdk(gw).chat.completions.create(
            model="a:claude-sonnet-4-5",
            messages=[
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "hi"},
            ],
        )
    body = upstream.received[-1].json
    assert body["system"] == "Be brief."
    assert "cache_control" not in str(body)


async def test_gemini_and_ollama_ignore_markers_deterministically(upstream: FakeUpstream) -> None:
    for model in ("g:gemini-2.5-flash", "vg:gemini-2.5-flash", "o:qwen3:8b"):
        first, second = await _twice(upstream, model)
        assert first == second, model
        assert b"cache_control" not in first and b"ephemeral" not in first, model
    gemini = upstream.received[1].json
    assert gemini["systemInstruction"] == {"parts": [{"text": LONG}, {"text": "Answer briefly."}]}
    assert gemini["tools"][0]["functionDeclarations"][0]["name"] == "get_weather"
    ollama = upstream.received[-1].json
    assert ollama["messages"][0] == {"role": "system", "content": LONG}
