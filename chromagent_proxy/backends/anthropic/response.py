"""Anthropic Message (non-stream) → OpenAI ChatCompletion, plus the mappings streams share."""

from __future__ import annotations

from typing import Any

from ... import codec
from ...schema.anthropic import Message
from ...schema.anthropic import Usage as AnthropicUsage
from ...schema.openai import (
    ChatCompletion,
    Choice,
    FunctionCall,
    PromptTokensDetails,
    ResponseMessage,
    ToolCall,
    Usage,
)

_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

decode_message = codec.decoder(Message).decode


def finish_reason(stop_reason: str | None, tool_calls: bool) -> str:
    """Anthropic stop_reason → OpenAI finish_reason.

    ``tool_use`` without a client-visible tool call (the response_format tool)
    is a normal stop for the client.
    """
    reason = _FINISH.get(stop_reason or "", "stop")
    if reason == "tool_calls" and not tool_calls:
        return "stop"
    return reason


class Counts:
    """Token counts merged from message_start and message_delta (later values win)."""

    __slots__ = ("cache_creation", "cache_read", "input", "output")

    def __init__(self) -> None:
        self.input = 0
        self.output = 0
        self.cache_creation = 0
        self.cache_read = 0

    def update(self, u: AnthropicUsage | None) -> None:
        if u is None:
            return
        if u.input_tokens is not None:
            self.input = u.input_tokens
        if u.output_tokens is not None:
            self.output = u.output_tokens
        if u.cache_creation_input_tokens is not None:
            self.cache_creation = u.cache_creation_input_tokens
        if u.cache_read_input_tokens is not None:
            self.cache_read = u.cache_read_input_tokens

    def usage(self) -> Usage:
        # Anthropic's input_tokens excludes cache reads and writes; OpenAI's prompt_tokens includes them.
        prompt = self.input + self.cache_creation + self.cache_read
        details = None
        if self.cache_read or self.cache_creation:
            details = PromptTokensDetails(
                cached_tokens=self.cache_read,
                cache_creation_tokens=self.cache_creation or None,
            )
        return Usage(
            prompt_tokens=prompt,
            completion_tokens=self.output,
            total_tokens=prompt + self.output,
            prompt_tokens_details=details,
        )


def to_chat_completion(
    msg: Message, *, id: str, created: int, model: str, response_tool: str | None = None
) -> ChatCompletion:
    texts: list[str] = []
    reasoning: list[str] = []
    thinking_blocks: list[dict[str, Any]] = []
    calls: list[ToolCall] = []
    for block in msg.content:
        if block.type == "text":
            texts.append(block.text or "")
        elif block.type == "tool_use":
            args = codec.dumps(block.input if block.input is not None else {}).decode()
            if response_tool is not None and block.name == response_tool:
                texts.append(args)
            else:
                calls.append(
                    ToolCall(
                        id=block.id or "",
                        function=FunctionCall(name=block.name or "", arguments=args),
                    )
                )
        elif block.type == "thinking":
            reasoning.append(block.thinking or "")
            thinking_blocks.append(
                {
                    "type": "thinking",
                    "thinking": block.thinking or "",
                    "signature": block.signature or "",
                }
            )
        elif block.type == "redacted_thinking":
            thinking_blocks.append({"type": "redacted_thinking", "data": block.data or ""})
        # Server-tool blocks (web search results...) have no OpenAI equivalent.
    counts = Counts()
    counts.update(msg.usage)
    content = "".join(texts) if texts or not calls else None
    message = ResponseMessage(
        role="assistant",
        content=content,
        tool_calls=calls or None,
        reasoning_content="".join(reasoning) if reasoning else None,
        thinking_blocks=thinking_blocks or None,
    )
    return ChatCompletion(
        id=id,
        created=created,
        model=msg.model or model,
        choices=[Choice(0, message, finish_reason(msg.stop_reason, bool(calls)))],
        usage=counts.usage(),
    )
