"""``response_format`` reaches each backend as its own structured-output control, through
the real gateway and the official openai SDK: Claude's native ``output_config.format`` on
the models that have it (also while thinking is on), the forced ``json_response`` tool only
on those that do not; Gemini ``responseMimeType`` + ``responseSchema``; Ollama ``format``.
Exact upstream bodies."""

from __future__ import annotations

import json
from typing import Any

from tests.support.fidelity import config, serve_all
from tests.support.gateway import run_gateway, sdk
from tests.support.upstream import FakeUpstream

MSG: Any = [{"role": "user", "content": "Capital of France?"}]
SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
    "additionalProperties": False,
}
JSON_SCHEMA: Any = {"type": "json_schema", "json_schema": {"name": "answer", "schema": SCHEMA}}
USER = [{"role": "user", "content": [{"type": "text", "text": "Capital of France?"}]}]


async def _sent(up: FakeUpstream, model: str, **kw: Any) -> tuple[dict[str, Any], str | None]:
    serve_all(up, text='{"city": "Paris"}')
    async with run_gateway(config(up)) as gw:
        resp = await sdk(gw).chat.completions.create(model=model, messages=MSG, **kw)
    body: dict[str, Any] = up.received[-1].json
    return body, resp.choices[0].message.content


async def test_claude_native_structured_output(upstream: FakeUpstream) -> None:
    body, content = await _sent(upstream, "a:claude-sonnet-4-5", response_format=JSON_SCHEMA)
    assert body == {
        "model": "claude-sonnet-4-5",
        "max_tokens": 4096,
        "messages": USER,
        "output_config": {"format": {"type": "json_schema", "schema": SCHEMA}},
    }
    assert json.loads(content or "") == {"city": "Paris"}


async def test_claude_native_structured_output_while_thinking(upstream: FakeUpstream) -> None:
    body, _ = await _sent(
        upstream, "van:claude-sonnet-4-6", response_format=JSON_SCHEMA, reasoning_effort="low"
    )
    assert upstream.received[-1].path.endswith("/anthropic/models/claude-sonnet-4-6:rawPredict")
    assert body == {
        "anthropic_version": "vertex-2023-10-16",
        "max_tokens": 4096 + 2048,
        "messages": USER,
        "thinking": {"type": "enabled", "budget_tokens": 2048},
        "output_config": {"format": {"type": "json_schema", "schema": SCHEMA}},
    }


async def test_claude_forced_tool_only_without_native_support(upstream: FakeUpstream) -> None:
    tool = {
        "name": "json_response",
        "description": "Give your final answer by calling this tool; its input is the answer.",
        "input_schema": SCHEMA,
    }
    # Claude 4.1 on the API and Claude 4.5 on Vertex have no output_config.format; Vertex
    # backends use it only with options.nativeStructuredOutput (off by default there).
    models = (
        "a:claude-opus-4-1-20250805",
        "van:claude-sonnet-4-5@20250929",
        "va:claude-sonnet-4-6",
    )
    for model in models:
        body, _ = await _sent(upstream, model, response_format=JSON_SCHEMA)
        assert "output_config" not in body
        assert body["tools"] == [tool]
        assert body["tool_choice"] == {"type": "tool", "name": "json_response"}
    # json_object has no native form on any model: the tool with an open object schema.
    body, _ = await _sent(upstream, "a:claude-sonnet-4-5", response_format={"type": "json_object"})
    assert "output_config" not in body
    assert body["tools"] == [{**tool, "input_schema": {"type": "object"}}]


async def test_gemini_response_schema(upstream: FakeUpstream) -> None:
    body, content = await _sent(upstream, "g:gemini-2.5-flash", response_format=JSON_SCHEMA)
    assert body == {
        "contents": [{"role": "user", "parts": [{"text": "Capital of France?"}]}],
        "generationConfig": {
            "responseMimeType": "application/json",
            # cleaned for Gemini's OpenAPI subset (additionalProperties is refused there)
            "responseSchema": {
                "type": "OBJECT",
                "properties": {"city": {"type": "STRING"}},
                "required": ["city"],
            },
        },
    }
    assert content == '{"city": "Paris"}'
    body, _ = await _sent(upstream, "vg:gemini-2.5-flash", response_format={"type": "json_object"})
    assert body["generationConfig"] == {"responseMimeType": "application/json"}


async def test_ollama_format(upstream: FakeUpstream) -> None:
    body, _ = await _sent(upstream, "o:qwen3:8b", response_format=JSON_SCHEMA)
    assert body == {
        "model": "qwen3:8b",
        "messages": [{"role": "user", "content": "Capital of France?"}],
        "stream": False,
        "format": SCHEMA,
    }
    body, _ = await _sent(upstream, "o:qwen3:8b", response_format={"type": "json_object"})
    assert body["format"] == "json"
