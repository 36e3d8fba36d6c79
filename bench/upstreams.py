"""Fake upstreams for every wire format, on one port, as a separate fast process.

A hand-written HTTP/1.1 keep-alive server on asyncio protocols (uvloop when
installed) with every response body precomputed, so it costs a few
microseconds per request and the benchmark measures the proxy, not the stub
(the "direct" rows show it).

What it answers is chosen by the path, and the shape of the answer by the
upstream model name: ``...-n<chunks>-g<gap ms>[-tools]`` (e.g. ``fake-n20-g0``).

    /v1/chat/completions                      OpenAI JSON, or SSE when "stream": true
    /v1beta/models/<m>:generateContent        Gemini JSON
    /v1beta/models/<m>:streamGenerateContent  Gemini SSE (CRLF framing, no [DONE])
    /v1/messages                              Anthropic JSON, or SSE when "stream": true
    .../publishers/anthropic/models/<m>:rawPredict | :streamRawPredict   Vertex-Anthropic
    /api/chat                                 Ollama JSON, or NDJSON (Ollama streams by default)
    /v1/responses                             OpenAI Responses JSON, or its SSE when "stream": true
    /v1/embeddings                            OpenAI embeddings, n<N> in the model = N vectors

Run: ``python -m bench.upstreams --port 18101``.
"""

from __future__ import annotations

import argparse
import asyncio
import re
from collections.abc import Callable
from functools import lru_cache

import orjson

from bench import apis
from bench import scenarios as sc

_MODEL_IN_BODY = re.compile(rb'"model"\s*:\s*"([^"]*)"')
_STREAM_TRUE = re.compile(rb'"stream"\s*:\s*true')
_STREAM_FALSE = re.compile(rb'"stream"\s*:\s*false')
_INCLUDE_USAGE = re.compile(rb'"include_usage"\s*:\s*true')
_MODEL_IN_PATH = re.compile(r"models/([^:/?]+):")

CREATED = 1_700_000_000
USAGE = {"prompt_tokens": 12, "completion_tokens": 20, "total_tokens": 32}


def _json_head(body: bytes, ctype: bytes = b"application/json") -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: "
        + ctype
        + b"\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )


STREAM_HEAD = {
    "sse": b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
    "ndjson": b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n",
}
NOT_FOUND = _json_head(b'{"error":{"message":"no such path","type":"not_found"}}').replace(
    b"200 OK", b"404 Not Found", 1
)


def _chunk(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


# -- OpenAI ------------------------------------------------------------------------------


def openai_json(shape: sc.Shape) -> bytes:
    message: dict[str, object] = {"role": "assistant", "content": shape.text}
    finish = "stop"
    if shape.tools:
        message = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": name, "arguments": orjson.dumps(args).decode()},
                }
                for call_id, name, args in sc.TOOL_CALLS
            ],
        }
        finish = "tool_calls"
    return orjson.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": CREATED,
            "model": shape.model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": USAGE,
        }
    )


