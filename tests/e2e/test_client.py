"""GatewayClient against a running gateway: non-stream, stream, tools, models, every error type."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from chromagent_proxy import BackendConfig, BackendProvider, DefaultBackendRegistry, GatewayClient
from chromagent_proxy import client as gc
from chromagent_proxy.errors import GatewayError
from chromagent_proxy.schema.openai import ChatCompletionRequest
from tests.support.gateway import run_gateway
from tests.support.routing import TOOLS, backend, error_reply
from tests.support.upstream import FakeUpstream, stream_reply

HI = [{"role": "user", "content": "hello there"}]


class Raiser(BackendProvider):
    """Fails the way ``options`` say: a GatewayError with that status, or a slow answer."""

    type = "raiser"

    async def chat_completion(self, request: ChatCompletionRequest, config: BackendConfig) -> Any:
        opts = config.options
        if "sleep" in opts:
            await asyncio.sleep(opts["sleep"])
        raise GatewayError(
            f"raised {opts.get('status')}",
            status=opts.get("status", 500),
            type=opts.get("type", "api_error"),
            code=opts.get("code"),
            param=opts.get("param"),
        )

    async def chat_completion_stream(
        self, request: ChatCompletionRequest, config: BackendConfig
    ) -> AsyncIterator[Any]:
        raise GatewayError("no", status=500)
        yield  # pragma: no cover


def raiser(model: str, status: int, **opts: Any) -> dict[str, Any]:
    return {
        "id": f"raise-{model}",
        "type": "raiser",
        "options": {"status": status, **opts},
        "modelMapping": {model: model},
    }


@pytest.fixture
async def gateway(upstream: FakeUpstream) -> AsyncIterator[str]:
    registry = DefaultBackendRegistry()
    registry.register_custom_backend("raiser", Raiser)
    broken = stream_reply(
        b'data: {"id":"x","object":"chat.completion.chunk","created":1,"model":"m","choices":'
        b'[{"index":0,"delta":{"role":"assistant","content":"a"}}]}\n\n'
        b'data: {"error": {"message": "went wrong", "type": "server_error", "code": "boom"}}\n\n'
    )
    cfg = {
        "backends": [
            {"id": "echo", "type": "mock", "modelMapping": {"echo": "echo"}},
            {
                "id": "tooly",
                "type": "mock",
                "modelMapping": {"tooly": "tooly"},
                "options": {"toolCall": {"name": "get_weather", "arguments": {"city": "Paris"}}},
            },
            backend(
                upstream,
                "limited",
                error_reply(429, {"Retry-After": "3"}),
                modelMapping={"limited": "l"},
            ),
            backend(upstream, "broken", error_reply(500), modelMapping={"broken": "b"}),
            backend(upstream, "picky", error_reply(422), modelMapping={"picky": "p"}),
            backend(upstream, "midstream", broken, modelMapping={"midstream": "m"}),
            raiser("unauth", 401, type="authentication_error", code="invalid_api_key"),
            raiser("forbidden", 403, type="permission_error"),
            raiser("conflict", 409, type="invalid_request_error"),
            raiser("slow", 500, sleep=2),
        ],
        "maxBodyBytes": 4096,
    }
    async with run_gateway(cfg, registry) as gw:
        yield gw.url


async def test_non_stream_and_models(gateway: str) -> None:
    async with GatewayClient(base_url=gateway, api_key="k", timeout=10) as client:
        done = await client.chat.completions.create(
            model="echo", messages=HI, temperature=0.1, user=None
        )
        assert isinstance(done, gc.ChatCompletion)
        assert done.choices[0].message.content == "hello there"
        assert done.choices[0].message.tool_calls is None
        assert done.choices[0].finish_reason == "stop"
        assert done.usage is not None and done.usage.completion_tokens == 2
        assert msgspec.to_builtins(done)["model"] == "echo"
        models = await client.models.list()
        assert {"echo", "tooly", "limited"} <= {m.id for m in models.data}
        assert next(m for m in models.data if m.id == "tooly").owned_by == "tooly"
    assert client._session is None


async def test_stream(gateway: str) -> None:
    client = GatewayClient(base_url=gateway + "/v1")
    stream = await client.chat.completions.create(
        model="echo", messages=HI, stream=True, stream_options={"include_usage": True}
    )
    chunks = [c async for c in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "hello there"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert stream.headers["x-chromagent-backend"] == "echo"
    await client.close()


async def test_tools_stream_and_not(gateway: str) -> None:
    async with GatewayClient(gateway) as client:
        done = await client.chat.completions.create(model="tooly", messages=HI, tools=TOOLS)
        call = (done.choices[0].message.tool_calls or [])[0]
        assert (call.type, call.function.name, call.function.arguments) == (
            "function",
            "get_weather",
            '{"city":"Paris"}',
        )
        assert call.id.startswith("call_")
        assert done.choices[0].finish_reason == "tool_calls"
        async with await client.chat.completions.create(
            model="tooly", messages=HI, tools=TOOLS, stream=True
        ) as stream:
            chunks = [c async for c in stream]
        deltas = [tc for c in chunks for tc in (c.choices[0].delta.tool_calls or [])]
        assert deltas[0].function is not None and deltas[0].function.name == "get_weather"
        assert chunks[-1].choices[0].finish_reason == "tool_calls"


ERRORS: list[tuple[str, type[gc.APIStatusError], int, str | None, str | None]] = [
    ("unauth", gc.AuthenticationError, 401, "authentication_error", "invalid_api_key"),
    ("forbidden", gc.PermissionDeniedError, 403, "permission_error", None),
    ("no-such-model", gc.NotFoundError, 404, "invalid_request_error", "model_not_found"),
    ("conflict", gc.ConflictError, 409, "invalid_request_error", None),
    ("picky", gc.UnprocessableEntityError, 422, "invalid_request_error", "upstream_error"),
    ("limited", gc.RateLimitError, 429, "rate_limit_error", "rate_limit_exceeded"),
    ("broken", gc.InternalServerError, 502, "api_error", "upstream_error"),
]


@pytest.mark.parametrize(("model", "cls", "status", "etype", "code"), ERRORS)
async def test_each_status_error(
    gateway: str,
    model: str,
    cls: type[gc.APIStatusError],
    status: int,
    etype: str,
    code: str | None,
) -> None:
    async with GatewayClient(gateway) as client:
        with pytest.raises(cls) as info:
            await client.chat.completions.create(model=model, messages=HI)
    err = info.value
    assert isinstance(err, gc.APIStatusError) and isinstance(err, gc.APIError)
    assert (err.status, err.status_code, err.type, err.code) == (status, status, etype, code)
    assert err.message and err.request_id
    if model == "limited":
        assert err.headers["Retry-After"] == "3"


async def test_bad_request_carries_param_and_too_large(gateway: str) -> None:
    async with GatewayClient(gateway) as client:
        with pytest.raises(gc.BadRequestError) as info:
            await client.chat.completions.create(model="echo", messages=[])
        assert (info.value.param, info.value.type) == ("messages", "invalid_request_error")
        with pytest.raises(gc.BadRequestError) as info:
            await client.chat.completions.create(
                model="echo", messages=HI, tools=TOOLS, stream=True, n=0
            )
        assert info.value.param == "n"
        with pytest.raises(gc.RequestTooLargeError) as big:
            await client.chat.completions.create(
                model="echo", messages=[{"role": "user", "content": "x" * 8000}]
            )
        assert big.value.status == 413 and big.value.code == "request_too_large"


async def test_mid_stream_error_connection_and_timeout(gateway: str) -> None:
    async with GatewayClient(gateway) as client:
        stream = await client.chat.completions.create(model="midstream", messages=HI, stream=True)
        got: list[str | None] = []
        with pytest.raises(gc.APIError) as info:
            async for chunk in stream:
                got.append(chunk.choices[0].delta.content)
        assert got == ["a"]
        assert info.value.status is None and "went wrong" in info.value.message
    async with GatewayClient(gateway, timeout=0.2) as client:
        with pytest.raises(gc.APITimeoutError):
            await client.chat.completions.create(model="slow", messages=HI)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with GatewayClient(f"http://127.0.0.1:{port}") as client:
        with pytest.raises(gc.APIConnectionError) as conn:
            await client.models.list()
        assert not isinstance(conn.value, gc.APITimeoutError)
