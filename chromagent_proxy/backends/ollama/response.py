"""Ollama's non-stream ``/api/chat`` object → OpenAI ``chat.completion``; shared mapping helpers."""

from __future__ import annotations

import uuid
from typing import Any

from ... import codec
from ...schema.ollama import ChatResponse, OllamaToolCall
from ...schema.openai import (
    ChatCompletion,
    Choice,
    FunctionCall,
    ResponseMessage,
    ToolCall,
    Usage,
)


def call_id(tc: OllamaToolCall) -> str:
    # Older Ollama versions send no ids; clients need one to answer the call.
    return tc.id or f"call_{uuid.uuid4().hex[:24]}"


def arguments_json(arguments: Any) -> str:
    """Ollama sends arguments as an object (or nothing); OpenAI wants a JSON string."""
    if arguments is None:
        return "{}"
    if isinstance(arguments, str):
        return arguments
    return codec.dumps(arguments).decode()


def finish_reason(done_reason: str | None, called_tools: bool) -> str:
    """Ollama says "stop" even after tool calls; "length" when num_predict was hit."""
    if done_reason == "length":
        return "length"
    if called_tools:
        return "tool_calls"
    return "stop"


def usage_of(resp: ChatResponse) -> Usage:
    prompt, completion = resp.prompt_eval_count, resp.eval_count
    return Usage(prompt, completion, prompt + completion)


def to_completion(resp: ChatResponse, *, id: str, created: int, model: str) -> ChatCompletion:
    msg = resp.message
    calls: list[ToolCall] | None = None
    content: str | None = ""
    thinking: str | None = None
    if msg is not None:
        content = msg.content
        thinking = msg.thinking or None
        if msg.tool_calls:
            calls = [
                ToolCall(
                    call_id(tc),
                    FunctionCall(tc.function.name, arguments_json(tc.function.arguments)),
                )
                for tc in msg.tool_calls
            ]
            # OpenAI sends null content next to tool calls when there is no text.
            content = content or None
    message = ResponseMessage(
        role="assistant", content=content, tool_calls=calls, reasoning_content=thinking
    )
    return ChatCompletion(
        id=id,
        created=created,
        model=model,
        choices=[Choice(0, message, finish_reason(resp.done_reason, bool(calls)))],
        usage=usage_of(resp),
    )
