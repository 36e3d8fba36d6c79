"""Shared bits of the reasoning / structured output / caching / usage fidelity tests: one
gateway config with every translating backend type in front of one fake upstream, and the
upstreams' plain answers (with the usage each test needs)."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from tests.support.upstream import FakeUpstream

VERTEX_BASE = "/v1/projects/p/locations/us-east5/publishers"


def config(up: FakeUpstream) -> dict[str, Any]:
    """Client model names: ``g:<id>`` Gemini API, ``vg:<id>`` Vertex Gemini (API key),
    ``a:<id>`` Anthropic, ``va:<id>`` Vertex Anthropic (``van:<id>`` with
    options.nativeStructuredOutput), ``o:<id>`` Ollama, ``oa:<id>``
    OpenAI-compatible; the id after the colon is the upstream model."""
    gem = ["gemini-2.5-pro", "gemini-2.5-flash", "gemini-2.5-flash-lite", "gemini-2.0-flash"]
    gem += ["gemini-3-pro-preview", "gemini-3-flash-preview"]
    claude = ["claude-sonnet-4-5", "claude-3-7-sonnet-20250219", "claude-3-5-haiku-20241022"]
    claude += ["claude-opus-4-1-20250805"]
    vclaude = ["claude-sonnet-4-5@20250929", "claude-sonnet-4-6", "claude-3-7-sonnet@20250219"]
    ollama = ["qwen3:8b", "gpt-oss:20b"]
    return {
        "backends": [
            {
                "id": "g",
                "type": "gemini",
                "apiKey": "AIza-test",
                "baseUrl": f"{up.url}/v1beta",
                "modelMapping": {f"g:{m}": m for m in gem},
            },
            {
                "id": "vg",
                "type": "vertex-gemini",
                "apiKey": "ya29.token",
                "projectId": "p",
                "location": "us-east5",
                "baseUrl": f"{up.url}/v1",
                "modelMapping": {f"vg:{m}": m for m in gem},
            },
            {
                "id": "a",
                "type": "anthropic",
                "apiKey": "sk-ant",
                "baseUrl": up.url,
                "modelMapping": {f"a:{m}": m for m in claude},
            },
            {
                "id": "va",
                "type": "vertex-anthropic",
                "apiKey": "ya29.token",
                "projectId": "p",
                "location": "us-east5",
                "baseUrl": f"{up.url}/v1",
                "modelMapping": {f"va:{m}": m for m in vclaude},
            },
            {
                "id": "van",
                "type": "vertex-anthropic",
                "apiKey": "ya29.token",
                "projectId": "p",
                "location": "us-east5",
                "baseUrl": f"{up.url}/v1",
                "modelMapping": {f"van:{m}": m for m in vclaude},
                "options": {"nativeStructuredOutput": True},
            },
            {
                "id": "o",
                "type": "ollama",
                "baseUrl": up.url,
                "modelMapping": {f"o:{m}": m for m in ollama},
            },
            {
                "id": "oa",
                "type": "openai",
                "apiKey": "sk-up",
                "baseUrl": f"{up.url}/oa/v1",
                "modelMapping": {"oa:gpt": "gpt-up"},
            },
        ],
    }


GEMINI_USAGE = {
    "promptTokenCount": 1000,
    "cachedContentTokenCount": 600,
    "candidatesTokenCount": 40,
    "thoughtsTokenCount": 25,
    "totalTokenCount": 1065,
}
ANTHROPIC_USAGE = {
    "input_tokens": 300,
    "cache_creation_input_tokens": 200,
    "cache_read_input_tokens": 500,
    "output_tokens": 65,
}
OPENAI_USAGE = {
    "prompt_tokens": 1000,
    "completion_tokens": 65,
    "total_tokens": 1065,
    "prompt_tokens_details": {"cached_tokens": 600},
    "completion_tokens_details": {"reasoning_tokens": 25},
}


def gemini_answer(text: str = "ok", usage: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "candidates": [
            {"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP"}
        ],
        "usageMetadata": usage or {"promptTokenCount": 5, "candidatesTokenCount": 1},
        "modelVersion": "gemini",
    }


def anthropic_answer(text: str = "ok", usage: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude",
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": usage or {"input_tokens": 5, "output_tokens": 1},
    }


def ollama_answer(text: str = "ok") -> dict[str, Any]:
    return {
        "model": "m",
        "created_at": "2025-01-01T00:00:00Z",
        "message": {"role": "assistant", "content": text},
        "done": True,
        "done_reason": "stop",
        "prompt_eval_count": 5,
        "eval_count": 1,
    }


def openai_answer(text: str = "ok", usage: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-up",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }
        ],
        "usage": usage or {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
    }


def serve_all(
    up: FakeUpstream, text: str = "ok", usage: dict[str, dict[str, Any]] | None = None
) -> None:
    """One route answering each provider in its own format (by path); ``usage`` by
    provider ("gemini", "anthropic", "openai")."""
    usage = usage or {}

    async def handler(request: web.Request) -> web.StreamResponse:
        path = request.path
        if path.startswith("/oa/"):
            body: Any = openai_answer(text, usage.get("openai"))
        elif path == "/api/chat":
            body = ollama_answer(text)
        elif "anthropic" in path or path == "/v1/messages":
            body = anthropic_answer(text, usage.get("anthropic"))
        else:
            body = gemini_answer(text, usage.get("gemini"))
        return web.Response(body=json.dumps(body), content_type="application/json")

    up.route("*", handler)
