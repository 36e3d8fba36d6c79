"""anthropic and vertex-anthropic end to end: official openai SDK → real gateway → fake
Anthropic / fake Vertex server on loopback replaying recorded Messages traffic."""

from __future__ import annotations

import base64
import json
from typing import Any

import openai
import pytest
from aiohttp import web

from tests.support.fixtures import chunks_as_sse, fixture_path, load, load_chunks
from tests.support.gateway import run_gateway, sdk
from tests.support.upstream import FakeUpstream, json_reply, stream_reply

MSG: Any = [{"role": "user", "content": "Hello!"}]
VMODEL = "claude-sonnet-4-5@20250929"
VPATH = f"/v1/projects/proj-1/locations/us-east5/publishers/anthropic/models/{VMODEL}"
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x01" * 32 + b"\xff\xd9"


def anthropic_cfg(up: FakeUpstream, **backend: Any) -> dict[str, Any]:
    return {
        "backends": [
            {
                "id": "anth",
                "type": "anthropic",
                "baseUrl": up.url,
                "apiKey": "sk-ant-secret",
                "modelMapping": {"claude": "claude-sonnet-4-5"},
                **backend,
            }
        ],
        "defaultBackend": "anth",
    }


def vertex_cfg(up: FakeUpstream, **backend: Any) -> dict[str, Any]:
    return {
        "backends": [
            {
                "id": "vx",
                "type": "vertex-anthropic",
                "baseUrl": f"{up.url}/v1",
                "projectId": "proj-1",
                "location": "us-east5",
                "apiKey": "ya29.pasted-token",
                "modelMapping": {"claude": VMODEL},
                **backend,
            }
        ],
        "defaultBackend": "vx",
    }


def rec(name: str, index: int = 0) -> Any:
    return load(fixture_path("anthropic", name))[index]


def sse(name: str) -> bytes:
    return chunks_as_sse(load_chunks(fixture_path("anthropic", name)), with_event_type=True)


# ---------------------------------------------------------------- anthropic


async def test_non_stream_text(upstream: FakeUpstream) -> None:
    raw = fixture_path("anthropic", "vercel-ai--anthropic-text.json").read_bytes()
    upstream.route("/v1/messages", json_reply(raw))
    cfg = anthropic_cfg(upstream, additionalHeaders={"anthropic-beta": "tools-2024-04-04"})
    async with run_gateway(cfg) as gw:
        resp = await sdk(gw).chat.completions.create(model="claude", messages=MSG)
    want = json.loads(raw)
    assert resp.choices[0].message.content == want["content"][0]["text"]
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage is not None
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens) == (12, 29)
    sent = upstream.received[0]
    assert sent.path == "/v1/messages"
    assert sent.headers["x-api-key"] == "sk-ant-secret"
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.headers["anthropic-beta"] == "tools-2024-04-04"
    assert "Authorization" not in sent.headers
    assert sent.json == {
        "model": "claude-sonnet-4-5",
        "max_tokens": 4096,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello!"}]}],
    }


async def test_anthropic_version_override_and_default_max_tokens(upstream: FakeUpstream) -> None:
    raw = fixture_path("anthropic", "vercel-ai--anthropic-text.json").read_bytes()
    upstream.route("/v1/messages", json_reply(raw))
    cfg = anthropic_cfg(
        upstream,
        baseUrl=f"{upstream.url}/v1",
        additionalHeaders={"Anthropic-Version": "2099-01-01"},
        defaultMaxTokens=999,
    )
    async with run_gateway(cfg) as gw:
        await sdk(gw).chat.completions.create(model="claude", messages=MSG)
    sent = upstream.received[0]
    assert sent.path == "/v1/messages"  # a baseUrl ending in /v1 is accepted too
    assert sent.headers["anthropic-version"] == "2099-01-01"
    assert sent.json["max_tokens"] == 999