def openai_events(shape: sc.Shape, include_usage: bool) -> list[bytes]:
    def chunk(delta: dict[str, object], finish: str | None = None) -> bytes:
        c = {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": shape.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return b"data: " + orjson.dumps(c) + b"\n\n"

    out = [chunk({"role": "assistant", "content": "" if not shape.tools else None})]
    if shape.tools:
        for i, (call_id, name, args) in enumerate(sc.TOOL_CALLS):
            out.append(
                chunk(
                    {
                        "tool_calls": [
                            {
                                "index": i,
                                "id": call_id,
                                "type": "function",
                                "function": {"name": name, "arguments": ""},
                            }
                        ]
                    }
                )
            )
            for frag in sc.fragments(orjson.dumps(args).decode(), shape.chunks // 2):
                out.append(chunk({"tool_calls": [{"index": i, "function": {"arguments": frag}}]}))
        out.append(chunk({}, "tool_calls"))
    else:
        out.extend(chunk({"content": w}) for w in shape.words)
        out.append(chunk({}, "stop"))
    if include_usage:
        usage = {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": shape.model,
            "choices": [],
            "usage": USAGE,
        }
        out.append(b"data: " + orjson.dumps(usage) + b"\n\n")
    out.append(b"data: [DONE]\n\n")
    return out


# -- Gemini ------------------------------------------------------------------------------

GEMINI_USAGE = {"promptTokenCount": 12, "candidatesTokenCount": 20, "totalTokenCount": 32}


def _gemini(parts: list[dict[str, object]], finish: str | None, model: str) -> bytes:
    cand: dict[str, object] = {"content": {"parts": parts, "role": "model"}, "index": 0}
    if finish:
        cand["finishReason"] = finish
    return orjson.dumps(
        {
            "candidates": [cand],
            "usageMetadata": GEMINI_USAGE,
            "modelVersion": model,
            "responseId": "bench",
        }
    )


def _gemini_calls() -> list[dict[str, object]]:
    return [{"functionCall": {"name": name, "args": args}} for _, name, args in sc.TOOL_CALLS]


def gemini_json(shape: sc.Shape) -> bytes:
    parts: list[dict[str, object]] = _gemini_calls() if shape.tools else [{"text": shape.text}]
    return _gemini(parts, "STOP", shape.model)


def gemini_events(shape: sc.Shape) -> list[bytes]:
    if shape.tools:
        return [b"data: " + _gemini(_gemini_calls(), "STOP", shape.model) + b"\r\n\r\n"]
    words = shape.words
    return [
        b"data: "
        + _gemini([{"text": w}], "STOP" if i == len(words) - 1 else None, shape.model)
        + b"\r\n\r\n"
        for i, w in enumerate(words)
    ]


# -- Anthropic ---------------------------------------------------------------------------

ANTHROPIC_USAGE = {"input_tokens": 12, "output_tokens": 20}


def anthropic_json(shape: sc.Shape) -> bytes:
    if shape.tools:
        content: list[dict[str, object]] = [
            {"type": "tool_use", "id": call_id, "name": name, "input": args}
            for call_id, name, args in sc.TOOL_CALLS
        ]
    else:
        content = [{"type": "text", "text": shape.text}]
    return orjson.dumps(
        {
            "id": "msg_bench",
            "type": "message",
            "role": "assistant",
            "model": shape.model,
            "content": content,
            "stop_reason": "tool_use" if shape.tools else "end_turn",
            "stop_sequence": None,
            "usage": ANTHROPIC_USAGE,
        }
    )


def anthropic_events(shape: sc.Shape) -> list[bytes]:
    def ev(kind: str, data: dict[str, object]) -> bytes:
        data = {"type": kind, **data}
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"

    start: dict[str, object] = {
        "id": "msg_bench",
        "type": "message",
        "role": "assistant",
        "model": shape.model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 12, "output_tokens": 1},
    }
    out = [ev("message_start", {"message": start})]
    if shape.tools:
        for i, (call_id, name, args) in enumerate(sc.TOOL_CALLS):
            block = {"type": "tool_use", "id": call_id, "name": name, "input": {}}
            out.append(ev("content_block_start", {"index": i, "content_block": block}))
            for frag in sc.fragments(orjson.dumps(args).decode(), shape.chunks // 2):
                delta = {"type": "input_json_delta", "partial_json": frag}
                out.append(ev("content_block_delta", {"index": i, "delta": delta}))
            out.append(ev("content_block_stop", {"index": i}))
    else:
        block = {"type": "text", "text": ""}
        out.append(ev("content_block_start", {"index": 0, "content_block": block}))
        for w in shape.words:
            delta = {"type": "text_delta", "text": w}
            out.append(ev("content_block_delta", {"index": 0, "delta": delta}))
        out.append(ev("content_block_stop", {"index": 0}))
    stop = {"stop_reason": "tool_use" if shape.tools else "end_turn", "stop_sequence": None}
    out.append(ev("message_delta", {"delta": stop, "usage": ANTHROPIC_USAGE}))
    out.append(ev("message_stop", {}))
    return out


# -- Ollama ------------------------------------------------------------------------------


def _ollama(message: dict[str, object], done: bool, model: str) -> bytes:
    obj: dict[str, object] = {
        "model": model,
        "created_at": "2026-11-01T00:00:00Z",
        "message": message,
        "done": done,
    }
    if done:
        obj.update(done_reason="stop", prompt_eval_count=12, eval_count=20)
    return orjson.dumps(obj)


def _ollama_calls() -> list[dict[str, object]]:
    return [{"function": {"name": name, "arguments": args}} for _, name, args in sc.TOOL_CALLS]


def ollama_json(shape: sc.Shape) -> bytes:
    msg: dict[str, object] = {"role": "assistant", "content": "" if shape.tools else shape.text}
    if shape.tools:
        msg["tool_calls"] = _ollama_calls()
    return _ollama(msg, True, shape.model)


def ollama_events(shape: sc.Shape) -> list[bytes]:
    if shape.tools:
        first: dict[str, object] = {
            "role": "assistant",
            "content": "",
            "tool_calls": _ollama_calls(),
        }
        lines = [_ollama(first, False, shape.model)]
    else:
        lines = [
            _ollama({"role": "assistant", "content": w}, False, shape.model) for w in shape.words
        ]
    lines.append(_ollama({"role": "assistant", "content": ""}, True, shape.model))
    return [line + b"\n" for line in lines]


# -- dispatch ----------------------------------------------------------------------------


Answer = tuple[tuple[bytes, ...], float]


@lru_cache(maxsize=4096)
def response_for(dialect: str, model: str, stream: bool, include_usage: bool) -> Answer:
    """((whole response,), 0) for JSON, or ((head, event, ..., end), gap seconds) for streams."""
    shape = sc.Shape.parse(model)
    if not stream:
        body = {
            "openai": openai_json,
            "gemini": gemini_json,
            "anthropic": anthropic_json,
            "ollama": ollama_json,
            "responses": apis.responses_json,
            "embeddings": apis.embeddings_json,
        }[dialect](shape)
        return (_json_head(body),), 0.0
    events: list[bytes]
    if dialect == "openai":
        events = openai_events(shape, include_usage)
    elif dialect == "gemini":
        events = gemini_events(shape)
    elif dialect == "anthropic":
        events = anthropic_events(shape)
    elif dialect == "responses":
        events = apis.responses_events(shape)
    else:
        events = ollama_events(shape)
    head = STREAM_HEAD["ndjson" if dialect == "ollama" else "sse"]
    return (head, *(_chunk(e) for e in events), b"0\r\n\r\n"), shape.gap_ms / 1000


def route(path: str, body: bytes) -> Answer | None:
    """Pick the dialect from the path; the model and stream flag from path or body."""
    m = _MODEL_IN_BODY.search(body[:4096]) or _MODEL_IN_BODY.search(body[-4096:])
    model = m.group(1).decode() if m else ""
    head = body[:4096] + body[-4096:]
    if path.endswith("/chat/completions"):
        stream = _STREAM_TRUE.search(head) is not None
        return response_for("openai", model, stream, _INCLUDE_USAGE.search(head) is not None)
    if path.endswith("/responses"):
        return response_for("responses", model, _STREAM_TRUE.search(head) is not None, False)
    if path.endswith("/embeddings"):
        return response_for("embeddings", model, False, False)
    if ":generateContent" in path or ":streamGenerateContent" in path:
        pm = _MODEL_IN_PATH.search(path)
        model = pm.group(1) if pm else ""
        return response_for("gemini", model, ":streamGenerateContent" in path, False)
    if ":rawPredict" in path or ":streamRawPredict" in path:
        pm = _MODEL_IN_PATH.search(path)
        model = pm.group(1) if pm else ""
        return response_for("anthropic", model, ":streamRawPredict" in path, False)
    if path.endswith("/messages"):
        return response_for("anthropic", model, _STREAM_TRUE.search(head) is not None, False)
    if path.endswith("/api/chat"):
        return response_for("ollama", model, _STREAM_FALSE.search(head) is None, False)
    return None


class UpstreamProtocol(asyncio.Protocol):
    """One keep-alive connection; requests are answered in order."""

    __slots__ = ("_buf", "_busy", "_closed", "_transport")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._transport: asyncio.Transport | None = None
        self._busy = False
        self._closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True

    def data_received(self, data: bytes) -> None:
        self._buf += data
        if not self._busy:
            self._process()

    def _process(self) -> None:
        buf = self._buf
        while True:
            end = buf.find(b"\r\n\r\n")
            if end == -1:
                return
            head = bytes(buf[:end]).decode("latin-1")
            lines = head.split("\r\n")
            parts = lines[0].split(" ")
            path = parts[1] if len(parts) > 1 else "/"
            length = 0
            chunked = False
            for line in lines[1:]:
                name, _, value = line.partition(":")
                low = name.strip().lower()
                if low == "content-length":
                    length = int(value)
                elif low == "transfer-encoding" and "chunked" in value.lower():
                    chunked = True
            start = end + 4
            if chunked:
                decoded = _dechunk(buf, start)
                if decoded is None:
                    return
                body, consumed = decoded
            else:
                if len(buf) < start + length:
                    return
                body = bytes(buf[start : start + length])
                consumed = start + length
            del buf[:consumed]
            answer = route(path, body)
            assert self._transport is not None
            if answer is None:
                self._transport.write(NOT_FOUND)
                continue
            parts_out, gap = answer
            if gap <= 0:
                self._transport.write(b"".join(parts_out))
                continue
            self._busy = True
            asyncio.get_running_loop().create_task(self._paced(parts_out, gap))
            return

    async def _paced(self, parts: tuple[bytes, ...], gap: float) -> None:
        transport = self._transport
        assert transport is not None
        transport.write(parts[0])
        for part in parts[1:-1]:
            if self._closed:
                return
            transport.write(part)
            await asyncio.sleep(gap)
        if self._closed:
            return
        transport.write(parts[-1])
        self._busy = False
        if self._buf:
            self._process()


def _dechunk(buf: bytearray, pos: int) -> tuple[bytes, int] | None:
    out = bytearray()
    while True:
        nl = buf.find(b"\r\n", pos)
        if nl == -1:
            return None
        size = int(bytes(buf[pos:nl]).split(b";")[0], 16)
        pos = nl + 2
        if size == 0:
            if len(buf) < pos + 2:
                return None
            return bytes(out), pos + 2
        if len(buf) < pos + size + 2:
            return None
        out += buf[pos : pos + size]
        pos += size + 2


async def serve(host: str, port: int, ready: Callable[[], None] | None = None) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        UpstreamProtocol, host, port, backlog=4096, reuse_address=True
    )
    if ready:
        ready()
    async with server:
        await server.serve_forever()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=18101)
    args = p.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    print(f"fake upstreams on http://{args.host}:{args.port}", flush=True)
    try:
        asyncio.run(serve(args.host, args.port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
