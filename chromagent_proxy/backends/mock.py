"""Built-in mock backend: no network. Echoes the last user message (or ``reply``).

Options: ``toolCall: {"name": ..., "arguments": {...}}`` answers with that
tool call when the request offers tools, and with text once the conversation ends with the tool's
result, so agent loops finish. Useful for demos and smoke tests.
"""

from __future__ import annotations

import hashlib
import math
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, ClassVar

from chromagent_proxy.backends.base import (
    BackendProvider,
    CompletionResult,
    RequestContext,
    StreamPart,
    current_context,
)
from chromagent_proxy.core import codec, ir
from chromagent_proxy.core.config import BackendConfig
from chromagent_proxy.schema.openai import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChunkChoice,
    Delta,
    FunctionCall,
    FunctionDelta,
    ResponseMessage,
    ToolCall,
    ToolCallDelta,
    Usage,
)


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return " ".join(p.text for p in content or [] if p.type == "text" and p.text)


def _text_of(request: ChatCompletionRequest) -> str:
    last = request.messages[-1] if request.messages else None
    if last is not None and last.role == "tool":
        return f"The tool returned: {_content_text(last.content)}"
    for msg in reversed(request.messages):
        if msg.role != "user":
            continue
        if isinstance(msg.content, str):
            return msg.content
        if msg.content:
            return " ".join(p.text for p in msg.content if p.type == "text" and p.text)
    return ""


def _count(text: str) -> int:
    return len(text.split())


class MockBackend(BackendProvider):
    type: ClassVar[str] = "mock"

    def supports_tools(self) -> bool:
        return True

    def supports_images(self) -> bool:
        return True

    def validate_config(self, config: BackendConfig) -> tuple[bool, list[str]]:
        errors: list[str] = []
        call = config.options.get("toolCall")
        if call is not None and not (isinstance(call, dict) and isinstance(call.get("name"), str)):
            errors.append('options.toolCall must be {"name": str, "arguments": object}')
        return not errors, errors

    def _answer(
        self, request: ChatCompletionRequest, config: BackendConfig
    ) -> tuple[str, ToolCall | None, Usage]:
        prompt = sum(
            _count(m.content) if isinstance(m.content, str) else 1 for m in request.messages
        )
        call: dict[str, Any] | None = config.options.get("toolCall")
        after_tool = bool(request.messages) and request.messages[-1].role == "tool"
        if call is not None and request.tools and not after_tool:
            args = codec.dumps(call.get("arguments", {})).decode()
            tc = ToolCall(
                id=f"call_{uuid.uuid4().hex[:24]}",
                function=FunctionCall(name=call["name"], arguments=args),
            )
            return "", tc, Usage(prompt, 1, prompt + 1)
        text = config.reply if config.reply is not None else _text_of(request)
        n = _count(text)
        return text, None, Usage(prompt, n, prompt + n)

    async def chat_completion(
        self, request: ChatCompletionRequest, config: BackendConfig
    ) -> CompletionResult:
        text, call, usage = self._answer(request, config)
        message = ResponseMessage(
            role="assistant", content=None if call else text, tool_calls=[call] if call else None
        )
        return ChatCompletion(
            id=f"chatcmpl-{current_context().request_id}",
            created=int(time.time()),
            model=request.model,
            choices=[Choice(0, message, "tool_calls" if call else "stop")],
            usage=usage,
        )

    async def chat_completion_stream(
        self, request: ChatCompletionRequest, config: BackendConfig
    ) -> AsyncIterator[StreamPart]:
        ctx = current_context()
        text, call, usage = self._answer(request, config)
        cid, created, model = f"chatcmpl-{ctx.request_id}", int(time.time()), request.model

        def chunk(delta: Delta, finish: str | None = None) -> ChatCompletionChunk:
            return ChatCompletionChunk(cid, created, model, [ChunkChoice(0, delta, finish)])

        if call is not None:
            yield chunk(
                Delta(
                    role="assistant",
                    tool_calls=[
                        ToolCallDelta(
                            0,
                            call.id,
                            "function",
                            FunctionDelta(call.function.name, call.function.arguments),
                        )
                    ],
                )
            )
            yield chunk(Delta(), "tool_calls")
        else:
            yield chunk(Delta(role="assistant", content=""))
            words = text.split(" ")
            for i, word in enumerate(words):
                yield chunk(Delta(content=word if i == 0 else " " + word))
            yield chunk(Delta(), "stop")
        # Always: the gateway counts it, and keeps it from clients that did not ask.
        yield ChatCompletionChunk(cid, created, model, [], usage)

    async def embed(self, request: ir.EmbedRequest, ctx: RequestContext) -> ir.EmbedResult:
        """Deterministic unit vectors from each text's SHA-256 (same text, same vector), of
        ``dimensions`` (default 16) values: enough to try a vector store without a provider."""
        size = request.dimensions or 16
        vectors = [_vector(text, size) for text in request.inputs]
        return ir.EmbedResult(vectors, sum(_count(t) for t in request.inputs))


def _vector(text: str, size: int) -> list[float]:
    raw = b""
    counter = 0
    while len(raw) < size * 4:
        raw += hashlib.sha256(f"{counter}:{text}".encode()).digest()
        counter += 1
    values = [int.from_bytes(raw[i * 4 : i * 4 + 4], "little") / 2**31 - 1.0 for i in range(size)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]