async def test_stream_text_with_one_usage_chunk(upstream: FakeUpstream) -> None:
    it = rec("langchaingo--TestClient_CreateMessageStream.httprr")
    upstream.route("/v1/messages", stream_reply(it.body, split=13))
    async with run_gateway(anthropic_cfg(upstream)) as gw:
        stream = await sdk(gw).chat.completions.create(
            model="claude",
            messages=MSG,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [c async for c in stream]
    assert upstream.received[0].json["stream"] is True
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "1\n2\n3\n4\n5"
    assert [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ] == ["stop"]
    usage = [c.usage for c in chunks if c.usage is not None]
    assert len(usage) == 1 and chunks[-1].choices == []
    assert (usage[0].prompt_tokens, usage[0].completion_tokens, usage[0].total_tokens) == (
        15,
        13,
        28,
    )


async def test_stream_parallel_tools(upstream: FakeUpstream) -> None:
    it = rec("langchaingo--TestAnthropic_GenerateContentWithToolAndStreaming.httprr")
    upstream.route("/v1/messages", stream_reply(it.body, split=7))
    async with run_gateway(anthropic_cfg(upstream)) as gw:
        stream = await sdk(gw).chat.completions.create(
            model="claude",
            messages=MSG,
            stream=True,
            tools=[
                {
                    "type": "function",
                    "function": {"name": "calculateTip", "parameters": {"type": "object"}},
                },
                {"type": "function", "function": {"name": "getWaiterName"}},
            ],
        )
        calls: dict[int, dict[str, str]] = {}
        finish = None
        async for c in stream:
            for tc in c.choices[0].delta.tool_calls or []:
                entry = calls.setdefault(tc.index, {"id": "", "name": "", "args": ""})
                entry["id"] += tc.id or ""
                entry["name"] += (tc.function and tc.function.name) or ""
                entry["args"] += (tc.function and tc.function.arguments) or ""
            finish = c.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    assert [calls[i]["name"] for i in sorted(calls)] == ["calculateTip", "getWaiterName"]
    assert json.loads(calls[0]["args"]) == {"billAmount": 50, "tipPercentage": 15}
    assert calls[1]["args"] == "{}"
    assert calls[0]["id"] == "toolu_01VsaoaKxpzdz8vgY4hTGjE3"
    sent = upstream.received[0].json
    assert sent["tools"][1] == {
        "name": "getWaiterName",
        "input_schema": {"type": "object", "properties": {}},
    }


async def test_non_stream_tool_round_trip(upstream: FakeUpstream) -> None:
    first, second = load(
        fixture_path("anthropic", "pydantic-ai--test_multiple_parallel_tool_calls.yaml")
    )
    replies = iter([first.body, second.body])

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(body=next(replies), content_type="application/json")

    upstream.route("/v1/messages", handler)
    tools = [
        {
            "type": "function",
            "function": {"name": "retrieve_entity_info", "parameters": {"type": "object"}},
        }
    ]
    messages: list[Any] = [{"role": "user", "content": "Who is the youngest?"}]
    async with run_gateway(anthropic_cfg(upstream)) as gw:
        client = sdk(gw)
        resp = await client.chat.completions.create(model="claude", messages=messages, tools=tools)  # type: ignore[arg-type]
        msg = resp.choices[0].message
        assert resp.choices[0].finish_reason == "tool_calls"
        assert msg.tool_calls is not None and len(msg.tool_calls) == 4
        messages.append(msg)
        for tc in msg.tool_calls:
            messages.append({"role": "tool", "tool_call_id": tc.id, "content": f"info for {tc.id}"})
        final = await client.chat.completions.create(model="claude", messages=messages, tools=tools)  # type: ignore[arg-type]
    assert "Daisy" in (final.choices[0].message.content or "")
    sent = upstream.received[1].json["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert [b["type"] for b in sent[1]["content"]] == ["text"] + ["tool_use"] * 4
    assert sent[2]["content"] == [
        {"type": "tool_result", "tool_use_id": tc.id, "content": f"info for {tc.id}"}
        for tc in msg.tool_calls
    ]


async def test_image_url_is_passed_as_url_source(upstream: FakeUpstream) -> None:
    it = rec("pydantic-ai--test_image_url_input.yaml")
    upstream.route("/v1/messages", json_reply(it.body))
    url = it.request_body["messages"][0]["content"][1]["source"]["url"]
    async with run_gateway(anthropic_cfg(upstream)) as gw:
        resp = await sdk(gw).chat.completions.create(
            model="claude",
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is this vegetable?"},
                        {"type": "image_url", "image_url": {"url": url}},
                    ],
                }
            ],
        )
    assert "potato" in (resp.choices[0].message.content or "")
    assert upstream.received[0].json["messages"] == it.request_body["messages"]


