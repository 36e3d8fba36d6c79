"""Gemini translators against every fitting recording in tests/fixtures/gemini.

Streams are replayed split at 1 byte, 7 bytes and whole; the OpenAI output
must be identical. Expected values are computed from the recorded Gemini JSON
(text, calls, finish reason, usage), not copied from our output.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from chromagent_proxy import codec
from chromagent_proxy.backends.gemini import stream
from chromagent_proxy.backends.gemini.errors import gemini_error
from chromagent_proxy.core import ir
from chromagent_proxy.dialects.chat.ids import split_tool_call_id
from chromagent_proxy.errors import GatewayError
from chromagent_proxy.sse import SSEDecoder
from tests.support.fixtures import (
    Interaction,
    chunks_as_sse,
    fixture_path,
    load,
    load_chunks,
    provider_files,
)
from tests.support.translate import chat_chunks, chat_completion, drive, flat, usage_of

SPLITS = (1, 7, None)
# Vertex streamFunctionCallArguments (partialArgs): only sent when a client
# enables it, which this gateway never does (wire-formats.md §4.4).
NOT_FITTING = {"vercel-ai--google-vertex-stream-tool-call-arguments-nested.1.chunks.txt"}


def _calls() -> list[tuple[str, int, Interaction]]:
    out = []
    for path in provider_files("gemini"):
        for i, it in enumerate(load(path)):
            if it.method == "POST" and ("generateContent" in it.url or "GenerateContent" in it.url):
                out.append((path.name, i, it))
    return out


CALLS = _calls()
STREAMS = [c for c in CALLS if c[2].is_stream and c[2].status == 200]
NON_STREAMS = [c for c in CALLS if not c[2].is_stream and c[2].status == 200]
ERRORS = [c for c in CALLS if c[2].status >= 400]
CHUNK_FILES = [p for p in provider_files("gemini", (".txt",)) if p.name not in NOT_FITTING]


def run_events(body: bytes, split: int | None) -> list[list[ir.Event]]:
    return drive(stream.TRANSLATOR, stream.StreamState("g"), body, split)


def run_stream(body: bytes, split: int | None, include_usage: bool = True) -> list[dict[str, Any]]:
    return chat_chunks(run_events(body, split), include_usage)


def answer(body: bytes) -> dict[str, Any]:
    return chat_completion(stream.answer(stream.decode_event(body), "g"))


def same_output(outputs: list[list[dict[str, Any]]]) -> None:
    """Identical, once the random part of tool call ids is masked."""

    def masked(chunks: list[dict[str, Any]]) -> str:
        text = codec.dumps(chunks).decode()
        for c in chunks:
            for ch in c["choices"]:
                for tc in ch["delta"].get("tool_calls", []):
                    base, _ = split_tool_call_id(tc["id"])
                    text = text.replace(base, "call_ID")
        return text

    first = masked(outputs[0])
    assert all(masked(o) == first for o in outputs[1:])


def expected_from_events(events: list[dict[str, Any]]) -> dict[str, Any]:
    """What an OpenAI client should end up with, read straight from Gemini JSON."""
    text, thoughts, calls, finish, usage, blocked = "", "", [], None, None, False
    for ev in events:
        usage = ev.get("usageMetadata", usage)
        if "promptFeedback" in ev and not ev.get("candidates"):
            blocked = True
        for cand in ev.get("candidates", []):
            for part in cand.get("content", {}).get("parts", []):
                if "functionCall" in part:
                    calls.append(
                        (
                            part["functionCall"]["name"],
                            part["functionCall"].get("args", {}),
                            part.get("thoughtSignature"),
                        )
                    )
                elif part.get("thought"):
                    thoughts += part.get("text", "")
                else:
                    text += part.get("text", "")
            finish = cand.get("finishReason", finish)
    if blocked:
        reason = "content_filter"
    elif finish == "MAX_TOKENS":
        reason = "length"
    elif finish in ("SAFETY", "RECITATION", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII"):
        reason = "content_filter"
    else:
        reason = "tool_calls" if calls else "stop"
    u = usage or {}
    prompt = u.get("promptTokenCount", 0) + u.get("toolUsePromptTokenCount", 0)
    completion = u.get("candidatesTokenCount", 0) + u.get("thoughtsTokenCount", 0)
    cached = u.get("cachedContentTokenCount", 0)
    return {
        # Disjoint IR usage: uncached input, cache reads, visible output, thoughts.
        "ir_usage": ir.Usage(
            input=prompt - cached,
            output=u.get("candidatesTokenCount", 0),
            cache_read=cached,
            reasoning=u.get("thoughtsTokenCount", 0),
        ),
        "text": text,
        "thoughts": thoughts,
        "calls": calls,
        "finish": reason,
        "usage": (prompt, completion, u.get("totalTokenCount", 0)),
        "reasoning_tokens": u.get("thoughtsTokenCount", 0),
    }


def sse_events(body: bytes) -> list[dict[str, Any]]:
    return [codec.loads(ev.data) for ev in SSEDecoder().feed(body + b"\n\n")]


def check_stream(chunks: list[dict[str, Any]], exp: dict[str, Any]) -> None:
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    thoughts = "".join(
        c["choices"][0]["delta"].get("reasoning_content") or "" for c in chunks if c["choices"]
    )
    assert text == exp["text"]
    assert thoughts == exp["thoughts"]
    tool_deltas = [
        tc for c in chunks if c["choices"] for tc in c["choices"][0]["delta"].get("tool_calls", [])
    ]
    assert [tc["index"] for tc in tool_deltas] == list(range(len(exp["calls"])))
    assert len({tc["id"] for tc in tool_deltas}) == len(tool_deltas)
    for tc, (name, args, sig) in zip(tool_deltas, exp["calls"], strict=True):
        assert tc["type"] == "function"
        assert tc["function"]["name"] == name
        assert codec.loads(tc["function"]["arguments"]) == args
        assert split_tool_call_id(tc["id"])[1] == sig
    finals = [c for c in chunks if c["choices"] and c["choices"][0].get("finish_reason")]
    assert len(finals) == 1 and finals[0]["choices"][0]["delta"] == {}
    assert finals[0]["choices"][0]["finish_reason"] == exp["finish"]
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == []
    u = usage_chunk["usage"]
    assert (u["prompt_tokens"], u["completion_tokens"], u["total_tokens"]) == exp["usage"]
    details = u.get("completion_tokens_details", {})
    assert details.get("reasoning_tokens", 0) == exp["reasoning_tokens"]
    assert sum(1 for c in chunks if "usage" in c) == 1


@pytest.mark.parametrize(("name", "i", "it"), STREAMS, ids=[f"{n}#{i}" for n, i, _ in STREAMS])
def test_recorded_sse_stream(name: str, i: int, it: Interaction) -> None:
    exp = expected_from_events(sse_events(it.body))
    batches = [run_events(it.body, split) for split in SPLITS]
    for b in batches:
        assert usage_of(flat(b)) == exp["ir_usage"]
    outputs = [chat_chunks(b) for b in batches]
    same_output(outputs)
    check_stream(outputs[0], exp)


@pytest.mark.parametrize("path", CHUNK_FILES, ids=[p.name for p in CHUNK_FILES])
def test_recorded_chunks(path: Path) -> None:
    payloads = load_chunks(path)
    body = chunks_as_sse(payloads)
    exp = expected_from_events([codec.loads(p) for p in payloads])
    batches = [run_events(body, split) for split in SPLITS]
    for b in batches:
        assert usage_of(flat(b)) == exp["ir_usage"]
    outputs = [chat_chunks(b) for b in batches]
    same_output(outputs)
    check_stream(outputs[0], exp)


def test_stream_without_usage_option_has_no_usage_chunk() -> None:
    body = chunks_as_sse(load_chunks(fixture_path("gemini", "vercel-ai--google-text.chunks.txt")))
    chunks = run_stream(body, None, include_usage=False)
    assert all(c["choices"] for c in chunks)


@pytest.mark.parametrize(
    ("name", "i", "it"), NON_STREAMS, ids=[f"{n}#{i}" for n, i, _ in NON_STREAMS]
)
def test_recorded_response(name: str, i: int, it: Interaction) -> None:
    raw = codec.loads(it.body)
    exp = expected_from_events([raw])
    events = stream.answer(stream.decode_event(it.body), "g")
    assert usage_of(events) == exp["ir_usage"]
    out = chat_completion(events)
    assert out["object"] == "chat.completion"
    choice = out["choices"][0]
    msg = choice["message"]
    assert msg["role"] == "assistant"
    assert choice["finish_reason"] == exp["finish"]
    if exp["calls"]:
        assert (msg["content"] or "") == exp["text"]
        calls = msg["tool_calls"]
        assert [c["function"]["name"] for c in calls] == [c[0] for c in exp["calls"]]
        assert [codec.loads(c["function"]["arguments"]) for c in calls] == [
            c[1] for c in exp["calls"]
        ]
        assert [split_tool_call_id(c["id"])[1] for c in calls] == [c[2] for c in exp["calls"]]
    else:
        assert msg["content"] == exp["text"]
        assert "tool_calls" not in msg
    u = out["usage"]
    assert (u["prompt_tokens"], u["completion_tokens"], u["total_tokens"]) == exp["usage"]


def test_recorded_safety_block_is_content_filter() -> None:
    it = load(fixture_path("gemini", "pydantic-ai--test_google_model_safety_settings.yaml"))[0]
    out = answer(it.body)
    assert out["choices"][0]["finish_reason"] == "content_filter"
    assert out["choices"][0]["message"]["content"] == ""


def test_recorded_thinking_model_empty_max_tokens() -> None:
    path = fixture_path(
        "gemini", "pydantic-ai--test_google_model_max_tokens_thinking_model_empty_response.yaml"
    )
    out = answer(load(path)[0].body)
    assert out["choices"][0]["finish_reason"] == "length"
    assert out["choices"][0]["message"]["content"] == ""
    assert out["usage"]["completion_tokens"] == 2
    assert out["usage"]["completion_tokens_details"]["reasoning_tokens"] == 2


def test_recorded_prompt_block_stream() -> None:
    path = fixture_path("gemini", "vercel-ai--issue-19758-prompt-block.chunks.txt")
    for split in SPLITS:
        chunks = run_stream(chunks_as_sse(load_chunks(path)), split)
        assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
        assert chunks[1]["choices"][0]["finish_reason"] == "content_filter"
        assert chunks[-1]["usage"]["prompt_tokens"] == 9


def _headers(**kv: str) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(kv))


@pytest.mark.parametrize(("name", "i", "it"), ERRORS, ids=[f"{n}#{i}" for n, i, _ in ERRORS])
def test_recorded_error(name: str, i: int, it: Interaction) -> None:
    err = gemini_error("g", it.status, it.body, _headers())
    raw = codec.loads(it.body)["error"]
    assert isinstance(err, GatewayError)
    assert err.status == it.status
    assert raw["message"] in err.message
    if it.status == 404:
        assert err.code == "model_not_found"


def test_recorded_429_retry_info() -> None:
    body = fixture_path("gemini", "vercel-ai--google-429-retry-info.json").read_bytes()
    err = gemini_error("g", 429, body, _headers())
    assert err.status == 429
    assert err.type == "rate_limit_error"
    assert err.headers["Retry-After"] == "35"  # retryDelay "34.4s", rounded up
    assert err.retryable
    assert "You exceeded your current quota" in err.message


def test_every_fixture_is_covered() -> None:
    names = {n for n, _, _ in CALLS} | {p.name for p in CHUNK_FILES} | NOT_FITTING
    names.add("vercel-ai--google-429-retry-info.json")
    all_files = {p.name for p in fixture_path("gemini").iterdir()}
    assert all_files == names
