"""The ollama backend end to end: official SDK → real gateway → fake Ollama on loopback.

The fake speaks the native API (/api/chat NDJSON, /api/tags) and replays
recorded traffic where a recording exists.
"""

from __future__ import annotations

import base64
import json
import socket
from pathlib import Path
from typing import Any

import openai
import pytest

from chromagent_proxy.core import codec
from tests.support.fixtures import fixture_path, load
from tests.support.gateway import run_gateway, sdk
from tests.support.upstream import FakeUpstream, json_reply, stream_reply

MSG: Any = [{"role": "user", "content": "Count from 1 to 5"}]
NDJSON = "application/x-ndjson"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16


def config(url: str, **backend: Any) -> dict[str, Any]:
    b = {
        "id": "local",
        "type": "ollama",
        "baseUrl": url,
        "modelMapping": {"llama3": "llama3.2", "gemma": "gemma3:1b"},
        **backend,
    }
    return {"backends": [b], "defaultBackend": "local"}


def recorded_body(name: str) -> bytes:
    (it,) = load(fixture_path("ollama", name))
    return it.body


def final(content: str = "", **extra: Any) -> dict[str, Any]:
    return {
        "model": "llama3.2",
        "created_at": "2025-08-20T13:48:24.316155Z",
        "message": {"role": "assistant", "content": content, **extra.pop("message", {})},
        "done": True,
        "done_reason": "stop",
        "prompt_eval_count": 12,
        "eval_count": 4,
        **extra,
    }


def lines(*objs: dict[str, Any]) -> bytes:
    return b"".join(codec.dumps(o) + b"\n" for o in objs)


def closed_port_url() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}"


# ---------------------------------------------------------------- answers


async def test_non_stream_text(upstream: FakeUpstream) -> None:
    upstream.route("/api/chat", json_reply(final("Hello there!")))
    cfg = config(upstream.url, keepAlive="10m", options={"num_ctx": 4096})
    async with run_gateway(cfg) as gw:
        resp = await sdk(gw).chat.completions.create(model="llama3", messages=MSG, max_tokens=20)
    assert resp.choices[0].message.content == "Hello there!"
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage is not None
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens, resp.usage.total_tokens) == (
        12,
        4,
        16,
    )
    (sent,) = upstream.received
    assert sent.path == "/api/chat"
    assert sent.json == {
        "model": "llama3.2",
        "messages": MSG,
        "stream": False,
        "options": {"num_ctx": 4096, "num_predict": 20},
        "keep_alive": "10m",
    }


async def test_stream_replays_recording(upstream: FakeUpstream) -> None:
    body = recorded_body("langchaingo--TestClient_GenerateChatStream.httprr")
    upstream.route("/api/chat", stream_reply(body, content_type=NDJSON, split=7))
    async with run_gateway(config(upstream.url)) as gw:
        stream = await sdk(gw).chat.completions.create(
            model="gemma", messages=MSG, stream=True, stream_options={"include_usage": True}
        )
        chunks = [c async for c in stream]
    rec = [codec.loads(x) for x in body.splitlines() if x.strip()]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "".join(r["message"]["content"] for r in rec)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    usage_chunks = [c for c in chunks if c.usage is not None]
    assert len(usage_chunks) == 1 and chunks[-1] is usage_chunks[0]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == rec[-1]["eval_count"]
    assert upstream.received[0].json["stream"] is True
    assert upstream.received[0].json["model"] == "gemma3:1b"


async def test_stream_thinking_becomes_reasoning_content(upstream: FakeUpstream) -> None:
    body = recorded_body("langchaingo--TestCloudStreaming.httprr")
    # ollama.com labels this NDJSON body application/json; the backend must not care.
    upstream.route("/api/chat", stream_reply(body, content_type="application/json", split=1000))
    async with run_gateway(config(upstream.url)) as gw:
        stream = await sdk(gw).chat.completions.create(
            model="gpt-oss:120b", messages=MSG, stream=True, reasoning_effort="high"
        )
        chunks = [c async for c in stream]
    rec = [codec.loads(x) for x in body.splitlines() if x.strip()]
    reasoning = "".join(
        getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in chunks
    )
    assert reasoning == "".join(r["message"].get("thinking", "") for r in rec)
    assert upstream.received[0].json["think"] == "high"
    assert upstream.received[0].json["model"] == "gpt-oss:120b"  # unmapped: passes through


