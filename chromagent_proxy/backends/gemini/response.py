"""Gemini ``GenerateContentResponse`` → OpenAI ``chat.completion``; errors → GatewayError.

Shared with stream.py: finish-reason and usage mapping, the error envelope.
"""

from __future__ import annotations

import math
import re
from typing import Any

from multidict import CIMultiDictProxy

from ... import codec
from ...errors import GatewayError, UpstreamHTTPError, upstream_http_error
from ...schema.gemini import Candidate, GenerateContentResponse, Status, UsageMetadata
from ...schema.openai import (
    ChatCompletion,
    Choice,
    CompletionTokensDetails,
    FunctionCall,
    PromptTokensDetails,
    ResponseMessage,
    ToolCall,
    Usage,
)
from .ids import make_tool_call_id

decode_response = codec.decoder(GenerateContentResponse).decode

# vercel/ai map-google-finish-reason.ts; wire-formats.md §4.3.
_CONTENT_FILTER = frozenset(
    {
        "SAFETY",
        "RECITATION",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
        "MODEL_ARMOR",
    }
)


def finish_reason(gemini: str | None, made_tool_call: bool) -> str:
    if gemini == "MAX_TOKENS":
        return "length"
    if gemini in _CONTENT_FILTER:
        return "content_filter"
    # Gemini says STOP after function calls; OpenAI clients loop on "tool_calls".
    return "tool_calls" if made_tool_call else "stop"


def usage_of(meta: UsageMetadata | None) -> Usage:
    if meta is None:
        return Usage(0, 0, 0)
    prompt = meta.prompt_token_count + meta.tool_use_prompt_token_count
    completion = meta.candidates_token_count + meta.thoughts_token_count
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=meta.total_token_count or prompt + completion,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=meta.cached_content_token_count)
        if meta.cached_content_token_count
        else None,
        completion_tokens_details=CompletionTokensDetails(
            reasoning_tokens=meta.thoughts_token_count
        )
        if meta.thoughts_token_count
        else None,
    )


def _message(cand: Candidate) -> tuple[ResponseMessage, bool]:
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[ToolCall] = []
    for part in (cand.content.parts if cand.content else None) or ():
        if part.function_call is not None:
            fc = part.function_call
            calls.append(
                ToolCall(
                    id=make_tool_call_id(part.thought_signature),
                    function=FunctionCall(fc.name, codec.dumps(fc.args or {}).decode()),
                )
            )
        elif part.text is not None:
            (thoughts if part.thought else texts).append(part.text)
    text = "".join(texts)
    message = ResponseMessage(
        role="assistant",
        content=None if calls and not text else text,
        tool_calls=calls or None,
        reasoning_content="".join(thoughts) or None,
    )
    return message, bool(calls)


def to_completion(
    resp: GenerateContentResponse, completion_id: str, created: int, model: str
) -> ChatCompletion:
    choices: list[Choice] = []
    for cand in sorted(resp.candidates or (), key=lambda c: c.index):
        message, called = _message(cand)
        choices.append(Choice(cand.index, message, finish_reason(cand.finish_reason, called)))
    if not choices:
        # No candidates: the prompt was blocked (promptFeedback.blockReason).
        feedback = resp.prompt_feedback
        blocked = feedback is not None and feedback.block_reason is not None
        message = ResponseMessage(
            role="assistant",
            content="",
            refusal=(feedback.block_reason_message or None) if feedback else None,
        )
        choices.append(Choice(0, message, "content_filter" if blocked else "stop"))
    return ChatCompletion(
        id=completion_id,
        created=created,
        model=model,
        choices=choices,
        usage=usage_of(resp.usage_metadata),
    )


# ---------------------------------------------------------------- errors

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


def _retry_delay(details: list[dict[str, Any]] | None) -> str | None:
    """RetryInfo.retryDelay ("34.4s") → whole seconds for Retry-After ("35")."""
    for detail in details or ():
        if str(detail.get("@type", "")).endswith("google.rpc.RetryInfo"):
            m = _DURATION.match(str(detail.get("retryDelay", "")))
            if m:
                return str(math.ceil(float(m.group(1))))
    return None


def _status_of(body: bytes) -> Status | None:
    try:
        data: Any = codec.loads(body)
    except ValueError:
        return None
    if isinstance(data, list) and data:  # Vertex wraps errors in an array
        data = data[0]
    if not isinstance(data, dict) or not isinstance(data.get("error"), dict):
        return None
    try:
        return codec.convert(data["error"], Status)
    except (codec.ValidationError, TypeError):
        return None


def status_error(
    backend_id: str, http_status: int, status: Status, retry_after: str | None = None
) -> UpstreamHTTPError:
    """A ``google.rpc.Status`` as the OpenAI error the client sees."""
    message = status.message or f"upstream returned HTTP {http_status}"
    code = None
    if status.status and http_status not in (404, 429):
        code = status.status.lower()
    return upstream_http_error(
        backend_id,
        http_status,
        message,
        retry_after=retry_after or _retry_delay(status.details),
        upstream_code=code,
    )


class Unauthorized(UpstreamHTTPError):
    """An upstream 401: Vertex tokens may be refreshed and the call retried once."""

    def __init__(self, mapped: GatewayError) -> None:
        super().__init__(
            mapped.message,
            status=mapped.status,
            type=mapped.type,
            code=mapped.code,
            retryable=mapped.retryable,
        )
        self.mapped = mapped


def gemini_error(
    backend_id: str, status: int, body: bytes, headers: CIMultiDictProxy[str]
) -> GatewayError:
    """``open_response`` error parser for the Google error envelope."""
    parsed = _status_of(body)
    if parsed is None:
        text = body[:500].decode("utf-8", "replace").strip()
        parsed = Status(code=status, message=text)
    err = status_error(backend_id, status, parsed, headers.get("Retry-After"))
    return Unauthorized(err) if status == 401 else err


def trailing_error(backend_id: str, tail: bytes) -> UpstreamHTTPError | None:
    """A raw (non-SSE) JSON error some Google front ends append before closing a stream."""
    start = tail.rfind(b'{\n  "error"')
    if start == -1:
        start = tail.rfind(b'{"error"')
    if start == -1:
        return None
    parsed = _status_of(tail[start:])
    if parsed is None:
        return None
    return mid_stream_error(backend_id, parsed)


def mid_stream_error(backend_id: str, status: Status) -> UpstreamHTTPError:
    err = status_error(backend_id, status.code or 502, status)
    if err.code != "upstream_auth_failed":  # never relay auth-error text (it may echo the key)
        err.message = f"backend '{backend_id}' reported an error mid-stream: {status.message}"
    err.retryable = False
    return err
