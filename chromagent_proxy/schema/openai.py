"""OpenAI Chat Completions, the north side: what clients send and receive.

Request structs declare the fields translators use; unknown fields are
ignored here and reach OpenAI-compatible upstreams untouched through the raw
body (see backends/openai.py). Output structs use omit_defaults so clients see
no null noise beyond what OpenAI itself sends.
"""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import Struct, field

# ---------------------------------------------------------------- request


class ImageURL(Struct):
    url: str
    detail: str | None = None


class ContentPart(Struct):
    type: str
    text: str | None = None
    image_url: ImageURL | None = None
    input_audio: dict[str, Any] | None = None
    file: dict[str, Any] | None = None
    # Prompt-cache breakpoint (the LiteLLM / OpenRouter convention), for Anthropic backends.
    cache_control: dict[str, Any] | None = None


class FunctionCall(Struct):
    name: str
    arguments: str = ""


class ToolCall(Struct):
    id: str
    function: FunctionCall
    type: str = "function"


class Message(Struct, omit_defaults=True):
    role: str
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    refusal: str | None = None
    # Reasoning text returned earlier by this gateway; sent back by clients that replay history.
    reasoning_content: str | None = None
    # Provider reasoning blocks with their signatures (Anthropic thinking), replayed verbatim.
    thinking_blocks: list[dict[str, Any]] | None = None
    # Legacy function-calling turn (before tool_calls).
    function_call: FunctionCall | None = None
    cache_control: dict[str, Any] | None = None


class StreamOptions(Struct):
    include_usage: bool = False


class FunctionDef(Struct):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(Struct):
    function: FunctionDef
    type: str = "function"
    cache_control: dict[str, Any] | None = None


class NamedFunction(Struct):
    name: str


class NamedToolChoice(Struct):
    type: str = "function"
    function: NamedFunction | None = None


class JSONSchemaFormat(Struct):
    name: str = "response"
    description: str | None = None
    schema_: dict[str, Any] | None = field(default=None, name="schema")
    strict: bool | None = None


class ResponseFormat(Struct):
    type: str
    json_schema: JSONSchemaFormat | None = None


class ChatCompletionRequest(Struct, omit_defaults=True):
    model: str
    messages: list[Message]
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    temperature: float | None = None
    top_p: float | None = None
    n: int | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    tools: list[Tool] | None = None
    tool_choice: str | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    reasoning_effort: str | None = None
    user: str | None = None
    metadata: dict[str, Any] | None = None
    # Fields the translating backends map, pass or refuse by the one policy table
    # (core/policy.py). Declared so that decision is made on this one decode.
    functions: list[FunctionDef] | None = None
    function_call: str | NamedFunction | None = None
    logit_bias: dict[str, Any] | None = None
    audio: dict[str, Any] | None = None
    modalities: list[str] | None = None
    prediction: dict[str, Any] | None = None
    web_search_options: dict[str, Any] | None = None
    service_tier: str | None = None
    store: bool | None = None
    verbosity: str | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None


# ---------------------------------------------------------------- response


class PromptTokensDetails(Struct, omit_defaults=True):
    cached_tokens: int = 0
    cache_creation_tokens: int | None = None


class CompletionTokensDetails(Struct, omit_defaults=True):
    reasoning_tokens: int = 0


class Usage(Struct, omit_defaults=True):
    # No defaults: OpenAI always sends the three counts, even 0 (omit_defaults would drop them).
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None
    completion_tokens_details: CompletionTokensDetails | None = None


def _none() -> None:
    return None


class ResponseMessage(Struct, omit_defaults=True):
    role: str
    content: str | None
    tool_calls: list[ToolCall] | None = None
    reasoning_content: str | None = None
    # OpenAI's spec requires ``refusal`` on every message (null when none). A default
    # *factory* is never omitted by omit_defaults, so it is always written.
    refusal: str | None = field(default_factory=_none)
    thinking_blocks: list[dict[str, Any]] | None = None


class Choice(Struct):
    index: int
    message: ResponseMessage
    finish_reason: str | None
    logprobs: None = None


class ChatCompletion(Struct, omit_defaults=True, tag_field="object", tag="chat.completion"):
    id: str
    created: int
    model: str
    choices: list[Choice]
    usage: Usage | None = None
    system_fingerprint: str | None = None


class FunctionDelta(Struct, omit_defaults=True):
    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(Struct, omit_defaults=True):
    index: int
    id: str | None = None
    type: str | None = None
    function: FunctionDelta | None = None


class Delta(Struct, omit_defaults=True):
    role: str | None = None
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None
    reasoning_content: str | None = None
    refusal: str | None = None
    # One complete block per entry (with "index"), sent when the block ends.
    thinking_blocks: list[dict[str, Any]] | None = None


class ChunkChoice(Struct):
    index: int
    delta: Delta
    finish_reason: str | None = None
    logprobs: None = None


class ChatCompletionChunk(
    Struct, omit_defaults=True, tag_field="object", tag="chat.completion.chunk"
):
    id: str
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None


class Model(Struct):
    id: str
    owned_by: str
    created: int = 0
    object: str = "model"


class ModelList(Struct):
    data: list[Model]
    object: str = "list"


def validation_param(err: msgspec.ValidationError) -> str | None:
    """Turn msgspec's '... - at `$.messages[2].role`' into 'messages[2].role'."""
    text = str(err)
    marker = " - at `$"
    i = text.rfind(marker)
    path = "" if i == -1 else text[i + len(marker) :].rstrip("`").lstrip(".")
    missing = text.find("missing required field `")
    if missing != -1:
        name = text[missing + 24 :].split("`", 1)[0]
        path = f"{path}.{name}" if path else name
    return path or None
