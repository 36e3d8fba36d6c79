"""OpenAI Responses request → IR request.

Input items are read as plain JSON values, not a closed union of types: clients send
back every output item they received (and new item types appear), so an item this
gateway cannot use with a non-OpenAI upstream is dropped (hosted-tool history) or
refused with a 400 naming it (``item_reference``, ``compaction``: state it does not
keep). Reasoning items carry the backend's reasoning state sealed by this gateway
(``encrypted_content``); a blob it cannot open (stale, foreign, forged) is dropped.
"""

from __future__ import annotations

from typing import Any

from chromagent_proxy.core import codec, ir
from chromagent_proxy.core.errors import InvalidRequest, UnsupportedFeature
from chromagent_proxy.core.seal import Sealer
from chromagent_proxy.dialects.chat.decode import image_from_url
from chromagent_proxy.dialects.responses.request import NS_SEP, PURPOSE, ResponsesRequest
from chromagent_proxy.dialects.responses.tools import Tools, tool_choice

_HOSTED_HISTORY = frozenset(
    {
        "web_search_call",
        "file_search_call",
        "code_interpreter_call",
        "image_generation_call",
        "mcp_list_tools",
        "mcp_call",
        "mcp_approval_request",
        "mcp_approval_response",
        "tool_search_call",
        "tool_search_output",
    }
)


def to_ir(
    req: ResponsesRequest,
    items: list[dict[str, Any]],
    tools: Tools,
    sealer: Sealer,
    backend: str,
) -> ir.Request:
    """``items``: the whole input (stored history first when previous_response_id)."""
    system: list[ir.Text] = []
    if req.instructions:
        system.append(ir.Text(req.instructions))
    messages: list[ir.Message] = []
    state = _Replay(sealer, backend)
    leading = True
    for i, item in enumerate(items):
        kind = item.get("type", "message")
        param = f"input[{i}]"
        if kind == "message":
            role = item.get("role")
            parts = _content(item.get("content"), param, role == "assistant")
            if role in ("system", "developer"):
                texts = [p for p in parts if isinstance(p, ir.Text)]
                if leading:
                    system.extend(texts)
                elif texts:
                    messages.append(ir.Message("system", list[ir.Part](texts)))
                continue
            leading = False
            if role == "assistant":
                _append(messages, "assistant", parts)
            elif role == "user":
                _append(messages, "user", parts)
            else:
                raise InvalidRequest(
                    f"{param}.role must be user, assistant, system or developer", param=param
                )
        elif kind in ("function_call", "custom_tool_call"):
            leading = False
            name = str(item.get("name") or "")
            ns = item.get("namespace")
            flat = f"{ns}{NS_SEP}{name}" if ns else name
            call_id = str(item.get("call_id") or "")
            if kind == "custom_tool_call":
                args = codec.dumps({"input": item.get("input") or ""}).decode()
            else:
                args = item.get("arguments") or ""
                if not isinstance(args, str):
                    raise InvalidRequest(f"{param}.arguments must be a JSON string", param=param)
            sig = state.calls.get(call_id)
            call = ir.ToolCall(
                call_id,
                flat,
                args,
                signature=sig[1] if sig else None,
                origin=sig[0] if sig else None,
            )
            state.pending.append(call)
            _append(messages, "assistant", [call])
        elif kind in ("function_call_output", "custom_tool_call_output"):
            leading = False
            output = item.get("output")
            content: list[ir.Text | ir.Image] = []
            if isinstance(output, str):
                content = [ir.Text(output)] if output else []
            elif isinstance(output, list):
                content = [
                    p
                    for p in _content(output, f"{param}.output", False)
                    if isinstance(p, ir.Text | ir.Image)
                ]
            result = ir.ToolResult(str(item.get("call_id") or ""), content)
            if (
                messages
                and messages[-1].role == "user"
                and all(type(p) is ir.ToolResult for p in messages[-1].parts)
            ):
                messages[-1].parts.append(result)
            else:
                messages.append(ir.Message("user", [result]))
        elif kind == "reasoning":
            leading = False
            thinking = state.restore(item.get("encrypted_content"))
            if thinking:
                _append(messages, "assistant", thinking)
        elif kind in _HOSTED_HISTORY:
            continue  # work an OpenAI-only tool did; another upstream never saw it
        elif kind in ("item_reference", "compaction"):
            raise UnsupportedFeature(
                f"input item type {kind!r} refers to state this gateway does not keep",
                param=f"{param}.type",
            )
        else:
            raise UnsupportedFeature(
                f"input item type {kind!r} is not supported by this backend", param=f"{param}.type"
            )
    state.apply_late_signatures()
    settings = _settings(req)
    return ir.Request(
        model=req.model,
        messages=messages,
        dialect="responses",
        system=system or None,
        tools=tools.flat or None,
        tool_choice=tool_choice(req, tools),
        settings=settings,
        stream=req.stream,
        user=req.user or req.safety_identifier,
        metadata=dict(req.metadata) if req.metadata else None,
    )


