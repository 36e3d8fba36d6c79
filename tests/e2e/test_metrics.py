"""GET /metrics against the traffic actually sent: parsed with prometheus-client's own text
parser, every family checked (requests by backend/model/status, latency, TTFT and overhead
histograms, tokens, upstream errors by class, active streams, rate limited, failovers), and
the JSON rendering."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections import Counter
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from tests.support.gateway import run_gateway
from tests.support.redis import free_port
from tests.support.upstream import FakeUpstream, hang, json_reply, stream_reply

USAGE_OK = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}


def sse(*events: Any) -> list[bytes]:
    return [f"data: {json.dumps(e)}\n\n".encode() for e in events] + [b"data: [DONE]\n\n"]


def chunk(
    model: str, content: str | None = None, usage: dict[str, int] | None = None
) -> dict[str, Any]:
    choices = [] if usage else [{"index": 0, "delta": {"content": content}, "finish_reason": None}]
    out: dict[str, Any] = {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": model,
        "choices": choices,
    }
    if usage:
        out["usage"] = usage
    return out


def completion(model: str) -> dict[str, Any]:
    return {
        "id": "x",
        "object": "chat.completion",
        "created": 1,
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
        ],
        "usage": USAGE_OK,
    }


def scrape(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            samples.setdefault(s.name, []).append((s.labels, s.value))
    return samples


def value(
    samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str
) -> float:
    return sum(
        v for lab, v in samples.get(name, []) if all(lab.get(k) == x for k, x in labels.items())
    )


async def test_metrics_match_the_traffic(upstream: FakeUpstream) -> None:
    gate = asyncio.Event()

    async def dispatch(request: web.Request) -> web.StreamResponse:
        body = json.loads(await request.read())
        model, stream = body["model"], body.get("stream")
        if model == "up-429":
            return await json_reply({"error": {"message": "slow down"}}, status=429)(request)
        if model in ("flaky", "up-500"):
            return await json_reply({"error": {"message": "boom"}}, status=500)(request)
        if model == "up-hang":
            return await hang()(request)
        if model == "up-empty":
            return await stream_reply(b"")(request)
        if model == "up-gated":
            return await stream_reply(sse(chunk(model, "a"), chunk(model, "b")), gate=gate)(request)
        if stream:
            return await stream_reply(sse(chunk(model, "hi"), chunk(model, usage=USAGE_OK)))(
                request
            )
        return await json_reply(completion(model))(request)

    upstream.route("/v1/chat/completions", dispatch)
    up_models = ["flaky", "up-ok", "up-429", "up-500", "up-hang", "up-empty", "up-gated"]
    cfg = {
        "timeout": 400,
        "backends": [
            {"id": "mock", "type": "mock", "modelMapping": {"echo": "echo", "flaky": "flaky"}},
            {
                "id": "up",
                "type": "openai",
                "baseUrl": f"{upstream.url}/v1",
                "modelMapping": {m: m for m in up_models},
            },
            {
                "id": "dead",
                "type": "openai",
                "baseUrl": f"http://127.0.0.1:{free_port()}/v1",
                "modelMapping": {"dead": "dead"},
            },
        ],
        "rateLimit": {"windowMs": 60_000, "max": 3, "trustedProxies": ["127.0.0.1"]},
    }
    sent: list[dict[str, Any]] = []  # what each response said: backend, status, attempts, usage
    async with run_gateway(cfg) as gw, aiohttp.ClientSession() as s:
        n = 0

        async def call(model: str, stream: bool = False, client: str | None = None) -> None:
            nonlocal n
            n += 1
            body: dict[str, Any] = {
                "model": model,
                "messages": [{"role": "user", "content": "one two three"}],
            }
            if stream:
                body |= {"stream": True, "stream_options": {"include_usage": True}}
            headers = {"X-Forwarded-For": client or f"10.1.{n // 250}.{n % 250}"}
            async with s.post(f"{gw.url}/v1/chat/completions", json=body, headers=headers) as r:
                raw = await r.read()
                usage = None
                if r.status == 200 and stream:
                    events = [
                        json.loads(line[6:])
                        for line in raw.decode().split("\n")
                        if line.startswith("data: {")
                    ]
                    usage = next((e["usage"] for e in events if e.get("usage")), None)
                elif r.status == 200:
                    usage = json.loads(raw)["usage"]
                sent.append(
                    {
                        "model": model,
                        "backend": r.headers.get("x-chromagent-backend", "none"),
                        "status": str(r.status),
                        "attempts": int(r.headers.get("x-chromagent-attempts", "0")),
                        "usage": usage,
                        "stream": stream,
                    }
                )

        for _ in range(5):
            await call("echo")
            await call("echo", stream=True)
            await call("up-ok")
            await call("up-ok", stream=True)
            await call("flaky")
        for model in ("up-429", "up-500", "up-hang", "dead", "nope"):
            await call(model)
        await call("up-empty", stream=True)
        for _ in range(4):
            await call("echo", client="6.6.6.6")  # budget 3: one 429

        # A stream held open upstream shows in the gauge, then leaves it.
        gated = asyncio.ensure_future(call("up-gated", stream=True))
        for _ in range(200):
            async with s.get(f"{gw.url}/metrics") as r:
                if value(scrape(await r.text()), "chromagent_active_streams") == 1:
                    break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("active stream never showed up")
        gate.set()
        await gated

        async with s.get(f"{gw.url}/metrics") as r:
            assert r.headers["Content-Type"].startswith("text/plain")
            text = await r.text()
        async with s.get(f"{gw.url}/metrics", headers={"Accept": "application/json"}) as r:
            assert r.headers["Content-Type"].startswith("application/json")
            as_json = await r.json()

    m = scrape(text)
    # requests by backend, model and status
    expected = Counter(
        (x["backend"], x["model"] if x["backend"] != "none" else "none", x["status"]) for x in sent
    )
    got = {
        (lab["backend"], lab["model"], lab["status"]): v
        for lab, v in m["chromagent_requests_total"]
    }
    assert got == {k: float(v) for k, v in expected.items()}
    assert ("up", "up-429", "429") in got and ("dead", "dead", "502") in got
    assert ("up", "up-hang", "504") in got and ("none", "none", "404") in got
    # latency histograms: one observation per request, per backend
    for backend, count in Counter(x["backend"] for x in sent).items():
        assert value(m, "chromagent_request_duration_seconds_count", backend=backend) == count
        assert (
            value(m, "chromagent_request_duration_seconds_bucket", backend=backend, le="+Inf")
            == count
        )
    ok_streams = Counter(x["backend"] for x in sent if x["stream"] and x["status"] == "200")
    for backend, count in ok_streams.items():
        assert value(m, "chromagent_time_to_first_token_seconds_count", backend=backend) == count
    reached = sum(1 for x in sent if x["attempts"] > 0)
    assert value(m, "chromagent_gateway_overhead_seconds_count") == reached
    assert 0 < value(m, "chromagent_gateway_overhead_seconds_sum") < reached * 0.05
    # tokens in and out, from the usage every 200 carried
    tokens: Counter[tuple[str, str, str]] = Counter()
    for x in sent:
        if x["usage"]:
            tokens[(x["backend"], x["model"], "in")] += x["usage"]["prompt_tokens"]
            tokens[(x["backend"], x["model"], "out")] += x["usage"]["completion_tokens"]
    got_tokens = {
        (lab["backend"], lab["model"], lab["direction"]): v
        for lab, v in m["chromagent_tokens_total"]
    }
    assert got_tokens == {k: float(v) for k, v in tokens.items() if v}
    assert got_tokens[("up", "up-ok", "in")] == 11 * 10
    # upstream errors by class
    errors = {(lab["backend"], lab["class"]): v for lab, v in m["chromagent_upstream_errors_total"]}
    flaky_failures = sum(
        1 for x in sent if x["model"] == "flaky" and (x["attempts"] == 2 or x["backend"] == "up")
    )
    assert errors == {
        ("up", "429"): 1.0,
        ("up", "5xx"): 1.0 + flaky_failures,
        ("up", "timeout"): 1.0,
        ("up", "protocol"): 1.0,
        ("dead", "connect"): 1.0,
    }
    assert value(m, "chromagent_failovers_total") == sum(max(0, x["attempts"] - 1) for x in sent)
    assert value(m, "chromagent_rate_limited_total") == 1
    assert value(m, "chromagent_active_streams") == 0
    # JSON has the same numbers
    js = {
        tuple(sorted(smp["labels"].items())): smp["value"]
        for smp in as_json["chromagent_requests"]["samples"]
    }
    assert sum(js.values()) == len(sent) and as_json["chromagent_requests"]["type"] == "counter"
    assert as_json["chromagent_active_streams"]["samples"][0]["value"] == 0


async def test_model_label_values_are_bounded_to_configured_names() -> None:
    cfg = {
        "backends": [{"id": "m", "type": "mock", "modelMapping": {"gpt-4o": "x"}}],
        "defaultBackend": "m",
        "routingRules": [{"condition": "model: claude-*", "backendId": "m"}],
    }
    async with run_gateway(cfg) as gw, aiohttp.ClientSession() as s:

        async def send(model: str) -> None:
            body = {"model": model, "messages": [{"role": "user", "content": "x"}]}
            async with s.post(f"{gw.url}/v1/chat/completions", json=body) as r:
                assert r.status == 200

        # 230 made-up names first (the default backend passes any name through): they
        # must not take the label slots the configured names need.
        for i in range(230):
            await send(f"random-{i}")
        await send("gpt-4o")
        for i in range(210):  # names a rule's glob matches: kept up to the cap
            await send(f"claude-{i}")
        async with s.get(f"{gw.url}/metrics") as r:
            m = scrape(await r.text())
    models = {lab["model"] for lab, _ in m["chromagent_requests_total"]}
    assert "gpt-4o" in models and "other" in models
    assert not any(name.startswith("random-") for name in models)
    assert len([n for n in models if n.startswith("claude-")]) == 200
    assert value(m, "chromagent_requests_total") == 230 + 1 + 210
    others = sum(v for lab, v in m["chromagent_requests_total"] if lab["model"] == "other")
    assert others == 230 + 10


def test_usage_is_read_from_every_result_shape() -> None:
    from chromagent_proxy.core.ir import Usage as U
    from chromagent_proxy.dialects.chat.dialect import _usage_of as _usage
    from chromagent_proxy.schema.openai import (
        ChatCompletionChunk,
        CompletionTokensDetails,
        PromptTokensDetails,
        Usage,
    )

    # Disjoint counts: input is the uncached prompt, output the visible completion.
    nested = b'{"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17,"prompt_tokens_details":{"cached_tokens":3},"completion_tokens_details":{"reasoning_tokens":2}}}'
    assert _usage(nested) == U(input=9, output=3, cache_read=3, reasoning=2)
    plain = b'{"choices":[],"usage": {"prompt_tokens": 2, "completion_tokens": 9}}'
    assert _usage(plain) == U(input=2, output=9)
    assert _usage(b'{"choices":[{"delta":{"content":"usage"}}],"usage":null}') is None
    assert _usage(b'{"choices":[{"delta":{"content":"hi"}}]}') is None
    assert _usage({"usage": {"prompt_tokens": 4, "completion_tokens": 1}}) == U(4, 1)
    details = {"cached_tokens": 1, "cache_creation_tokens": 2}
    mapping = {
        "usage": {"prompt_tokens": 4, "completion_tokens": 1, "prompt_tokens_details": details}
    }
    assert _usage(mapping) == U(input=1, output=1, cache_read=1, cache_write=2)
    assert _usage({"choices": []}) is None
    chunk = ChatCompletionChunk("c", 1, "m", [], Usage(7, 8, 15))
    assert _usage(chunk) == U(7, 8)
    detailed = Usage(
        30,
        8,
        38,
        PromptTokensDetails(cached_tokens=20, cache_creation_tokens=5),
        CompletionTokensDetails(reasoning_tokens=6),
    )
    u = _usage(ChatCompletionChunk("c", 1, "m", [], detailed))
    assert u == U(input=5, output=2, cache_read=20, cache_write=5, reasoning=6)
    assert u is not None and (u.prompt_total, u.completion_total) == (30, 8)


async def test_models_a_backend_lists_get_their_own_label(upstream: FakeUpstream) -> None:
    tags = gzip.compress(json.dumps({"models": [{"name": "llama3:8b"}]}).encode())

    async def list_tags(request: web.Request) -> web.StreamResponse:
        # Compressed: the gateway inflates it (bounded) like every upstream answer.
        return web.Response(
            body=tags, content_type="application/json", headers={"Content-Encoding": "gzip"}
        )

    upstream.route("/api/tags", list_tags)
    upstream.route(
        "/api/chat",
        json_reply(
            {
                "model": "llama3:8b",
                "created_at": "2025-08-20T13:48:24.316155Z",
                "message": {"role": "assistant", "content": "hi"},
                "done": True,
                "done_reason": "stop",
                "prompt_eval_count": 1,
                "eval_count": 1,
            }
        ),
    )
    cfg = {
        "backends": [{"id": "o", "type": "ollama", "baseUrl": upstream.url}],
        "defaultBackend": "o",
    }
    async with run_gateway(cfg) as gw, aiohttp.ClientSession() as s:

        async def send(model: str) -> None:
            body = {"model": model, "messages": [{"role": "user", "content": "x"}]}
            async with s.post(f"{gw.url}/v1/chat/completions", json=body) as r:
                assert r.status == 200

        await send("llama3:8b")  # not known yet: "other"
        async with s.get(f"{gw.url}/v1/models") as r:
            assert [m["id"] for m in (await r.json())["data"]] == ["llama3:8b"]
        await send("llama3:8b")
        await send("made-up")
        async with s.get(f"{gw.url}/metrics") as r:
            m = scrape(await r.text())
    by_model = Counter[str]()
    for lab, v in m["chromagent_requests_total"]:
        by_model[lab["model"]] += int(v)
    by_model.pop("none", None)  # the GET /v1/models itself
    assert by_model == {"other": 2, "llama3:8b": 1}


async def test_a_hot_reload_relabels_models_by_the_new_config() -> None:
    from chromagent_proxy.reload import apply as reload_apply
    from chromagent_proxy.server import make_config

    cfg: dict[str, Any] = {
        "backends": [{"id": "m", "type": "mock", "modelMapping": {"old-model": "x"}}],
        "defaultBackend": "m",
    }
    async with run_gateway(cfg) as gw, aiohttp.ClientSession() as s:

        async def send(model: str) -> None:
            body = {"model": model, "messages": [{"role": "user", "content": "x"}]}
            async with s.post(f"{gw.url}/v1/chat/completions", json=body) as r:
                assert r.status == 200

        await send("new-model")  # unknown yet: "other"
        new = {
            **cfg,
            "host": "127.0.0.1",
            "backends": [{"id": "m", "type": "mock", "modelMapping": {"new-model": "x"}}],
        }
        await reload_apply(gw, make_config(new, gw.registry))
        await send("new-model")
        await send("old-model")  # no longer configured: "other"
        async with s.get(f"{gw.url}/metrics") as r:
            m = scrape(await r.text())
    by_model = Counter[str]()
    for lab, v in m["chromagent_requests_total"]:
        by_model[lab["model"]] += int(v)
    assert by_model == {"other": 2, "new-model": 1}
