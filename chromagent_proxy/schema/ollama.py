"""Ollama native ``/api/chat`` response objects (wire-formats.md §6.2).

One struct decodes every NDJSON line: content/thinking deltas, whole tool
calls, the final ``done: true`` object with its counters, and an
``{"error": "..."}`` line. Unknown fields (durations, logprobs) are ignored.
"""

from __future__ import annotations

from typing import Any

from msgspec import Struct


class OllamaFunction(Struct):
    name: str = ""
    # A JSON object on the wire; absent in some recordings, a string from odd templates.
    arguments: Any = None
    index: int | None = None


class OllamaToolCall(Struct):
    function: OllamaFunction
    id: str | None = None


class OllamaMessage(Struct):
    role: str = "assistant"
    content: str = ""
    thinking: str | None = None
    tool_calls: list[OllamaToolCall] | None = None


class ChatResponse(Struct):
    model: str = ""
    message: OllamaMessage | None = None
    done: bool = False
    done_reason: str | None = None
    # Counters are omitempty upstream: absent means 0 (e.g. a full KV-cache hit).
    prompt_eval_count: int = 0
    eval_count: int = 0
    # An {"error": "..."} line (mid-stream failure); a string from Ollama, anything from proxies.
    error: Any = None


class TagModel(Struct):
    name: str = ""
    model: str = ""


class TagList(Struct):
    models: list[TagModel] | None = None
