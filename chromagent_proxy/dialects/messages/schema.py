"""Anthropic Messages API, the north side: what clients (Claude Code, the Anthropic SDKs)
send to ``POST /v1/messages`` and ``/v1/messages/count_tokens``.

One tolerant ``Block`` struct covers every content block type (text, image, tool_use,
tool_result, thinking, redacted_thinking, documents, server-tool blocks…): the decoder
(decode.py) checks per type what it needs and names the field when something is missing.
Unknown top-level fields are not kept here (msgspec skips them); the IR path reads them
from the raw body once (decode.extra_fields) and the native path relays the body as is.
"""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import Raw, Struct


class Source(Struct):
    type: str
    media_type: str | None = None
    data: str | None = None
    url: str | None = None


class Block(Struct):
    type: str
    text: str | None = None
    source: Source | None = None
    id: str | None = None
    name: str | None = None
    input: Any = None
    tool_use_id: str | None = None
    content: str | list[Block] | None = None
    is_error: bool | None = None
    thinking: str | None = None
    signature: str | None = None
    data: str | None = None
    cache_control: dict[str, Any] | None = None


class MessageIn(Struct):
    role: str
    content: str | list[Block]


class ToolIn(Struct):
    """A tool as sent. ``description`` and ``input_schema`` stay JSON bytes (``Raw``; empty
    when absent): only translation reads them (``tool_value``), and a coding agent's
    tools are most of its body (Claude Code: 81 of 116 KB), which the anthropic relay sends
    on unread. Building them as Python objects was half the parse (bench/README.md)."""

    name: str
    type: str | None = None  # None / "custom": a client tool; anything else: a server tool
    description: Raw = Raw()  # a JSON string or null (decode.parse_body checks the kind)
    input_schema: Raw = Raw()  # a JSON object or null
    strict: bool | None = None
    cache_control: dict[str, Any] | None = None


def tool_value(raw: Raw) -> Any:
    """A tool's ``description`` / ``input_schema`` as a Python value (None when absent)."""
    return msgspec.json.decode(raw) if raw else None


class ToolChoiceIn(Struct):
    type: str
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class ThinkingIn(Struct):
    type: str
    budget_tokens: int | None = None


class MessagesRequest(Struct):
    model: str
    messages: list[MessageIn]
    max_tokens: int | None = None
    system: str | list[Block] | None = None
    tools: list[ToolIn] | None = None
    tool_choice: ToolChoiceIn | None = None
    thinking: ThinkingIn | None = None
    stop_sequences: list[str] | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    metadata: dict[str, Any] | None = None
    stream: bool | None = None


# Top-level fields MessagesRequest models; everything else in a body is "extra".
KNOWN_FIELDS = frozenset(MessagesRequest.__struct_fields__)
