"""Response types of GatewayClient: msgspec Structs with attribute access, like the SDK's models."""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import Struct

# ---------------------------------------------------------------- response types
# Lenient on purpose: every field has a default and unknown fields are ignored,
# so any OpenAI-compatible server's answer decodes.


class FunctionCall(Struct):
    name: str = ""
    arguments: str = ""


class ToolCall(Struct):
    id: str = ""
    function: FunctionCall = msgspec.field(default_factory=FunctionCall)
    type: str = "function"


class ChatCompletionMessage(Struct):
    role: str = "assistant"
    content: str | None = None
    tool_calls: list[ToolCall] | None = None
    reasoning_content: str | None = None
    refusal: str | None = None


class Usage(Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    prompt_tokens_details: dict[str, Any] | None = None
    completion_tokens_details: dict[str, Any] | None = None


class Choice(Struct):
    index: int = 0
    message: ChatCompletionMessage = msgspec.field(default_factory=ChatCompletionMessage)
    finish_reason: str | None = None
    logprobs: Any = None


class ChatCompletion(Struct):
    id: str = ""
    object: str = "chat.completion"
    created: int = 0
    model: str = ""
    choices: list[Choice] = msgspec.field(default_factory=list)
    usage: Usage | None = None
    system_fingerprint: str | None = None


class FunctionDelta(Struct):
    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(Struct):
    index: int = 0
    id: str | None = None
    type: str | None = None
    function: FunctionDelta | None = None


class Delta(Struct):
    role: str | None = None
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None
    reasoning_content: str | None = None
    refusal: str | None = None


class ChunkChoice(Struct):
    index: int = 0
    delta: Delta = msgspec.field(default_factory=Delta)
    finish_reason: str | None = None
    logprobs: Any = None


class ChatCompletionChunk(Struct):
    id: str = ""
    object: str = "chat.completion.chunk"
    created: int = 0
    model: str = ""
    choices: list[ChunkChoice] = msgspec.field(default_factory=list)
    usage: Usage | None = None


class Model(Struct):
    id: str
    object: str = "model"
    created: int = 0
    owned_by: str = ""


class ModelList(Struct):
    data: list[Model] = msgspec.field(default_factory=list)
    object: str = "list"
