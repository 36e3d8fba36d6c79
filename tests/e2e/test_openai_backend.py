"""The openai backend end to end: official SDK → real gateway → fake OpenAI-compatible upstream
replaying recorded traffic."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp import web

from tests.support.fixtures import chunks_as_sse, fixture_path, load, load_chunks
from tests.support.gateway import run_gateway, sdk
from tests.support.upstream import FakeUpstream, hang, json_reply, stream_reply

MSG: Any = [{"role": "user", "content": "Hello!"}]


def config(up: FakeUpstream, **extra: Any) -> dict[str, Any]:
    backend = {
        "id": "up",
        "type": "openai",
        "baseUrl": f"{up.url}/v1",
        "apiKey": "sk-upstream-secret",
        "modelMapping": {"gpt-4o": "gpt-4o-2024-08-06", "same": "same"},
        **extra.pop("backend", {}),
    }
    return {"backends": [backend], "defaultBackend": "up", **extra}


def recorded(name: str, index: int = 0) -> Any:
    return load(fixture_path("openai", name))[index]


async def test_non_stream_relays_recorded_answer(upstream: FakeUpstream) -> None:
    rec = recorded("envoy-ai-gateway--chat-basic.yaml")
    upstream.route("/v1/chat/completions", json_reply(rec.body))
    async with run_gateway(config(upstream)) as gw:
        resp = await sdk(gw).chat.completions.create(model="gpt-5-nano", messages=MSG)
    expected = json.loads(rec.body)
    assert resp.choices[0].message.content == expected["choices"][0]["message"]["content"]
    assert resp.usage is not None and resp.usage.total_tokens == expected["usage"]["total_tokens"]
    sent = upstream.received[0]
    assert sent.headers["Authorization"] == "Bearer sk-upstream-secret"
    assert sent.json == {"model": "gpt-5-nano", "messages": MSG}


async def test_model_mapping_rewrites_model_and_keeps_unknown_fields(
    upstream: FakeUpstream,
) -> None:
    rec = recorded("envoy-ai-gateway--chat-basic.yaml")
    upstream.route("/v1/chat/completions", json_reply(rec.body))
    async with run_gateway(config(upstream)) as gw:
        await sdk(gw).chat.completions.create(
            model="gpt-4o",
            messages=MSG,
            temperature=0.3,
            extra_body={"some_future_param": {"x": [1, 2]}, "verbosity": "low"},
        )
    body = upstream.received[0].json
    assert body["model"] == "gpt-4o-2024-08-06"
    assert body["some_future_param"] == {"x": [1, 2]}
    assert body["verbosity"] == "low"
    assert body["temperature"] == 0.3


async def test_model_mapping_changes_only_the_model_bytes(upstream: FakeUpstream) -> None:
    """The rename rewrites the model value in place: the client's spacing, key order, number
    spelling and escapes reach the upstream byte for byte. A body where that is not certain
    (a nested "model" key) is re-encoded, and still carries the mapped model."""
    rec = recorded("envoy-ai-gateway--chat-basic.yaml")
    upstream.route("/v1/chat/completions", json_reply(rec.body))
    raw = (
        b'{ "messages" : [ {"role": "user", "content": "quote \\"model\\": \\"gpt-4o\\" \\u00e9\\n"} ],\n'
        b'  "temperature": 1.50, "model" :\t"gpt-4o", "x_future": {"deep": [1, 2.0e3]} }'
    )
    nested = (
        b'{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"meta":{"model":"gpt-4o"}}'
    )
    async with run_gateway(config(upstream)) as gw:
        for body in (raw, nested):
            status, _, _ = await _raw(
                gw, "POST", "/v1/chat/completions", body, {"Content-Type": "application/json"}
            )
            assert status == 200
    assert upstream.received[0].body == raw.replace(b'"gpt-4o"', b'"gpt-4o-2024-08-06"')
    assert upstream.received[1].json == {**json.loads(nested), "model": "gpt-4o-2024-08-06"}


async def test_stream_text_with_usage_chunk(upstream: FakeUpstream) -> None:
    payloads = load_chunks(fixture_path("openai", "vercel-ai--openai-text.chunks.txt"))
    upstream.route(
        "/v1/chat/completions",
        stream_reply(chunks_as_sse(payloads) + b"data: [DONE]\n\n", split=97),
    )
    expected_text = "".join(
        c["choices"][0]["delta"].get("content") or ""
        for c in map(json.loads, payloads)
        if c["choices"]
    )
    async with run_gateway(config(upstream)) as gw:
        stream = await sdk(gw).chat.completions.create(
            model="same", messages=MSG, stream=True, stream_options={"include_usage": True}
        )
        chunks = [c async for c in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected_text and len(text) > 50
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 300
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert upstream.received[0].json["stream_options"] == {"include_usage": True}


async def test_stream_tool_calls(upstream: FakeUpstream) -> None:
    rec = recorded("pydantic-ai--test_run_stream_sync_streams_real_model.yaml")
    upstream.route("/v1/chat/completions", stream_reply(rec.body, split=61))
    async with run_gateway(config(upstream)) as gw:
        stream = await sdk(gw).chat.completions.create(
            model="gpt-4o-mini",
            messages=MSG,
            stream=True,
            tools=[
                {
                    "type": "function",
                    "function": {"name": "get_capital", "parameters": {"type": "object"}},
                }
            ],
        )
        chunks = [c async for c in stream]
    calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert calls[0].id == "call_ZR5UUuTt3pf61kjwAJIYdVMj" and calls[0].function is not None
    assert calls[0].function.name == "get_capital"
    args = "".join((tc.function.arguments or "") for tc in calls if tc.function)
    assert json.loads(args) == {"country": "UK"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"


async def test_first_chunk_reaches_client_before_upstream_sends_second(
    upstream: FakeUpstream,
) -> None:
    gate = asyncio.Event()
    first = b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":"one"},"finish_reason":null}]}\n\n'
    second = b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":" two"},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
    upstream.route("/v1/chat/completions", stream_reply([first, second], gate=gate))
    async with run_gateway(config(upstream)) as gw:
        stream = await sdk(gw).chat.completions.create(model="m", messages=MSG, stream=True)
        it = stream.__aiter__()
        c1 = await asyncio.wait_for(it.__anext__(), 5)
        assert c1.choices[0].delta.content == "one"
        assert not gate.is_set()
        gate.set()
        rest = [c async for c in it]
    assert rest[0].choices[0].delta.content == " two"


async def test_mid_stream_error_event_raises_api_error(upstream: FakeUpstream) -> None:
    rec = recorded("pydantic-ai--test_groq--test_tool_use_failed_error_streaming.yaml")
    upstream.route("/v1/chat/completions", stream_reply(rec.body, split=500))
    async with run_gateway(config(upstream)) as gw:
        stream = await sdk(gw).chat.completions.create(model="m", messages=MSG, stream=True)
        got = 0
        with pytest.raises(openai.APIError, match="Tool call validation failed"):
            async for _ in stream:
                got += 1
        assert got > 5


@pytest.mark.parametrize(
    ("status", "body", "headers", "exc", "client_status"),
    [
        (400, None, None, openai.BadRequestError, 400),
        (
            404,
            {
                "error": {
                    "message": "The model `x` does not exist",
                    "type": "invalid_request_error",
                    "code": "model_not_found",
                }
            },
            None,
            openai.NotFoundError,
            404,
        ),
        (
            401,
            {"error": {"message": "Incorrect API key provided"}},
            None,
            openai.InternalServerError,
            502,
        ),
        (403, {"error": {"message": "forbidden"}}, None, openai.InternalServerError, 502),
        (
            429,
            {"error": {"message": "slow down", "type": "requests"}},
            {"Retry-After": "7"},
            openai.RateLimitError,
            429,
        ),
        (500, {"error": {"message": "boom"}}, None, openai.InternalServerError, 502),
        (503, "<html>Service Unavailable</html>", None, openai.InternalServerError, 503),
    ],
)
async def test_upstream_errors_map_to_openai_errors(
    upstream: FakeUpstream,
    status: int,
    body: Any,
    headers: dict[str, str] | None,
    exc: type[openai.APIStatusError],
    client_status: int,
) -> None:
    if body is None:
        body = recorded("envoy-ai-gateway--chat-bad-request.yaml").body
    raw = (
        body.encode()
        if isinstance(body, str)
        else body
        if isinstance(body, bytes)
        else json.dumps(body).encode()
    )
    upstream.route("/v1/chat/completions", json_reply(raw, status=status, headers=headers))
    async with run_gateway(config(upstream)) as gw:
        with pytest.raises(exc) as info:
            await sdk(gw).chat.completions.create(model="m", messages=MSG)
    err = info.value
    assert err.status_code == client_status
    assert isinstance(err.body, dict) and {"message", "type", "param", "code"} <= set(err.body)
    assert "sk-upstream-secret" not in err.response.text
    if status in (401, 403, 500):
        assert "'up'" in err.message
    if status == 429:
        assert err.response.headers["retry-after"] == "7"
    if status == 400:
        assert err.body["param"] == "max_tokens"
    assert err.response.headers["x-chromagent-backend"] == "up"


async def test_upstream_unreachable_is_502_naming_backend() -> None:
    sock = __import__("socket").socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    cfg = {
        "backends": [{"id": "gone", "type": "openai", "baseUrl": f"http://127.0.0.1:{port}/v1"}],
        "defaultBackend": "gone",
    }
    async with run_gateway(cfg) as gw:
        with pytest.raises(openai.InternalServerError) as info:
            await sdk(gw).chat.completions.create(model="m", messages=MSG)
    assert info.value.status_code == 502
    assert "'gone'" in info.value.message
    assert str(port) not in info.value.message  # the upstream address stays internal


async def test_first_byte_timeout_is_504(upstream: FakeUpstream) -> None:
    upstream.route("/v1/chat/completions", hang())
    async with run_gateway(config(upstream, timeout=300)) as gw:
        with pytest.raises(openai.APIStatusError) as info:
            await sdk(gw).chat.completions.create(model="m", messages=MSG)
        assert info.value.status_code == 504
        with pytest.raises(openai.APIStatusError) as info:
            await sdk(gw).chat.completions.create(model="m", messages=MSG, stream=True)
        assert info.value.status_code == 504


async def test_headers_then_silence_before_first_chunk_is_504(upstream: FakeUpstream) -> None:
    upstream.route("/v1/chat/completions", hang(before_headers=False))
    async with run_gateway(config(upstream, timeout=300)) as gw:
        with pytest.raises(openai.APIStatusError) as info:
            await sdk(gw).chat.completions.create(model="m", messages=MSG, stream=True)
    assert info.value.status_code == 504


async def test_idle_timeout_mid_stream_is_an_error_event(upstream: FakeUpstream) -> None:
    first = b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}\n\n'
    upstream.route("/v1/chat/completions", stream_reply([first], then_hang=True))
    async with run_gateway(config(upstream, timeouts={"idleMs": 300})) as gw:
        stream = await sdk(gw).chat.completions.create(model="m", messages=MSG, stream=True)
        with pytest.raises(openai.APIError, match="idle timeout"):
            async for _ in stream:
                pass


async def test_total_timeout_cuts_a_long_request(upstream: FakeUpstream) -> None:
    slow = [
        b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"x"},"finish_reason":null}]}\n\n'
    ] * 50
    upstream.route("/v1/chat/completions", stream_reply(slow, delay=0.05))
    async with run_gateway(config(upstream, timeouts={"totalMs": 400})) as gw:
        stream = await sdk(gw).chat.completions.create(model="m", messages=MSG, stream=True)
        with pytest.raises(openai.APIError):
            async for _ in stream:
                pass


async def test_long_stream_is_not_cut_by_default_timeouts(upstream: FakeUpstream) -> None:
    chunk = b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"x"},"finish_reason":null}]}\n\n'
    upstream.route(
        "/v1/chat/completions", stream_reply([chunk] * 20 + [b"data: [DONE]\n\n"], delay=0.05)
    )
    async with run_gateway(config(upstream, timeouts={"idleMs": 500})) as gw:
        stream = await sdk(gw).chat.completions.create(model="m", messages=MSG, stream=True)
        assert len([c async for c in stream]) == 20


@pytest.mark.parametrize("stream", [True, False])
async def test_client_disconnect_closes_upstream_quickly(
    upstream: FakeUpstream, stream: bool
) -> None:
    first = b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}\n\n'
    upstream.route(
        "/v1/chat/completions", stream_reply([first], then_hang=True) if stream else hang()
    )
    async with run_gateway(config(upstream)) as gw:
        async with aiohttp.ClientSession() as s:
            body = {"model": "m", "messages": MSG, "stream": stream}
            if stream:
                resp = await s.post(f"{gw.url}/v1/chat/completions", json=body)
                assert resp.status == 200
                assert (await resp.content.readany()).startswith(b"data: ")
                assert not upstream.disconnected.is_set()
                resp.close()  # the client goes away mid-stream
            else:
                task = asyncio.create_task(s.post(f"{gw.url}/v1/chat/completions", json=body))
                while not upstream.received:
                    await asyncio.sleep(0.01)
                await asyncio.sleep(0.1)
                assert not upstream.disconnected.is_set()
                task.cancel()  # the client gives up while the gateway waits
            loop = asyncio.get_running_loop()
            gone = loop.time()
            await asyncio.wait_for(upstream.disconnected.wait(), 1)
            assert loop.time() - gone < 0.1


async def _raw(
    gw: Any,
    method: str,
    path: str,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any], Any]:
    async with (
        aiohttp.ClientSession() as s,
        s.request(method, f"{gw.url}{path}", data=data, headers=headers) as r,
    ):
        return (
            r.status,
            {k.lower(): v for k, v in r.headers.items()},
            await r.json(content_type=None),
        )


async def test_gateway_side_errors_are_openai_json(upstream: FakeUpstream) -> None:
    upstream.route(
        "/v1/chat/completions", json_reply(recorded("envoy-ai-gateway--chat-basic.yaml").body)
    )
    cfg = config(upstream, maxBodyBytes=2000)
    cfg["defaultBackend"] = None
    del cfg["defaultBackend"]
    async with run_gateway(cfg) as gw:
        status, _, body = await _raw(gw, "POST", "/v1/chat/completions", b"{not json")
        assert status == 400 and body["error"]["type"] == "invalid_request_error"
        status, _, body = await _raw(gw, "POST", "/v1/chat/completions", b'{"model":"gpt-4o"}')
        assert status == 400 and body["error"]["param"] == "messages"
        status, _, body = await _raw(
            gw,
            "POST",
            "/v1/chat/completions",
            json.dumps(
                {"model": "gpt-4o", "messages": [MSG[0], MSG[0], {"role": "robot", "content": "x"}]}
            ).encode(),
        )
        assert status == 400 and body["error"]["param"] == "messages[2].role"
        status, _, body = await _raw(
            gw,
            "POST",
            "/v1/chat/completions",
            json.dumps({"model": "nope", "messages": MSG}).encode(),
        )
        assert status == 404 and body["error"]["code"] == "model_not_found"
        status, _, body = await _raw(
            gw,
            "POST",
            "/v1/chat/completions",
            json.dumps(
                {"model": "gpt-4o", "messages": [{"role": "user", "content": "x" * 5000}]}
            ).encode(),
        )
        assert status == 413 and body["error"]["code"] == "request_too_large"
        status, _, body = await _raw(gw, "GET", "/v1/nothing-here")
        assert status == 404 and body["error"]["message"]
        status, _, body = await _raw(gw, "DELETE", "/v1/chat/completions")
        assert status == 405 and body["error"]["code"] == "method_not_allowed"
    assert upstream.received == []


async def test_sdk_exception_types_for_gateway_errors(upstream: FakeUpstream) -> None:
    cfg = config(upstream)
    del cfg["defaultBackend"]
    async with run_gateway(cfg) as gw:
        with pytest.raises(openai.NotFoundError):
            await sdk(gw).chat.completions.create(model="unknown-model", messages=MSG)
        with pytest.raises(openai.BadRequestError):
            await sdk(gw).chat.completions.create(model="gpt-4o", messages=[])


async def test_request_id_accepted_or_generated(upstream: FakeUpstream) -> None:
    upstream.route(
        "/v1/chat/completions", json_reply(recorded("envoy-ai-gateway--chat-basic.yaml").body)
    )
    async with run_gateway(config(upstream)) as gw:
        body = json.dumps({"model": "m", "messages": MSG}).encode()
        _, headers, _ = await _raw(
            gw, "POST", "/v1/chat/completions", body, {"x-request-id": "abc-123"}
        )
        assert headers["x-request-id"] == "abc-123"
        _, headers, _ = await _raw(gw, "POST", "/v1/chat/completions", body)
        assert len(headers["x-request-id"]) >= 16
        _, headers, _ = await _raw(gw, "POST", "/v1/chat/completions", b"{bad")
        assert headers["x-request-id"]


async def test_models_and_health(upstream: FakeUpstream) -> None:
    async with run_gateway(config(upstream)) as gw:
        models = await sdk(gw).models.list()
        assert {m.id for m in models.data} == {"gpt-4o", "same"}
        status, _, body = await _raw(gw, "GET", "/health")
        assert status == 200 and body["status"] == "ok" and body["version"]
        assert "T" in body["timestamp"]


async def test_other_requests_carry_on_while_one_stream_hangs(upstream: FakeUpstream) -> None:
    async def route(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if body["model"] == "slow":
            return await hang(before_headers=False)(request)
        return await json_reply(recorded("envoy-ai-gateway--chat-basic.yaml").body)(request)

    upstream.route("/v1/chat/completions", route)
    async with run_gateway(config(upstream)) as gw:
        client = sdk(gw)
        slow = asyncio.create_task(
            client.chat.completions.create(model="slow", messages=MSG, stream=True)
        )
        results = await asyncio.gather(
            *(client.chat.completions.create(model="fast", messages=MSG) for _ in range(10))
        )
        assert all(r.choices[0].message.content for r in results)
        slow.cancel()


async def test_connect_timeout_is_504_naming_the_phase() -> None:
    """An upstream whose accept queue is full never completes the TCP handshake."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(16):  # fill the accept queue so further SYNs are dropped
        c = socket.socket()
        c.setblocking(False)
        try:
            c.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        fillers.append(c)
    await asyncio.sleep(0.1)
    cfg = {
        "backends": [{"id": "full", "type": "openai", "baseUrl": f"http://127.0.0.1:{port}/v1"}],
        "defaultBackend": "full",
        "timeouts": {"connectMs": 200},
        "timeout": 10000,
    }
    try:
        async with run_gateway(cfg) as gw:
            loop = asyncio.get_running_loop()
            start = loop.time()
            with pytest.raises(openai.APIStatusError) as info:
                await sdk(gw).chat.completions.create(model="m", messages=MSG)
            assert loop.time() - start < 5  # the 10 s first-byte timeout did not fire
        assert info.value.status_code == 504
        assert "did not accept a connection within 0.2s" in info.value.message
    finally:
        for c in fillers:
            c.close()
        listener.close()
