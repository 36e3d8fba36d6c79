"""Responses and Embeddings clients: request bodies, the fake upstream's answers, checks.

Kept apart from scenarios.py/upstreams.py (already long). The answer's shape comes from
the upstream model name as everywhere else (``fake-n20-g0``: 20 text chunks; for
embeddings ``fake-n100-g0-embed``: 100 vectors), so every answer can be checked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from bench.scenarios import Scenario, Shape

DIMS = 8
RESP_USAGE = {
    "input_tokens": 12,
    "input_tokens_details": {"cached_tokens": 0},
    "output_tokens": 20,
    "output_tokens_details": {"reasoning_tokens": 0},
    "total_tokens": 32,
}


# -- request bodies ----------------------------------------------------------------------


def responses_body(sc: Scenario, model: str) -> dict[str, Any]:
    """What an OpenAI SDK Responses client (Codex) sends to /v1/responses."""
    body: dict[str, Any] = {
        "model": model,
        "input": [{"role": "user", "content": [{"type": "input_text", "text": "Say hello."}]}],
        "max_output_tokens": 64,
    }
    if sc.stream:
        body["stream"] = True
    return body


def embeddings_body(sc: Scenario, model: str) -> dict[str, Any]:
    n = sc.shape.chunks
    return {"model": model, "input": [f"bench sentence number {i}." for i in range(n)]}


# -- fake upstream answers ---------------------------------------------------------------


def _response(shape: Shape, status: str, output: list[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": "resp_bench",
        "object": "response",
        "created_at": 1_700_000_000,
        "status": status,
        "model": shape.model,
        "output": output,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
    }
    if status == "completed":
        out["usage"] = RESP_USAGE
    return out


def _message(text: str) -> dict[str, Any]:
    return {
        "id": "msg_bench",
        "type": "message",
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }


def responses_json(shape: Shape) -> bytes:
    return orjson.dumps(_response(shape, "completed", [_message(shape.text)]))


def responses_events(shape: Shape) -> list[bytes]:
    """The Responses SSE grammar (``event:`` + ``data:``), one text delta per word."""
    text = shape.text
    where = {"item_id": "msg_bench", "output_index": 0, "content_index": 0}
    part = {"type": "output_text", "text": "", "annotations": []}
    item = {"id": "msg_bench", "type": "message", "status": "in_progress", "role": "assistant",
            "content": []}  # fmt: skip
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": _response(shape, "in_progress", [])},
        {"type": "response.in_progress", "response": _response(shape, "in_progress", [])},
        {"type": "response.output_item.added", "output_index": 0, "item": item},
        {"type": "response.content_part.added", **where, "part": part},
        *({"type": "response.output_text.delta", **where, "delta": w} for w in shape.words),
        {"type": "response.output_text.done", **where, "text": text},
        {"type": "response.content_part.done", **where, "part": {**part, "text": text}},
        {"type": "response.output_item.done", "output_index": 0, "item": _message(text)},
        {"type": "response.completed",
         "response": _response(shape, "completed", [_message(text)])},
    ]  # fmt: skip
    return [
        b"event: "
        + e["type"].encode()
        + b"\ndata: "
        + orjson.dumps({"type": e["type"], "sequence_number": i, **e})
        + b"\n\n"
        for i, e in enumerate(events)
    ]


def embeddings_json(shape: Shape) -> bytes:
    n = shape.chunks
    data = [
        {"object": "embedding", "index": i, "embedding": [(i + d) / 100 for d in range(DIMS)]}
        for i in range(n)
    ]
    usage = {"prompt_tokens": 6 * n, "total_tokens": 6 * n}
    return orjson.dumps({"object": "list", "data": data, "model": shape.model, "usage": usage})


# -- checks ------------------------------------------------------------------------------


def check_responses(sc: Scenario, body: bytes) -> str | None:
    """Full text in order, usage, and for streams: ends with response.completed, no error."""
    want = sc.shape.text
    try:
        if not sc.stream:
            o = orjson.loads(body)
            text = "".join(
                c.get("text", "")
                for item in o["output"]
                if item.get("type") == "message"
                for c in item["content"]
                if c.get("type") == "output_text"
            )
            if o.get("status") != "completed":
                return f"status {o.get('status')!r}"
            if text != want:
                return f"text differs: {text[:60]!r}"
            return None if o.get("usage") else "no usage"
        text, last, final = "", "", ""
        for ev in body.replace(b"\r\n", b"\n").split(b"\n\n"):
            line = next((x for x in ev.split(b"\n") if x.startswith(b"data: ")), None)
            if line is None:
                continue
            o = orjson.loads(line[6:])
            last = o["type"]
            if last == "response.output_text.delta":
                text += o["delta"]
            elif last == "response.output_text.done":
                final = o["text"]
            elif last in ("error", "response.failed", "response.incomplete"):
                return f"{last} event: {str(o)[:120]}"
            elif last == "response.completed" and not o["response"].get("usage"):
                return "response.completed without usage"
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError) as exc:
        return f"bad Responses answer ({exc.__class__.__name__}): {body[:100]!r}"
    if last != "response.completed":
        return f"stream does not end with response.completed (last {last!r})"
    if text != want or final != want:
        return f"text differs: {text[:60]!r} / done {final[:60]!r}"
    return None


def check_embeddings(sc: Scenario, body: bytes) -> str | None:
    n = sc.shape.chunks
    try:
        o = orjson.loads(body)
        data = o["data"]
        if o.get("object") != "list" or len(data) != n:
            return f"expected a list of {n} embeddings, got {len(data)}"
        for i, e in enumerate(data):
            if e["index"] != i or len(e["embedding"]) != DIMS:
                return f"embedding {i}: index {e['index']}, {len(e['embedding'])} dims"
        return None if o.get("usage") else "no usage"
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError) as exc:
        return f"bad embeddings answer ({exc.__class__.__name__}): {body[:100]!r}"