async def test_stream_length_finish(upstream: FakeUpstream) -> None:
    body = recorded_body("langchaingo--TestClient_GenerateChat.httprr")
    upstream.route("/api/chat", stream_reply(body, content_type=NDJSON, split=1))
    async with run_gateway(config(upstream.url)) as gw:
        stream = await sdk(gw).chat.completions.create(
            model="gemma", messages=MSG, stream=True, max_tokens=50
        )
        chunks = [c async for c in stream]
    assert chunks[-1].choices[0].finish_reason == "length"
    assert upstream.received[0].json["options"] == {"num_predict": 50}


# ---------------------------------------------------------------- tools

TOOLS: Any = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


async def test_non_stream_tool_calls_from_recording(upstream: FakeUpstream) -> None:
    body = fixture_path(
        "ollama", "semantic-kernel--chat_completion_multiple_function_calls_test_response.txt"
    ).read_bytes()
    upstream.route("/api/chat", json_reply(body))
    async with run_gateway(config(upstream.url)) as gw:
        resp = await sdk(gw).chat.completions.create(model="llama3", messages=MSG, tools=TOOLS)
    calls = codec.loads(body)["message"]["tool_calls"]
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls"
    got = choice.message.tool_calls or []
    assert [t.function.name for t in got] == [c["function"]["name"] for c in calls]  # type: ignore[union-attr]
    assert [codec.loads(t.function.arguments) for t in got] == [  # type: ignore[union-attr]
        c["function"].get("arguments", {}) for c in calls
    ]
    assert len({t.id for t in got}) == len(calls)
    assert upstream.received[0].json["tools"] == TOOLS


async def test_stream_tool_calls_then_tool_result_round_trip(upstream: FakeUpstream) -> None:
    body = lines(
        {
            "model": "llama3.2",
            "message": {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
                    {"function": {"name": "get_weather", "arguments": {"city": "Tokyo"}}},
                ],
            },
            "done": False,
        },
        final(),
    )
    upstream.route("/api/chat", stream_reply(body, content_type=NDJSON, split=7))
    async with run_gateway(config(upstream.url)) as gw:
        client = sdk(gw)
        stream = await client.chat.completions.create(
            model="llama3", messages=MSG, tools=TOOLS, stream=True
        )
        chunks = [c async for c in stream]
        deltas = [t for c in chunks if c.choices for t in c.choices[0].delta.tool_calls or []]
        assert [d.index for d in deltas] == [0, 1]
        assert len({d.id for d in deltas}) == 2
        args = [d.function.arguments if d.function else None for d in deltas]
        assert [codec.loads(a or "") for a in args] == [
            {"city": "Paris"},
            {"city": "Tokyo"},
        ]
        assert chunks[-1].choices[0].finish_reason == "tool_calls"

        # Send the results back: each tool message must name the function it answers.
        upstream.route("/api/chat", json_reply(final("Paris 18C, Tokyo 22C")))
        history: Any = [
            *MSG,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": d.id,
                        "type": "function",
                        "function": {"name": d.function.name, "arguments": d.function.arguments},  # type: ignore[union-attr]
                    }
                    for d in deltas
                ],
            },
            {"role": "tool", "tool_call_id": deltas[0].id, "content": "18C"},
            {"role": "tool", "tool_call_id": deltas[1].id, "content": "22C"},
        ]
        resp = await client.chat.completions.create(model="llama3", messages=history, tools=TOOLS)
    assert resp.choices[0].message.content == "Paris 18C, Tokyo 22C"
    sent = upstream.received[1].json["messages"]
    assert sent[1]["tool_calls"][1] == {
        "id": deltas[1].id,
        "function": {"name": "get_weather", "arguments": {"city": "Tokyo"}},
    }
    assert sent[2:] == [
        {
            "role": "tool",
            "content": "18C",
            "tool_name": "get_weather",
            "tool_call_id": deltas[0].id,
        },
        {
            "role": "tool",
            "content": "22C",
            "tool_name": "get_weather",
            "tool_call_id": deltas[1].id,
        },
    ]


# ---------------------------------------------------------------- images


def image_msg(url: str) -> Any:
    return [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": url}},
            ],
        }
    ]


async def test_image_data_url_is_sent_as_base64(upstream: FakeUpstream) -> None:
    upstream.route("/api/chat", json_reply(final("A tiny PNG.")))
    b64 = base64.b64encode(PNG).decode()
    async with run_gateway(config(upstream.url)) as gw:
        resp = await sdk(gw).chat.completions.create(
            model="llama3", messages=image_msg(f"data:image/png;base64,{b64}")
        )
    assert resp.choices[0].message.content == "A tiny PNG."
    assert upstream.received[0].json["messages"] == [
        {"role": "user", "content": "What is this?", "images": [b64]}
    ]