async def test_thinking_stream_and_signed_replay(upstream: FakeUpstream) -> None:
    it = rec("pydantic-ai--test_anthropic_model_thinking_part_stream.yaml")
    upstream.route("/v1/messages", stream_reply(it.body, split=64))
    async with run_gateway(anthropic_cfg(upstream)) as gw:
        client = sdk(gw)
        stream = await client.chat.completions.create(
            model="claude",
            messages=MSG,
            stream=True,
            reasoning_effort="low",
        )
        reasoning, content, blocks = "", "", list[dict[str, Any]]()
        async for c in stream:
            d = c.choices[0].delta
            extra = d.model_extra or {}
            reasoning += extra.get("reasoning_content") or ""
            content += d.content or ""
            blocks += extra.get("thinking_blocks") or []
        assert upstream.received[0].json["thinking"] == {"type": "enabled", "budget_tokens": 2048}
        assert reasoning.startswith("This is a straightforward question")
        assert reasoning not in content and content
        assert len(blocks) == 1 and blocks[0]["signature"].startswith("EvMCCkYICxgCKkCHP2cS")
        assert blocks[0]["thinking"] == reasoning

        # Replay the turn the way an SDK user does: the assistant dict with its extra fields.
        upstream.route(
            "/v1/messages",
            json_reply(fixture_path("anthropic", "vercel-ai--anthropic-text.json").read_bytes()),
        )
        # thinking_blocks is an extra field the SDK's types do not know.
        await client.chat.completions.create(  # type: ignore[call-overload]
            model="claude",
            messages=[
                *MSG,
                {"role": "assistant", "content": content, "thinking_blocks": blocks},
                {"role": "user", "content": "Thanks"},
            ],
            reasoning_effort="low",
        )
    replayed = upstream.received[1].json["messages"][1]["content"]
    assert replayed[0] == {
        "type": "thinking",
        "thinking": reasoning,
        "signature": blocks[0]["signature"],
    }
    assert replayed[1] == {"type": "text", "text": content}


async def test_sdk_stream_helper_final_message_replays_thinking(upstream: FakeUpstream) -> None:
    it = rec("pydantic-ai--test_anthropic_model_thinking_part_stream.yaml")
    upstream.route("/v1/messages", stream_reply(it.body, split=64))
    async with run_gateway(anthropic_cfg(upstream)) as gw:
        client = sdk(gw)
        # The SDK's own accumulator merges the thinking_blocks delta into the final message.
        async with client.chat.completions.stream(
            model="claude",
            messages=MSG,
            reasoning_effort="low",
        ) as s:
            final = await s.get_final_completion()
        msg = final.choices[0].message
        upstream.route(
            "/v1/messages",
            json_reply(fixture_path("anthropic", "vercel-ai--anthropic-text.json").read_bytes()),
        )
        await client.chat.completions.create(
            model="claude",
            messages=[*MSG, msg, {"role": "user", "content": "ok"}],  # type: ignore[list-item]
        )
    replayed = upstream.received[1].json["messages"][1]["content"]
    assert replayed[0]["type"] == "thinking"
    assert replayed[0]["signature"].startswith("EvMCCkYICxgCKkCHP2cS")
    assert replayed[0]["thinking"] == (msg.model_extra or {})["reasoning_content"]
    assert replayed[1] == {"type": "text", "text": msg.content}


async def test_non_stream_thinking_message_round_trips_through_the_sdk(
    upstream: FakeUpstream,
) -> None:
    answer = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5",
        "content": [
            {"type": "thinking", "thinking": "Let me think.", "signature": "c2lnbmF0dXJl"},
            {"type": "text", "text": "Done."},
        ],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 5, "output_tokens": 7},
    }
    upstream.route("/v1/messages", json_reply(answer))
    async with run_gateway(anthropic_cfg(upstream)) as gw:
        client = sdk(gw)
        resp = await client.chat.completions.create(model="claude", messages=MSG)
        msg = resp.choices[0].message
        assert msg.content == "Done."
        assert (msg.model_extra or {})["reasoning_content"] == "Let me think."
        # The pydantic message object itself goes back in; the SDK keeps its extra fields.
        await client.chat.completions.create(
            model="claude",
            messages=[*MSG, msg, {"role": "user", "content": "More"}],  # type: ignore[list-item]
        )
    assert upstream.received[1].json["messages"][1]["content"] == [
        {"type": "thinking", "thinking": "Let me think.", "signature": "c2lnbmF0dXJl"},
        {"type": "text", "text": "Done."},
    ]


