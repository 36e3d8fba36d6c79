"""Anthropic Messages API, the south side: what Anthropic (and Claude on Vertex) sends back.

Requests are built as plain dicts (backends/anthropic/request.py) because their
shape varies per block type; responses and stream events are decoded into
these structs once. Every field is optional where the API may omit it, and one
tolerant struct covers each family of events, so an event or block type added
by a newer API version decodes instead of failing (the translator ignores it).
"""

from __future__ import annotations

from typing import Any

from msgspec import Struct


class OutputTokensDetails(Struct):
    thinking_tokens: int | None = None


class Usage(Struct):
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    # Only with the thinking-token-count beta; output_tokens includes them.
    output_tokens_details: OutputTokensDetails | None = None


class ContentBlock(Struct):
    """Any output block: text, tool_use, thinking, redacted_thinking, server-tool blocks."""

    type: str
    text: str | None = None
    id: str | None = None
    name: str | None = None
    input: Any = None
    thinking: str | None = None
    signature: str | None = None
    data: str | None = None


class Message(Struct):
    """A non-stream response body, and ``message_start.message`` in a stream."""

    # "message"; "error" when an upstream answers HTTP 200 with an error envelope.
    type: str = "message"
    id: str = ""
    model: str = ""
    role: str = "assistant"
    content: list[ContentBlock] = []
    stop_reason: str | None = None
    stop_sequence: str | None = None
    usage: Usage | None = None


class EventDelta(Struct):
    """``content_block_delta.delta`` (text/input_json/thinking/signature) or ``message_delta.delta``."""

    type: str | None = None
    text: str | None = None
    partial_json: str | None = None
    thinking: str | None = None
    signature: str | None = None
    stop_reason: str | None = None
    stop_sequence: str | None = None


class ErrorDetail(Struct):
    type: str = "api_error"
    message: str = ""


class StreamEvent(Struct):
    """One SSE event of the Messages stream (the ``type`` says which fields are set)."""

    type: str
    message: Message | None = None
    index: int = 0
    content_block: ContentBlock | None = None
    delta: EventDelta | None = None
    usage: Usage | None = None
    error: ErrorDetail | None = None
