"""OpenAI chat request → Gemini ``generateContent`` body (pure; no I/O).

Images arrive already resolved (``media.collect_images``). Every parameter
Gemini cannot honour is refused with a 400 naming it (see ``check_extras``).
"""

from __future__ import annotations

import re
from typing import Any

from msgspec import Struct

from ... import codec
from ...errors import InvalidRequest, UnsupportedFeature
from ...media import Image
from ...schema.openai import ChatCompletionRequest, ContentPart, Message
from .ids import split_tool_call_id
from .schema_clean import Budget, SchemaTooLarge, is_empty_object, to_gemini_schema

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
_AUDIO_TYPES = {"wav": "audio/wav", "mp3": "audio/mp3"}


class _Extras(Struct):
    """Request fields ChatCompletionRequest does not declare that Gemini cannot honour."""

    logit_bias: dict[str, Any] | None = None
    audio: dict[str, Any] | None = None
    modalities: list[str] | None = None
    prediction: dict[str, Any] | None = None
    functions: list[Any] | None = None
    function_call: Any = None
    web_search_options: dict[str, Any] | None = None


_decode_extras = codec.decoder(_Extras).decode


def check_extras(raw_body: bytes) -> None:
    """400 for a field this backend would otherwise drop silently."""
    try:
        extras = _decode_extras(raw_body)
    except (codec.DecodeError, codec.ValidationError):
        return  # the handler validated the body; an odd type here is not ours to judge
    except RecursionError:
        raise InvalidRequest("the request JSON is nested too deeply") from None
    for name in ("logit_bias", "audio", "prediction", "web_search_options"):
        if getattr(extras, name):
            raise UnsupportedFeature(f"'{name}' is not supported by Gemini backends", param=name)
    if extras.modalities and any(m != "text" for m in extras.modalities):
        raise UnsupportedFeature("Gemini backends only return text", param="modalities")
    if extras.functions or extras.function_call is not None:
        raise UnsupportedFeature(
            "legacy 'functions'/'function_call' are not supported; use 'tools'",
            param="functions" if extras.functions else "function_call",
        )


def _unsupported(req: ChatCompletionRequest) -> None:
    if req.logprobs or req.top_logprobs:
        param = "logprobs" if req.logprobs else "top_logprobs"
        raise UnsupportedFeature(f"'{param}' is not supported by Gemini backends", param=param)
    if req.parallel_tool_calls is False and req.tools:
        raise UnsupportedFeature(
            "Gemini cannot be told to avoid parallel tool calls (parallel_tool_calls: false)",
            param="parallel_tool_calls",
        )


