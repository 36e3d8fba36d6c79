"""Chat Completions request → IR request (for translating backends only: the
``openai`` relay never pays for this).

Everything a translating backend needs is decided here once: legacy
``functions`` become tools, Gemini thought signatures come out of tool call ids,
cache markers become ``CacheMark``s, data-URL images keep the client's base64 (nothing
is decoded here: media_ir.py counts the request's images first, then learns each one's
media type from its first bytes), and the policy table refuses fields the chosen backend
cannot honour.
"""

from __future__ import annotations

from typing import Any, get_args

from ...core import ir, policy
from ...errors import InvalidRequest, UnsupportedFeature
from ...schema.openai import ChatCompletionRequest, ContentPart, Message
from .ids import split_tool_call_id

_EFFORTS = frozenset(get_args(ir.ReasoningEffort))
_POLICY_FIELDS = tuple(policy.TABLE)
# Values that ask for nothing (clients such as LangChain send them by default): not refused.
_NEUTRAL: dict[str, object] = {"presence_penalty": 0, "frequency_penalty": 0}


def present_fields(req: ChatCompletionRequest) -> dict[str, Any]:
    """The policy-table fields this request set (name → value)."""
    out: dict[str, Any] = {}
    for name in _POLICY_FIELDS:
        value = getattr(req, name, None)
        if value is not None and value is not False and _NEUTRAL.get(name, ...) != value:
            out[name] = value
    return out


def to_ir(req: ChatCompletionRequest, backend: str) -> ir.Request:
    """Decode for ``backend`` (a translating dialect: gemini, anthropic, ollama, openai…)."""
    policy.refused(present_fields(req), backend)
    system: list[ir.Text] = []
    messages: list[ir.Message] = []
    names: dict[str, str] = {}  # tool call id → function name, for tool results
    legacy: list[tuple[str, str]] = []  # (name, id) of legacy function_calls awaiting results
    leading = True
    for i, msg in enumerate(req.messages):
        role = msg.role
        if role in ("system", "developer"):
            parts = _texts(msg, i)
            if leading:
                system.extend(parts)
            elif parts:
                messages.append(ir.Message("system", list[ir.Part](parts)))
            continue
        leading = False
        if role == "user":
            _add(messages, "user", _user_parts(msg, i))
        elif role == "assistant":
            _add(messages, "assistant", _assistant_parts(msg, i, names, legacy))
        elif role == "tool":
            call_id = msg.tool_call_id or ""
            result = ir.ToolResult(
                split_tool_call_id(call_id)[0],
                _result_content(msg, i),
                name=names.get(call_id) or msg.name,
                cache=_cache(msg.cache_control),
            )
            _add(messages, "user", [result], tool_result=True)
        elif role == "function":
            name = msg.name or ""
            call_id = next((cid for n, cid in legacy if n == name), f"call_{name}")
            legacy[:] = [(n, c) for n, c in legacy if c != call_id]
            result = ir.ToolResult(call_id, _result_content(msg, i), name=name)
            _add(messages, "user", [result], tool_result=True)
    return ir.Request(
        model=req.model,
        messages=messages,
        dialect="chat",
        system=system or None,
        tools=_tools(req),
        tool_choice=_tool_choice(req),
        settings=_settings(req),
        stream=bool(req.stream),
        user=req.user,
        metadata=req.metadata,
    )


def _add(
    out: list[ir.Message], role: ir.Role, parts: list[ir.Part], *, tool_result: bool = False
) -> None:
    """Append a turn; consecutive tool results share one user turn (Anthropic needs all
    results of a turn together), and results lead that turn."""
    if not parts:
        return
    if tool_result and out and out[-1].role == "user":
        prev = out[-1].parts
        k = 0
        while k < len(prev) and type(prev[k]) is ir.ToolResult:
            k += 1
        prev[k:k] = parts
        return
    out.append(ir.Message(role, parts))


# ---------------------------------------------------------------- content


def _cache(cc: dict[str, Any] | None) -> ir.CacheMark | None:
    if not cc:
        return None
    ttl = cc.get("ttl")
    return ir.CacheMark(ttl if isinstance(ttl, str) else None) if ttl else ir.EPHEMERAL


