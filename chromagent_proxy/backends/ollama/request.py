"""OpenAI chat request → Ollama ``/api/chat`` body (wire-formats.md §6.1). Pure: no I/O.

Images arrive already decoded or fetched (``media.collect_images``) and are
sent as raw base64. Tool-call arguments become JSON objects, tool results carry
the ``tool_name`` of the call they answer. Sampling parameters go into
``options`` on top of the backend's default ``options``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ... import codec
from ...errors import InvalidRequest, UnsupportedFeature
from ...media import Image
from ...schema.openai import ChatCompletionRequest, Message

# OpenAI reasoning_effort → Ollama think (levels only matter to models that have them, e.g. gpt-oss).
THINK = {
    "none": False,
    "minimal": "low",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "xhigh": "high",
}


def build_body(
    req: ChatCompletionRequest,
    upstream_model: str,
    images: Mapping[str, Image],
    *,
    stream: bool,
    default_options: Mapping[str, Any] | None = None,
    keep_alive: str | int | None = None,
    default_max_tokens: int | None = None,
) -> dict[str, Any]:
    _refuse_unsupported(req)
    body: dict[str, Any] = {
        "model": upstream_model,
        "messages": _messages(req.messages, images),
        "stream": stream,
    }
    if req.tools and req.tool_choice != "none":
        body["tools"] = [
            {
                "type": "function",
                "function": _function(
                    t.function.name, t.function.description, t.function.parameters
                ),
            }
            for t in req.tools
        ]
    fmt = _format(req)
    if fmt is not None:
        body["format"] = fmt
    options = _options(req, default_options or {}, default_max_tokens)
    if options:
        body["options"] = options
    if req.reasoning_effort is not None:
        if req.reasoning_effort not in THINK:
            raise InvalidRequest(
                f"reasoning_effort must be one of {', '.join(THINK)} (got {req.reasoning_effort!r})",
                param="reasoning_effort",
            )
        body["think"] = THINK[req.reasoning_effort]
    if keep_alive is not None:
        body["keep_alive"] = keep_alive
    return body


def _refuse_unsupported(req: ChatCompletionRequest) -> None:
    if req.n is not None and req.n > 1:
        raise UnsupportedFeature("the ollama backend returns one choice; 'n' must be 1", param="n")
    if req.logprobs:
        raise UnsupportedFeature("the ollama backend does not return logprobs", param="logprobs")
    choice = req.tool_choice
    if choice is not None and choice not in ("auto", "none"):
        # Ollama has no way to force a tool call; silently answering in text would break callers.
        raise UnsupportedFeature(
            "the ollama backend cannot force a tool call; tool_choice must be 'auto' or 'none'",
            param="tool_choice",
        )


def _function(
    name: str, description: str | None, parameters: dict[str, Any] | None
) -> dict[str, Any]:
    fn: dict[str, Any] = {"name": name}
    if description is not None:
        fn["description"] = description
    fn["parameters"] = (
        parameters if parameters is not None else {"type": "object", "properties": {}}
    )
    return fn


def _format(req: ChatCompletionRequest) -> Any:
    rf = req.response_format
    if rf is None or rf.type == "text":
        return None
    if rf.type == "json_object":
        return "json"
    if rf.type == "json_schema":
        schema = rf.json_schema.schema_ if rf.json_schema is not None else None
        if schema is None:
            raise InvalidRequest(
                "response_format json_schema needs a 'schema'", param="response_format.json_schema"
            )
        return schema
    raise InvalidRequest(
        f"response_format type {rf.type!r} is not supported (use text, json_object or json_schema)",
        param="response_format.type",
    )


def _options(
    req: ChatCompletionRequest, defaults: Mapping[str, Any], default_max_tokens: int | None
) -> dict[str, Any]:
    options = dict(defaults)
    if req.temperature is not None:
        options["temperature"] = req.temperature
    if req.top_p is not None:
        options["top_p"] = req.top_p
    if req.seed is not None:
        options["seed"] = req.seed
    if req.stop is not None:
        options["stop"] = [req.stop] if isinstance(req.stop, str) else list(req.stop)
    max_tokens = (
        req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
    )
    if max_tokens is None and "num_predict" not in options:
        max_tokens = default_max_tokens
    if max_tokens is not None:
        options["num_predict"] = max_tokens
    if req.presence_penalty is not None:
        options["presence_penalty"] = req.presence_penalty
    if req.frequency_penalty is not None:
        options["frequency_penalty"] = req.frequency_penalty
    return options


def _messages(messages: list[Message], images: Mapping[str, Image]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    names_by_id: dict[str, str] = {}
    for i, msg in enumerate(messages):
        role = msg.role
        text, imgs = _content(msg, i, images, allow_images=role == "user")
        if role in ("system", "developer"):
            out.append({"role": "system", "content": text})
        elif role == "user":
            m: dict[str, Any] = {"role": "user", "content": text}
            if imgs:
                m["images"] = imgs
            out.append(m)
        elif role == "assistant":
            m = {"role": "assistant", "content": text}
            if msg.reasoning_content:
                m["thinking"] = msg.reasoning_content
            if msg.tool_calls:
                calls = []
                for j, tc in enumerate(msg.tool_calls):
                    names_by_id[tc.id] = tc.function.name
                    args = _arguments(tc.function.arguments, f"messages[{i}].tool_calls[{j}]")
                    calls.append(
                        {"id": tc.id, "function": {"name": tc.function.name, "arguments": args}}
                    )
                m["tool_calls"] = calls
            out.append(m)
        else:  # "tool", or the legacy "function" role that names the function itself
            m = {"role": "tool", "content": text}
            name = names_by_id.get(msg.tool_call_id or "") or msg.name
            if name:
                m["tool_name"] = name
            if msg.tool_call_id:
                m["tool_call_id"] = msg.tool_call_id
            out.append(m)
    return out


def _content(
    msg: Message, i: int, images: Mapping[str, Image], *, allow_images: bool
) -> tuple[str, list[str]]:
    content = msg.content
    if content is None:
        return "", []
    if isinstance(content, str):
        return content, []
    texts: list[str] = []
    imgs: list[str] = []
    for j, part in enumerate(content):
        if part.type == "text":
            texts.append(part.text or "")
        elif part.type == "image_url" and part.image_url is not None:
            if not allow_images:
                raise UnsupportedFeature(
                    f"the ollama backend accepts images only in user messages (not {msg.role})",
                    param=f"messages[{i}].content[{j}]",
                )
            imgs.append(images[part.image_url.url].b64)
        else:
            raise UnsupportedFeature(
                f"content part type {part.type!r} is not supported by the ollama backend",
                param=f"messages[{i}].content[{j}].type",
            )
    # Ollama messages carry one string; parts of one message are joined by newlines.
    return "\n".join(texts), imgs


def _arguments(raw: str, param: str) -> Any:
    if not raw.strip():
        return {}
    try:
        value = codec.loads(raw)
    except ValueError:
        raise InvalidRequest(
            "tool call arguments must be a JSON object string", param=f"{param}.function.arguments"
        ) from None
    if not isinstance(value, dict):
        raise InvalidRequest(
            "tool call arguments must be a JSON object (Ollama takes an object)",
            param=f"{param}.function.arguments",
        )
    return value