def _text_of(content: str | list[ContentPart] | None, param: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    texts = []
    for j, part in enumerate(content):
        if part.type in ("text", "refusal") or part.text is not None:
            texts.append(part.text or "")
        else:
            raise InvalidRequest(
                f"a {part.type!r} part is not allowed here", param=f"{param}.content[{j}]"
            )
    return "".join(texts)


def _user_parts(msg: Message, i: int, images: dict[str, Image]) -> list[dict[str, Any]]:
    if msg.content is None or isinstance(msg.content, str):
        return [{"text": msg.content or ""}]
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(msg.content):
        param = f"messages[{i}].content[{j}]"
        if part.type == "text":
            parts.append({"text": part.text or ""})
        elif part.type == "image_url" and part.image_url is not None:
            img = images.get(part.image_url.url)
            if img is None:
                raise InvalidRequest("image could not be resolved", param=f"{param}.image_url")
            parts.append({"inlineData": {"mimeType": img.media_type, "data": img.b64}})
        elif part.type == "input_audio" and part.input_audio:
            fmt = part.input_audio.get("format")
            data = part.input_audio.get("data")
            if fmt not in _AUDIO_TYPES or not isinstance(data, str):
                raise InvalidRequest(
                    "input_audio needs base64 'data' and 'format' wav or mp3",
                    param=f"{param}.input_audio",
                )
            parts.append({"inlineData": {"mimeType": _AUDIO_TYPES[fmt], "data": data}})
        elif part.type == "file" and part.file and isinstance(part.file.get("file_data"), str):
            head, _, payload = part.file["file_data"].partition(",")
            if not head.startswith("data:") or ";base64" not in head or not payload:
                raise InvalidRequest(
                    "file_data must be a base64 data: URL", param=f"{param}.file.file_data"
                )
            parts.append({"inlineData": {"mimeType": head[5:].split(";")[0], "data": payload}})
        else:
            raise UnsupportedFeature(
                f"content part type {part.type!r} is not supported by Gemini backends", param=param
            )
    return parts or [{"text": ""}]


def _function_args(arguments: str, param: str) -> dict[str, Any]:
    if not arguments.strip():
        return {}
    try:
        args = codec.loads(arguments)
    except ValueError:
        raise InvalidRequest("tool call arguments are not valid JSON", param=param) from None
    if not isinstance(args, dict):
        raise InvalidRequest("tool call arguments must be a JSON object", param=param)
    return args


def _tool_response(content: str | list[ContentPart] | None, param: str) -> dict[str, Any]:
    text = _text_of(content, param)
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
    req: ChatCompletionRequest, images: dict[str, Image], *, needs_signatures: bool
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(systemInstruction parts, contents) with same-role turns merged."""
    system: list[dict[str, Any]] = []
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
        role = msg.role
        if role in ("system", "developer"):
            text = _text_of(msg.content, f"messages[{i}]")
            if text:
                system.append({"text": text})
        elif role == "user":
            add("user", "user", _user_parts(msg, i, images))
        elif role == "assistant":
            parts: list[dict[str, Any]] = []
            text = _text_of(msg.content, f"messages[{i}]")
            if text:
                parts.append({"text": text})
            first_call = True
            for j, call in enumerate(msg.tool_calls or ()):
                names[call.id] = call.function.name
                _, signature = split_tool_call_id(call.id)
                part: dict[str, Any] = {
                    "functionCall": {
                        "name": call.function.name,
                        "args": _function_args(
                            call.function.arguments,
                            f"messages[{i}].tool_calls[{j}].function.arguments",
                        ),
                    }
                }
                if signature is None and needs_signatures and first_call:
                    signature = SKIP_SIGNATURE
                if signature is not None:
                    part["thoughtSignature"] = signature
                first_call = False
                parts.append(part)
            if parts:
                add("model", "model", parts)
        elif role in ("tool", "function"):
            name = names.get(msg.tool_call_id or "") or msg.name
            if not name:
                raise InvalidRequest(
                    f"messages[{i}].tool_call_id {msg.tool_call_id!r} does not match a tool call "
                    "of an earlier assistant message",
                    param=f"messages[{i}].tool_call_id",
                )
            response = _tool_response(msg.content, f"messages[{i}]")
            add("user", "tool", [{"functionResponse": {"name": name, "response": response}}])
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


def _tools(req: ChatCompletionRequest, budget: Budget) -> list[dict[str, Any]]:
    decls = []
    for i, tool in enumerate(req.tools or ()):
        if tool.type != "function":
            raise UnsupportedFeature(
                f"tool type {tool.type!r} is not supported by Gemini backends",
                param=f"tools[{i}].type",
            )
        fn = tool.function
        if not _FUNCTION_NAME.match(fn.name):
            raise InvalidRequest(
                "Gemini function names must start with a letter or '_' and contain only "
                "a-z A-Z 0-9 _ . : - (at most 128)",
                param=f"tools[{i}].function.name",
            )
        decl: dict[str, Any] = {"name": fn.name}
        if fn.description:
            decl["description"] = fn.description
        if not is_empty_object(fn.parameters):
            assert fn.parameters is not None
            decl["parameters"] = _schema(
                fn.parameters,
                budget,
                f"the parameters schema of tool {fn.name!r}",
                f"tools[{i}].function.parameters",
            )
        decls.append(decl)
    return [{"functionDeclarations": decls}] if decls else []


def _tool_config(req: ChatCompletionRequest) -> dict[str, Any] | None:
    choice = req.tool_choice
    if choice is None:
        return None
    if isinstance(choice, str):
        modes = {"auto": "AUTO", "none": "NONE", "required": "ANY"}
        if choice not in modes:
            raise InvalidRequest(
                f"tool_choice must be auto, none, required or a named function (got {choice!r})",
                param="tool_choice",
            )
        if choice == "required" and not req.tools:
            raise InvalidRequest("tool_choice 'required' needs 'tools'", param="tool_choice")
        if not req.tools:
            return None
        return {"functionCallingConfig": {"mode": modes[choice]}}
    if choice.type != "function" or choice.function is None:
        raise UnsupportedFeature(
            f"tool_choice type {choice.type!r} is not supported by Gemini backends",
            param="tool_choice",
        )
    name = choice.function.name
    if not any(t.function.name == name for t in req.tools or ()):
        raise InvalidRequest(
            f"tool_choice names {name!r}, which is not in 'tools'", param="tool_choice"
        )
    return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [name]}}


def _thinking(effort: str, model: str) -> dict[str, Any]:
    if "gemini-3" in model:
        if effort not in _THINKING_LEVEL:
            raise InvalidRequest(
                f"reasoning_effort must be one of {', '.join(_THINKING_LEVEL)}",
                param="reasoning_effort",
            )
        return {"thinkingLevel": _THINKING_LEVEL[effort]}
    if effort == "xhigh":
        effort = "high"
    if effort not in _THINKING_BUDGET:
        raise InvalidRequest(
            f"reasoning_effort must be one of {', '.join(_THINKING_BUDGET)}, xhigh",
            param="reasoning_effort",
        )
    return {"thinkingBudget": _THINKING_BUDGET[effort]}


def _generation_config(
    req: ChatCompletionRequest,
    model: str,
    default_max_tokens: int | None,
    include_thoughts: bool,
    budget: Budget,
) -> dict[str, Any]:
    gc: dict[str, Any] = {}
    if req.temperature is not None:
        gc["temperature"] = req.temperature
    if req.top_p is not None:
        gc["topP"] = req.top_p
    max_tokens = req.max_completion_tokens or req.max_tokens or default_max_tokens
    if max_tokens is not None:
        gc["maxOutputTokens"] = max_tokens
    if req.stop:
        stops = [req.stop] if isinstance(req.stop, str) else list(req.stop)
        if len(stops) > 5:
            raise InvalidRequest("Gemini accepts at most 5 stop sequences", param="stop")
        gc["stopSequences"] = stops
    if req.n is not None and req.n != 1:
        if req.n < 1:
            raise InvalidRequest("n must be at least 1", param="n")
        gc["candidateCount"] = req.n
    if req.seed is not None:
        gc["seed"] = req.seed
    if req.presence_penalty is not None:
        gc["presencePenalty"] = req.presence_penalty
    if req.frequency_penalty is not None:
        gc["frequencyPenalty"] = req.frequency_penalty
    fmt = req.response_format
    if fmt is not None and fmt.type != "text":
        if fmt.type == "json_object":
            gc["responseMimeType"] = "application/json"
        elif fmt.type == "json_schema" and fmt.json_schema is not None:
            gc["responseMimeType"] = "application/json"
            if fmt.json_schema.schema_:
                gc["responseSchema"] = _schema(
                    fmt.json_schema.schema_,
                    budget,
                    "the response_format schema",
                    "response_format.json_schema.schema",
                )
        else:
            raise InvalidRequest(
                f"response_format type {fmt.type!r} is not supported", param="response_format"
            )
    thinking: dict[str, Any] = {}
    if req.reasoning_effort is not None:
        thinking = _thinking(req.reasoning_effort, model)
    if include_thoughts and thinking.get("thinkingBudget") != 0:
        thinking["includeThoughts"] = True
    if thinking:
        gc["thinkingConfig"] = thinking
    return gc


def build_body(
    req: ChatCompletionRequest,
    upstream_model: str,
    images: dict[str, Image],
    *,
    default_max_tokens: int | None = None,
    include_thoughts: bool = False,
    safety_settings: list[Any] | None = None,
) -> dict[str, Any]:
    _unsupported(req)
    system, contents = build_contents(req, images, needs_signatures="gemini-3" in upstream_model)
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
    gc = _generation_config(req, upstream_model, default_max_tokens, include_thoughts, budget)
    if gc:
        body["generationConfig"] = gc
    if safety_settings:
        body["safetySettings"] = safety_settings
    return body