def _texts(msg: Message, i: int) -> list[ir.Text]:
    content = msg.content
    if content is None:
        return []
    if isinstance(content, str):
        return [ir.Text(content, _cache(msg.cache_control))] if content else []
    out: list[ir.Text] = []
    for j, part in enumerate(content):
        if part.type != "text":
            raise UnsupportedFeature(
                f"{msg.role} messages may only contain text parts",
                param=f"messages[{i}].content[{j}].type",
            )
        out.append(ir.Text(part.text or "", _cache(part.cache_control)))
    _mark_last(out, msg)
    return out


def _mark_last(parts: list[Any], msg: Message) -> None:
    # A message-level cache_control marks its last part (the breakpoint ends the message).
    if msg.cache_control and parts and getattr(parts[-1], "cache", None) is None:
        parts[-1].cache = _cache(msg.cache_control)


def _user_parts(msg: Message, i: int) -> list[ir.Part]:
    content = msg.content
    if content is None:
        return []
    if isinstance(content, str):
        return [ir.Text(content, _cache(msg.cache_control))]
    out: list[ir.Part] = [_part(p, f"messages[{i}].content[{j}]") for j, p in enumerate(content)]
    _mark_last(out, msg)
    return out


def _part(part: ContentPart, param: str) -> ir.Text | ir.Image:
    if part.type == "text":
        return ir.Text(part.text or "", _cache(part.cache_control))
    if part.type == "image_url":
        if part.image_url is None:
            raise InvalidRequest("image_url part has no image_url", param=param)
        img = image_from_url(part.image_url.url, f"{param}.image_url")
        img.detail = part.image_url.detail
        img.cache = _cache(part.cache_control)
        return img
    raise UnsupportedFeature(
        f"content part type {part.type!r} is not supported by this backend "
        "(text and image_url are)",
        param=f"{param}.type",
    )


def image_from_url(url: str, param: str) -> ir.Image:
    """A data URL keeps its base64 as sent, with the media type it declares (media_ir.py
    replaces it with the one its first bytes say, after counting the request's images); an
    http(s) URL is left for the backend to fetch through the guarded fetcher."""
    head = url[:11].lower()
    if head.startswith("data:"):
        meta, sep, data = url.partition(",")
        if not sep or ";base64" not in meta.lower():
            raise InvalidRequest(
                "image data URLs must be base64 (data:<type>;base64,…)", param=param
            )
        declared = meta[5:].split(";", 1)[0].strip().lower()
        return ir.Image(media_type=declared or None, data=data)
    if head.startswith(("http://", "https://")):
        return ir.Image(url=url)
    raise InvalidRequest("image URL must be a data: URL or an http(s) URL", param=param)


def _result_content(msg: Message, i: int) -> list[ir.Text | ir.Image]:
    content = msg.content
    if content is None:
        return []
    if isinstance(content, str):
        return [ir.Text(content)] if content else []
    return [_part(p, f"messages[{i}].content[{j}]") for j, p in enumerate(content)]


def _assistant_parts(
    msg: Message, i: int, names: dict[str, str], legacy: list[tuple[str, str]]
) -> list[ir.Part]:
    out: list[ir.Part] = []
    # Signed thinking first and unchanged (Anthropic rejects a reordered replay).
    for tb in msg.thinking_blocks or ():
        kind = tb.get("type")
        if kind == "thinking":
            sig = tb.get("signature")
            out.append(
                ir.Thinking(
                    str(tb.get("thinking") or ""),
                    signature=sig if isinstance(sig, str) and sig else None,
                    origin="anthropic" if sig else None,
                )
            )
        elif kind == "redacted_thinking" and isinstance(tb.get("data"), str):
            out.append(ir.RedactedThinking(tb["data"], origin="anthropic"))
    if not msg.thinking_blocks and msg.reasoning_content:
        out.append(ir.Thinking(msg.reasoning_content))
    content = msg.content
    if isinstance(content, str):
        if content:
            out.append(ir.Text(content, _cache(msg.cache_control)))
    elif content:
        for j, part in enumerate(content):
            if part.type not in ("text", "refusal"):
                raise UnsupportedFeature(
                    "assistant messages may only contain text parts",
                    param=f"messages[{i}].content[{j}].type",
                )
            if part.text:
                out.append(ir.Text(part.text, _cache(part.cache_control)))
    for call in msg.tool_calls or ():
        plain, sig = split_tool_call_id(call.id)
        names[call.id] = call.function.name
        names[plain] = call.function.name
        out.append(
            ir.ToolCall(
                plain,
                call.function.name,
                call.function.arguments,
                signature=sig,
                origin="gemini" if sig else None,
            )
        )
    if msg.function_call is not None:
        call_id = f"call_{msg.function_call.name}_{i}"
        legacy.append((msg.function_call.name, call_id))
        out.append(ir.ToolCall(call_id, msg.function_call.name, msg.function_call.arguments))
    _mark_last(out, msg)
    return out


