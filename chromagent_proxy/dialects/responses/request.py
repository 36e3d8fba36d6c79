"""The OpenAI Responses request body as this gateway reads it, and the fields it refuses.

The struct names only what the gateway uses or must refuse; ``input`` and ``tools`` stay
plain JSON values (``decode.py`` and ``tools.py`` read them), so new item and tool types
from newer clients decode and are judged one by one.
"""

from __future__ import annotations

from typing import Any

import msgspec

from chromagent_proxy.core.errors import InvalidRequest, UnsupportedFeature
from chromagent_proxy.dialects.routed import RoutedDecoder

PURPOSE = "responses.reasoning"
NS_SEP = "__"  # namespace tools are flattened to "<namespace>__<name>" for upstreams
HOSTED_SEARCH = frozenset(
    {"web_search", "web_search_preview", "web_search_2025_08_26", "web_search_preview_2025_03_11"}
)
EFFORTS = {"none", "minimal", "low", "medium", "high", "xhigh", "max"}


class TextFormat(msgspec.Struct):
    type: str = "text"
    name: str | None = None
    schema: dict[str, Any] | None = None
    description: str | None = None
    strict: bool | None = None


class TextConfig(msgspec.Struct):
    format: TextFormat | None = None
    verbosity: str | None = None


class ReasoningConfig(msgspec.Struct):
    effort: str | None = None
    summary: str | None = None
    generate_summary: str | None = None


class ResponsesRequest(msgspec.Struct, omit_defaults=True):
    """The fields this gateway reads; everything else passes through on the native
    relay and is ignored (documented) on translated paths."""

    model: str
    input: str | list[dict[str, Any]] = ""
    instructions: str | None = None
    stream: bool = False
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    reasoning: ReasoningConfig | None = None
    text: TextConfig | None = None
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_logprobs: int | None = None
    store: bool | None = None
    previous_response_id: str | None = None
    conversation: str | dict[str, Any] | None = None
    include: list[str] | None = None
    background: bool | None = None
    prompt: dict[str, Any] | None = None
    metadata: dict[str, str] | None = None
    user: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    service_tier: str | None = None
    truncation: str | None = None


decode_request = RoutedDecoder(ResponsesRequest)


def refuse_unsupported(req: ResponsesRequest) -> None:
    """Fields that need server state or OpenAI-only features this gateway does not offer."""
    if req.background:
        raise UnsupportedFeature(
            "background responses are not supported by this gateway", param="background"
        )
    if req.conversation is not None:
        raise UnsupportedFeature(
            "the Conversations API is not supported by this gateway; send the history in "
            "'input' or use previous_response_id with store: true",
            param="conversation",
        )
    if req.prompt is not None:
        raise UnsupportedFeature("stored prompt templates are OpenAI-only", param="prompt")
    effort = req.reasoning.effort if req.reasoning else None
    if effort is not None and effort not in EFFORTS:
        raise InvalidRequest(
            f"reasoning.effort must be one of {', '.join(sorted(EFFORTS))}",
            param="reasoning.effort",
        )
