"""IR request → Ollama ``/api/chat`` body (wire-formats.md §6.1). Pure: no I/O.

Images arrive inline (``media_ir.inline_images``) and go as raw base64. Tool-call
arguments become JSON objects, tool results become ``tool`` messages carrying the
``tool_name`` of the call they answer. Sampling parameters go into ``options`` on top
of the backend's default ``options``. Ollama has no thinking signatures: thinking text
is replayed as ``thinking``, whatever its origin (there is nothing to verify).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...core import ir
from ...errors import InvalidRequest, UnsupportedFeature

# Reasoning effort → Ollama think (levels only matter to models that have them, e.g. gpt-oss).
THINK: dict[str, bool | str] = {
    "none": False,
    "minimal": "low",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "xhigh": "high",
}


def build_body(
    req: ir.Request,
    *,
    stream: bool,
    default_options: Mapping[str, Any] | None = None,
    keep_alive: str | int | None = None,
    default_max_tokens: int | None = None,
) -> dict[str, Any]:
    _refuse_unsupported(req)
    body: dict[str, Any] = {
        "model": req.model,
        "messages": _messages(req),
        "stream": stream,
    }
    choice = req.tool_choice
    if req.tools and (choice is None or choice.mode != "none"):
        body["tools"] = [
            {"type": "function", "function": _function(t.name, t.description, t.parameters)}
            for t in req.tools
        ]
    fmt = _format(req.settings.response_format)
    if fmt is not None:
        body["format"] = fmt
    options = _options(req.settings, default_options or {}, default_max_tokens)
    if options:
        body["options"] = options
    reasoning = req.settings.reasoning
    if reasoning is not None:
        if reasoning.effort is not None:
            body["think"] = THINK[reasoning.effort]
        elif reasoning.budget_tokens is not None:
            body["think"] = reasoning.budget_tokens > 0  # Ollama takes no budget
    if keep_alive is not None:
        body["keep_alive"] = keep_alive
    return body


def _refuse_unsupported(req: ir.Request) -> None:
    s = req.settings
    if s.n is not None and s.n > 1:
        raise UnsupportedFeature("the ollama backend returns one choice; 'n' must be 1", param="n")
    if s.logprobs:
        raise UnsupportedFeature("the ollama backend does not return logprobs", param="logprobs")
    choice = req.tool_choice
    if choice is not None and choice.mode not in ("auto", "none"):
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


def _format(rf: ir.ResponseFormat | None) -> Any:
    if rf is None or rf.type == "text":
        return None
    if rf.type == "json_object":
        return "json"
    if rf.schema is None:
        raise InvalidRequest(
            "response_format json_schema needs a 'schema'", param="response_format.json_schema"
        )
    return rf.schema


def _options(
    s: ir.Settings, defaults: Mapping[str, Any], default_max_tokens: int | None
) -> dict[str, Any]:
    options = dict(defaults)
    if s.temperature is not None:
        options["temperature"] = s.temperature
    if s.top_p is not None:
        options["top_p"] = s.top_p
    if s.top_k is not None:
        options["top_k"] = s.top_k
    if s.seed is not None:
        options["seed"] = s.seed
    if s.stop is not None:
        options["stop"] = list(s.stop)
    max_tokens = s.max_tokens
    if max_tokens is None and "num_predict" not in options:
        max_tokens = default_max_tokens
    if max_tokens is not None:
        options["num_predict"] = max_tokens
    if s.presence_penalty is not None:
        options["presence_penalty"] = s.presence_penalty
    if s.frequency_penalty is not None:
        options["frequency_penalty"] = s.frequency_penalty
    return options


def _messages(req: ir.Request) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{"role": "system", "content": t.text} for t in req.system or ()]
    names: dict[str, str] = {}
    for i, msg in enumerate(req.messages):
        texts: list[str] = []
        images: list[str] = []
        thinking: list[str] = []
        calls: list[dict[str, Any]] = []
        for j, part in enumerate(msg.parts):
            param = f"messages[{i}].content[{j}]"
            if type(part) is ir.Text:
                texts.append(part.text)
            elif type(part) is ir.Image:
                if msg.role != "user":
                    raise UnsupportedFeature(
                        f"the ollama backend accepts images only in user messages (not {msg.role})",
                        param=param,
                    )
                images.append(_b64(part, param))
            elif type(part) is ir.ToolResult:
                out.append(_tool_message(part, names, param))
            elif type(part) is ir.Thinking:
                thinking.append(part.text)
            elif type(part) is ir.ToolCall:
                names[part.id] = part.name
                param = f"messages[{i}].tool_calls[{len(calls)}].function.arguments"
                args = ir.arguments_object(part.arguments, param)
                calls.append({"id": part.id, "function": {"name": part.name, "arguments": args}})
        if not (texts or images or thinking or calls):
            continue
        # Ollama messages carry one string; parts of one message are joined by newlines.
        m: dict[str, Any] = {"role": msg.role, "content": "\n".join(texts)}
        if images:
            m["images"] = images
        if thinking:
            m["thinking"] = "".join(thinking)
        if calls:
            m["tool_calls"] = calls
        out.append(m)
    return out


def _b64(img: ir.Image, param: str) -> str:
    if img.data is None:
        raise InvalidRequest("image could not be resolved", param=param)
    return img.data


def _tool_message(result: ir.ToolResult, names: dict[str, str], param: str) -> dict[str, Any]:
    texts = []
    for k, p in enumerate(result.content):
        if type(p) is not ir.Text:
            raise UnsupportedFeature(
                "the ollama backend accepts images only in user messages (not tool)",
                param=f"{param}.content[{k}]",
            )
        texts.append(p.text)
    m: dict[str, Any] = {"role": "tool", "content": "\n".join(texts)}
    name = result.name or names.get(result.call_id)
    if name:
        m["tool_name"] = name
    if result.call_id:
        m["tool_call_id"] = result.call_id
    return m
