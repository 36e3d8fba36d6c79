"""Messages request → IR request (translating backends only; the anthropic backends relay
the body and never pay for this).

Policy for what the IR path cannot carry (README "Claude Code and the Anthropic SDK"):
- server tools (``web_search_*``, ``code_execution_*``, ``bash_*``, ``text_editor_*``, …)
  run inside Anthropic's API: 400 naming the tool on every other backend;
- ``document``, ``search_result`` and other non-text/image blocks: 400 naming the block;
- ``context_management``, ``service_tier``, ``container``, ``mcp_servers`` and other unknown
  top-level fields are kept in ``ir.Request.extra`` (backends ignore what they do not know);
- thinking blocks: an Anthropic signature is kept with origin "anthropic" (backends drop
  what is not theirs); a gateway-made one (signing.py) restores the backend's own state;
  a forged one is dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from chromagent_proxy.core import codec, ir
from chromagent_proxy.core.errors import InvalidRequest, UnsupportedFeature
from chromagent_proxy.dialects.base import client_session, decode_body
from chromagent_proxy.dialects.messages.schema import (
    KNOWN_FIELDS,
    Block,
    MessagesRequest,
    tool_value,
)
from chromagent_proxy.dialects.messages.signing import Sealed, Signer, is_gateway_made
from chromagent_proxy.dialects.routed import RoutedDecoder

_decode = RoutedDecoder(MessagesRequest)
_ROLES = ("user", "assistant")


def parse_body(body: bytes) -> MessagesRequest:
    req = decode_body(_decode, body, _param)
    if not req.model:
        raise InvalidRequest("'model' must name a model", param="model")
    for i, msg in enumerate(req.messages):
        if msg.role not in _ROLES:
            raise InvalidRequest(
                f"messages.{i}.role must be 'user' or 'assistant' (got {msg.role!r})",
                param=f"messages.{i}.role",
            )
    if req.max_tokens is not None and req.max_tokens < 1:
        raise InvalidRequest("max_tokens must be at least 1", param="max_tokens")
    for k, t in enumerate(req.tools or ()):
        # Kept as JSON bytes (schema.ToolIn): check the kind of value here, as the typed
        # decode did, so a wrong one is still this request's 400 on every backend. A Raw
        # is the value's exact span in a body msgspec found valid: its first byte says
        # its kind ('"' a string, '{' an object, 'n' null).
        if t.description and memoryview(t.description)[0] not in _STRING_OR_NULL:
            raise _wrong_kind(f"tools.{k}.description", "a string")
        if t.input_schema and memoryview(t.input_schema)[0] not in _OBJECT_OR_NULL:
            raise _wrong_kind(f"tools.{k}.input_schema", "an object")
    return req


_STRING_OR_NULL = (ord('"'), ord("n"))
_OBJECT_OR_NULL = (ord("{"), ord("n"))


def _wrong_kind(param: str, what: str) -> InvalidRequest:
    return InvalidRequest(f"{param} must be {what} or null", param=param)


def _param(exc: msgspec.ValidationError) -> str | None:
    # msgspec: "… - at `$.messages[0].content`": Anthropic names fields "messages.0.content".
    text = str(exc)
    at = text.rfind("at `$")
    if at < 0:
        return None
    path = text[at + 5 :].rstrip("`")
    return path.lstrip(".").replace("[", ".").replace("]", "") or None


def scan(req: MessagesRequest) -> tuple[bool, bool]:
    """(images, gateway_thinking) in one walk of the history's blocks: an image anywhere
    (routing's ``images`` need), and a thinking block the gateway signed (a translated
    turn, signing.py), which the native relay must strip since Anthropic cannot read it.
    Read from the parsed blocks, not by a search of the raw body (≈ 0.5 ms per MB here)."""
    images = thinking = False
    for msg in req.messages:
        if isinstance(msg.content, list):
            for b in msg.content:
                kind = b.type
                if kind == "image":
                    images = True
                elif kind == "thinking":
                    thinking = thinking or is_gateway_made(b.signature)
                elif kind == "tool_result" and isinstance(b.content, list):
                    images = images or any(c.type == "image" for c in b.content)
    return images, thinking


def session_of(headers: Mapping[str, str], req: MessagesRequest) -> str | None:
    """X-Claude-Code-Session-Id, else the session_id inside metadata.user_id (a JSON string)."""
    sid = headers.get("X-Claude-Code-Session-Id") or headers.get("x-claude-code-session-id")
    if sid:
        return client_session(sid)
    uid = (req.metadata or {}).get("user_id")
    if isinstance(uid, str) and uid.startswith("{"):
        try:
            value = codec.loads(uid).get("session_id")
        except (ValueError, AttributeError):
            return None
        return client_session(value) if isinstance(value, str) else None
    return None


def extra_fields(body: bytes) -> dict[str, Any] | None:
    """Top-level fields the IR does not model (context_management, service_tier, …)."""
    data = codec.loads(body)
    if not isinstance(data, dict):
        return None
    extra = {k: v for k, v in data.items() if k not in KNOWN_FIELDS}
    return extra or None


# ---------------------------------------------------------------- the IR


def to_ir(
    req: MessagesRequest, body: bytes, backend: str, signer: Signer, session_id: str | None
) -> ir.Request:
    messages: list[ir.Message] = []
    for i, msg in enumerate(req.messages):
        parts = _parts(msg.content, f"messages.{i}.content", msg.role == "assistant", signer)
        if not parts:
            continue
        role: ir.Role = "assistant" if msg.role == "assistant" else "user"
        if messages and messages[-1].role == role:
            messages[-1].parts.extend(parts)  # Anthropic merges consecutive same-role turns
        else:
            messages.append(ir.Message(role, parts))
    user = (req.metadata or {}).get("user_id")
    return ir.Request(
        model=req.model,
        messages=messages,
        dialect="messages",
        system=_system(req.system),
        tools=_tools(req, backend),
        tool_choice=_tool_choice(req),
        settings=_settings(req),
        stream=bool(req.stream),
        user=user if isinstance(user, str) else None,
        session_id=session_id,
        metadata=req.metadata,
        extra=extra_fields(body),
    )


def cache_mark(cc: dict[str, Any] | None) -> ir.CacheMark | None:
    if not cc:
        return None
    ttl = cc.get("ttl")
    return ir.CacheMark(ttl) if isinstance(ttl, str) and ttl else ir.EPHEMERAL


def _system(system: str | list[Block] | None) -> list[ir.Text] | None:
    if system is None:
        return None
    if isinstance(system, str):
        return [ir.Text(system)] if system else None
    out: list[ir.Text] = []
    for j, b in enumerate(system):
        if b.type != "text":
            raise InvalidRequest(
                f"system.{j}.type must be 'text' (got {b.type!r})", param=f"system.{j}.type"
            )
        out.append(ir.Text(b.text or "", cache_mark(b.cache_control)))
    return out or None


def _image(b: Block, param: str) -> ir.Image:
    src = b.source
    if src is None:
        raise InvalidRequest("image block has no source", param=f"{param}.source")
    if src.type == "base64":
        if not src.data or not src.media_type:
            raise InvalidRequest(
                "a base64 image source needs media_type and data", param=f"{param}.source"
            )
        return ir.Image(media_type=src.media_type, data=src.data, cache=cache_mark(b.cache_control))
    if src.type == "url":
        if not src.url or not src.url.startswith(("http://", "https://")):
            raise InvalidRequest(
                "an image url source needs an http(s) url", param=f"{param}.source.url"
            )
        return ir.Image(url=src.url, cache=cache_mark(b.cache_control))
    raise UnsupportedFeature(
        f"image source type {src.type!r} is not supported here (base64 and url are)",
        param=f"{param}.source.type",
    )


def _parts(
    content: str | list[Block], param: str, assistant: bool, signer: Signer
) -> list[ir.Part]:
    if isinstance(content, str):
        return [ir.Text(content)] if content else []
    out: list[ir.Part] = []
    calls: dict[str, str] = {}  # tool call id → signature restored from a sealed thinking block
    origin_of_calls = ""
    for j, b in enumerate(content):
        p = f"{param}.{j}"
        kind = b.type
        if kind == "text":
            out.append(ir.Text(b.text or "", cache_mark(b.cache_control)))
        elif kind == "image":
            out.append(_image(b, p))
        elif kind == "tool_use" and assistant:
            if not b.id or not b.name:
                raise InvalidRequest("tool_use blocks need id and name", param=p)
            sig = calls.get(b.id)
            out.append(
                ir.ToolCall(
                    b.id,
                    b.name,
                    codec.dumps(b.input if b.input is not None else {}).decode(),
                    signature=sig,
                    origin=origin_of_calls if sig else None,
                    cache=cache_mark(b.cache_control),
                )
            )
        elif kind == "tool_result" and not assistant:
            if not b.tool_use_id:
                raise InvalidRequest(
                    "tool_result blocks need tool_use_id", param=f"{p}.tool_use_id"
                )
            out.append(
                ir.ToolResult(
                    b.tool_use_id,
                    _result_content(b.content, f"{p}.content"),
                    is_error=bool(b.is_error),
                    cache=cache_mark(b.cache_control),
                )
            )
        elif kind == "thinking" and assistant:
            sealed = _open(b.signature, signer)
            if sealed is not None:
                calls.update(sealed.calls)
                origin_of_calls = sealed.origin
                if b.thinking or sealed.signature:
                    out.append(ir.Thinking(b.thinking or "", sealed.signature, sealed.origin))
            elif b.signature and not is_gateway_made(b.signature):
                out.append(ir.Thinking(b.thinking or "", b.signature, "anthropic"))
            elif b.thinking:
                out.append(ir.Thinking(b.thinking))  # forged or unsigned: text only
        elif kind == "redacted_thinking" and assistant:
            if b.data:
                out.append(ir.RedactedThinking(b.data, origin="anthropic"))
        else:
            where = "assistant" if assistant else "user"
            raise UnsupportedFeature(
                f"content block type {kind!r} in a {where} message is not supported by this "
                "backend (text, image, tool_use, tool_result, thinking are)",
                param=f"{p}.type",
            )
    return out


def _open(signature: str | None, signer: Signer) -> Sealed | None:
    return signer.open(signature) if signature else None


def _result_content(content: str | list[Block] | None, param: str) -> list[ir.Text | ir.Image]:
    if content is None:
        return []
    if isinstance(content, str):
        return [ir.Text(content)] if content else []
    out: list[ir.Text | ir.Image] = []
    for j, b in enumerate(content):
        if b.type == "text":
            out.append(ir.Text(b.text or ""))
        elif b.type == "image":
            out.append(_image(b, f"{param}.{j}"))
        else:
            raise UnsupportedFeature(
                f"tool_result content block type {b.type!r} is not supported by this backend "
                "(text and image are)",
                param=f"{param}.{j}.type",
            )
    return out


def _tools(req: MessagesRequest, backend: str) -> list[ir.Tool] | None:
    out: list[ir.Tool] = []
    for k, t in enumerate(req.tools or ()):
        if t.type not in (None, "custom"):
            raise UnsupportedFeature(
                f"server tool {t.name!r} ({t.type}) runs inside Anthropic's API and is only "
                "available through anthropic / vertex-anthropic backends",
                param=f"tools.{k}.type",
            )
        schema = tool_value(t.input_schema)
        if schema is not None and "$schema" in schema:
            schema = {k2: v for k2, v in schema.items() if k2 != "$schema"}
        out.append(
            ir.Tool(
                t.name,
                tool_value(t.description),
                schema,
                t.strict,
                cache_mark(t.cache_control),
            )
        )
    return out or None


def _tool_choice(req: MessagesRequest) -> ir.ToolChoice | None:
    tc = req.tool_choice
    if tc is None:
        return None
    parallel = False if tc.disable_parallel_tool_use else None
    if tc.type == "auto":
        return ir.ToolChoice("auto", parallel=parallel)
    if tc.type == "any":
        return ir.ToolChoice("required", parallel=parallel)
    if tc.type == "none":
        return ir.ToolChoice("none")
    if tc.type == "tool":
        if not tc.name:
            raise InvalidRequest(
                "tool_choice of type 'tool' needs a name", param="tool_choice.name"
            )
        return ir.ToolChoice("tool", name=tc.name, parallel=parallel)
    raise InvalidRequest(
        f"tool_choice.type must be auto, any, tool or none (got {tc.type!r})",
        param="tool_choice.type",
    )


def _settings(req: MessagesRequest) -> ir.Settings:
    reasoning: ir.Reasoning | None = None
    th = req.thinking
    if th is not None:
        if th.type == "enabled":
            if th.budget_tokens is None or th.budget_tokens < 1:
                raise InvalidRequest(
                    "thinking.budget_tokens is required with thinking.type 'enabled'",
                    param="thinking.budget_tokens",
                )
            reasoning = ir.Reasoning(budget_tokens=th.budget_tokens, summary=True)
        elif th.type == "adaptive":
            reasoning = ir.Reasoning(effort="medium", summary=True)
        elif th.type == "disabled":
            reasoning = ir.Reasoning(effort="none")
        else:
            raise InvalidRequest(
                f"thinking.type must be enabled, adaptive or disabled (got {th.type!r})",
                param="thinking.type",
            )
    return ir.Settings(
        max_tokens=req.max_tokens,
        temperature=req.temperature,
        top_p=req.top_p,
        top_k=req.top_k,
        stop=req.stop_sequences or None,
        reasoning=reasoning,
    )