# ---------------------------------------------------------------- errors


async def test_anthropic_400_is_bad_request(upstream: FakeUpstream) -> None:
    it = rec("pydantic-ai--test_anthropic_explicit_effort_xhigh_unsupported_model_errors.yaml")
    upstream.route("/v1/messages", json_reply(it.body, status=400))
    async with run_gateway(anthropic_cfg(upstream)) as gw:
        with pytest.raises(openai.BadRequestError) as exc:
            await sdk(gw).chat.completions.create(model="claude", messages=MSG)
    assert "effort level 'xhigh'" in exc.value.message
    assert exc.value.body["type"] == "invalid_request_error"  # type: ignore[index]


async def test_unsupported_param_is_400_before_any_upstream_call(upstream: FakeUpstream) -> None:
    async with run_gateway(anthropic_cfg(upstream)) as gw:
        with pytest.raises(openai.BadRequestError) as exc:
            await sdk(gw).chat.completions.create(model="claude", messages=MSG, n=2)
    assert exc.value.param == "n"
    assert upstream.received == []


async def test_529_overloaded_is_503_with_retry_after(upstream: FakeUpstream) -> None:
    body = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    upstream.route("/v1/messages", json_reply(body, status=529, headers={"Retry-After": "7"}))
    async with run_gateway(anthropic_cfg(upstream)) as gw:
        with pytest.raises(openai.InternalServerError) as exc:
            await sdk(gw).chat.completions.create(model="claude", messages=MSG)
    assert exc.value.status_code == 503
    assert exc.value.response.headers["Retry-After"] == "7"
    assert "Overloaded" in exc.value.message


async def test_529_fails_over_to_the_next_backend(upstream: FakeUpstream) -> None:
    overloaded = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    upstream.route(f"{VPATH}:rawPredict", json_reply(overloaded, status=529))
    raw = fixture_path("anthropic", "vercel-ai--anthropic-text.json").read_bytes()
    upstream.route("/v1/messages", json_reply(raw))
    cfg = vertex_cfg(upstream)
    cfg["backends"].append(anthropic_cfg(upstream)["backends"][0])
    cfg["routingRules"] = [{"condition": "model: claude", "backendId": "vx"}]
    async with run_gateway(cfg) as gw:
        resp = await sdk(gw).chat.completions.with_raw_response.create(model="claude", messages=MSG)
    assert resp.headers["x-chromagent-attempts"] == "2"
    assert resp.headers["x-chromagent-backend"] == "anth"
    assert [r.path for r in upstream.received] == [f"{VPATH}:rawPredict", "/v1/messages"]


async def test_mid_stream_error_event(upstream: FakeUpstream) -> None:
    it = rec("langchaingo--TestClient_CreateMessageStream.httprr")
    cut = it.body[: it.body.index(b"event: ping")]
    error = (
        b'event: error\ndata: {"type":"error","error":{"details":null,"type":"overloaded_error",'
        b'"message":"Overloaded"},"request_id":"req_1"}   \n\n'
    )
    upstream.route("/v1/messages", stream_reply([cut, error]))
    async with run_gateway(anthropic_cfg(upstream)) as gw:
        stream = await sdk(gw).chat.completions.create(model="claude", messages=MSG, stream=True)
        got = ""
        with pytest.raises(openai.APIError) as exc:
            async for c in stream:
                got += c.choices[0].delta.content or ""
    assert got == "1\n2\n3"
    assert "Overloaded" in exc.value.message
    assert exc.value.body["code"] == "upstream_overloaded"  # type: ignore[index]