class FakeFetcher:
    def __init__(self) -> None:
        self.urls: list[str] = []

    async def fetch(self, url: str, param: str, budget: Any = None) -> tuple[bytes, str]:
        self.urls.append(url)
        return PNG, "image/png"


async def test_image_http_url_is_fetched_and_inlined(upstream: FakeUpstream) -> None:
    upstream.route("/api/chat", json_reply(final("ok")))
    fetcher = FakeFetcher()
    async with run_gateway(config(upstream.url)) as gw:
        runtime = gw.backends["local"].provider.runtime
        assert runtime is not None
        runtime.images = fetcher
        await sdk(gw).chat.completions.create(
            model="llama3", messages=image_msg("https://example.com/cat.png")
        )
    assert fetcher.urls == ["https://example.com/cat.png"]
    assert upstream.received[0].json["messages"][0]["images"] == [base64.b64encode(PNG).decode()]


async def test_image_http_url_without_fetcher_is_a_clear_400(upstream: FakeUpstream) -> None:
    async with run_gateway(config(upstream.url)) as gw:
        runtime = gw.backends["local"].provider.runtime
        assert runtime is not None
        runtime.images = None
        with pytest.raises(openai.BadRequestError) as info:
            await sdk(gw).chat.completions.create(
                model="llama3", messages=image_msg("https://example.com/cat.png")
            )
    assert info.value.status_code == 400
    err = info.value.body
    assert isinstance(err, dict)
    assert err["param"] == "messages[0].content[1].image_url"
    assert "data: URL" in err["message"]
    assert upstream.received == []


# ---------------------------------------------------------------- errors


async def test_model_not_pulled_is_404_naming_the_model(upstream: FakeUpstream) -> None:
    upstream.route(
        "/api/chat",
        json_reply({"error": 'model "llama3.2" not found, try pulling it first'}, status=404),
    )
    async with run_gateway(config(upstream.url)) as gw:
        for stream in (False, True):
            with pytest.raises(openai.NotFoundError) as info:
                await sdk(gw).chat.completions.create(model="llama3", messages=MSG, stream=stream)
            err = info.value.body
            assert isinstance(err, dict)
            assert err["code"] == "model_not_found"
            assert "'llama3.2'" in err["message"]
            assert "ollama pull llama3.2" in err["message"]


async def test_model_without_tool_support_is_400_with_ollamas_message(
    upstream: FakeUpstream,
) -> None:
    (it,) = load(fixture_path("ollama", "langchaingo--TestToolCall.httprr"))
    upstream.route("/api/chat", json_reply(it.body, status=it.status))
    async with run_gateway(config(upstream.url)) as gw:
        with pytest.raises(openai.BadRequestError) as info:
            await sdk(gw).chat.completions.create(model="gemma", messages=MSG, tools=TOOLS)
    err = info.value.body
    assert isinstance(err, dict)
    assert err["message"] == codec.loads(it.body)["error"]
    assert err["param"] == "tools"
    assert err["type"] == "invalid_request_error"


async def test_error_line_mid_stream_becomes_error_event(upstream: FakeUpstream) -> None:
    body = lines(
        {"model": "llama3.2", "message": {"role": "assistant", "content": "Par"}, "done": False},
        {"error": "an error was encountered while running the model"},
    )
    upstream.route("/api/chat", stream_reply(body, content_type=NDJSON))
    async with run_gateway(config(upstream.url)) as gw:
        stream = await sdk(gw).chat.completions.create(model="llama3", messages=MSG, stream=True)
        got: list[str] = []
        with pytest.raises(openai.APIError) as info:
            async for c in stream:
                got.append(c.choices[0].delta.content or "")
    assert "".join(got) == "Par"
    assert "an error was encountered while running the model" in info.value.message
    assert "local" in info.value.message


async def test_stream_cut_before_done_is_an_error_event(upstream: FakeUpstream) -> None:
    body = lines({"model": "m", "message": {"role": "assistant", "content": "Hi"}, "done": False})
    upstream.route("/api/chat", stream_reply(body, content_type=NDJSON))
    async with run_gateway(config(upstream.url)) as gw:
        stream = await sdk(gw).chat.completions.create(model="llama3", messages=MSG, stream=True)
        with pytest.raises(openai.APIError) as info:
            async for _ in stream:
                pass
    assert "before its final" in info.value.message


