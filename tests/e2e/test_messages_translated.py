"""POST /v1/messages to a translating backend (the IR path), driven by the official
anthropic SDK: the Messages stream grammar from IR events, tool input as input_json_delta,
the backend's own state restored from the gateway-made thinking signature next turn, a
forged signature dropped, mid-stream errors as ``event: error``, non-stream Message JSON.

The backend here is a custom IR backend (``translates = True``) that plays a scripted
Gemini-like turn and records the ir.Request it gets; the built-in Gemini / Ollama /
OpenAI backends run the same path."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import anthropic
import pytest

from chromagent_proxy import BackendProvider, DefaultBackendRegistry
from chromagent_proxy.backends.base import RequestContext
from chromagent_proxy.core import ir
from chromagent_proxy.errors import UpstreamError
from tests.support import claude_code as cc
from tests.support.anthropic_sdk import anthropic_client, close_anthropic_clients  # noqa: F401
from tests.support.gateway import run_gateway

MODEL = "claude-sonnet-4-5"
SIG = "c2NyaXB0ZWQtdGhvdWdodA=="  # the backend's own opaque state
CALL_SIG = "Y2FsbC1zdGF0ZQ=="


class Scripted(BackendProvider):
    type: ClassVar[str] = "scripted"
    dialect: ClassVar[str] = "scripted"
    translates: ClassVar[bool] = True
    seen: ClassVar[list[ir.Request]] = []
    fail_mid_stream: ClassVar[bool] = False

    def supports_tools(self) -> bool:
        return True

    def supports_images(self) -> bool:
        return True

    def _turn(self, request: ir.Request) -> list[list[ir.Event]]:
        self.seen.append(request)
        if request.messages[-1].parts and isinstance(request.messages[-1].parts[0], ir.ToolResult):
            return [
                [ir.Start(model="scripted-1")],
                [ir.TextDelta("The directory "), ir.TextDelta("has 3 files.")],
                [ir.Finish("stop"), ir.Usage(input=300, output=9, cache_read=100)],
            ]
        return [
            [ir.Start(model="scripted-1"), ir.Usage(input=250)],
            [ir.ThinkingDelta("Listing ", origin="scripted")],
            [ir.ThinkingDelta("first.", signature=SIG, origin="scripted")],
            [
                ir.ToolCallStart(0, "call_a", "Shell", signature=CALL_SIG, origin="scripted"),
                ir.ToolCallDelta(0, '{"command": "ls",'),
            ],
            [ir.ToolCallDelta(0, ' "description": "List files"}')],
            [ir.Finish("tool_calls"), ir.Usage(input=250, output=30, reasoning=12)],
        ]

    async def generate(self, request: ir.Request, ctx: RequestContext) -> list[ir.Event]:
        return [ev for batch in self._turn(request) for ev in batch]

    async def generate_stream(
        self, request: ir.Request, ctx: RequestContext
    ) -> AsyncIterator[list[ir.Event]]:
        for n, batch in enumerate(self._turn(request)):
            if self.fail_mid_stream and n == 2:
                raise UpstreamError("backend 'scripted' went away", status=529, retryable=False)
            yield batch


@pytest.fixture
def registry() -> DefaultBackendRegistry:
    Scripted.seen = []
    Scripted.fail_mid_stream = False
    reg = DefaultBackendRegistry()
    reg.register_custom_backend("scripted", Scripted)
    return reg


CFG = {
    "backends": [{"id": "s1", "type": "scripted", "modelMapping": {MODEL: "scripted-1"}}],
    "defaultBackend": "s1",
}


client = anthropic_client


async def test_tool_loop_restores_backend_state(registry: DefaultBackendRegistry) -> None:
    messages: list[dict[str, Any]] = [cc.first_user_turn("What is here?")]
    async with run_gateway(CFG, registry) as gw:
        c = client(gw)
        body = cc.request(MODEL, messages)
        body.pop("stream")
        async with c.beta.messages.stream(**body, extra_headers=cc.HEADERS) as stream:
            types = [ev.type async for ev in stream]
            first = await stream.get_final_message()
        assert types[0] == "message_start" and types[-1] == "message_stop"
        assert [b.type for b in first.content] == ["thinking", "tool_use"]
        thinking: Any = first.content[0]
        call: Any = first.content[1]
        assert thinking.thinking == "Listing first." and thinking.signature.startswith("cgs1_")
        assert call.input == {"command": "ls", "description": "List files"}  # never {}
        assert first.stop_reason == "tool_use"
        assert first.usage.input_tokens == 250 and first.usage.output_tokens == 42
        assert first.usage.cache_read_input_tokens == 0

        messages += [
            {
                "role": "assistant",
                "content": [b.model_dump(exclude_none=True) for b in first.content],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "a b c"}],
            },
        ]
        body = cc.request(MODEL, messages)
        body.pop("stream")
        async with c.beta.messages.stream(**body) as stream:
            second = await stream.get_final_message()
        assert second.content[0].text == "The directory has 3 files."  # type: ignore[union-attr]
        assert second.stop_reason == "end_turn"
        assert second.usage.cache_read_input_tokens == 100

    req = Scripted.seen[1]
    assert req.model == "scripted-1" and req.dialect == "messages"
    assert req.system is not None and len(req.system) == 3 and req.system[2].cache == ir.EPHEMERAL
    assert req.tools is not None and len(req.tools) == 24
    assert req.settings.reasoning == ir.Reasoning(budget_tokens=31999, summary=True)
    assert req.extra is not None and "context_management" in req.extra
    assert req.session_id == cc.SESSION
    replay = req.messages[1].parts
    assert replay[0] == ir.Thinking("Listing first.", SIG, "scripted")
    assert isinstance(replay[1], ir.ToolCall)
    assert (replay[1].id, replay[1].signature, replay[1].origin) == ("call_a", CALL_SIG, "scripted")
    assert json.loads(replay[1].arguments) == {"command": "ls", "description": "List files"}
    result = req.messages[2].parts[0]
    assert isinstance(result, ir.ToolResult) and result.call_id == "call_a"


async def test_forged_signature_is_dropped(registry: DefaultBackendRegistry) -> None:
    forged = "cgs1_" + "A" * 60
    messages = [
        {"role": "user", "content": "hi"},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "t", "signature": forged},
                {"type": "tool_use", "id": "call_a", "name": "Shell", "input": {"command": "ls"}},
            ],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "call_a", "content": "x"}],
        },
    ]
    async with run_gateway(CFG, registry) as gw:
        await client(gw).messages.create(model=MODEL, max_tokens=50, messages=messages)  # type: ignore[arg-type]
    replay = Scripted.seen[0].messages[1].parts
    assert replay[0] == ir.Thinking("t")
    assert isinstance(replay[1], ir.ToolCall) and replay[1].signature is None


async def test_non_stream_message(registry: DefaultBackendRegistry) -> None:
    async with run_gateway(CFG, registry) as gw:
        msg = await client(gw).messages.create(
            model=MODEL,
            max_tokens=100,
            messages=[{"role": "user", "content": "ls"}],
            thinking={"type": "enabled", "budget_tokens": 50},
        )
    assert msg.model == MODEL or msg.model == "scripted-1"
    assert [b.type for b in msg.content] == ["thinking", "tool_use"]
    assert msg.content[1].input == {"command": "ls", "description": "List files"}  # type: ignore[union-attr]
    assert msg.stop_reason == "tool_use"
    assert msg.usage.output_tokens == 42


async def test_mid_stream_failure_is_an_error_event(registry: DefaultBackendRegistry) -> None:
    Scripted.fail_mid_stream = True
    async with run_gateway(CFG, registry) as gw:
        with pytest.raises(anthropic.APIStatusError) as info:
            async with client(gw).messages.stream(
                model=MODEL, max_tokens=100, messages=[{"role": "user", "content": "ls"}]
            ) as stream:
                async for _ in stream:
                    pass
    err: Any = info.value
    assert err.body["type"] == "error" and err.body["error"]["type"] == "overloaded_error"


async def test_server_tools_refused_on_translating_backends(
    registry: DefaultBackendRegistry,
) -> None:
    async with run_gateway(CFG, registry) as gw:
        with pytest.raises(anthropic.BadRequestError) as info:
            await client(gw).messages.create(
                model=MODEL,
                max_tokens=10,
                messages=[{"role": "user", "content": "x"}],
                tools=[{"type": "web_search_20250305", "name": "web_search"}],
            )
    assert "web_search" in info.value.body["error"]["message"]  # type: ignore[index]
    assert Scripted.seen == []


async def test_count_tokens_estimate(registry: DefaultBackendRegistry) -> None:
    async with run_gateway(CFG, registry) as gw:
        small = await client(gw).messages.count_tokens(
            model=MODEL, messages=[{"role": "user", "content": "hi"}]
        )
        shaped: Any = {
            "messages": [cc.first_user_turn("x" * 4000)],
            "system": cc.system(),
            "tools": cc.tools(),
        }
        big = await client(gw).messages.count_tokens(model=MODEL, **shaped)
    assert 1 <= small.input_tokens < 20
    assert big.input_tokens > 1000 + small.input_tokens