async def test_error_event_before_any_content_is_an_http_error(upstream: FakeUpstream) -> None:
    it = rec("langchaingo--TestClient_CreateMessageStream.httprr")
    start = it.body[: it.body.index(b"event: content_block_start")]  # message_start only
    error = b'event: error\ndata: {"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}\n\n'
    upstream.route(
        "/v1/messages", stream_reply([start, b'event: ping\ndata: {"type": "ping"}\n\n', error])
    )
    async with run_gateway(anthropic_cfg(upstream)) as gw:
        with pytest.raises(openai.RateLimitError) as exc:
            await sdk(gw).chat.completions.create(model="claude", messages=MSG, stream=True)
    assert "slow down" in exc.value.message


async def test_stream_overloaded_before_content_fails_over(upstream: FakeUpstream) -> None:
    it = rec("langchaingo--TestClient_CreateMessageStream.httprr")
    start = it.body[: it.body.index(b"event: content_block_start")]
    error = b'event: error\ndata: {"type":"error","error":{"details":null,"type":"overloaded_error","message":"Overloaded"} }\n\n'
    upstream.route(f"{VPATH}:streamRawPredict", stream_reply([start, error]))
    upstream.route("/v1/messages", stream_reply(it.body))
    cfg = vertex_cfg(upstream)
    cfg["backends"].append(anthropic_cfg(upstream)["backends"][0])
    cfg["routingRules"] = [{"condition": "model: claude", "backendId": "vx"}]
    async with run_gateway(cfg) as gw:
        raw = await sdk(gw).chat.completions.with_raw_response.create(
            model="claude",
            messages=MSG,
            stream=True,
        )
        assert raw.headers["x-chromagent-backend"] == "anth"
        assert raw.headers["x-chromagent-attempts"] == "2"
        text = "".join([c.choices[0].delta.content or "" async for c in raw.parse()])
    assert text == "1\n2\n3\n4\n5"


# ---------------------------------------------------------------- vertex-anthropic


async def test_vertex_non_stream(upstream: FakeUpstream) -> None:
    it = rec("pydantic-ai--test_stop_settings[anthropic].yaml")
    upstream.route(f"{VPATH}:rawPredict", json_reply(it.body))
    cfg = vertex_cfg(
        upstream,
        additionalHeaders={
            "anthropic-beta": "context-1m-2025-08-07",
            "anthropic-version": "2023-06-01",
        },
    )
    async with run_gateway(cfg) as gw:
        resp = await sdk(gw).chat.completions.create(
            model="claude",
            messages=MSG,
            stop=["Paris"],
            max_tokens=1024,
        )
    assert resp.choices[0].message.content == "The beautiful city of "
    assert resp.choices[0].finish_reason == "stop"
    sent = upstream.received[0]
    assert sent.path == f"{VPATH}:rawPredict"
    assert sent.headers["Authorization"] == "Bearer ya29.pasted-token"
    assert sent.headers["anthropic-beta"] == "context-1m-2025-08-07"
    assert "anthropic-version" not in sent.headers and "x-api-key" not in sent.headers
    assert sent.json == {
        "anthropic_version": "vertex-2023-10-16",
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello!"}]}],
        "stop_sequences": ["Paris"],
    }


async def test_vertex_stream_tool_without_arguments(upstream: FakeUpstream) -> None:
    upstream.route(
        f"{VPATH}:streamRawPredict",
        stream_reply(sse("vercel-ai--anthropic-tool-no-args.chunks.txt"), split=7),
    )
    async with run_gateway(vertex_cfg(upstream)) as gw:
        stream = await sdk(gw).chat.completions.create(
            model="claude",
            messages=MSG,
            stream=True,
            stream_options={"include_usage": True},
            tools=[{"type": "function", "function": {"name": "updateIssueList"}}],
        )
        chunks = [c async for c in stream]
    sent = upstream.received[0]
    assert sent.path == f"{VPATH}:streamRawPredict"
    assert sent.json["stream"] is True and "model" not in sent.json
    calls = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert calls[0].id == "toolu_01QE1WLsSVp5hy5Q3GmGTmjP" and calls[0].index == 0
    assert "".join((tc.function.arguments or "") for tc in calls if tc.function) == "{}"
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 565


