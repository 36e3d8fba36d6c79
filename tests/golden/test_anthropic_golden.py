"""Recorded Anthropic Messages traffic → OpenAI chunks and completions.

Every recorded stream is replayed through SSEDecoder + step/finish (IR events, then the
Chat Completions StreamEncoder) at split sizes 1, 7 and whole; the outputs must be identical, and what they say (text,
tool calls, reasoning, finish reason, usage) is derived from the recording
itself by an independent reading of its events.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from chromagent_proxy.backends.anthropic.errors import http_error
from chromagent_proxy.backends.anthropic.request import THINKING_BUDGETS, build_body
from chromagent_proxy.backends.anthropic.stream import (
    TRANSLATOR,
    StreamState,
    answer,
    decode_message,
)
from chromagent_proxy.core import ir
from chromagent_proxy.dialects.chat.decode import to_ir
from chromagent_proxy.dialects.chat.dialect import parse_request
from chromagent_proxy.errors import UpstreamError
from tests.support.fixtures import chunks_as_sse, fixture_path, load, load_chunks, provider_files
from tests.support.translate import chat_chunks, chat_completion, drive, flat, usage_of

SPLITS = [1, 7, None]
FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def stream_sources() -> list[tuple[str, bytes]]:
    """(name, raw SSE body) of every recorded 200 stream, plus the chunk files as SSE."""
    out = []
    for path in provider_files("anthropic"):
        for n, it in enumerate(load(path)):
            if it.status == 200 and it.is_stream:
                out.append((f"{path.name}#{n}", it.body))
    for path in sorted(fixture_path("anthropic").glob("*.chunks.txt")):
        out.append((path.name, chunks_as_sse(load_chunks(path), with_event_type=True)))
    return out


def message_sources() -> list[tuple[str, bytes]]:
    out = []
    for path in provider_files("anthropic"):
        for n, it in enumerate(load(path)):
            if (
                it.status == 200
                and not it.is_stream
                and it.content_type.startswith("application/json")
            ):
                out.append((f"{path.name}#{n}", it.body))
    out.append(
        (
            "vercel-ai--anthropic-text.json",
            fixture_path("anthropic", "vercel-ai--anthropic-text.json").read_bytes(),
        )
    )
    return out


STREAMS = stream_sources()
MESSAGES = message_sources()


def events(
    body: bytes, split: int | None, response_tool: str | None = None
) -> list[list[ir.Event]]:
    return drive(TRANSLATOR, StreamState("anth", response_tool), body, split)


def replay(
    body: bytes, split: int | None, *, include_usage: bool = True, response_tool: str | None = None
) -> list[dict[str, Any]]:
    return chat_chunks(events(body, split, response_tool), include_usage)


def read_events(body: bytes) -> list[dict[str, Any]]:
    """Independent reading of the recording: every data line, json-parsed (padding and all)."""
    return [json.loads(line[5:]) for line in body.decode().splitlines() if line.startswith("data:")]


def expected(events: list[dict[str, Any]]) -> dict[str, Any]:
    text, reasoning, tools, blocks = [], [], [], {}
    usage: dict[str, int] = {}
    stop: Any = None
    for ev in events:
        t = ev["type"]
        if t == "message_start":
            usage.update({k: v for k, v in ev["message"]["usage"].items() if isinstance(v, int)})
        elif t == "content_block_start":
            cb = ev["content_block"]
            blocks[ev["index"]] = cb["type"]
            if cb["type"] == "tool_use":
                tools.append({"id": cb["id"], "name": cb["name"], "args": ""})
        elif t == "content_block_delta":
            d = ev["delta"]
            if d["type"] == "text_delta":
                text.append(d["text"])
            elif d["type"] == "thinking_delta":
                reasoning.append(d["thinking"])
            elif d["type"] == "input_json_delta":
                tools[-1]["args"] += d["partial_json"]
        elif t == "message_delta":
            stop = ev["delta"]["stop_reason"]
            usage.update({k: v for k, v in ev["usage"].items() if isinstance(v, int)})
    prompt = (
        usage["input_tokens"]
        + usage.get("cache_read_input_tokens", 0)
        + usage.get("cache_creation_input_tokens", 0)
    )
    return {
        # Disjoint IR usage: Anthropic's input_tokens already excludes the cache.
        "ir_usage": ir.Usage(
            input=usage["input_tokens"],
            output=usage["output_tokens"],
            cache_read=usage.get("cache_read_input_tokens", 0),
            cache_write=usage.get("cache_creation_input_tokens", 0),
        ),
        "text": "".join(text),
        "reasoning": "".join(reasoning),
        "tools": [{**t, "args": t["args"] or "{}"} for t in tools],
        "finish": FINISH[str(stop)],
        "prompt": prompt,
        "completion": usage["output_tokens"],
        "cached": usage.get("cache_read_input_tokens", 0),
    }


def summarize(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    text, reasoning = [], []
    tools: dict[int, dict[str, Any]] = {}
    finishes = []
    usages = []
    for c in chunks:
        if c.get("usage") is not None:
            usages.append((c["usage"], c["choices"]))
        for ch in c["choices"]:
            d = ch["delta"]
            text.append(d.get("content") or "")
            reasoning.append(d.get("reasoning_content") or "")
            for tc in d.get("tool_calls") or []:
                entry = tools.setdefault(tc["index"], {"id": None, "name": None, "args": ""})
                if "id" in tc:
                    assert entry["id"] is None, "id sent twice for one index"
                    entry["id"] = tc["id"]
                    entry["name"] = tc["function"]["name"]
                entry["args"] += tc["function"].get("arguments") or ""
            if ch.get("finish_reason"):
                finishes.append(ch["finish_reason"])
    return {
        "text": "".join(text),
        "reasoning": "".join(reasoning),
        "tools": [tools[k] for k in sorted(tools)],
        "finishes": finishes,
        "usages": usages,
    }


@pytest.mark.parametrize(("name", "body"), STREAMS, ids=[n for n, _ in STREAMS])
def test_stream_replay(name: str, body: bytes) -> None:
    want = expected(read_events(body))
    batches = [events(body, split) for split in SPLITS]
    # The pure step does not depend on how the bytes were split; the encoder may put a
    # tool call's start and arguments in one chunk when they came in one read.
    assert flat(batches[0]) == flat(batches[1]) == flat(batches[2])
    assert usage_of(flat(batches[0])) == want["ir_usage"]
    for b in batches:
        check_replay(chat_chunks(b), want)


def check_replay(chunks: list[dict[str, Any]], want: dict[str, Any]) -> None:
    got = summarize(chunks)

    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all("role" not in ch["delta"] for c in chunks[1:] for ch in c["choices"])
    assert got["text"] == want["text"]
    assert got["reasoning"] == want["reasoning"]
    assert [(t["id"], t["name"], t["args"]) for t in got["tools"]] == [
        (t["id"], t["name"], t["args"]) for t in want["tools"]
    ]
    for t in got["tools"]:
        json.loads(t["args"])  # what an OpenAI client will do with the joined fragments
    assert got["finishes"] == [want["finish"]]
    # The finish chunk has an empty delta; then exactly one usage chunk with no choices.
    assert chunks[-2]["choices"][0]["delta"] == {}
    assert len(got["usages"]) == 1 and chunks[-1]["choices"] == []
    usage = chunks[-1]["usage"]
    assert usage["prompt_tokens"] == want["prompt"]
    assert usage["completion_tokens"] == want["completion"]
    assert usage["total_tokens"] == want["prompt"] + want["completion"]
    assert usage.get("prompt_tokens_details", {}).get("cached_tokens", 0) == want["cached"]


@pytest.mark.parametrize(("name", "body"), STREAMS, ids=[n for n, _ in STREAMS])
def test_stream_without_include_usage_has_no_usage_chunk(name: str, body: bytes) -> None:
    chunks = replay(body, 7, include_usage=False)
    assert all("usage" not in c for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] is not None


def test_ping_produces_nothing() -> None:
    body = fixture_path("anthropic", "vercel-ai--anthropic-tool-no-args.chunks.txt")
    payloads = load_chunks(body)
    with_pings = replay(chunks_as_sse(payloads, with_event_type=True), None)
    without = replay(
        chunks_as_sse([p for p in payloads if b'"ping"' not in p], with_event_type=True), None
    )
    assert with_pings == without


def test_parallel_tool_calls_get_distinct_indexes() -> None:
    it = load(
        fixture_path(
            "anthropic", "langchaingo--TestAnthropic_GenerateContentWithToolAndStreaming.httprr"
        )
    )[0]
    chunks = replay(it.body, 7)
    starts = [
        tc
        for c in chunks
        for ch in c["choices"]
        for tc in ch["delta"].get("tool_calls") or []
        if "id" in tc
    ]
    assert [tc["index"] for tc in starts] == [0, 1]
    assert [tc["function"]["name"] for tc in starts] == ["calculateTip", "getWaiterName"]
    # Continuation fragments carry only index + arguments.
    for c in chunks:
        for ch in c["choices"]:
            for tc in ch["delta"].get("tool_calls") or []:
                if "id" not in tc:
                    assert set(tc) == {"index", "function"} and set(tc["function"]) == {"arguments"}
    summary = summarize(chunks)
    assert json.loads(summary["tools"][0]["args"])["billAmount"] == 50
    assert summary["tools"][1]["args"] == "{}"


def test_thinking_stream_keeps_signature_out_of_content() -> None:
    it = load(
        fixture_path("anthropic", "pydantic-ai--test_anthropic_model_thinking_part_stream.yaml")
    )[0]
    events = read_events(it.body)
    signature = "".join(
        e["delta"]["signature"]
        for e in events
        if e["type"] == "content_block_delta" and e["delta"]["type"] == "signature_delta"
    )
    thinking = expected(events)["reasoning"]
    chunks = replay(it.body, 1)
    blocks = [
        b for c in chunks for ch in c["choices"] for b in ch["delta"].get("thinking_blocks") or []
    ]
    assert blocks == [
        {"index": 0, "type": "thinking", "thinking": thinking, "signature": signature}
    ]
    text = summarize(chunks)["text"]
    assert thinking and thinking not in text and signature not in text


def test_response_tool_stream_becomes_content() -> None:
    body = chunks_as_sse(
        load_chunks(fixture_path("anthropic", "vercel-ai--anthropic-tool-no-args.chunks.txt")),
        with_event_type=True,
    )
    chunks = replay(body, 7, response_tool="updateIssueList")
    got = summarize(chunks)
    assert got["tools"] == []
    assert got["text"] == "I'll update the issue list for you.{}"
    assert got["finishes"] == ["stop"]


def test_truncated_stream_is_an_error() -> None:
    it = load(fixture_path("anthropic", "langchaingo--TestClient_CreateMessageStream.httprr"))[0]
    cut = it.body[: it.body.index(b"event: message_delta")]
    with pytest.raises(UpstreamError, match="before the message was complete"):
        replay(cut, 7)


@pytest.mark.parametrize(("name", "body"), MESSAGES, ids=[n for n, _ in MESSAGES])
def test_message(name: str, body: bytes) -> None:
    raw = json.loads(body)
    evs = answer(decode_message(body))
    u = raw["usage"]
    assert usage_of(evs) == ir.Usage(
        input=u["input_tokens"],
        output=u["output_tokens"],
        cache_read=u["cache_read_input_tokens"],
        cache_write=u["cache_creation_input_tokens"],
    )
    done = chat_completion(evs)
    msg = done["choices"][0]["message"]
    texts = "".join(b["text"] for b in raw["content"] if b["type"] == "text")
    uses = [b for b in raw["content"] if b["type"] == "tool_use"]
    assert msg["role"] == "assistant"
    assert msg.get("content") == (texts if texts or not uses else None)
    assert [
        (c["id"], c["function"]["name"], json.loads(c["function"]["arguments"]))
        for c in msg.get("tool_calls") or []
    ] == [(b["id"], b["name"], b["input"]) for b in uses]
    assert done["choices"][0]["finish_reason"] == FINISH[raw["stop_reason"]]
    assert done["model"] == raw["model"]
    u = raw["usage"]
    prompt = u["input_tokens"] + u["cache_read_input_tokens"] + u["cache_creation_input_tokens"]
    assert done["usage"]["prompt_tokens"] == prompt
    assert done["usage"]["completion_tokens"] == u["output_tokens"]
    assert done["usage"]["total_tokens"] == prompt + u["output_tokens"]


def test_error_fixture_maps_to_400() -> None:
    it = load(
        fixture_path(
            "anthropic",
            "pydantic-ai--test_anthropic_explicit_effort_xhigh_unsupported_model_errors.yaml",
        )
    )[0]
    err = http_error("anth", it.status, it.body, CIMultiDictProxy(CIMultiDict()))
    assert err.status == 400 and err.type == "invalid_request_error" and not err.retryable
    assert "effort level 'xhigh'" in err.message


def test_every_fixture_file_is_used() -> None:
    used = {n.split("#")[0] for n, _ in STREAMS + MESSAGES}
    used.add("pydantic-ai--test_anthropic_explicit_effort_xhigh_unsupported_model_errors.yaml")
    files = {p.name for p in Path(fixture_path("anthropic")).iterdir()}
    assert files == used


# ---------------------------------------------------------------- recorded requests


def as_openai(rec: dict[str, Any]) -> dict[str, Any]:
    """The OpenAI request a client would send to mean the recorded Anthropic request."""
    messages: list[dict[str, Any]] = []
    if "system" in rec:
        messages.append({"role": "system", "content": rec["system"]})
    for m in rec["messages"]:
        content = m["content"]
        if isinstance(content, str):
            messages.append({"role": m["role"], "content": content})
            continue
        parts: list[dict[str, Any]] = []
        calls = []
        for b in content:
            if b["type"] == "text":
                parts.append({"type": "text", "text": b["text"]})
            elif b["type"] == "image":
                src = b["source"]
                url = (
                    src["url"]
                    if src["type"] == "url"
                    else f"data:{src['media_type']};base64,{src['data']}"
                )
                parts.append({"type": "image_url", "image_url": {"url": url}})
            elif b["type"] == "tool_use":
                calls.append(
                    {
                        "id": b["id"],
                        "type": "function",
                        "function": {"name": b["name"], "arguments": json.dumps(b["input"])},
                    }
                )
            elif b["type"] == "tool_result":
                messages.append(
                    {"role": "tool", "tool_call_id": b["tool_use_id"], "content": b["content"]}
                )
        if parts or calls:
            msg: dict[str, Any] = {"role": m["role"], "content": parts or None}
            if calls:
                msg["tool_calls"] = calls
            messages.append(msg)
    out: dict[str, Any] = {
        "model": rec["model"],
        "messages": messages,
        "max_tokens": rec["max_tokens"],
    }
    if rec.get("stream"):
        out["stream"] = True
    for key in ("temperature", "top_p"):
        if key in rec:
            out[key] = rec[key]
    if "stop_sequences" in rec:
        out["stop"] = rec["stop_sequences"]
    if "tools" in rec:
        out["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t["name"],
                    "description": t["description"],
                    "parameters": t["input_schema"],
                },
            }
            for t in rec["tools"]
        ]
    if "tool_choice" in rec:
        tc = rec["tool_choice"]
        out["tool_choice"] = (
            {"type": "function", "function": {"name": tc["name"]}}
            if tc["type"] == "tool"
            else {"auto": "auto", "none": "none", "any": "required"}[tc["type"]]
        )
    if "thinking" in rec:
        effort = {v: k for k, v in THINKING_BUDGETS.items()}[rec["thinking"]["budget_tokens"]]
        out["reasoning_effort"] = effort
    return out


RECORDED_REQUESTS = [
    (f"{path.name}#{n}", it.request_body)
    for path in provider_files("anthropic")
    for n, it in enumerate(load(path))
    if it.method == "POST" and "output_config" not in it.request_body
]


@pytest.mark.parametrize(
    ("name", "recorded"), RECORDED_REQUESTS, ids=[n for n, _ in RECORDED_REQUESTS]
)
async def test_recorded_request_is_what_we_send(name: str, recorded: dict[str, Any]) -> None:
    """Translating the equivalent OpenAI request reproduces what real clients sent Anthropic."""
    req = parse_request(json.dumps(as_openai(recorded)).encode())
    body = build_body(to_ir(req, "anthropic"), stream=bool(req.stream))
    want = {k: v for k, v in recorded.items() if not (k == "stream" and v is False)}
    for m in want["messages"]:
        if isinstance(m["content"], str):  # the same turn; the gateway always sends blocks
            m["content"] = [{"type": "text", "text": m["content"]}]
        for b in m["content"]:
            if b.get("is_error") is False:
                del b["is_error"]  # OpenAI tool messages have no error flag
    assert body == want
