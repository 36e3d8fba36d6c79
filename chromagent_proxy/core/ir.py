"""The internal representation (IR): what every client dialect decodes into and every
translating backend builds from, and the stream events every backend step emits.

Client dialects (chat, messages, responses) decode into ``Request``; backend
translators build their upstream body from it and turn upstream events into
``Event``s; the client dialect's encoder turns events back into its own chunks.
A same-dialect backend (chat → openai, messages → anthropic) never sees the IR:
it relays bytes.

Usage is a *disjoint* decomposition (see ``Usage``): no token is counted twice.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from msgspec import Struct

from chromagent_proxy.core.errors import InvalidRequest

# ---------------------------------------------------------------- request parts


class CacheMark(Struct, frozen=True):
    """A prompt-cache breakpoint (Anthropic ``cache_control``); ``ttl`` as "5m" / "1h"."""

    ttl: str | None = None


EPHEMERAL = CacheMark()


class Text(Struct, tag="text"):
    text: str
    cache: CacheMark | None = None


class Image(Struct, tag="image"):
    """Inline (base64 as the client sent it, never re-encoded) or a URL to fetch."""

    media_type: str | None = None
    data: str | None = None  # base64
    url: str | None = None
    detail: str | None = None
    cache: CacheMark | None = None


class ToolCall(Struct, tag="tool_call"):
    id: str
    name: str
    arguments: str  # the JSON text of the arguments object, as the model produced it
    # Backend state the call must carry back (Gemini thoughtSignature), with its origin
    # family so a foreign signature is dropped instead of sent to the wrong provider.
    signature: str | None = None
    origin: str | None = None
    cache: CacheMark | None = None


class ToolResult(Struct, tag="tool_result"):
    call_id: str
    content: list[Text | Image]
    name: str | None = None  # the called function's name, when the dialect says it
    is_error: bool = False
    cache: CacheMark | None = None


class Thinking(Struct, tag="thinking"):
    text: str
    signature: str | None = None
    origin: str | None = None  # "anthropic", "gemini", … : whose signature this is


class RedactedThinking(Struct, tag="redacted_thinking"):
    data: str
    origin: str | None = None


Part = Text | Image | ToolCall | ToolResult | Thinking | RedactedThinking
Role = Literal["user", "assistant", "system"]


class Message(Struct):
    """One turn. Tool results ride in ``user`` turns (all results of a turn together);
    ``system`` appears here only for a system message in the middle of a conversation."""

    role: Role
    parts: list[Part]


class Tool(Struct):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None
    cache: CacheMark | None = None


class ToolChoice(Struct):
    mode: Literal["auto", "none", "required", "tool"] = "auto"
    name: str | None = None  # with mode "tool"
    parallel: bool | None = None  # None: the backend's default


class ResponseFormat(Struct):
    type: Literal["text", "json_object", "json_schema"] = "text"
    name: str | None = None
    description: str | None = None
    schema: dict[str, Any] | None = None
    strict: bool | None = None


ReasoningEffort = Literal["none", "minimal", "low", "medium", "high", "xhigh"]


class Reasoning(Struct):
    """Either an effort level (OpenAI dialects) or a token budget (Anthropic thinking);
    ``summary`` asks for thought text back (Responses ``reasoning.summary``)."""

    effort: ReasoningEffort | None = None
    budget_tokens: int | None = None
    summary: bool = False


class Settings(Struct):
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop: list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    n: int | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    reasoning: Reasoning | None = None
    response_format: ResponseFormat | None = None


Dialect = Literal["chat", "messages", "responses"]


class Request(Struct):
    model: str
    messages: list[Message]
    dialect: Dialect = "chat"
    system: list[Text] | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    settings: Settings = msgspec.field(default_factory=Settings)
    stream: bool = False
    user: str | None = None
    session_id: str | None = None
    metadata: dict[str, Any] | None = None
    # Fields of the client's dialect that the IR does not model, by name (JSON value
    # kept): the policy table (core/policy.py) decides pass / refuse for each backend.
    extra: dict[str, Any] | None = None

    @property
    def has_tools(self) -> bool:
        return bool(self.tools)

    @property
    def has_images(self) -> bool:
        for msg in self.messages:
            for part in msg.parts:
                if type(part) is Image:
                    return True
                if type(part) is ToolResult and any(type(p) is Image for p in part.content):
                    return True
        return False


# ---------------------------------------------------------------- stream events


class Start(Struct, tag="start"):
    """The answer began; ``model`` is the upstream's model name when it says one."""

    model: str | None = None
    id: str | None = None


