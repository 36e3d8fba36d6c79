"""Gemini ``GenerateContentResponse`` (Gemini API and Vertex AI), decoded typed.

Only what the translators read is declared; everything else is skipped by
msgspec without being materialised. Wire names are lowerCamelCase.
Requests are built as plain dicts in backends/gemini/request.py (they are
written once and never read back).
"""

from __future__ import annotations

from typing import Any

from msgspec import Struct


class _Camel(Struct, rename="camel"):
    pass


class FunctionCall(_Camel):
    name: str = ""
    args: dict[str, Any] | None = None
    id: str | None = None


class Part(_Camel):
    text: str | None = None
    thought: bool | None = None
    thought_signature: str | None = None
    function_call: FunctionCall | None = None


class Content(_Camel):
    role: str | None = None
    parts: list[Part] | None = None


class Candidate(_Camel):
    content: Content | None = None
    finish_reason: str | None = None
    finish_message: str | None = None
    index: int = 0


class PromptFeedback(_Camel):
    block_reason: str | None = None
    block_reason_message: str | None = None


class UsageMetadata(_Camel):
    prompt_token_count: int = 0
    candidates_token_count: int = 0
    thoughts_token_count: int = 0
    tool_use_prompt_token_count: int = 0
    cached_content_token_count: int = 0
    total_token_count: int = 0


class Status(_Camel):
    """``google.rpc.Status``: an error body, or an error event mid-stream."""

    code: int = 0
    message: str = ""
    status: str | None = None
    details: list[dict[str, Any]] | None = None


class GenerateContentResponse(_Camel):
    candidates: list[Candidate] | None = None
    prompt_feedback: PromptFeedback | None = None
    usage_metadata: UsageMetadata | None = None
    model_version: str | None = None
    response_id: str | None = None
    error: Status | None = None