# ---------------------------------------------------------------- tools and settings


def _tools(req: ChatCompletionRequest) -> list[ir.Tool] | None:
    tools: list[ir.Tool] = []
    for k, tool in enumerate(req.tools or ()):
        if tool.type != "function":
            raise UnsupportedFeature(
                f"tool type {tool.type!r} is not supported (only 'function')",
                param=f"tools[{k}].type",
            )
        f = tool.function
        tools.append(
            ir.Tool(f.name, f.description, f.parameters, f.strict, _cache(tool.cache_control))
        )
    for f in req.functions or ():  # legacy function calling
        tools.append(ir.Tool(f.name, f.description, f.parameters, f.strict))
    return tools or None


def _tool_choice(req: ChatCompletionRequest) -> ir.ToolChoice | None:
    choice = req.tool_choice if req.tool_choice is not None else req.function_call
    parallel = req.parallel_tool_calls
    if choice is None:
        return ir.ToolChoice(parallel=parallel) if parallel is not None else None
    param = "tool_choice" if req.tool_choice is not None else "function_call"
    if isinstance(choice, str):
        if choice not in ("auto", "none", "required"):
            raise InvalidRequest(
                f"{param} must be 'auto', 'none', 'required' or a named function (got {choice!r})",
                param=param,
            )
        return ir.ToolChoice(choice, parallel=parallel)  # type: ignore[arg-type]
    name = getattr(choice, "name", None) or (choice.function.name if choice.function else None)  # type: ignore[union-attr]
    if not name:
        raise InvalidRequest(f"{param} names no function", param=param)
    return ir.ToolChoice("tool", name=name, parallel=parallel)


def _settings(req: ChatCompletionRequest) -> ir.Settings:
    effort = req.reasoning_effort
    if effort is not None and effort not in _EFFORTS:
        raise InvalidRequest(
            f"reasoning_effort must be one of {', '.join(sorted(_EFFORTS))} (got {effort!r})",
            param="reasoning_effort",
        )
    fmt = req.response_format
    response_format: ir.ResponseFormat | None = None
    if fmt is not None:
        if fmt.type not in ("text", "json_object", "json_schema"):
            raise InvalidRequest(
                "response_format.type must be text, json_object or json_schema",
                param="response_format.type",
            )
        js = fmt.json_schema
        response_format = ir.ResponseFormat(
            fmt.type,  # type: ignore[arg-type]
            name=js.name if js else None,
            description=js.description if js else None,
            schema=js.schema_ if js else None,
            strict=js.strict if js else None,
        )
        if fmt.type == "json_schema" and (js is None or js.schema_ is None):
            raise InvalidRequest(
                "response_format json_schema needs json_schema.schema",
                param="response_format.json_schema",
            )
    stop = req.stop
    return ir.Settings(
        max_tokens=req.max_completion_tokens
        if req.max_completion_tokens is not None
        else req.max_tokens,
        temperature=req.temperature,
        top_p=req.top_p,
        stop=[stop] if isinstance(stop, str) else stop,
        seed=req.seed,
        presence_penalty=req.presence_penalty,
        frequency_penalty=req.frequency_penalty,
        n=req.n,
        logprobs=req.logprobs,
        top_logprobs=req.top_logprobs,
        reasoning=ir.Reasoning(effort=effort) if effort is not None else None,  # type: ignore[arg-type]
        response_format=response_format,
    )
