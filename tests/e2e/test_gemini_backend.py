"""Gemini backends end to end: official openai SDK → real gateway → fake Gemini server.

Both URL shapes (Gemini API with x-goog-api-key; Vertex with project/location
and a Google OAuth token from a throwaway service account), stream and
non-stream, tools with the thoughtSignature round trip, images, errors.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import openai
import pytest
from aiohttp import web

from chromagent_proxy import codec
from tests.support.fixtures import chunks_as_sse, fixture_path, load, load_chunks
from tests.support.gateway import run_gateway, sdk
from tests.support.upstream import FakeUpstream, json_reply, stream_reply
from tests.unit.test_google_auth import TokenServer, write_service_account

MSG: Any = [{"role": "user", "content": "What is the capital of France?"}]
API_PATH = "/v1beta/models/gemini-2.5-flash"
VERTEX_PATH = (
    "/v1/projects/my-proj/locations/europe-west4/publishers/google/models/gemini-2.5-flash"
)
TOOLS: Any = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
                "additionalProperties": False,
            },
        },
    }
]


def recorded(name: str, index: int = 0) -> Any:
    return load(fixture_path("gemini", name))[index]


def api_config(up: FakeUpstream, **backend: Any) -> dict[str, Any]:
    b = {
        "id": "g",
        "type": "gemini",
        "apiKey": "AIza-test-key",
        "baseUrl": f"{up.url}/v1beta",
        "modelMapping": {"gpt-4o": "gemini-2.5-flash"},
        **backend,
    }
    return {"backends": [b], "defaultBackend": "g", "media": {"allowCidrs": ["127.0.0.1/32"]}}


def vertex_config(up: FakeUpstream, **backend: Any) -> dict[str, Any]:
    b = {
        "id": "vx",
        "type": "vertex-gemini",
        "baseUrl": f"{up.url}/v1",
        "projectId": "my-proj",
        "location": "europe-west4",
        "modelMapping": {"gpt-4o": "gemini-2.5-flash"},
        **backend,
    }
    return {"backends": [b], "defaultBackend": "vx"}


# ---------------------------------------------------------------- Gemini API shape


async def test_api_non_stream_text(upstream: FakeUpstream) -> None:
    rec = recorded("pydantic-ai--test_google_model_max_tokens.yaml")
    upstream.route(f"{API_PATH}:generateContent", json_reply(rec.body))
    async with run_gateway(api_config(upstream)) as gw:
        resp = await sdk(gw).chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "system", "content": "You are a helpful chatbot."}, *MSG],
            max_tokens=5,
        )
    assert resp.choices[0].message.content == "The capital of France is"
    assert resp.choices[0].finish_reason == "length"
    assert resp.usage is not None
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens, resp.usage.total_tokens) == (
        15,
        5,
        20,
    )
    sent = upstream.received[0]
    assert sent.headers["x-goog-api-key"] == "AIza-test-key"
    assert "key" not in sent.query and "Authorization" not in sent.headers
    assert sent.json == {
        "contents": [{"role": "user", "parts": [{"text": "What is the capital of France?"}]}],
        "systemInstruction": {"parts": [{"text": "You are a helpful chatbot."}]},
        "generationConfig": {"maxOutputTokens": 5},
    }


async def test_api_stream_text_with_usage(upstream: FakeUpstream) -> None:
    rec = recorded("pydantic-ai--test_google_model_stream.yaml")
    upstream.route(f"{API_PATH}:streamGenerateContent", stream_reply(rec.body, split=11))
    async with run_gateway(api_config(upstream)) as gw:
        stream = await sdk(gw).chat.completions.create(
            model="gpt-4o", messages=MSG, stream=True, stream_options={"include_usage": True}
        )
        chunks = [c async for c in stream]
    assert upstream.received[0].query == {"alt": "sse"}
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "The capital of France is Paris.\n"
    finals = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finals == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == 21


async def test_api_tool_call_and_signature_round_trip_through_the_sdk(
    upstream: FakeUpstream,
) -> None:
    rec = recorded("pydantic-ai--test_tool_choice_matrix[required-google].yaml")
    signature = codec.loads(rec.body)["candidates"][0]["content"]["parts"][0]["thoughtSignature"]
    final = {
        "candidates": [
            {
                "content": {"role": "model", "parts": [{"text": "It is 22C."}]},
                "finishReason": "STOP",
            }
        ],
        "usageMetadata": {"promptTokenCount": 30, "candidatesTokenCount": 5, "totalTokenCount": 35},
    }
    replies = iter([rec.body, codec.dumps(final)])

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(body=next(replies), content_type="application/json")

    upstream.route(f"{API_PATH}:generateContent", handler)
    async with run_gateway(api_config(upstream)) as gw:
        client = sdk(gw)
        messages: list[Any] = [{"role": "user", "content": "What's the weather in Paris?"}]
        first = await client.chat.completions.create(
            model="gpt-4o", messages=messages, tools=TOOLS, tool_choice="required"
        )
        msg = first.choices[0].message
        assert first.choices[0].finish_reason == "tool_calls"
        assert msg.tool_calls is not None and len(msg.tool_calls) == 1
        call = msg.tool_calls[0]
        assert call.function.name == "get_weather"  # type: ignore[union-attr]
        assert codec.loads(call.function.arguments) == {"city": "Paris"}  # type: ignore[union-attr]
        # The usual client loop: append the SDK's message object as is, then the result.
        messages.append(msg)
        messages.append({"role": "tool", "tool_call_id": call.id, "content": "22C"})
        second = await client.chat.completions.create(
            model="gpt-4o", messages=messages, tools=TOOLS
        )
    assert second.choices[0].message.content == "It is 22C."
    first_body = upstream.received[0].json
    assert first_body["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}
    assert first_body["tools"][0]["functionDeclarations"][0]["parameters"] == {
        "type": "OBJECT",
        "properties": {"city": {"type": "STRING"}},
        "required": ["city"],
    }
    replay = upstream.received[1].json["contents"]
    assert replay[1] == {
        "role": "model",
        "parts": [
            {
                "functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                "thoughtSignature": signature,
            }
        ],
    }
    assert replay[2] == {
        "role": "user",
        "parts": [{"functionResponse": {"name": "get_weather", "response": {"output": "22C"}}}],
    }


async def test_api_stream_parallel_tool_calls(upstream: FakeUpstream) -> None:
    event = {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [
                        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
                        {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}},
                    ],
                },
                "finishReason": "STOP",
            }
        ],
        "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 8, "totalTokenCount": 18},
    }
    body = b"data: " + codec.dumps(event) + b"\r\n\r\n"
    upstream.route(f"{API_PATH}:streamGenerateContent", stream_reply(body, split=5))
    async with run_gateway(api_config(upstream)) as gw:
        stream = await sdk(gw).chat.completions.create(
            model="gpt-4o", messages=MSG, tools=TOOLS, stream=True
        )
        chunks = [c async for c in stream]
    deltas = [tc for c in chunks for tc in (c.choices[0].delta.tool_calls or [])]
    assert [d.index for d in deltas] == [0, 1]
    assert len({d.id for d in deltas}) == 2
    assert [codec.loads(d.function.arguments) for d in deltas] == [  # type: ignore[union-attr, arg-type]
        {"city": "Paris"},
        {"city": "Rome"},
    ]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


async def test_api_recorded_stream_tool_call(upstream: FakeUpstream) -> None:
    payloads = load_chunks(fixture_path("gemini", "vercel-ai--google-tool-call.chunks.txt"))
    upstream.route(
        f"{API_PATH}:streamGenerateContent", stream_reply(chunks_as_sse(payloads), split=64)
    )
    async with run_gateway(api_config(upstream)) as gw:
        stream = await sdk(gw).chat.completions.create(
            model="gpt-4o", messages=MSG, tools=TOOLS, stream=True
        )
        chunks = [c async for c in stream]
    deltas = [tc for c in chunks for tc in (c.choices[0].delta.tool_calls or [])]
    assert len(deltas) == 1 and deltas[0].function is not None
    assert deltas[0].function.name == "weather"
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


async def test_api_images_data_url_and_remote_url(upstream: FakeUpstream) -> None:
    rec = recorded("pydantic-ai--test_google_model_image_url_input.yaml", 1)
    upstream.route(f"{API_PATH}:generateContent", json_reply(rec.body))
    upstream.route("/img.png", _image_response)
    data_url = "data:image/png;base64," + base64.b64encode(PNG).decode()
    async with run_gateway(api_config(upstream)) as gw:
        resp = await sdk(gw).chat.completions.create(
            model="gpt-4o",
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is this vegetable?"},
                        {"type": "image_url", "image_url": {"url": data_url}},
                        {"type": "image_url", "image_url": {"url": f"{upstream.url}/img.png"}},
                    ],
                }
            ],
        )
    assert resp.choices[0].message.content == "That is a potato."
    sent = next(r for r in upstream.received if r.path.endswith(":generateContent")).json
    parts = sent["contents"][0]["parts"]
    assert parts[0] == {"text": "What is this vegetable?"}
    assert parts[1] == {
        "inlineData": {"mimeType": "image/png", "data": base64.b64encode(PNG).decode()}
    }
    assert parts[2] == {
        "inlineData": {"mimeType": "image/png", "data": base64.b64encode(PNG).decode()}
    }


async def _image_response(request: web.Request) -> web.StreamResponse:
    return web.Response(body=PNG, content_type="image/png")


async def test_api_errors_map_to_sdk_exceptions(upstream: FakeUpstream) -> None:
    not_found = recorded("pydantic-ai--test_model_name_suggestion[google].yaml")
    quota = fixture_path("gemini", "vercel-ai--google-429-retry-info.json").read_bytes()
    bad = {
        "error": {
            "code": 400,
            "message": 'Invalid JSON payload received. Unknown name "foo"',
            "status": "INVALID_ARGUMENT",
        }
    }
    upstream.route(f"{API_PATH}:generateContent", json_reply(not_found.body, status=404))
    upstream.route("/v1beta/models/quota:generateContent", json_reply(quota, status=429))
    upstream.route("/v1beta/models/bad:generateContent", json_reply(bad, status=400))
    cfg = api_config(
        upstream, modelMapping={"gpt-4o": "gemini-2.5-flash", "quota": "quota", "bad": "bad"}
    )
    async with run_gateway(cfg) as gw:
        client = sdk(gw)
        with pytest.raises(openai.NotFoundError) as nf:
            await client.chat.completions.create(model="gpt-4o", messages=MSG)
        assert "is not found for API version v1beta" in nf.value.message
        with pytest.raises(openai.RateLimitError) as rl:
            await client.chat.completions.create(model="quota", messages=MSG)
        assert rl.value.response.headers["retry-after"] == "35"
        with pytest.raises(openai.BadRequestError) as br:
            await client.chat.completions.create(model="bad", messages=MSG)
        assert br.value.code == "invalid_argument"
        assert 'Unknown name "foo"' in br.value.message


async def test_api_unsupported_parameter_is_a_400_before_any_upstream_call(
    upstream: FakeUpstream,
) -> None:
    async with run_gateway(api_config(upstream)) as gw:
        with pytest.raises(openai.BadRequestError) as info:
            await sdk(gw).chat.completions.create(model="gpt-4o", messages=MSG, logit_bias={"1": 5})
    assert info.value.param == "logit_bias"
    assert upstream.received == []


async def test_api_mid_stream_error_event(upstream: FakeUpstream) -> None:
    first = recorded("pydantic-ai--test_google_model_stream.yaml").body.split(b"\r\n\r\n")[0]
    err = {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}
    body = first + b"\r\n\r\ndata: " + codec.dumps(err) + b"\r\n\r\n"
    upstream.route(f"{API_PATH}:streamGenerateContent", stream_reply(body))
    async with run_gateway(api_config(upstream)) as gw:
        stream = await sdk(gw).chat.completions.create(model="gpt-4o", messages=MSG, stream=True)
        got: list[Any] = []
        with pytest.raises(openai.APIError) as info:
            async for chunk in stream:
                got.append(chunk)
    assert "The model is overloaded." in info.value.message
    assert "".join(c.choices[0].delta.content or "" for c in got) == "The"


async def test_api_cut_stream_and_trailing_raw_error(upstream: FakeUpstream) -> None:
    first = recorded("pydantic-ai--test_google_model_stream.yaml").body.split(b"\r\n\r\n")[0]
    trailing = b'{\n  "error": {\n    "code": 500,\n    "message": "Internal error encountered.",\n    "status": "INTERNAL"\n  }\n}\n'
    upstream.route(f"{API_PATH}:streamGenerateContent", stream_reply(first + b"\r\n\r\n"))
    upstream.route(
        "/v1beta/models/trail:streamGenerateContent", stream_reply(first + b"\r\n\r\n" + trailing)
    )
    cfg = api_config(upstream, modelMapping={"gpt-4o": "gemini-2.5-flash", "trail": "trail"})
    async with run_gateway(cfg) as gw:
        client = sdk(gw)
        stream = await client.chat.completions.create(model="gpt-4o", messages=MSG, stream=True)
        with pytest.raises(openai.APIError) as cut:
            async for _ in stream:
                pass
        assert "before the answer was finished" in cut.value.message
        stream = await client.chat.completions.create(model="trail", messages=MSG, stream=True)
        with pytest.raises(openai.APIError) as trail:
            async for _ in stream:
                pass
        assert "Internal error encountered." in trail.value.message


# ---------------------------------------------------------------- Vertex shape


async def test_vertex_service_account_token_reaches_vertex(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    tokens = TokenServer(expires_in=3600)
    upstream.route("/token", tokens)
    sa = write_service_account(tmp_path, f"{upstream.url}/token")
    rec = recorded("pydantic-ai--test_google_model_vertex_provider.yaml")
    upstream.route(f"{VERTEX_PATH}:generateContent", json_reply(rec.body))
    stream_rec = recorded("pydantic-ai--test_google_vertex_service_tier_flex_stream.yaml")
    upstream.route(f"{VERTEX_PATH}:streamGenerateContent", stream_reply(stream_rec.body, split=13))
    async with run_gateway(vertex_config(upstream, credentialsFile=str(sa))) as gw:
        client = sdk(gw)
        resp = await client.chat.completions.create(model="gpt-4o", messages=MSG)
        stream = await client.chat.completions.create(model="gpt-4o", messages=MSG, stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert resp.choices[0].message.content == "The capital of France is Paris.\n"
    assert text == "OK"
    calls = [r for r in upstream.received if r.path.startswith("/v1/projects")]
    assert [r.path for r in calls] == [
        f"{VERTEX_PATH}:generateContent",
        f"{VERTEX_PATH}:streamGenerateContent",
    ]
    assert calls[1].query == {"alt": "sse"}
    assert all(r.headers["Authorization"] == "Bearer token-1" for r in calls)
    assert all("x-goog-api-key" not in r.headers for r in calls)
    assert len(tokens.grants) == 1  # cached across requests


async def test_vertex_token_refreshed_before_expiry(tmp_path: Path, upstream: FakeUpstream) -> None:
    tokens = TokenServer(expires_in=200)  # inside the 5-minute margin: refresh every time
    upstream.route("/token", tokens)
    sa = write_service_account(tmp_path, f"{upstream.url}/token")
    upstream.route(
        f"{VERTEX_PATH}:generateContent",
        json_reply(recorded("pydantic-ai--test_google_model_vertex_provider.yaml").body),
    )
    async with run_gateway(vertex_config(upstream, credentialsFile=str(sa))) as gw:
        for _ in range(2):
            await sdk(gw).chat.completions.create(model="gpt-4o", messages=MSG)
    auths = [r.headers["Authorization"] for r in upstream.received if r.path.startswith("/v1/")]
    assert auths == ["Bearer token-1", "Bearer token-2"]


async def test_vertex_401_refreshes_once_and_retries(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    tokens = TokenServer()
    upstream.route("/token", tokens)
    sa = write_service_account(tmp_path, f"{upstream.url}/token")
    ok = recorded("pydantic-ai--test_google_model_vertex_provider.yaml").body
    unauth = {
        "error": {
            "code": 401,
            "message": "Request had invalid authentication credentials.",
            "status": "UNAUTHENTICATED",
        }
    }

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.headers["Authorization"] == "Bearer token-1":
            return web.json_response(unauth, status=401)
        return web.Response(body=ok, content_type="application/json")

    upstream.route(f"{VERTEX_PATH}:generateContent", handler)
    async with run_gateway(vertex_config(upstream, credentialsFile=str(sa))) as gw:
        resp = await sdk(gw).chat.completions.create(model="gpt-4o", messages=MSG)
    assert resp.choices[0].message.content == "The capital of France is Paris.\n"
    auths = [r.headers["Authorization"] for r in upstream.received if r.path.startswith("/v1/")]
    assert auths == ["Bearer token-1", "Bearer token-2"]
    assert len(tokens.grants) == 2


async def test_vertex_persistent_401_is_reported_after_one_retry(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    tokens = TokenServer()
    upstream.route("/token", tokens)
    sa = write_service_account(tmp_path, f"{upstream.url}/token")
    unauth = {"error": {"code": 401, "message": "invalid credentials", "status": "UNAUTHENTICATED"}}
    upstream.route(f"{VERTEX_PATH}:generateContent", json_reply(unauth, status=401))
    async with run_gateway(vertex_config(upstream, credentialsFile=str(sa))) as gw:
        with pytest.raises(openai.APIStatusError) as info:
            await sdk(gw).chat.completions.create(model="gpt-4o", messages=MSG)
    assert info.value.status_code == 502
    assert "(upstream status 401)" in info.value.message
    assert "invalid credentials" not in info.value.message  # upstream auth text is never relayed
    assert len([r for r in upstream.received if r.path.startswith("/v1/")]) == 2


async def test_vertex_static_api_key_is_a_bearer_token(upstream: FakeUpstream) -> None:
    upstream.route(
        f"{VERTEX_PATH}:generateContent",
        json_reply(recorded("pydantic-ai--test_google_model_vertex_provider.yaml").body),
    )
    async with run_gateway(vertex_config(upstream, apiKey="ya29.pasted-token")) as gw:
        await sdk(gw).chat.completions.create(model="gpt-4o", messages=MSG)
    sent = upstream.received[0]
    assert sent.headers["Authorization"] == "Bearer ya29.pasted-token"
    assert sent.json["contents"][0]["role"] == "user"


async def test_vertex_stream_tool_call_signature_round_trip(upstream: FakeUpstream) -> None:
    """Gemini 3 streamed call: a client rebuilding the message from stream deltas
    (no SDK object) still sends the signature back, on the same part."""
    payloads = load_chunks(fixture_path("gemini", "vercel-ai--google-tool-call.chunks.txt"))
    signature = codec.loads(payloads[0])["candidates"][0]["content"]["parts"][0]["thoughtSignature"]
    ok = recorded("pydantic-ai--test_google_model_vertex_provider.yaml").body
    path = (
        "/v1/projects/my-proj/locations/europe-west4/publishers/google/models/gemini-3-pro-preview"
    )
    upstream.route(f"{path}:streamGenerateContent", stream_reply(chunks_as_sse(payloads), split=7))
    upstream.route(f"{path}:generateContent", json_reply(ok))
    cfg = vertex_config(upstream, apiKey="ya29.t", modelMapping={"g3": "gemini-3-pro-preview"})
    async with run_gateway(cfg) as gw:
        client = sdk(gw)
        stream = await client.chat.completions.create(
            model="g3", messages=MSG, tools=TOOLS, stream=True
        )
        calls: dict[int, dict[str, Any]] = {}
        async for chunk in stream:
            for tc in chunk.choices[0].delta.tool_calls or []:
                assert tc.function is not None
                calls[tc.index] = {
                    "id": tc.id,
                    "type": "function",
                    "function": {"name": tc.function.name, "arguments": tc.function.arguments},
                }
        messages: list[Any] = [
            *MSG,
            {"role": "assistant", "content": None, "tool_calls": list(calls.values())},
            {"role": "tool", "tool_call_id": calls[0]["id"], "content": '{"temp": 18}'},
        ]
        await client.chat.completions.create(model="g3", messages=messages, tools=TOOLS)
    replay = upstream.received[1].json["contents"]
    assert replay[1]["parts"] == [
        {
            "functionCall": {"name": "weather", "args": {"location": "San Francisco"}},
            "thoughtSignature": signature,
        }
    ]
    assert replay[2]["parts"] == [
        {"functionResponse": {"name": "weather", "response": {"temp": 18}}}
    ]
