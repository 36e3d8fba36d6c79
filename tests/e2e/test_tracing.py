"""OpenTelemetry traces reach a real OTLP/HTTP receiver: one SERVER span per request, one
CLIENT span per upstream attempt with the GenAI attributes, W3C traceparent to the
upstream carrying the client span, an incoming traceparent continued, no prompt or
completion text unless tracing.captureContent — for an openai relay, a translating
backend (gemini, anthropic) and the mock.

The gateway runs in-process against fake upstreams; the exporter is the real OTLP/HTTP
one (protobuf over HTTP, BatchSpanProcessor) configured only through OTEL_* variables.
Stopping the gateway flushes the queue, so every span is at the receiver afterwards.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import openai
import pytest

from tests.support.gateway import run_gateway, sdk
from tests.support.otlp import CLIENT, SERVER, STATUS_ERROR, OTLPReceiver, SpanRecord
from tests.support.upstream import FakeUpstream, Received, json_reply, stream_reply

OPENAI_ANSWER = {
    "id": "c1", "object": "chat.completion", "created": 1, "model": "gpt-upstream-2025",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "SECRET-ANSWER-oa"},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14,
              "prompt_tokens_details": {"cached_tokens": 4}},
}  # fmt: skip
GEMINI_ANSWER = {
    "candidates": [{"content": {"role": "model", "parts": [{"text": "SECRET-ANSWER-gm"}]},
                    "finishReason": "MAX_TOKENS", "index": 0}],
    "usageMetadata": {"promptTokenCount": 8, "candidatesTokenCount": 5, "totalTokenCount": 13},
    "modelVersion": "gem-001",
}  # fmt: skip
ANTHROPIC_EVENTS: list[dict[str, Any]] = [
        {"type": "message_start", "message": {"id": "msg_1", "type": "message",
         "role": "assistant", "model": "claude", "content": [], "stop_reason": None,
         "usage": {"input_tokens": 21, "output_tokens": 1}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0,
         "delta": {"type": "text_delta", "text": "SECRET-ANSWER-an"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
         "usage": {"output_tokens": 6}},
        {"type": "message_stop"},
]  # fmt: skip
ANTHROPIC_STREAM = b"".join(
    f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in ANTHROPIC_EVENTS
)
PROMPT = "SECRET-PROMPT say hello"
CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT_PARENT = "b7ad6b7169203331"


def _config(up: FakeUpstream, **tracing: Any) -> dict[str, Any]:
    return {
        "backends": [
            {"id": "oa", "type": "openai", "baseUrl": f"{up.url}/v1", "apiKey": "k",
             "modelMapping": {"gpt": "gpt-upstream"}},
            {"id": "gm", "type": "gemini", "baseUrl": f"{up.url}/v1beta", "apiKey": "k",
             "modelMapping": {"gem": "gem"}},
            {"id": "an", "type": "anthropic", "baseUrl": up.url, "apiKey": "k",
             "modelMapping": {"claude": "claude"}},
            {"id": "mk", "type": "mock", "modelMapping": {"echo": "echo"}},
        ],
        "tracing": {"enabled": True, **tracing},
    }  # fmt: skip


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    up = await FakeUpstream().start()
    up.route("/v1/chat/completions", json_reply(OPENAI_ANSWER))
    up.route("/v1beta/models/gem:generateContent", json_reply(GEMINI_ANSWER))
    up.route("/v1/messages", stream_reply(ANTHROPIC_STREAM, split=40))
    yield up
    await up.close()


@pytest.fixture
async def receiver(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[OTLPReceiver]:
    rx = await OTLPReceiver().start()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", rx.endpoint)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "gw-under-test")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)
    monkeypatch.delenv("OTEL_TRACES_SAMPLER", raising=False)
    yield rx
    await rx.close()


async def _traffic(gw: Any) -> None:
    client = sdk(gw)
    for model in ("gpt", "gem", "echo"):
        r = await client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": PROMPT}],
            extra_headers={"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_PARENT}-01"}
            if model == "gpt"
            else None,
        )
        assert r.choices[0].message.content
    stream = await client.chat.completions.create(
        model="claude", messages=[{"role": "user", "content": PROMPT}], stream=True
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "SECRET-ANSWER-an"
    await client.close()


def _header(r: Received, name: str) -> str | None:
    return next((v for k, v in r.headers.items() if k.lower() == name), None)


def _traceparent(r: Received) -> tuple[str, str]:
    """(trace id, parent span id) of the W3C traceparent an upstream received."""
    value = _header(r, "traceparent")
    assert value is not None, r.path
    version, trace_id, span_id, _flags = value.split("-")
    assert version == "00"
    return trace_id, span_id


def _by_model(spans: list[SpanRecord]) -> dict[str, SpanRecord]:
    return {s.attrs["gen_ai.request.model"]: s for s in spans}


async def test_spans_for_each_backend_type(upstream: FakeUpstream, receiver: OTLPReceiver) -> None:
    async with run_gateway(_config(upstream)) as gw:
        await _traffic(gw)
    assert receiver.content_types and set(receiver.content_types) == {"application/x-protobuf"}
    servers = receiver.of_kind(SERVER)
    clients = receiver.of_kind(CLIENT)
    assert len(servers) == 4 and len(clients) == 4, [(s.name, s.kind) for s in receiver.spans]
    assert {s.service for s in receiver.spans} == {"gw-under-test"}

    server = _by_model(servers)
    for s in servers:
        assert s.name == "POST /v1/chat/completions"
        assert s.attrs["gen_ai.operation.name"] == "chat"
        assert s.attrs["http.request.method"] == "POST"
        assert s.attrs["http.response.status_code"] == 200
        assert "error.type" not in s.attrs
    # The client's traceparent is continued: same trace, its span is the parent.
    assert server["gpt"].trace_id == CLIENT_TRACE
    assert server["gpt"].parent_id == CLIENT_PARENT
    assert server["gem"].trace_id != CLIENT_TRACE and server["gem"].parent_id == ""

    # gen_ai.request.model on a client span is the upstream's model name.
    client = _by_model(clients)
    assert set(client) == {"gpt-upstream", "gem", "claude", "echo"}
    pairs = {"gpt": "gpt-upstream", "gem": "gem", "claude": "claude", "echo": "echo"}
    for model, up_model in pairs.items():
        c, s = client[up_model], server[model]
        assert c.trace_id == s.trace_id and c.parent_id == s.span_id, model
        assert c.attrs["gen_ai.operation.name"] == "chat"
        assert c.name == f"chat {up_model}"
    providers = {m: client[m].attrs["gen_ai.provider.name"] for m in client}
    assert providers == {
        "gpt-upstream": "openai",
        "gem": "gcp.gemini",
        "claude": "anthropic",
        "echo": "mock",
    }
    # Usage (and cache reads where the provider reports them) on both spans.
    oa = client["gpt-upstream"].attrs
    assert (oa["gen_ai.usage.input_tokens"], oa["gen_ai.usage.output_tokens"]) == (11, 3)
    assert oa["gen_ai.usage.cache_read.input_tokens"] == 4
    assert server["gpt"].attrs["gen_ai.usage.input_tokens"] == 11
    gm = client["gem"].attrs
    assert (gm["gen_ai.usage.input_tokens"], gm["gen_ai.usage.output_tokens"]) == (8, 5)
    an = client["claude"].attrs
    assert (an["gen_ai.usage.input_tokens"], an["gen_ai.usage.output_tokens"]) == (21, 6)
    assert client["echo"].attrs["gen_ai.usage.output_tokens"] > 0
    # Response model and finish reasons of whole answers.
    assert oa["gen_ai.response.model"] == "gpt-upstream-2025"
    assert oa["gen_ai.response.finish_reasons"] == ["stop"]
    assert gm["gen_ai.response.finish_reasons"] == ["length"]

    # Each upstream got the traceparent of its own client span.
    by_path = {r.path: r for r in upstream.received}
    for path, up_model in [
        ("/v1/chat/completions", "gpt-upstream"),
        ("/v1beta/models/gem:generateContent", "gem"),
        ("/v1/messages", "claude"),
    ]:
        c = client[up_model]
        assert _traceparent(by_path[path]) == (c.trace_id, c.span_id), path

    # No prompt or completion text anywhere unless captureContent.
    for s in receiver.spans:
        assert "gen_ai.input.messages" not in s.attrs and "gen_ai.output.messages" not in s.attrs
        assert "SECRET" not in json.dumps(s.attrs)


async def test_capture_content_puts_prompt_and_answer_on_the_server_span(
    upstream: FakeUpstream, receiver: OTLPReceiver
) -> None:
    async with run_gateway(_config(upstream, captureContent=True)) as gw:
        client = sdk(gw)
        await client.chat.completions.create(
            model="gpt", messages=[{"role": "user", "content": PROMPT}]
        )
        await client.close()
    (server,) = receiver.of_kind(SERVER)
    assert PROMPT in server.attrs["gen_ai.input.messages"]
    assert "SECRET-ANSWER-oa" in server.attrs["gen_ai.output.messages"]
    (client_span,) = receiver.of_kind(CLIENT)
    assert "SECRET" not in json.dumps(client_span.attrs)


async def test_failed_attempt_is_its_own_error_span(
    upstream: FakeUpstream, receiver: OTLPReceiver
) -> None:
    upstream.route("/a/v1/chat/completions", json_reply({"error": {"message": "boom"}}, 500))
    upstream.route("/b/v1/chat/completions", json_reply(OPENAI_ANSWER))
    config = {
        "backends": [
            {"id": "a", "type": "openai", "baseUrl": f"{upstream.url}/a/v1", "apiKey": "k",
             "modelMapping": {"m": "m"}},
            {"id": "b", "type": "openai", "baseUrl": f"{upstream.url}/b/v1", "apiKey": "k",
             "modelMapping": {"m": "m"}},
        ],
        "tracing": {"enabled": True},
    }  # fmt: skip
    async with run_gateway(config) as gw:
        client = sdk(gw)
        r = await client.chat.completions.with_raw_response.create(
            model="m", messages=[{"role": "user", "content": "hi"}]
        )
        assert r.headers["x-chromagent-attempts"] == "2"
        await client.close()
    (server,) = receiver.of_kind(SERVER)
    clients = {c.attrs["chromagent.backend.id"]: c for c in receiver.of_kind(CLIENT)}
    assert set(clients) == {"a", "b"}
    failed, ok = clients["a"], clients["b"]
    assert failed.parent_id == ok.parent_id == server.span_id
    assert failed.status == STATUS_ERROR
    assert failed.attrs["error.type"] == "upstream_server_error"
    assert "gen_ai.usage.input_tokens" not in failed.attrs
    assert ok.status != STATUS_ERROR and "error.type" not in ok.attrs
    assert ok.attrs["gen_ai.usage.input_tokens"] == 11
    assert "error.type" not in server.attrs and server.status != STATUS_ERROR
    # Each attempt went upstream with its own span's traceparent.
    sent = {r.path.split("/")[1]: _traceparent(r) for r in upstream.received}
    assert sent == {"a": (failed.trace_id, failed.span_id), "b": (ok.trace_id, ok.span_id)}


async def test_embeddings_span_and_error_status(
    upstream: FakeUpstream, receiver: OTLPReceiver
) -> None:
    async with run_gateway(_config(upstream)) as gw:
        client = sdk(gw)
        await client.embeddings.create(model="echo", input=["a", "b"])
        with pytest.raises(openai.NotFoundError):  # an unknown model: the client's 4xx
            await client.embeddings.create(model="no-such-model", input="a")
        await client.close()
    servers = receiver.of_kind(SERVER)
    assert len(servers) == 2
    ok, bad = sorted(servers, key=lambda s: s.attrs["http.response.status_code"])
    assert ok.name == "POST /v1/embeddings"
    assert ok.attrs["gen_ai.operation.name"] == "embeddings"
    assert bad.attrs["http.response.status_code"] == 404
    assert bad.attrs["error.type"]
    (client_span,) = receiver.of_kind(CLIENT)
    assert client_span.name == "embeddings echo"
    assert client_span.parent_id == ok.span_id


async def test_tracing_off_sends_nothing(
    upstream: FakeUpstream, receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Off by default, and OTEL_SDK_DISABLED=true wins over tracing.enabled.
    configs = [_config(upstream), _config(upstream)]
    del configs[0]["tracing"]
    for n, config in enumerate(configs):
        if n == 1:
            monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
        async with run_gateway(config) as gw:
            assert gw.edge.tracing is None
            await _traffic(gw)
    assert receiver.spans == []
    assert upstream.received and all(_header(r, "traceparent") is None for r in upstream.received)


async def test_messages_relay_to_anthropic_carries_the_client_span(
    upstream: FakeUpstream, receiver: OTLPReceiver
) -> None:
    # /v1/messages to an anthropic backend is a byte relay (anthropic/native.py), not the IR.
    answer = {
        "id": "msg_2", "type": "message", "role": "assistant", "model": "claude-3-x",
        "content": [{"type": "text", "text": "SECRET-ANSWER-relay"}],
        "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": 7, "output_tokens": 2},
    }  # fmt: skip
    upstream.route("/v1/messages", json_reply(answer))
    async with run_gateway(_config(upstream)) as gw:
        client = anthropic.AsyncAnthropic(base_url=gw.url, api_key="x", max_retries=0)
        msg = await client.messages.create(
            model="claude", max_tokens=16, messages=[{"role": "user", "content": PROMPT}]
        )
        await client.close()
        assert msg.stop_reason == "end_turn"
    (server,) = receiver.of_kind(SERVER)
    (client_span,) = receiver.of_kind(CLIENT)
    assert server.name == "POST /v1/messages"
    assert client_span.parent_id == server.span_id
    assert client_span.attrs["gen_ai.provider.name"] == "anthropic"
    assert client_span.attrs["gen_ai.response.finish_reasons"] == ["end_turn"]
    assert client_span.attrs["gen_ai.response.model"] == "claude-3-x"
    assert client_span.attrs["gen_ai.usage.input_tokens"] == 7
    (sent,) = [r for r in upstream.received if r.path == "/v1/messages"]
    assert _traceparent(sent) == (client_span.trace_id, client_span.span_id)
    assert "SECRET" not in json.dumps(server.attrs) + json.dumps(client_span.attrs)
