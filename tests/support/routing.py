"""Helpers for the routing / failover e2e tests: OpenAI-speaking fake upstreams per backend."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from tests.support.upstream import FakeUpstream, Handler, json_reply, stream_reply


def completion(text: str, model: str = "m") -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{text}",
        "object": "chat.completion",
        "created": 1,
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


def sse(text: str, model: str = "m") -> bytes:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        body = {
            "id": f"chatcmpl-{text}",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return b"data: " + json.dumps(body).encode() + b"\n\n"

    return (
        chunk({"role": "assistant", "content": ""})
        + chunk({"content": text})
        + chunk({}, "stop")
        + b"data: [DONE]\n\n"
    )


def error_reply(status: int, headers: dict[str, str] | None = None) -> Handler:
    return json_reply(
        {"error": {"message": f"upstream says {status}", "type": "api_error", "code": None}},
        status=status,
        headers=headers,
    )


def answer(name: str) -> Handler:
    """Reply as backend ``name``: JSON or SSE, whichever the request asked for."""
    plain = json_reply(completion(name))
    streamed = stream_reply(sse(name))

    async def handler(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        return await (streamed if body.get("stream") else plain)(request)

    return handler


def backend(
    up: FakeUpstream, name: str, handler: Handler | None = None, **extra: Any
) -> dict[str, Any]:
    """An ``openai`` backend whose upstream is ``up`` under the path prefix ``/name``."""
    up.route(f"/{name}/v1/chat/completions", handler or answer(name))
    return {"id": name, "type": "openai", "baseUrl": f"{up.url}/{name}/v1", **extra}


def hits(up: FakeUpstream, name: str) -> int:
    return sum(1 for r in up.received if r.path == f"/{name}/v1/chat/completions")


def body(model: str = "m", **kw: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], **kw}


TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
IMAGE_MSG = [
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "what is this"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        ],
    }
]
