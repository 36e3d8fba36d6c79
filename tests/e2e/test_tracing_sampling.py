"""Sampling and the exporter's OTEL_* settings, against a real OTLP/HTTP receiver.

OTEL_TRACES_SAMPLER is honoured the standard way: a root request is kept when the low
64 bits of its trace id fall under ratio × 2^64 (the SDK's TraceIdRatioBased), and the
parentbased_* samplers follow the sampled flag of a client's traceparent. A request the
sampler drops exports nothing and sends no traceparent upstream. OTEL_EXPORTER_OTLP_HEADERS
and _COMPRESSION=gzip reach the collector; a full queue drops spans instead of growing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from chromagent_proxy.core.config import TracingConfig
from chromagent_proxy.ops.tracing import build, sampler_from_env
from tests.support.gateway import run_gateway, sdk
from tests.support.otlp import CLIENT, SERVER, OTLPReceiver
from tests.support.upstream import FakeUpstream, json_reply

ANSWER = {
    "id": "c1", "object": "chat.completion", "created": 1, "model": "gpt-up",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3},
}  # fmt: skip
# Trace ids whose low 64 bits are below / above half of 2^64 (ratio 0.5 keeps / drops them).
LOW = "0af7651916cd43dd" + "0000000000000001"
HIGH = "0af7651916cd43dd" + "f000000000000001"


def _config(up: FakeUpstream) -> dict[str, Any]:
    return {
        "backends": [
            {"id": "oa", "type": "openai", "baseUrl": f"{up.url}/v1", "apiKey": "k",
             "modelMapping": {"gpt": "gpt-up"}},
        ],
        "tracing": {"enabled": True},
    }  # fmt: skip


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    up = await FakeUpstream().start()
    up.route("/v1/chat/completions", json_reply(ANSWER))
    yield up
    await up.close()


@pytest.fixture
async def receiver(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[OTLPReceiver]:
    rx = await OTLPReceiver().start()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", rx.endpoint)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    for name in ("OTEL_SDK_DISABLED", "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG"):
        monkeypatch.delenv(name, raising=False)
    yield rx
    await rx.close()


async def _ask(gw: Any, traceparent: str | None) -> None:
    client = sdk(gw)
    headers = {"traceparent": traceparent} if traceparent else None
    r = await client.chat.completions.create(
        model="gpt", messages=[{"role": "user", "content": "hi"}], extra_headers=headers
    )
    assert r.choices[0].message.content == "hi"
    await client.close()


def _sent_traceparents(up: FakeUpstream) -> list[str | None]:
    return [
        next((v for k, v in r.headers.items() if k.lower() == "traceparent"), None)
        for r in up.received
    ]


async def test_always_off_exports_nothing_and_propagates_nothing(
    upstream: FakeUpstream, receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    async with run_gateway(_config(upstream)) as gw:
        assert gw.edge.tracing is not None
        await _ask(gw, None)
        await _ask(gw, f"00-{LOW}-b7ad6b7169203331-01")  # not parent-based: still dropped
    assert receiver.spans == []
    assert _sent_traceparents(upstream) == [None, None]


async def test_parentbased_ratio_follows_the_client_and_the_trace_id(
    upstream: FakeUpstream, receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0")
    async with run_gateway(_config(upstream)) as gw:
        await _ask(gw, None)  # a root request at ratio 0: dropped
        await _ask(gw, f"00-{HIGH}-b7ad6b7169203331-01")  # the client sampled it: kept
        await _ask(gw, f"00-{LOW}-b7ad6b7169203331-00")  # the client did not: dropped
    (server,) = receiver.of_kind(SERVER)
    (client,) = receiver.of_kind(CLIENT)
    assert server.trace_id == client.trace_id == HIGH
    assert server.parent_id == "b7ad6b7169203331" and client.parent_id == server.span_id
    assert _sent_traceparents(upstream) == [None, f"00-{HIGH}-{client.span_id}-01", None]


async def test_traceidratio_keeps_trace_ids_under_the_bound(
    upstream: FakeUpstream, receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Not parent-based: the client's flag does not matter, its trace id does.
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.5")
    async with run_gateway(_config(upstream)) as gw:
        await _ask(gw, f"00-{LOW}-b7ad6b7169203331-00")
        await _ask(gw, f"00-{HIGH}-b7ad6b7169203331-01")
    assert {s.trace_id for s in receiver.spans} == {LOW}
    assert len(receiver.of_kind(SERVER)) == 1


def test_sampler_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    cases = {
        ("", ""): (True, 1 << 64),
        ("always_on", ""): (False, 1 << 64),
        ("parentbased_always_off", ""): (True, 0),
        ("traceidratio", "0.25"): (False, 1 << 62),
        ("parentbased_traceidratio", "2"): (True, 1 << 64),  # out of range: the default 1.0
        ("jaeger_remote", ""): (True, 1 << 64),  # unsupported: the default, with a warning
    }
    for (name, arg), want in cases.items():
        monkeypatch.setenv("OTEL_TRACES_SAMPLER", name)
        monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", arg)
        assert sampler_from_env() == want, (name, arg)


async def test_headers_and_gzip_reach_the_collector(
    upstream: FakeUpstream, receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "api-key=s%3Dcret,x-team=llm")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")
    async with run_gateway(_config(upstream)) as gw:
        await _ask(gw, None)
    assert len(receiver.spans) == 2
    assert receiver.encodings == ["gzip"]
    assert receiver.headers[0]["api-key"] == "s=cret" and receiver.headers[0]["x-team"] == "llm"


async def test_a_full_queue_drops_spans_and_the_rest_arrive(
    receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "3")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "600000")  # no export until shutdown
    tracing = build(TracingConfig(enabled=True))
    assert tracing is not None
    for _ in range(2):  # 2 spans each: the second request's server span does not fit
        trace = tracing.begin({}, "POST", "/v1/chat/completions", "chat")
        assert trace is not None
        trace.attempt("oa", "openai", "gpt-up")
        trace.end(200, "", (1, 1, 0, 0, 0))
    assert tracing.exporter.dropped == 1
    await tracing.close()
    assert [s.kind for s in receiver.spans] == [CLIENT, SERVER, CLIENT]