class TextDelta(Struct, tag="text_delta"):
    text: str
    choice: int = 0


class ThinkingDelta(Struct, tag="thinking_delta"):
    text: str = ""
    signature: str | None = None  # arrives at the end of a thinking block
    origin: str | None = None
    choice: int = 0


class RedactedThinkingBlock(Struct, tag="redacted_thinking"):
    data: str
    origin: str | None = None
    choice: int = 0


class ToolCallStart(Struct, tag="tool_call_start"):
    """A tool call begins. ``index`` counts tool calls within the choice (0, 1, …)."""

    index: int
    id: str
    name: str
    signature: str | None = None
    origin: str | None = None
    choice: int = 0


class ToolCallDelta(Struct, tag="tool_call_delta"):
    """A fragment of the JSON text of call ``index``'s arguments."""

    index: int
    arguments: str
    choice: int = 0


FinishReason = Literal[
    "stop", "length", "tool_calls", "content_filter", "stop_sequence", "refusal", "error"
]


class Finish(Struct, tag="finish"):
    reason: FinishReason
    stop_sequence: str | None = None
    choice: int = 0


class Usage(Struct, tag="usage"):
    """Tokens, disjoint: ``input`` is uncached input only; ``cache_read`` and
    ``cache_write`` are the rest of the prompt; ``output`` is visible output only and
    ``reasoning`` the thinking tokens. OpenAI's ``prompt_tokens`` is ``prompt_total``
    and ``completion_tokens`` is ``completion_total``. The last Usage event of a stream
    is the answer's total (later ones replace earlier ones)."""

    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_write: int = 0
    reasoning: int = 0

    @property
    def prompt_total(self) -> int:
        return self.input + self.cache_read + self.cache_write

    @property
    def completion_total(self) -> int:
        return self.output + self.reasoning

    @property
    def total(self) -> int:
        return self.prompt_total + self.completion_total


class Error(Struct, tag="error"):
    """A failure after the answer began (custom IR backends; built-in steps raise)."""

    message: str
    kind: str = "upstream_error"


Event = (
    Start
    | TextDelta
    | ThinkingDelta
    | RedactedThinkingBlock
    | ToolCallStart
    | ToolCallDelta
    | Finish
    | Usage
    | Error
)


# ---------------------------------------------------------------- one place for arguments


def parse_arguments(raw: str, param: str) -> Any:
    """A tool call's JSON arguments text as a value; "" means no arguments.

    The one place tool-call arguments are parsed (every builder that needs an object —
    Gemini ``args``, Anthropic ``input``, Ollama ``arguments`` — calls this)."""
    from chromagent_proxy.core import codec

    if not raw.strip():
        return {}
    try:
        return codec.loads(raw)
    except (codec.DecodeError, ValueError):
        raise InvalidRequest(
            f"{param} is not valid JSON; tool call arguments must be a JSON object",
            param=param,
        ) from None


def arguments_object(raw: str, param: str) -> dict[str, Any]:
    value = parse_arguments(raw, param)
    if not isinstance(value, dict):
        raise InvalidRequest(f"{param} must be a JSON object", param=param)
    return value


# ---------------------------------------------------------------- embeddings


class EmbedRequest(Struct):
    """``/v1/embeddings`` for a backend: texts (or token ids, which only OpenAI-compatible
    upstreams take); ``dimensions`` is the output size the client asked for."""

    model: str
    inputs: list[str]
    dimensions: int | None = None
    user: str | None = None


class EmbedResult(Struct):
    vectors: list[list[float]]
    prompt_tokens: int | None = None  # None: the upstream does not report counts
