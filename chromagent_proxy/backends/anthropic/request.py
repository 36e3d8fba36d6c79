"""IR request → Anthropic Messages body (pure; URL images are inlined beforehand when the
backend needs it, media_ir.py).

The rules Anthropic enforces (wire-formats.md §2.2): ``max_tokens`` is required; there
is no system role; every ``tool_use`` must be answered by ``tool_result`` blocks at the
start of the very next user message; consecutive same-role turns are merged here so the
request means what the client sent. Cache markers become ``cache_control`` on the block,
tool or system text they mark. Thinking goes back only with Anthropic's own signature.
"""

from __future__ import annotations

from typing import Any

from ...core import ir
from ...errors import InvalidRequest, UnsupportedFeature

ORIGIN = "anthropic"
DEFAULT_MAX_TOKENS = 4096
VERTEX_VERSION = "vertex-2023-10-16"
# The tool a json_schema / json_object response_format becomes (its input is the answer).
RESPONSE_TOOL = "json_response"
# reasoning effort → thinking.budget_tokens (Anthropic's minimum budget is 1024).
THINKING_BUDGETS = {
    "minimal": 1024,
    "low": 2048,
    "medium": 8192,
    "high": 16384,
    "xhigh": 32768,
}
MIN_THINKING_BUDGET = 1024


def response_tool(req: ir.Request) -> str | None:
    """The forced-tool name when the client asked for JSON output, else None."""
    rf = req.settings.response_format
    if rf is not None and rf.type in ("json_schema", "json_object"):
        return RESPONSE_TOOL
    return None


def cache_control(mark: ir.CacheMark) -> dict[str, Any]:
    cc: dict[str, Any] = {"type": "ephemeral"}
    if mark.ttl:
        cc["ttl"] = mark.ttl
    return cc


def _marked(block: dict[str, Any], mark: ir.CacheMark | None) -> dict[str, Any]:
    if mark is not None:
        block["cache_control"] = cache_control(mark)
    return block


def build_body(
    req: ir.Request,
    *,
    stream: bool = False,
    default_max_tokens: int = DEFAULT_MAX_TOKENS,
    vertex: bool = False,
) -> dict[str, Any]:
    """The Messages body for ``req.model``. ``vertex``: no ``model`` (it is in the URL),
    ``anthropic_version`` added."""
    s = req.settings
    _reject_unsupported(s)
    body: dict[str, Any] = {"anthropic_version": VERTEX_VERSION} if vertex else {"model": req.model}
    system, messages = _messages(req)
    if not messages:
        raise InvalidRequest(
            "Anthropic needs at least one user or assistant message besides system messages",
            param="messages",
        )
    client_max = s.max_tokens
    thinking = _thinking_budget(s.reasoning)
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
                f"with reasoning_effort set, max_tokens must be greater than "
                f"{MIN_THINKING_BUDGET} (Anthropic's minimum thinking budget)",
                param="max_tokens",
            )
    body["max_tokens"] = max_tokens
    if system:
        body["system"] = system
    body["messages"] = messages
    if thinking is not None:
        body["thinking"] = {"type": "enabled", "budget_tokens": thinking}
    if s.temperature is not None:
        # OpenAI allows 0-2, Anthropic 0-1: refuse rather than silently change the sampling.
        if not 0 <= s.temperature <= 1:
            raise InvalidRequest(
                f"temperature {s.temperature:g} is outside Anthropic's range 0-1",
                param="temperature",
            )
        body["temperature"] = s.temperature
    if s.top_p is not None:
        body["top_p"] = s.top_p
    if s.top_k is not None:
        body["top_k"] = s.top_k
    if s.stop:
        body["stop_sequences"] = list(s.stop)
    tools = _tools(req)
    choice = _tool_choice(req.tool_choice, bool(tools))
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
    if stream:
        body["stream"] = True
    return body


def _reject_unsupported(s: ir.Settings) -> None:
    if s.n is not None and s.n > 1:
        raise UnsupportedFeature(
            "Anthropic returns one choice per request; 'n' must be 1", param="n"
        )
    if s.logprobs:
        raise UnsupportedFeature("Anthropic does not return logprobs", param="logprobs")
    if s.top_logprobs:
        raise UnsupportedFeature("Anthropic does not return logprobs", param="top_logprobs")
    if s.presence_penalty:
        raise UnsupportedFeature("Anthropic has no presence penalty", param="presence_penalty")
    if s.frequency_penalty:
        raise UnsupportedFeature("Anthropic has no frequency penalty", param="frequency_penalty")


def _thinking_budget(reasoning: ir.Reasoning | None) -> int | None:
    if reasoning is None:
        return None
    if reasoning.budget_tokens is not None:
        return reasoning.budget_tokens
    if reasoning.effort is None or reasoning.effort == "none":
        return None
    return THINKING_BUDGETS[reasoning.effort]


# ---------------------------------------------------------------- messages


def _system(req: ir.Request) -> str | list[dict[str, Any]]:
    texts = list(req.system or ())
    for msg in req.messages:
        if msg.role == "system":
            texts.extend(p for p in msg.parts if type(p) is ir.Text)
    texts = [t for t in texts if t.text]
    if any(t.cache is not None for t in texts):
        # A cache breakpoint needs the block form; plain text stays a string.
        return [_marked({"type": "text", "text": t.text}, t.cache) for t in texts]
    return "\n\n".join(t.text for t in texts)


