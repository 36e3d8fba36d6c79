"""/v1/responses (openai SDK) through the real gateway to real backend translators:
the ``openai`` backend translating IR → Chat Completions (openai_chat.py), a
Chat-Completions-only backend served through the adapter (the built-in mock), and the
Gemini, Anthropic and Ollama translators, each in front of a fake upstream that speaks
its wire format and records what it received."""

from __future__ import annotations

import json
from typing import Any

from tests.support.fixtures import chunks_as_sse, fixture_path, load, load_chunks
from tests.support.gateway import run_gateway, sdk
from tests.support.upstream import FakeUpstream, json_reply, stream_reply

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def one(backend: dict[str, Any]) -> dict[str, Any]:
    return {"backends": [{"id": "b", **backend}], "defaultBackend": "b"}


def openai_backend(up: FakeUpstream) -> dict[str, Any]:
    return one(
        {
            "type": "openai",
            "baseUrl": f"{up.url}/v1",
            "apiKey": "sk-up",
            "modelMapping": {"m": "gpt-up"},
        }
    )


async def test_openai_backend_translates_a_responses_stream(upstream: FakeUpstream) -> None:
    body = chunks_as_sse(load_chunks(fixture_path("openai", "vercel-ai--openai-text.chunks.txt")))
    want = "".join(
        c["choices"][0]["delta"].get("content") or ""
        for c in map(
            json.loads, load_chunks(fixture_path("openai", "vercel-ai--openai-text.chunks.txt"))
        )
        if c.get("choices")
    )
    upstream.route("/v1/chat/completions", stream_reply(body, split=7))
    async with run_gateway(openai_backend(upstream)) as gw:
        client = sdk(gw)
        async with client.responses.stream(
            model="m", input="hi", instructions="be brief", max_output_tokens=50
        ) as stream:
            final = await stream.get_final_response()
        await client.close()
    assert final.output_text == want and want
    assert final.status == "completed"
    sent = upstream.received[0].json
    assert sent["model"] == "gpt-up" and sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}  # tokens are always counted
    assert sent["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
    ]
    assert sent["max_tokens"] == 50


async def test_openai_backend_tool_loop_non_stream(upstream: FakeUpstream) -> None:
    call = {
        "id": "c1",
        "object": "chat.completion",
        "model": "gpt-up",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                        }
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17},
    }
    upstream.route("/v1/chat/completions", json_reply(call))
    async with run_gateway(openai_backend(upstream)) as gw:
        client = sdk(gw)
        r = await client.responses.create(model="m", input="Weather in Paris?", tools=[WEATHER])  # type: ignore[list-item]
        (item,) = [o for o in r.output if o.type == "function_call"]
        assert (item.name, json.loads(item.arguments), item.call_id) == (
            "get_weather",
            {"city": "Paris"},
            "call_1",
        )
        assert r.usage is not None and r.usage.input_tokens == 12 and r.usage.output_tokens == 5
        sent = upstream.received[0].json
        assert sent["tools"] == [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "Weather for a city",
                    "parameters": WEATHER["parameters"],
                },
            }
        ]
        # The tool result goes back as a Chat Completions tool message.
        await client.responses.create(
            model="m",
            input=[
                {"role": "user", "content": "Weather in Paris?"},
                {
                    "type": "function_call",
                    "call_id": "call_1",
                    "name": "get_weather",
                    "arguments": '{"city":"Paris"}',
                },
                {"type": "function_call_output", "call_id": "call_1", "output": "22C"},
            ],
            tools=[WEATHER],  # type: ignore[list-item]
        )
        await client.close()
    messages = upstream.received[1].json["messages"]
    assert messages[-2]["tool_calls"][0]["id"] == "call_1"
    assert messages[-1] == {"role": "tool", "tool_call_id": "call_1", "content": "22C"}


async def test_chat_only_backend_serves_responses_through_the_adapter() -> None:
    cfg = one({"type": "mock", "reply": "adapted answer here"})
    async with run_gateway(cfg) as gw:
        client = sdk(gw)
        r = await client.responses.create(model="m", input="hi")
        assert r.output_text == "adapted answer here"
        async with client.responses.stream(model="m", input="hi") as stream:
            final = await stream.get_final_response()
        assert final.output_text == "adapted answer here"
        assert final.usage is not None and final.usage.output_tokens == 3
        await client.close()


async def test_gemini_backend_answers_a_responses_client(upstream: FakeUpstream) -> None:
    rec = load(fixture_path("gemini", "pydantic-ai--test_google_model_stream.yaml"))[0]
    events = [
        json.loads(line[5:]) for line in rec.body.decode().splitlines() if line.startswith("data:")
    ]
    want = "".join(
        p.get("text", "")
        for e in events
        for c in e.get("candidates", [])
        for p in c.get("content", {}).get("parts", [])
    )
    upstream.route("/v1beta/models/g-up:streamGenerateContent", stream_reply(rec.body, split=7))
    cfg = one(
        {
            "type": "gemini",
            "baseUrl": f"{upstream.url}/v1beta",
            "apiKey": "k",
            "modelMapping": {"m": "g-up"},
        }
    )
    async with run_gateway(cfg) as gw:
        client = sdk(gw)
        async with client.responses.stream(model="m", input="hi") as stream:
            final = await stream.get_final_response()
        await client.close()
    assert final.output_text == want and want
    sent = upstream.received[0].json
    assert sent["contents"] == [{"role": "user", "parts": [{"text": "hi"}]}]


async def test_anthropic_backend_answers_a_responses_client(upstream: FakeUpstream) -> None:
    rec = load(fixture_path("anthropic", "langchaingo--TestClient_CreateMessageStream.httprr"))[0]
    events = [
        json.loads(line[5:]) for line in rec.body.decode().splitlines() if line.startswith("data:")
    ]
    want = "".join(e["delta"].get("text", "") for e in events if e["type"] == "content_block_delta")
    upstream.route("/v1/messages", stream_reply(rec.body, split=7))
    cfg = one(
        {
            "type": "anthropic",
            "baseUrl": upstream.url,
            "apiKey": "k",
            "modelMapping": {"m": "claude-up"},
        }
    )
    async with run_gateway(cfg) as gw:
        client = sdk(gw)
        async with client.responses.stream(model="m", input="hi", instructions="terse") as stream:
            final = await stream.get_final_response()
        await client.close()
    assert final.output_text == want and want
    sent = upstream.received[0].json
    assert sent["model"] == "claude-up" and sent["stream"] is True
    assert sent["system"] == "terse"
    assert sent["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
