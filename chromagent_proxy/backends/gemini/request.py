"""IR request → Gemini ``generateContent`` body (pure; no I/O).

Images arrive inline (``media_ir.inline_images`` fetched the URL ones). Fields the
policy table refuses never get here (dialects decide once); value-level limits Gemini
cannot honour (``parallel_tool_calls: false``, more than 5 stop sequences) are 400s
naming the field.
"""

from __future__ import annotations

import re
from typing import Any

from ... import codec
from ...core import ir
from ...errors import InvalidRequest, UnsupportedFeature
from .schema_clean import Budget, SchemaTooLarge, is_empty_object, to_gemini_schema

ORIGIN = "gemini"
_FUNCTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]{0,127}$")
# Google's documented stand-in for a lost signature (Gemini 3 rejects a replayed
# function call without one): https://ai.google.dev/gemini-api/docs/thought-signatures
SKIP_SIGNATURE = "skip_thought_signature_validator"
_THINKING_BUDGET = {"none": 0, "minimal": 512, "low": 1024, "medium": 8192, "high": 24576}
_THINKING_LEVEL = {
    "none": "minimal",
    "minimal": "minimal",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "xhigh": "high",
}


def _text(parts: list[ir.Text | ir.Image], param: str) -> str:
    texts = []
    for k, part in enumerate(parts):
        if type(part) is not ir.Text:
            raise InvalidRequest(
                "Gemini tool results may only contain text", param=f"{param}.content[{k}]"
            )
        texts.append(part.text)
    return "".join(texts)


def _inline(img: ir.Image, param: str) -> dict[str, Any]:
    if img.data is None or img.media_type is None:
        raise InvalidRequest("image could not be resolved", param=param)
    return {"inlineData": {"mimeType": img.media_type, "data": img.data}}


def _tool_response(result: ir.ToolResult, param: str) -> dict[str, Any]:
    text = _text(result.content, param)
    # Gemini wants an object: a JSON object result is passed as is, anything else wrapped.
    if text[:1] == "{":
        try:
            value = codec.loads(text)
        except ValueError:
            value = None
        if isinstance(value, dict):
            return value
    return {"output": text}


