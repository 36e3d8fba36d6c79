"""Requests shaped like Claude Code's (fixtures/clients/README.md), with our own text, and
Anthropic-format answers for fake upstreams.

Shape kept from the capture: three system text blocks (an attribution line without
cache_control, two with it, the last one large), 24 client tools whose schemas carry
``$schema``, ``anyOf``/``const``, enums, nested objects, arrays, ``propertyNames``,
defaults and ``additionalProperties: false``; ``metadata.user_id`` as a JSON string;
``thinking`` enabled with a budget; ``context_management``; ``cache_control`` on the last
block of the last message; ``stream: true``; ``max_tokens: 32000``.
"""

from __future__ import annotations

import json
from typing import Any

SESSION = "11111111-2222-4333-8444-555555555555"
BETAS = (
    "claude-code-20250219,interleaved-thinking-2025-05-14,thinking-token-count-2026-05-13,"
    "context-management-2025-06-27,prompt-caching-scope-2026-01-05"
)
HEADERS = {
    "anthropic-beta": BETAS,
    "X-Claude-Code-Session-Id": SESSION,
    "x-app": "cli",
    "anthropic-dangerous-direct-browser-access": "true",
}
EPHEMERAL = {"type": "ephemeral"}
SCHEMA = "https://json-schema.org/draft/2020-12/schema"


def _obj(props: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "$schema": SCHEMA,
        "type": "object",
        "properties": props,
        "required": required,
        "additionalProperties": False,
    }


def _s(desc: str, **kw: Any) -> dict[str, Any]:
    return {"description": desc, "type": "string", **kw}


def tools() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [
        {
            "name": "Shell",
            "description": "Runs a shell command in the project directory and returns its output.",
            "input_schema": _obj(
                {
                    "command": _s("The command line to run"),
                    "description": _s("Five words on what the command does"),
                    "timeout": {
                        "description": "Milliseconds before it is stopped",
                        "type": "number",
                    },
                    "run_in_background": {"description": "Do not wait", "type": "boolean"},
                },
                ["command"],
            ),
        },
        {
            "name": "TaskEdit",
            "description": "Changes a task on the shared task board.",
            "input_schema": _obj(
                {
                    "taskId": _s("Which task"),
                    "status": {
                        "description": "Its new state",
                        "anyOf": [
                            {"type": "string", "enum": ["todo", "doing", "done"]},
                            {"type": "string", "const": "dropped"},
                        ],
                    },
                    "labels": {
                        "description": "Labels to add",
                        "type": "array",
                        "items": {"type": "string"},
                    },
                    "extra": {
                        "description": "Keys to merge; null deletes one",
                        "type": "object",
                        "propertyNames": {"type": "string"},
                        "additionalProperties": {},
                    },
                },
                ["taskId"],
            ),
        },
        {
            "name": "Fetch",
            "description": "Downloads a web page and answers a question about it.",
            "input_schema": _obj(
                {"url": _s("Page address", format="uri"), "question": _s("What to look for")},
                ["url", "question"],
            ),
        },
        {
            "name": "Replace",
            "description": "Replaces text in a file.",
            "input_schema": _obj(
                {
                    "path": _s("Absolute path"),
                    "old": _s("Text to find"),
                    "new": _s("Text to put instead"),
                    "all": {"description": "Every occurrence", "default": False, "type": "boolean"},
                },
                ["path", "old", "new"],
            ),
        },
        {
            "name": "Plan",
            "description": "Records a multi-step plan.",
            "input_schema": _obj(
                {
                    "steps": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "title": {"type": "string"},
                                "state": {"type": "string", "enum": ["open", "closed"]},
                            },
                            "required": ["title"],
                            "additionalProperties": False,
                        },
                        "minItems": 1,
                    }
                },
                ["steps"],
            ),
        },
    ]
    for i in range(19):  # the rest: plainer tools, as most of Claude Code's are
        out.append(
            {
                "name": f"Tool{i:02d}",
                "description": f"Helper number {i} for the agent. " * 8,
                "input_schema": _obj(
                    {
                        "target": _s("What to act on"),
                        "mode": _s("How", enum=["fast", "careful"]),
                        "limit": {
                            "description": "At most this many",
                            "type": "integer",
                            "minimum": 1,
                        },
                    },
                    ["target"],
                ),
            }
        )
    return out