class _Replay:
    """Reasoning state found in replayed reasoning items (sealed by this gateway)."""

    __slots__ = ("backend", "calls", "pending", "sealer")

    def __init__(self, sealer: Sealer, backend: str) -> None:
        self.sealer = sealer
        self.backend = backend
        self.calls: dict[str, tuple[str, str]] = {}  # call_id → (origin, signature)
        self.pending: list[ir.ToolCall] = []

    def restore(self, blob: Any) -> list[ir.Part]:
        value = self.sealer.open(blob if isinstance(blob, str) else None, PURPOSE)
        if not isinstance(value, dict):
            return []  # not ours, stale or forged: dropped, never a failure
        origin = value.get("o")
        if not isinstance(origin, str):
            return []
        for call_id, sig in (value.get("c") or {}).items():
            if isinstance(sig, str):
                self.calls[str(call_id)] = (origin, sig)
        out: list[ir.Part] = []
        for block in value.get("t") or ():
            if not isinstance(block, dict):
                continue
            if "r" in block:
                out.append(ir.RedactedThinking(str(block["r"]), origin=origin))
            else:
                sig = block.get("s")
                out.append(
                    ir.Thinking(
                        str(block.get("x") or ""),
                        signature=sig if isinstance(sig, str) else None,
                        origin=origin,
                    )
                )
        return out

    def apply_late_signatures(self) -> None:
        # A reasoning item may follow the calls it carries signatures for.
        for call in self.pending:
            if call.signature is None:
                hit = self.calls.get(call.id)
                if hit is not None:
                    call.origin, call.signature = hit


def _append(messages: list[ir.Message], role: ir.Role, parts: list[ir.Part]) -> None:
    if not parts:
        return
    if (
        messages
        and messages[-1].role == role
        and not (role == "user" and any(type(p) is ir.ToolResult for p in messages[-1].parts))
    ):
        messages[-1].parts.extend(parts)
    else:
        messages.append(ir.Message(role, list(parts)))


def _content(content: Any, param: str, assistant: bool) -> list[ir.Part]:
    if content is None:
        return []
    if isinstance(content, str):
        return [ir.Text(content)] if content else []
    if not isinstance(content, list):
        raise InvalidRequest(f"{param}.content must be a string or a list of parts", param=param)
    out: list[ir.Part] = []
    for j, part in enumerate(content):
        p = f"{param}.content[{j}]"
        if not isinstance(part, dict):
            raise InvalidRequest(f"{p} must be an object", param=p)
        kind = part.get("type")
        if kind in ("input_text", "output_text", "text"):
            text = part.get("text") or ""
            if text:
                out.append(ir.Text(str(text)))
        elif kind == "refusal":
            if part.get("refusal"):
                out.append(ir.Text(str(part["refusal"])))
        elif kind == "input_image":
            url = part.get("image_url")
            if not isinstance(url, str):
                raise UnsupportedFeature(
                    "input_image needs image_url (file_id refers to OpenAI's file store)",
                    param=f"{p}.image_url",
                )
            img = image_from_url(url, f"{p}.image_url")
            img.detail = part.get("detail")
            out.append(img)
        else:
            raise UnsupportedFeature(
                f"content part type {kind!r} is not supported by this backend", param=f"{p}.type"
            )
    return out


def _settings(req: ResponsesRequest) -> ir.Settings:
    fmt = req.text.format if req.text else None
    response_format = None
    if fmt is not None and fmt.type != "text":
        if fmt.type not in ("json_object", "json_schema"):
            raise InvalidRequest(
                "text.format.type must be text, json_object or json_schema",
                param="text.format.type",
            )
        if fmt.type == "json_schema" and fmt.schema is None:
            raise InvalidRequest(
                "text.format json_schema needs a schema", param="text.format.schema"
            )
        response_format = ir.ResponseFormat(
            fmt.type,  # type: ignore[arg-type]
            name=fmt.name,
            description=fmt.description,
            schema=fmt.schema,
            strict=fmt.strict,
        )
    reasoning = None
    if req.reasoning is not None:
        effort = req.reasoning.effort
        summary = req.reasoning.summary or req.reasoning.generate_summary
        if effort is not None or summary:
            reasoning = ir.Reasoning(
                effort="xhigh" if effort == "max" else effort,  # type: ignore[arg-type]
                summary=bool(summary),
            )
    return ir.Settings(
        max_tokens=req.max_output_tokens,
        temperature=req.temperature,
        top_p=req.top_p,
        reasoning=reasoning,
        response_format=response_format,
    )
