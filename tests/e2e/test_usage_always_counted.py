"""A stream's tokens are counted in /metrics and the access log whether or not the client
asked for the usage chunk (the official SDKs do not by default), for every backend type —
and a client that did not ask never sees the usage chunk.

One real gateway process (the CLI, production settings) in front of one fake upstream that
speaks each provider's stream format; the official ``openai`` SDK streams to each model
without ``stream_options``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from chromagent_proxy.backends.base import BackendProvider
from chromagent_proxy.core.config import BackendConfig
from chromagent_proxy.schema.openai import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChunkChoice,
    Delta,
    Usage,
)
from tests.support.cli_process import start_gateway
from tests.support.gateway import run_gateway, sdk
from tests.support.upstream import FakeUpstream, stream_reply


def _sse(*events: dict[str, Any], done: bool = False, named: bool = False) -> bytes:
    out = b""
    for e in events:
        if named:
            out += f"event: {e['type']}\n".encode()
        out += f"data: {json.dumps(e)}\n\n".encode()
    return out + (b"data: [DONE]\n\n" if done else b"")


OPENAI = _sse(
    {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt",
     "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hello"}}]},
    {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt",
     "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt",
     "choices": [], "usage": {"prompt_tokens": 13, "completion_tokens": 4, "total_tokens": 17}},
    done=True,
)  # fmt: skip

GEMINI = _sse(
    {"candidates": [{"content": {"role": "model", "parts": [{"text": "Hello"}]}, "index": 0}]},
    {"candidates": [{"content": {"role": "model", "parts": [{"text": " there"}]},
                     "finishReason": "STOP", "index": 0}],
     "usageMetadata": {"promptTokenCount": 8, "candidatesTokenCount": 5, "totalTokenCount": 13}},
)  # fmt: skip

ANTHROPIC = _sse(
    {"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
     "model": "claude", "content": [], "stop_reason": None,
     "usage": {"input_tokens": 21, "output_tokens": 1}}},
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}},
    {"type": "content_block_stop", "index": 0},
    {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 6}},
    {"type": "message_stop"},
    named=True,
)  # fmt: skip

OLLAMA = (
    json.dumps({"model": "llama", "message": {"role": "assistant", "content": "Hello"},
                "done": False}).encode() + b"\n"
    + json.dumps({"model": "llama", "message": {"role": "assistant", "content": ""},
                  "done": True, "done_reason": "stop", "prompt_eval_count": 9,
                  "eval_count": 3}).encode() + b"\n"
)  # fmt: skip

# model → (prompt tokens, completion tokens) each backend's upstream reports
EXPECTED = {
    "gpt": (13, 4),
    "gem": (8, 5),
    "claude": (21, 6),
    "llama": (9, 3),
}


def _config(up: FakeUpstream) -> dict[str, Any]:
    return {
        "backends": [
            {"id": "oa", "type": "openai", "baseUrl": f"{up.url}/v1", "apiKey": "k",
             "modelMapping": {"gpt": "gpt"}},
            {"id": "gm", "type": "gemini", "baseUrl": f"{up.url}/v1beta", "apiKey": "k",
             "modelMapping": {"gem": "gem"}},
            {"id": "an", "type": "anthropic", "baseUrl": up.url, "apiKey": "k",
             "modelMapping": {"claude": "claude"}},
            {"id": "ol", "type": "ollama", "baseUrl": up.url, "modelMapping": {"llama": "llama"}},
            {"id": "mk", "type": "mock", "modelMapping": {"echo": "echo"}},
        ]
    }  # fmt: skip


@pytest.fixture
async def upstream() -> Any:
    up = await FakeUpstream().start()
    up.route("/v1/chat/completions", stream_reply(OPENAI, split=40))
    up.route("/v1beta/models/gem:streamGenerateContent", stream_reply(GEMINI, split=40))
    up.route("/v1/messages", stream_reply(ANTHROPIC, split=40))
    up.route("/api/chat", stream_reply(OLLAMA, content_type="application/x-ndjson", split=40))
    yield up
    await up.close()


def _tokens(text: str) -> dict[tuple[str, str], float]:
    out: dict[tuple[str, str], float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "chromagent_tokens_total":
                key = (s.labels["backend"], s.labels["direction"])
                out[key] = out.get(key, 0) + s.value
    return out


async def test_stream_without_include_usage_is_counted_for_every_backend(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    cfg = tmp_path / "gw.json"
    cfg.write_text(json.dumps(_config(upstream)))
    p = await start_gateway(["--config", str(cfg), "--port", "0"], tmp_path)
    try:
        client = openai.AsyncOpenAI(base_url=f"{p.url}/v1", api_key="x", max_retries=0)
        seen_usage: dict[str, bool] = {}
        for model in [*EXPECTED, "echo"]:
            stream = await client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "say hello"}], stream=True
            )
            text = ""
            seen_usage[model] = False
            async for chunk in stream:
                seen_usage[model] |= chunk.usage is not None
                if chunk.choices and chunk.choices[0].delta.content:
                    text += chunk.choices[0].delta.content
            assert text, model
        await client.close()
        # Nobody asked for usage: nobody got the usage chunk.
        assert not any(seen_usage.values()), seen_usage
        # The gateway asked the OpenAI upstream for it, so it could count it.
        sent = [r.json for r in upstream.received if r.path == "/v1/chat/completions"]
        assert sent[0]["stream_options"] == {"include_usage": True}

        async with aiohttp.ClientSession() as s, s.get(f"{p.url}/metrics") as r:
            tokens = _tokens(await r.text())
        ids = {"gpt": "oa", "gem": "gm", "claude": "an", "llama": "ol"}
        for model, (prompt, completion) in EXPECTED.items():
            assert tokens.get((ids[model], "in")) == prompt, (model, tokens)
            assert tokens.get((ids[model], "out")) == completion, (model, tokens)
        assert tokens.get(("mk", "in"), 0) > 0 and tokens.get(("mk", "out"), 0) > 0

        p.signal()
        assert await p.wait_exit() == 0
        lines = [json.loads(x) for x in p.stdout().splitlines() if '"request_id"' in x]
        by_model = {line["model"]: line for line in lines}
        for model, (prompt, completion) in EXPECTED.items():
            assert by_model[model]["tokens_in"] == prompt, by_model[model]
            assert by_model[model]["tokens_out"] == completion, by_model[model]
            assert by_model[model]["stream"] is True
    finally:
        await p.close()


async def test_client_that_asks_for_usage_still_gets_it(upstream: FakeUpstream) -> None:
    async with run_gateway(_config(upstream)) as gw:
        client = sdk(gw)
        for model, (prompt, completion) in EXPECTED.items():
            stream = await client.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": "say hello"}],
                stream=True,
                stream_options={"include_usage": True},
            )
            usages = [c.usage async for c in stream if c.usage is not None]
            assert len(usages) == 1, model
            assert (usages[0].prompt_tokens, usages[0].completion_tokens) == (prompt, completion)
        await client.close()


class _UsageOnly(BackendProvider):
    """A custom backend that always reports usage in a final chunk."""

    type = "usage-only"

    def supports_streaming(self) -> bool:
        return True

    async def chat_completion(self, request: ChatCompletionRequest, config: BackendConfig) -> Any:
        raise NotImplementedError

    async def chat_completion_stream(
        self, request: ChatCompletionRequest, config: BackendConfig
    ) -> Any:
        yield ChatCompletionChunk("c", 1, request.model, [ChunkChoice(0, Delta(content="hi"))])
        yield ChatCompletionChunk("c", 1, request.model, [], Usage(5, 2, 7))


async def test_custom_backend_stream_usage_is_counted() -> None:
    from chromagent_proxy import DefaultBackendRegistry

    registry = DefaultBackendRegistry()
    registry.register("usage-only", _UsageOnly)
    cfg = {"backends": [{"id": "cu", "type": "usage-only", "modelMapping": {"m": "m"}}]}
    async with run_gateway(cfg, registry) as gw:
        client = sdk(gw)
        stream = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "x"}], stream=True
        )
        chunks = [c async for c in stream]
        assert all(c.usage is None for c in chunks)
        await client.close()
        async with aiohttp.ClientSession() as s, s.get(f"{gw.url}/metrics") as r:
            tokens = _tokens(await r.text())
        assert tokens[("cu", "in")] == 5 and tokens[("cu", "out")] == 2


_ = web  # the fake upstream's handlers are aiohttp web handlers