def _messages(req: ir.Request) -> tuple[str | list[dict[str, Any]], list[dict[str, Any]]]:
    out: list[dict[str, Any]] = []
    for i, msg in enumerate(req.messages):
        if msg.role == "user":
            _append(out, "user", [_user_block(p, i, j) for j, p in enumerate(msg.parts)])
        elif msg.role == "assistant":
            _append(out, "assistant", _assistant_blocks(msg, i))
    return _system(req), out


def _append(out: list[dict[str, Any]], role: str, blocks: list[dict[str, Any] | None]) -> None:
    """Add blocks as a turn, merging into the previous turn of the same role; tool_result
    blocks lead the user turn, in the order the results came."""
    kept = [b for b in blocks if b is not None]
    if not kept:
        return
    if not out or out[-1]["role"] != role:
        out.append({"role": role, "content": kept})
        return
    prev: list[dict[str, Any]] = out[-1]["content"]
    for block in kept:
        if block["type"] == "tool_result":
            k = 0
            while k < len(prev) and prev[k]["type"] == "tool_result":
                k += 1
            prev.insert(k, block)
        else:
            prev.append(block)


def _image(img: ir.Image) -> dict[str, Any]:
    if img.data is not None:
        source = {"type": "base64", "media_type": img.media_type, "data": img.data}
    else:  # a remote URL Anthropic fetches itself (inlineImages off)
        source = {"type": "url", "url": img.url}
    return _marked({"type": "image", "source": source}, img.cache)


def _content_block(part: ir.Text | ir.Image) -> dict[str, Any] | None:
    if type(part) is ir.Image:
        return _image(part)
    assert type(part) is ir.Text
    return _marked({"type": "text", "text": part.text}, part.cache) if part.text else None


def _user_block(part: ir.Part, i: int, j: int) -> dict[str, Any] | None:
    if type(part) is ir.Text or type(part) is ir.Image:
        return _content_block(part)
    if type(part) is ir.ToolResult:
        block: dict[str, Any] = {"type": "tool_result", "tool_use_id": part.call_id}
        plain = all(type(p) is ir.Text and p.cache is None for p in part.content)
        if plain:
            text = "".join(p.text for p in part.content if type(p) is ir.Text)
            if text:
                block["content"] = text
        else:
            block["content"] = [b for p in part.content if (b := _content_block(p)) is not None]
        if part.is_error:
            block["is_error"] = True
        return _marked(block, part.cache)
    raise UnsupportedFeature(
        f"a {type(part).__name__} part is not allowed in a user message",
        param=f"messages[{i}].content[{j}]",
    )


def _assistant_blocks(msg: ir.Message, i: int) -> list[dict[str, Any] | None]:
    blocks: list[dict[str, Any] | None] = []
    calls = 0
    for part in msg.parts:
        if type(part) is ir.Text:
            blocks.append(_content_block(part))
        elif type(part) is ir.Thinking:
            # Only Anthropic's own signed thinking can be replayed; other thinking is dropped.
            if part.signature and part.origin == ORIGIN:
                blocks.append(
                    {"type": "thinking", "thinking": part.text, "signature": part.signature}
                )
        elif type(part) is ir.RedactedThinking:
            if part.origin == ORIGIN and part.data:
                blocks.append({"type": "redacted_thinking", "data": part.data})
        elif type(part) is ir.ToolCall:
            param = f"messages[{i}].tool_calls[{calls}].function.arguments"
            calls += 1
            block = {
                "type": "tool_use",
                "id": part.id,
                "name": part.name,
                "input": ir.arguments_object(part.arguments, param),
            }
            blocks.append(_marked(block, part.cache))
    return blocks


# ---------------------------------------------------------------- tools


def _tools(req: ir.Request) -> list[dict[str, Any]]:
    tools: list[dict[str, Any]] = []
    forced = response_tool(req)
    for k, tool in enumerate(req.tools or ()):
        if forced is not None and tool.name == forced:
            raise InvalidRequest(
                f"tool name {forced!r} is reserved for response_format on Anthropic backends",
                param=f"tools[{k}].function.name",
            )
        schema = dict(tool.parameters) if tool.parameters else {"type": "object", "properties": {}}
        schema.setdefault("type", "object")
        entry: dict[str, Any] = {"name": tool.name}
        if tool.description:
            entry["description"] = tool.description
        entry["input_schema"] = schema
        tools.append(_marked(entry, tool.cache))
    return tools


_MODES = {"auto": "auto", "none": "none", "required": "any", "tool": "tool"}


def _tool_choice(tc: ir.ToolChoice | None, has_tools: bool) -> dict[str, Any] | None:
    if tc is None:
        return None
    choice: dict[str, Any] = {"type": _MODES[tc.mode]}
    if tc.mode == "tool":
        choice["name"] = tc.name
    if not has_tools:
        if choice["type"] in ("any", "tool"):
            raise InvalidRequest("tool_choice needs tools", param="tool_choice")
        return None
    if tc.parallel is False and choice["type"] != "none":
        choice["disable_parallel_tool_use"] = True
    return choice


def _response_tool_def(req: ir.Request) -> dict[str, Any]:
    rf = req.settings.response_format
    assert rf is not None
    schema = dict(rf.schema) if rf.schema else {"type": "object"}
    description = rf.description or (
        "Give your final answer by calling this tool; its input is the answer."
    )
    return {"name": RESPONSE_TOOL, "description": description, "input_schema": schema}