def system() -> list[dict[str, Any]]:
    prompt = "\n".join(
        f"Rule {i}: keep answers short, read files before editing them, and say what you ran."
        for i in range(300)
    )
    return [
        {"type": "text", "text": "x-billing-line: cc_version=9.9.9.abc; cc_entrypoint=test;"},
        {"type": "text", "text": "You are a careful coding agent.", "cache_control": EPHEMERAL},
        {"type": "text", "text": prompt, "cache_control": EPHEMERAL},
    ]


def request(model: str, messages: list[dict[str, Any]], stream: bool = True) -> dict[str, Any]:
    return {
        "model": model,
        "messages": messages,
        "system": system(),
        "tools": tools(),
        "metadata": {
            "user_id": json.dumps(
                {"device_id": "ab" * 32, "account_uuid": "", "session_id": SESSION}
            )
        },
        "max_tokens": 32000,
        "thinking": {"type": "enabled", "budget_tokens": 31999},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "stream": stream,
    }


def first_user_turn(prompt: str) -> dict[str, Any]:
    return {
        "role": "user",
        "content": [
            {"type": "text", "text": "<reminder>Agents available: none.</reminder>"},
            {"type": "text", "text": "<reminder>Today is a Monday.</reminder>"},
            {"type": "text", "text": prompt, "cache_control": EPHEMERAL},
        ],
    }


def without_cache_tail(messages: list[dict[str, Any]]) -> None:
    """Claude Code moves the tail breakpoint: only the last block of the last message keeps it."""
    for m in messages:
        if isinstance(m["content"], list):
            for b in m["content"]:
                b.pop("cache_control", None)


# ---------------------------------------------------------------- Anthropic answers


def _ev(name: str, payload: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(payload)}\n\n".encode()


def sse(
    blocks: list[dict[str, Any]], stop_reason: str, *, model: str, usage: dict[str, int]
) -> bytes:
    """An Anthropic stream for these finished blocks (text / thinking / tool_use)."""
    start_usage = {
        "input_tokens": usage.get("input_tokens", 0),
        "cache_creation_input_tokens": usage.get("cache_creation_input_tokens", 0),
        "cache_read_input_tokens": usage.get("cache_read_input_tokens", 0),
        "output_tokens": 1,
    }
    out = [
        _ev(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_up1",
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": start_usage,
                },
            },
        ),
        _ev("ping", {"type": "ping"}),
    ]
    for i, b in enumerate(blocks):
        if b["type"] == "text":
            out.append(
                _ev(
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": i,
                        "content_block": {"type": "text", "text": ""},
                    },
                )
            )
            for piece in (b["text"][: len(b["text"]) // 2], b["text"][len(b["text"]) // 2 :]):
                out.append(
                    _ev(
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": i,
                            "delta": {"type": "text_delta", "text": piece},
                        },
                    )
                )
        elif b["type"] == "thinking":
            out.append(
                _ev(
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": i,
                        "content_block": {"type": "thinking", "thinking": "", "signature": ""},
                    },
                )
            )
            out.append(
                _ev(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": i,
                        "delta": {"type": "thinking_delta", "thinking": b["thinking"]},
                    },
                )
            )
            out.append(
                _ev(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": i,
                        "delta": {"type": "signature_delta", "signature": b["signature"]},
                    },
                )
            )
        elif b["type"] == "tool_use":
            out.append(
                _ev(
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": i,
                        "content_block": {
                            "type": "tool_use",
                            "id": b["id"],
                            "name": b["name"],
                            "input": {},
                        },
                    },
                )
            )
            args = json.dumps(b["input"])
            for piece in ("", args[:7], args[7:]):
                out.append(
                    _ev(
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": i,
                            "delta": {"type": "input_json_delta", "partial_json": piece},
                        },
                    )
                )
        out.append(_ev("content_block_stop", {"type": "content_block_stop", "index": i}))
    out.append(
        _ev(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": {**start_usage, "output_tokens": usage.get("output_tokens", 0)},
            },
        )
    )
    out.append(_ev("message_stop", {"type": "message_stop"}))
    return b"".join(out)


def message(
    blocks: list[dict[str, Any]], stop_reason: str, *, model: str, usage: dict[str, int]
) -> dict[str, Any]:
    return {
        "id": "msg_up1",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": blocks,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {
            "input_tokens": 0,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": 0,
            **usage,
        },
    }
