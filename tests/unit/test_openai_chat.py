"""IR → Chat Completions body (backends/openai_chat.py) and custom Chat-Completions-only
backends served to other dialects through the adapter (backends/adapter.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from chromagent_proxy import codec
from chromagent_proxy.backends.adapter import legacy_generate, legacy_generate_stream
from chromagent_proxy.backends.base import (
    BackendProvider,
    CompletionResult,
    RequestContext,
    StreamPart,
)
from chromagent_proxy.backends.openai_chat import build
from chromagent_proxy.config import BackendConfig
from chromagent_proxy.core import ir
from chromagent_proxy.errors import UpstreamProtocolError
from chromagent_proxy.schema.openai import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChunkChoice,
    Delta,
)
from chromagent_proxy.sse import framed


def conversation() -> ir.Request:
    return ir.Request(
        model="gpt-x",
        dialect="messages",
        system=[ir.Text("Be brief.", ir.EPHEMERAL)],
        messages=[
            ir.Message(
                "user",
                [
                    ir.Text("What is this?"),
                    ir.Image(media_type="image/png", data="iVBORw0KGgo=", detail="low"),
                    ir.Image(url="https://img.test/a.png"),
                ],
            ),
            ir.Message(
                "assistant",
                [
                    ir.Thinking("hmm", signature="sig", origin="anthropic"),
                    ir.Text("Let me look."),
                    ir.ToolCall("c1", "look", '{"q": 1}', signature="s", origin="gemini"),
                ],
            ),
            ir.Message(
                "user",
                [ir.ToolResult("c1", [ir.Text("a cat")], is_error=False), ir.Text("Sure?")],
            ),
        ],
        tools=[ir.Tool("look", "looks", {"type": "object"}, cache=ir.EPHEMERAL)],
        tool_choice=ir.ToolChoice("tool", name="look", parallel=False),
        settings=ir.Settings(
            max_tokens=100,
            temperature=0.5,
            stop=["END"],
            top_k=5,  # no Chat Completions equivalent: not sent
            reasoning=ir.Reasoning(effort="low"),
            response_format=ir.ResponseFormat("json_schema", name="r", schema={"type": "object"}),
        ),
        user="u1",
    )


def test_build_exact_body_thinking_signatures_and_cache_marks_dropped() -> None:
    assert build(conversation(), stream=True) == {
        "model": "gpt-x",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {
                        "type": "image_url",
                        "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"},
                    },
                    {"type": "image_url", "image_url": {"url": "https://img.test/a.png"}},
                ],
            },
            {
                "role": "assistant",
                "content": "Let me look.",
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "look", "arguments": '{"q": 1}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "a cat"},
            {"role": "user", "content": "Sure?"},
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "look",
                    "description": "looks",
                    "parameters": {"type": "object"},
                },
            }
        ],
        "tool_choice": {"type": "function", "function": {"name": "look"}},
        "parallel_tool_calls": False,
        "max_completion_tokens": 100,
        "temperature": 0.5,
        "stop": ["END"],
        "user": "u1",
        "reasoning_effort": "low",
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "r", "schema": {"type": "object"}},
        },
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def test_built_body_is_a_valid_chat_request() -> None:
    req = codec.convert(build(conversation(), stream=False), ChatCompletionRequest)
    assert req.model == "gpt-x" and req.max_completion_tokens == 100 and not req.stream


# ---------------------------------------------------------------- the adapter


class ChatOnly(BackendProvider):
    """A custom backend written against the documented Chat Completions contract."""

    def __init__(self, parts: list[StreamPart], result: CompletionResult | None = None) -> None:
        super().__init__()
        self.config = BackendConfig(id="custom1", type="custom")
        self.parts = parts
        self.result = result
        self.seen: list[ChatCompletionRequest] = []

    async def chat_completion(
        self, request: ChatCompletionRequest, config: BackendConfig
    ) -> CompletionResult:
        self.seen.append(request)
        assert self.result is not None
        return self.result

    async def chat_completion_stream(
        self, request: ChatCompletionRequest, config: BackendConfig
    ) -> AsyncIterator[StreamPart]:
        self.seen.append(request)
        for part in self.parts:
            yield part


CTX = RequestContext("r1", b"", "client-model", "gpt-x", "custom1")


def _chunk(delta: Delta, finish: str | None = None) -> ChatCompletionChunk:
    return ChatCompletionChunk("c", 1, "gpt-x", [ChunkChoice(0, delta, finish)])


async def collect(provider: BackendProvider) -> list[list[ir.Event]]:
    return [batch async for batch in legacy_generate_stream(provider, conversation(), CTX)]


async def test_adapter_stream_takes_every_documented_part_kind() -> None:
    usage = {
        "prompt_tokens": 7,
        "completion_tokens": 3,
        "total_tokens": 10,
        "prompt_tokens_details": {"cached_tokens": 2},
    }
    provider = ChatOnly(
        [
            _chunk(Delta(role="assistant", content="He")),  # a struct
            {"id": "c", "choices": [{"index": 0, "delta": {"content": "llo"}}]},  # a dict
            b'{"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"t1",'
            b'"type":"function","function":{"name":"look","arguments":"{}"}}]}}]}',  # bytes
            framed(  # framed SSE, several events in one part
                [
                    b'{"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}',
                    codec.dumps({"choices": [], "usage": usage}),
                ]
            ),
        ]
    )
    batches = await collect(provider)
    events = [ev for b in batches for ev in b]
    assert [type(ev).__name__ for ev in events] == [
        "Start",
        "TextDelta",
        "TextDelta",
        "ToolCallStart",
        "ToolCallDelta",
        "Finish",
        "Usage",
    ]
    assert events[-2] == ir.Finish("tool_calls")
    assert events[-1] == ir.Usage(input=5, output=3, cache_read=2)
    (seen,) = provider.seen
    assert seen.stream and seen.model == "gpt-x"
    assert seen.stream_options is not None and seen.stream_options.include_usage


async def test_adapter_stream_without_finish_reason_ends_as_stop() -> None:
    provider = ChatOnly([{"choices": [{"index": 0, "delta": {"content": "hi"}}]}])
    events = [ev for b in await collect(provider) for ev in b]
    assert events[-1] == ir.Finish("stop")


async def test_adapter_stream_part_that_is_not_a_chunk_is_a_protocol_error() -> None:
    provider = ChatOnly([b"not json"])
    with pytest.raises(UpstreamProtocolError, match="custom1"):
        await collect(provider)


@pytest.mark.parametrize("kind", ["dict", "bytes"])
async def test_adapter_non_stream(kind: str) -> None:
    result: dict[str, Any] = {
        "id": "c",
        "model": "gpt-x",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 4, "completion_tokens": 1, "total_tokens": 5},
    }
    provider = ChatOnly([], result if kind == "dict" else codec.dumps(result))
    events = await legacy_generate(provider, conversation(), CTX)
    assert events == [
        ir.Start(model="gpt-x", id="c"),
        ir.TextDelta("Hi"),
        ir.Finish("stop"),
        ir.Usage(input=4, output=1),
    ]
    assert not provider.seen[0].stream