def build_contents(
    req: ir.Request, *, needs_signatures: bool
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(systemInstruction parts, contents) with same-role turns merged."""
    system: list[dict[str, Any]] = [{"text": t.text} for t in req.system or () if t.text]
    contents: list[dict[str, Any]] = []
    # "kind" keeps function responses and plain user text in separate user turns
    # (Gemini 3 may answer an empty candidate otherwise; wire-formats.md §4.2).
    last_kind = ""
    names: dict[str, str] = {}

    def add(role: str, kind: str, parts: list[dict[str, Any]]) -> None:
        nonlocal last_kind
        if contents and contents[-1]["role"] == role and last_kind == kind:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})
        last_kind = kind

    for i, msg in enumerate(req.messages):
        if msg.role == "system":
            system.extend({"text": p.text} for p in msg.parts if type(p) is ir.Text and p.text)
        elif msg.role == "user":
            user: list[dict[str, Any]] = []
            for j, part in enumerate(msg.parts):
                param = f"messages[{i}].content[{j}]"
                if type(part) is ir.Text:
                    user.append({"text": part.text})
                elif type(part) is ir.Image:
                    user.append(_inline(part, param))
                elif type(part) is ir.ToolResult:
                    name = part.name or names.get(part.call_id)
                    if not name:
                        # The IR merges a turn's results, so positions are not the client's.
                        raise InvalidRequest(
                            f"tool_call_id {part.call_id!r} of a tool message does not match a "
                            "tool call of an earlier assistant message",
                            param="messages",
                        )
                    if user:
                        add("user", "user", user)
                        user = []
                    response = _tool_response(part, param)
                    add(
                        "user", "tool", [{"functionResponse": {"name": name, "response": response}}]
                    )
            if user or not msg.parts:
                add("user", "user", user or [{"text": ""}])
        else:
            texts: list[str] = []
            calls: list[dict[str, Any]] = []
            for part in msg.parts:
                if type(part) is ir.Text:
                    texts.append(part.text)
                elif type(part) is ir.ToolCall:
                    names[part.id] = part.name
                    call: dict[str, Any] = {
                        "functionCall": {
                            "name": part.name,
                            "args": ir.arguments_object(
                                part.arguments,
                                f"messages[{i}].tool_calls[{len(calls)}].function.arguments",
                            ),
                        }
                    }
                    # Only Gemini's own signatures go back; a foreign one would be rejected.
                    signature = part.signature if part.origin == ORIGIN else None
                    if signature is None and needs_signatures and not calls:
                        signature = SKIP_SIGNATURE
                    if signature is not None:
                        call["thoughtSignature"] = signature
                    calls.append(call)
                # Thinking from any origin is not replayed: Gemini keeps it in the signatures.
            parts = ([{"text": "".join(texts)}] if "".join(texts) else []) + calls
            if parts:
                add("model", "model", parts)
    return system, contents


def _schema(schema: dict[str, Any], budget: Budget, what: str, param: str) -> dict[str, Any]:
    try:
        return to_gemini_schema(schema, budget)
    except SchemaTooLarge as exc:
        raise InvalidRequest(
            f"{what} is too large for Gemini: with $ref inlined, the request's schemas expand "
            f"to more than {exc.limit} nodes; use fewer $ref reuses or a simpler schema",
            param=param,
            code="schema_too_large",
        ) from None


def _tools(req: ir.Request, budget: Budget) -> list[dict[str, Any]]:
    decls = []
    for i, tool in enumerate(req.tools or ()):
        if not _FUNCTION_NAME.match(tool.name):
            raise InvalidRequest(
                "Gemini function names must start with a letter or '_' and contain only "
                "a-z A-Z 0-9 _ . : - (at most 128)",
                param=f"tools[{i}].function.name",
            )
        decl: dict[str, Any] = {"name": tool.name}
        if tool.description:
            decl["description"] = tool.description
        if not is_empty_object(tool.parameters):
            assert tool.parameters is not None
            decl["parameters"] = _schema(
                tool.parameters,
                budget,
                f"the parameters schema of tool {tool.name!r}",
                f"tools[{i}].function.parameters",
            )
        decls.append(decl)
    return [{"functionDeclarations": decls}] if decls else []


_MODES = {"auto": "AUTO", "none": "NONE", "required": "ANY"}


def _tool_config(req: ir.Request) -> dict[str, Any] | None:
    choice = req.tool_choice
    if choice is None:
        return None
    if choice.parallel is False and req.tools:
        raise UnsupportedFeature(
            "Gemini cannot be told to avoid parallel tool calls (parallel_tool_calls: false)",
            param="parallel_tool_calls",
        )
    if choice.mode == "tool":
        if not any(t.name == choice.name for t in req.tools or ()):
            raise InvalidRequest(
                f"tool_choice names {choice.name!r}, which is not in 'tools'", param="tool_choice"
            )
        return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [choice.name]}}
    if choice.mode == "required" and not req.tools:
        raise InvalidRequest("tool_choice 'required' needs 'tools'", param="tool_choice")
    if not req.tools:
        return None
    return {"functionCallingConfig": {"mode": _MODES[choice.mode]}}


def _thinking(reasoning: ir.Reasoning, model: str) -> dict[str, Any]:
    if reasoning.budget_tokens is not None:
        return {"thinkingBudget": reasoning.budget_tokens}
    effort = reasoning.effort
    if effort is None:
        return {}
    if "gemini-3" in model:
        return {"thinkingLevel": _THINKING_LEVEL[effort]}
    return {"thinkingBudget": _THINKING_BUDGET["high" if effort == "xhigh" else effort]}


def _generation_config(
    req: ir.Request, default_max_tokens: int | None, include_thoughts: bool, budget: Budget
) -> dict[str, Any]:
    s = req.settings
    gc: dict[str, Any] = {}
    if s.temperature is not None:
        gc["temperature"] = s.temperature
    if s.top_p is not None:
        gc["topP"] = s.top_p
    if s.top_k is not None:
        gc["topK"] = s.top_k
    max_tokens = s.max_tokens or default_max_tokens
    if max_tokens is not None:
        gc["maxOutputTokens"] = max_tokens
    if s.stop:
        if len(s.stop) > 5:
            raise InvalidRequest("Gemini accepts at most 5 stop sequences", param="stop")
        gc["stopSequences"] = list(s.stop)
    if s.n is not None and s.n != 1:
        if s.n < 1:
            raise InvalidRequest("n must be at least 1", param="n")
        gc["candidateCount"] = s.n
    if s.seed is not None:
        gc["seed"] = s.seed
    if s.presence_penalty is not None:
        gc["presencePenalty"] = s.presence_penalty
    if s.frequency_penalty is not None:
        gc["frequencyPenalty"] = s.frequency_penalty
    fmt = s.response_format
    if fmt is not None and fmt.type != "text":
        gc["responseMimeType"] = "application/json"
        if fmt.type == "json_schema" and fmt.schema:
            gc["responseSchema"] = _schema(
                fmt.schema,
                budget,
                "the response_format schema",
                "response_format.json_schema.schema",
            )
    thinking = _thinking(s.reasoning, req.model) if s.reasoning is not None else {}
    if include_thoughts and thinking.get("thinkingBudget") != 0:
        thinking["includeThoughts"] = True
    if thinking:
        gc["thinkingConfig"] = thinking
    return gc


def build_body(
    req: ir.Request,
    *,
    default_max_tokens: int | None = None,
    include_thoughts: bool = False,
    safety_settings: list[Any] | None = None,
) -> dict[str, Any]:
    """The body for ``req.model`` (the upstream model name)."""
    system, contents = build_contents(req, needs_signatures="gemini-3" in req.model)
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": system}
    budget = Budget()  # one for all of this request's schemas
    tools = _tools(req, budget)
    if tools:
        body["tools"] = tools
    tool_config = _tool_config(req)
    if tool_config:
        body["toolConfig"] = tool_config
    gc = _generation_config(req, default_max_tokens, include_thoughts, budget)
    if gc:
        body["generationConfig"] = gc
    if safety_settings:
        body["safetySettings"] = safety_settings
    return body
