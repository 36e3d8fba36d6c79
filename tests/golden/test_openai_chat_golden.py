"""Recorded OpenAI-compatible traffic → IR events (backends/openai_chat.py), the
translator a Messages or Responses client uses in front of an ``openai`` backend and
the adapter uses for custom backends.

Streams are replayed split at 1 byte, 7 bytes and whole; the IR events must be
identical and say what the recording says (read independently from its JSON):
text, tool calls, finish reason and the disjoint usage.
"""

from __future__ import annotations

from typing import Any

import pytest

from chromagent_proxy import codec
from chromagent_proxy.backends import openai_chat
from chromagent_proxy.core import ir
from chromagent_proxy.core.accumulate import Answer
from chromagent_proxy.errors import UpstreamHTTPError
from chromagent_proxy.sse import SSEDecoder
from tests.support.fixtures import (
    Interaction,
    chunks_as_sse,
    load,
    load_chunks,
    provider_files,
)
from tests.support.translate import chat_chunks, drive, flat

SPLITS = (1, 7, None)


def _calls() -> list[tuple[str, Interaction]]:
    out = []
    for path in provider_files("openai"):
        for n, it in enumerate(load(path)):
            if it.method == "POST" and it.url.endswith("/chat/completions"):
                out.append((f"{path.name}#{n}", it))
    return out


CALLS = _calls()
STREAMS = [(n, it.body) for n, it in CALLS if it.status == 200 and it.is_stream]
STREAMS += [(p.name, chunks_as_sse(load_chunks(p))) for p in provider_files("openai", (".txt",))]
NON_STREAMS = [(n, it.body) for n, it in CALLS if it.status == 200 and not it.is_stream]


def payloads(body: bytes) -> list[dict[str, Any]]:
    return [
        codec.loads(e.data)
        for e in SSEDecoder().feed(body + b"\n\n")
        if e.data and e.data != b"[DONE]"
    ]


ERROR_STREAMS = [(n, b) for n, b in STREAMS if any("error" in p for p in payloads(b))]
STREAMS = [(n, b) for n, b in STREAMS if (n, b) not in ERROR_STREAMS]


def expected(objs: list[dict[str, Any]], key: str) -> dict[str, Any]:
    text, finish, usage = "", None, None
    calls: dict[int, dict[str, Any]] = {}
    for obj in objs:
        usage = obj.get("usage") or usage
        for ch in obj.get("choices") or []:
            d = ch.get(key) or {}
            text += d.get("content") or ""
            for pos, tc in enumerate(d.get("tool_calls") or []):
                entry = calls.setdefault(tc.get("index", pos), {"id": None, "name": "", "args": ""})
                entry["id"] = entry["id"] or tc.get("id")
                fn = tc.get("function") or {}
                entry["name"] += fn.get("name") or ""
                entry["args"] += fn.get("arguments") or ""
            finish = ch.get("finish_reason") or finish
    u = usage or {}
    cached = (u.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    reasoning = (u.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
    return {
        "text": text,
        "calls": [calls[k] for k in sorted(calls)],
        "finish": "tool_calls" if finish == "function_call" else finish,
        "usage": ir.Usage(
            input=u.get("prompt_tokens", 0) - cached,
            output=u.get("completion_tokens", 0) - reasoning,
            cache_read=cached,
            reasoning=reasoning,
        )
        if usage
        else None,
    }


def check(events: list[ir.Event], want: dict[str, Any]) -> None:
    answer = Answer()
    answer.add(events)
    choice = answer.choices[0]
    assert choice.content == want["text"]
    assert [(c.id, c.name, c.joined) for c in choice.calls] == [
        (c["id"], c["name"], c["args"]) for c in want["calls"]
    ]
    assert choice.finish == want["finish"]
    assert answer.usage == want["usage"]


@pytest.mark.parametrize(("name", "body"), STREAMS, ids=[n for n, _ in STREAMS])
def test_recorded_stream(name: str, body: bytes) -> None:
    runs = [drive(openai_chat.TRANSLATOR, openai_chat.StreamState("o"), body, s) for s in SPLITS]
    assert flat(runs[0]) == flat(runs[1]) == flat(runs[2])
    check(flat(runs[0]), expected(payloads(body), "delta"))
    # What a chat client would get back is the same answer.
    chunks = chat_chunks(runs[0])
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == expected(payloads(body), "delta")["text"]


@pytest.mark.parametrize(("name", "body"), NON_STREAMS, ids=[n for n, _ in NON_STREAMS])
def test_recorded_completion(name: str, body: bytes) -> None:
    check(openai_chat.answer(body, "o"), expected([codec.loads(body)], "message"))


@pytest.mark.parametrize(("name", "body"), ERROR_STREAMS, ids=[n for n, _ in ERROR_STREAMS])
def test_error_chunk_mid_stream_raises(name: str, body: bytes) -> None:
    (err,) = [p["error"] for p in payloads(body) if "error" in p]
    with pytest.raises(UpstreamHTTPError, match="mid-stream") as info:
        drive(openai_chat.TRANSLATOR, openai_chat.StreamState("o"), body, 7)
    assert err["message"] in info.value.message
    assert not info.value.retryable


def test_error_streams_are_the_recorded_ones() -> None:
    assert len(ERROR_STREAMS) == 2
