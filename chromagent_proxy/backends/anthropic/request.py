"""OpenAI chat request → Anthropic Messages body (pure; images arrive pre-fetched).

The rules Anthropic enforces and OpenAI does not (wire-formats.md §2.2):
``max_tokens`` is required; there is no system role; every ``tool_use`` must be
answered by ``tool_result`` blocks at the start of the very next user message;
consecutive same-role turns are merged here so the request means what the
client sent. A parameter Anthropic cannot honour is a 400 naming it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ... import codec
from ...errors import InvalidRequest, UnsupportedFeature
from ...media import Image
from ...schema.openai import ChatCompletionRequest, ContentPart, Message

DEFAULT_MAX_TOKENS = 4096
VERTEX_VERSION = "vertex-2023-10-16"
# The tool a json_schema / json_object response_format becomes (its input is the answer).
RESPONSE_TOOL = "json_response"
# reasoning_effort → thinking.budget_tokens (Anthropic's minimum budget is 1024).
THINKING_BUDGETS = {
    "minimal": 1024,
    "low": 2048,
    "medium": 8192,
    "high": 16384,
    "xhigh": 32768,
}
MIN_THINKING_BUDGET = 1024


def response_tool(req: ChatCompletionRequest) -> str | None:
    """The forced-tool name when the client asked for JSON output, else None."""
    rf = req.response_format
    if rf is not None and rf.type in ("json_schema", "json_object"):
        return RESPONSE_TOOL
    return None


def build_body(
    req: ChatCompletionRequest,
    upstream_model: str,
    images: Mapping[str, Image],
    *,
    default_max_tokens: int = DEFAULT_MAX_TOKENS,
    vertex: bool = False,
) -> dict[str, Any]:
    """The Messages body. ``vertex``: no ``model`` (it is in the URL), ``anthropic_version`` added."""
    _reject_unsupported(req)
    body: dict[str, Any] = (
        {"anthropic_version": VERTEX_VERSION} if vertex else {"model": upstream_model}
    )
    system, messages = _messages(req, images)
    if not messages:
        raise InvalidRequest(
            "Anthropic needs at least one user or assistant message besides system messages",
            param="messages",
        )
    client_max = (
        req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
    )
    max_param = "max_completion_tokens" if req.max_completion_tokens is not None else "max_tokens"
    thinking = _thinking_budget(req.reasoning_effort)
    if thinking is None:
        max_tokens = client_max if client_max is not None else default_max_tokens
    elif client_max is None:
        # OpenAI counts reasoning inside the completion budget; keep room for the answer.
        max_tokens = default_max_tokens + thinking
    else:
        max_tokens = client_max
        thinking = min(thinking, client_max - 1)
        if thinking < MIN_THINKING_BUDGET:
            raise InvalidRequest(
                f"with reasoning_effort set, {max_param} must be greater than "
                f"{MIN_THINKING_BUDGET} (Anthropic's minimum thinking budget)",
                param=max_param,
            )
    body["max_tokens"] = max_tokens
    if system:
        body["system"] = system
    body["messages"] = messages
    if thinking is not None:
        body["thinking"] = {"type": "enabled", "budget_tokens": thinking}
    if req.temperature is not None:
        # OpenAI allows 0-2, Anthropic 0-1: refuse rather than silently change the sampling.
        if not 0 <= req.temperature <= 1:
            raise InvalidRequest(
                f"temperature {req.temperature:g} is outside Anthropic's range 0-1",
                param="temperature",
            )
        body["temperature"] = req.temperature
    if req.top_p is not None:
        body["top_p"] = req.top_p
    if req.stop:
        body["stop_sequences"] = [req.stop] if isinstance(req.stop, str) else list(req.stop)
    tools = _tools(req)
    choice = _tool_choice(req, bool(tools))
    forced = response_tool(req)
    if forced is not None:
        tools.append(_response_tool_def(req))
        # Force it only when nothing else competes: client tools keep their own choice,
        # and extended thinking allows only auto/none.
        if not req.tools and thinking is None:
            choice = {"type": "tool", "name": forced}
        elif choice is None:
            choice = {"type": "auto"}
    if tools:
        body["tools"] = tools
        if choice is not None:
            body["tool_choice"] = choice
    if req.user:
        body["metadata"] = {"user_id": req.user}
    if req.stream:
        body["stream"] = True
    return body


def _reject_unsupported(req: ChatCompletionRequest) -> None:
    if req.n is not None and req.n > 1:
        raise UnsupportedFeature(
            "Anthropic returns one choice per request; 'n' must be 1", param="n"
        )
    if req.logprobs:
        raise UnsupportedFeature("Anthropic does not return logprobs", param="logprobs")
    if req.top_logprobs:
        raise UnsupportedFeature("Anthropic does not return logprobs", param="top_logprobs")
    if req.presence_penalty:
        raise UnsupportedFeature("Anthropic has no presence penalty", param="presence_penalty")
    if req.frequency_penalty:
        raise UnsupportedFeature("Anthropic has no frequency penalty", param="frequency_penalty")


def _thinking_budget(effort: str | None) -> int | None:
    if effort is None or effort == "none":
        return None
    budget = THINKING_BUDGETS.get(effort)
    if budget is None:
        raise InvalidRequest(
            f"reasoning_effort must be one of none, {', '.join(THINKING_BUDGETS)} (got {effort!r})",
            param="reasoning_effort",
        )
    return budget


# ---------------------------------------------------------------- messages


def _messages(
    req: ChatCompletionRequest, images: Mapping[str, Image]
) -> tuple[str, list[dict[str, Any]]]:
    system: list[str] = []
    out: list[dict[str, Any]] = []
    for i, msg in enumerate(req.messages):
        role = msg.role
        if role in ("system", "developer"):
            text = _plain_text(msg, i)
            if text:
                system.append(text)
        elif role == "user":
            _append(out, "user", _user_blocks(msg, i, images))
        elif role == "assistant":
            _append(out, "assistant", _assistant_blocks(msg, i))
        elif role == "tool":
            _append(out, "user", [_tool_result(msg, i, images)], tool_result=True)
        else:
            raise UnsupportedFeature(
                f"messages[{i}]: role {role!r} is not supported by Anthropic backends "
                "(use tool messages)",
                param=f"messages[{i}].role",
            )
    return "\n\n".join(system), out


def _append(
    out: list[dict[str, Any]],
    role: str,
    blocks: list[dict[str, Any]],
    *,
    tool_result: bool = False,
) -> None:
    """Add blocks as a turn, merging into the previous turn of the same role."""
    if not blocks:
        return
    if not out or out[-1]["role"] != role:
        out.append({"role": role, "content": blocks})
        return
    prev: list[dict[str, Any]] = out[-1]["content"]
    if tool_result:
        # tool_result blocks must lead the user turn, in the order the results came.
        k = 0
        while k < len(prev) and prev[k]["type"] == "tool_result":
            k += 1
        prev[k:k] = blocks
    else:
        prev.extend(blocks)


def _plain_text(msg: Message, i: int) -> str:
    if msg.content is None or isinstance(msg.content, str):
        return msg.content or ""
    texts = []
    for j, part in enumerate(msg.content):
        if part.type != "text":
            raise UnsupportedFeature(
                f"{msg.role} messages may only contain text parts",
                param=f"messages[{i}].content[{j}].type",
            )
        texts.append(part.text or "")
    return "".join(texts)


def _user_blocks(msg: Message, i: int, images: Mapping[str, Image]) -> list[dict[str, Any]]:
    if msg.content is None or isinstance(msg.content, str):
        return [{"type": "text", "text": msg.content}] if msg.content else []
    return _parts(msg.content, i, images)


def _parts(parts: list[ContentPart], i: int, images: Mapping[str, Image]) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for j, part in enumerate(parts):
        if part.type == "text":
            if part.text:
                blocks.append({"type": "text", "text": part.text})
        elif part.type == "image_url" and part.image_url is not None:
            blocks.append(_image(part.image_url.url, images))
        else:
            raise UnsupportedFeature(
                f"content part type {part.type!r} is not supported by Anthropic backends",
                param=f"messages[{i}].content[{j}].type",
            )
    return blocks


def _image(url: str, images: Mapping[str, Image]) -> dict[str, Any]:
    img = images.get(url)
    if img is None:
        # Remote URL the backend may pass on (collect_images vetted the scheme).
        return {"type": "image", "source": {"type": "url", "url": url}}
    # A data URL's payload is already validated base64: reuse it instead of re-encoding.
    data = url.partition(",")[2] if url.startswith("data:") else img.b64
    return {
        "type": "image",
        "source": {"type": "base64", "media_type": img.media_type, "data": data},
    }


def _assistant_blocks(msg: Message, i: int) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    # Signed thinking must come first and unchanged, or Anthropic rejects the replay.
    for tb in msg.thinking_blocks or ():
        kind = tb.get("type")
        if kind == "thinking" and tb.get("signature"):
            blocks.append(
                {
                    "type": "thinking",
                    "thinking": tb.get("thinking") or "",
                    "signature": tb["signature"],
                }
            )
        elif kind == "redacted_thinking" and tb.get("data"):
            blocks.append({"type": "redacted_thinking", "data": tb["data"]})
    if isinstance(msg.content, str):
        if msg.content:
            blocks.append({"type": "text", "text": msg.content})
    elif msg.content:
        for j, part in enumerate(msg.content):
            if part.type not in ("text", "refusal"):
                raise UnsupportedFeature(
                    "assistant messages may only contain text parts",
                    param=f"messages[{i}].content[{j}].type",
                )
            if part.text:
                blocks.append({"type": "text", "text": part.text})
    for j, call in enumerate(msg.tool_calls or ()):
        blocks.append(
            {
                "type": "tool_use",
                "id": call.id,
                "name": call.function.name,
                "input": _arguments(call.function.arguments, i, j),
            }
        )
    return blocks


def _arguments(raw: str, i: int, j: int) -> Any:
    param = f"messages[{i}].tool_calls[{j}].function.arguments"
    if not raw.strip():
        return {}
    try:
        value = codec.loads(raw)
    except ValueError:
        raise InvalidRequest("tool call arguments are not valid JSON", param=param) from None
    if not isinstance(value, dict):
        raise InvalidRequest("tool call arguments must be a JSON object", param=param)
    return value


def _tool_result(msg: Message, i: int, images: Mapping[str, Image]) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": msg.tool_call_id}
    if isinstance(msg.content, str):
        if msg.content:
            block["content"] = msg.content
    elif msg.content:
        block["content"] = _parts(msg.content, i, images)
    return block


# ---------------------------------------------------------------- tools


def _tools(req: ChatCompletionRequest) -> list[dict[str, Any]]:
    tools: list[dict[str, Any]] = []
    forced = response_tool(req)
    for k, tool in enumerate(req.tools or ()):
        if tool.type != "function":
            raise UnsupportedFeature(
                f"tool type {tool.type!r} is not supported (only 'function')",
                param=f"tools[{k}].type",
            )
        fn = tool.function
        if forced is not None and fn.name == forced:
            raise InvalidRequest(
                f"tool name {forced!r} is reserved for response_format on Anthropic backends",
                param=f"tools[{k}].function.name",
            )
        schema = dict(fn.parameters) if fn.parameters else {"type": "object", "properties": {}}
        schema.setdefault("type", "object")
        entry: dict[str, Any] = {"name": fn.name}
        if fn.description:
            entry["description"] = fn.description
        entry["input_schema"] = schema
        tools.append(entry)
    return tools


def _tool_choice(req: ChatCompletionRequest, has_tools: bool) -> dict[str, Any] | None:
    tc = req.tool_choice
    choice: dict[str, Any] | None
    if tc is None:
        choice = None
    elif isinstance(tc, str):
        mapped = {"auto": "auto", "none": "none", "required": "any"}.get(tc)
        if mapped is None:
            raise InvalidRequest(
                f"tool_choice must be auto, none, required or a named function (got {tc!r})",
                param="tool_choice",
            )
        choice = {"type": mapped}
    else:
        if tc.type != "function" or tc.function is None:
            raise InvalidRequest(
                "tool_choice object must be {type: function, function: {name}}",
                param="tool_choice",
            )
        choice = {"type": "tool", "name": tc.function.name}
    if not has_tools:
        if choice is not None and choice["type"] in ("any", "tool"):
            raise InvalidRequest("tool_choice needs tools", param="tool_choice")
        return None
    if req.parallel_tool_calls is False:
        choice = choice or {"type": "auto"}
        if choice["type"] != "none":
            choice["disable_parallel_tool_use"] = True
    return choice


def _response_tool_def(req: ChatCompletionRequest) -> dict[str, Any]:
    rf = req.response_format
    assert rf is not None
    js = rf.json_schema
    schema = dict(js.schema_) if js is not None and js.schema_ else {"type": "object"}
    description = (js.description if js is not None else None) or (
        "Give your final answer by calling this tool; its input is the answer."
    )
    return {"name": RESPONSE_TOOL, "description": description, "input_schema": schema}