@pytest.mark.parametrize("stream", [False, True])
async def test_ollama_down_is_502_naming_backend_not_its_url(stream: bool) -> None:
    url = closed_port_url()
    async with run_gateway(config(url)) as gw:
        with pytest.raises(openai.InternalServerError) as info:
            await sdk(gw).chat.completions.create(model="llama3", messages=MSG, stream=stream)
    assert info.value.status_code == 502
    message = info.value.message
    assert "'local'" in message
    assert url not in message  # the upstream address stays in the gateway's log
    assert "is Ollama running" in message


async def test_v1_base_url_is_rejected_at_start() -> None:
    from chromagent_proxy.core.errors import ConfigError

    with pytest.raises(ConfigError, match="native API"):
        async with run_gateway(config("http://127.0.0.1:11434/v1")):
            pass


# ---------------------------------------------------------------- model listing


async def test_models_lists_pulled_models_and_caches(upstream: FakeUpstream) -> None:
    upstream.route(
        "/api/tags",
        json_reply(
            {
                "models": [
                    {"name": "llama3.2:latest", "model": "llama3.2:latest", "size": 2019393189},
                    {"name": "qwen3:0.6b", "model": "qwen3:0.6b"},
                ]
            }
        ),
    )
    async with run_gateway(config(upstream.url)) as gw:
        client = sdk(gw)
        first = {m.id: m.owned_by for m in (await client.models.list()).data}
        second = {m.id: m.owned_by for m in (await client.models.list()).data}
    assert (
        first
        == second
        == {
            "llama3": "local",
            "gemma": "local",
            "llama3.2:latest": "local",
            "qwen3:0.6b": "local",
        }
    )
    tags = [r for r in upstream.received if r.path == "/api/tags"]
    assert len(tags) == 1  # the second listing came from the cache
    assert tags[0].method == "GET"


async def test_models_skips_ollama_quietly_when_down() -> None:
    async with run_gateway(config(closed_port_url())) as gw:
        models = await sdk(gw).models.list()
    assert sorted(m.id for m in models.data) == ["gemma", "llama3"]


async def test_rule_sends_unmapped_model_through_unchanged(upstream: FakeUpstream) -> None:
    upstream.route("/api/chat", json_reply(final("hi")))
    cfg = config(upstream.url)
    cfg["backends"].insert(0, {"id": "mock", "type": "mock", "modelMapping": {"echo": "echo"}})
    cfg["defaultBackend"] = "mock"
    cfg["routingRules"] = [{"condition": "model: qwen*", "backendId": "local"}]
    async with run_gateway(cfg) as gw:
        resp = await sdk(gw).chat.completions.with_raw_response.create(
            model="qwen3:0.6b", messages=MSG
        )
    assert resp.headers["x-chromagent-backend"] == "local"
    assert resp.parse().choices[0].message.content == "hi"
    assert upstream.received[0].json["model"] == "qwen3:0.6b"


async def test_default_config_serves_every_model_it_lists(upstream: FakeUpstream) -> None:
    """The shipped default config: a pulled model /v1/models lists (not in modelMapping) is
    chat-able, routed to the Ollama backend under its own name; an unlisted one is still 404."""
    upstream.route("/api/tags", json_reply({"models": [{"name": "qwen3:0.6b"}]}))
    upstream.route("/api/chat", json_reply(final("from qwen")))
    cfg = json.loads((Path(__file__).resolve().parents[2] / "config" / "default.json").read_text())
    (ollama,) = [b for b in cfg["backends"] if b["type"] == "ollama"]
    assert "qwen3:0.6b" not in ollama["modelMapping"]
    ollama["baseUrl"] = upstream.url
    async with run_gateway(cfg) as gw:
        client = sdk(gw)
        listed = {m.id: m.owned_by for m in (await client.models.list()).data}
        assert listed["qwen3:0.6b"] == "ollama"
        resp = await client.chat.completions.with_raw_response.create(
            model="qwen3:0.6b", messages=MSG
        )
        with pytest.raises(openai.NotFoundError, match="not served by this gateway"):
            await client.chat.completions.create(model="qwen3:8b", messages=MSG)
    assert resp.headers["x-chromagent-backend"] == "ollama"
    assert resp.parse().choices[0].message.content == "from qwen"
    chats = [r for r in upstream.received if r.path == "/api/chat"]
    assert [c.json["model"] for c in chats] == ["qwen3:0.6b"]