async def test_vertex_image_url_is_fetched_and_inlined(upstream: FakeUpstream) -> None:
    it = rec("pydantic-ai--test_image_url_input_force_download.yaml", 1)
    upstream.route(f"{VPATH}:rawPredict", json_reply(it.body))

    async def image(request: web.Request) -> web.StreamResponse:
        return web.Response(body=JPEG, content_type="image/jpeg")

    upstream.route("/potato.jpg", image)
    cfg = {**vertex_cfg(upstream), "media": {"allowCidrs": ["127.0.0.1/32"]}}
    async with run_gateway(cfg) as gw:
        resp = await sdk(gw).chat.completions.create(
            model="claude",
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is this vegetable?"},
                        {"type": "image_url", "image_url": {"url": f"{upstream.url}/potato.jpg"}},
                    ],
                }
            ],
        )
    assert "potato" in (resp.choices[0].message.content or "")
    sent = next(r for r in upstream.received if r.path.endswith(":rawPredict")).json
    assert sent["messages"][0]["content"][1] == {
        "type": "image",
        "source": {
            "type": "base64",
            "media_type": "image/jpeg",
            "data": base64.b64encode(JPEG).decode(),
        },
    }


async def test_vertex_google_error_array_429(upstream: FakeUpstream) -> None:
    body = [
        {
            "error": {
                "code": 429,
                "message": "Quota exceeded for aiplatform.googleapis.com/online_prediction_requests_per_base_model",
                "status": "RESOURCE_EXHAUSTED",
            }
        }
    ]
    upstream.route(f"{VPATH}:rawPredict", json_reply(body, status=429))
    async with run_gateway(vertex_cfg(upstream)) as gw:
        with pytest.raises(openai.RateLimitError) as exc:
            await sdk(gw).chat.completions.create(model="claude", messages=MSG)
    assert "Quota exceeded" in exc.value.message
    assert exc.value.code == "resource_exhausted"


async def test_vertex_401_refreshes_the_token_and_retries_once(upstream: FakeUpstream) -> None:
    raw = fixture_path("anthropic", "vercel-ai--anthropic-text.json").read_bytes()
    statuses = iter([401, 200])
    unauth = {
        "error": {
            "code": 401,
            "message": "Request had invalid authentication credentials.",
            "status": "UNAUTHENTICATED",
        }
    }

    async def handler(request: web.Request) -> web.StreamResponse:
        status = next(statuses)
        if status == 401:
            return web.json_response(unauth, status=401)
        return web.Response(body=raw, content_type="application/json")

    class FakeAuth:
        refreshable = True

        def __init__(self) -> None:
            self.n = 0
            self.invalidated: list[str | None] = []

        async def headers(self) -> dict[str, str]:
            self.n += 1
            return {"Authorization": f"Bearer token-{self.n}"}

        async def invalidate(self, token: str | None = None) -> None:
            self.invalidated.append(token)

    upstream.route(f"{VPATH}:rawPredict", handler)
    cfg = vertex_cfg(upstream)
    del cfg["backends"][0]["apiKey"]
    cfg["backends"][0]["credentialsFile"] = None
    async with run_gateway(cfg) as gw:
        auth = FakeAuth()
        gw.backends["vx"].provider.auth = auth  # type: ignore[attr-defined]
        resp = await sdk(gw).chat.completions.create(model="claude", messages=MSG)
        assert resp.choices[0].message.content
        assert auth.invalidated == ["Bearer token-1"]
        assert [r.headers["Authorization"] for r in upstream.received] == [
            "Bearer token-1",
            "Bearer token-2",
        ]
        # A second 401 after the retry is final: 502 naming the credentials.
        statuses = iter([401, 401])
        with pytest.raises(openai.APIStatusError) as exc:
            await sdk(gw).chat.completions.create(model="claude", messages=MSG)
    assert exc.value.status_code == 502
    assert "credentials" in exc.value.message


async def test_vertex_pasted_token_401_is_not_retried(upstream: FakeUpstream) -> None:
    upstream.route(
        f"{VPATH}:rawPredict", json_reply({"error": {"code": 401, "message": "bad"}}, status=401)
    )
    async with run_gateway(vertex_cfg(upstream)) as gw:
        with pytest.raises(openai.APIStatusError) as exc:
            await sdk(gw).chat.completions.create(model="claude", messages=MSG)
    assert exc.value.status_code == 502
    assert len(upstream.received) == 1
