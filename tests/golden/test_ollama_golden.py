"""Recorded Ollama /api/chat traffic → OpenAI chunks and completions.

Every NDJSON recording is replayed at split sizes 1, 7 and whole; the outputs
must be identical, and what they say is checked against the recording itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from chromagent_proxy import codec
from chromagent_proxy.backends.ollama.errors import error_parser as _error_parser
from chromagent_proxy.backends.ollama.stream import TRANSLATOR, StreamState, answer, decode_line
from chromagent_proxy.core import ir
from chromagent_proxy.errors import UpstreamHTTPError
from tests.support.fixtures import fixture_path, load
from tests.support.translate import chat_chunks, chat_completion, drive, flat, usage_of

STREAM_FIXTURES = [
    "langchaingo--TestClient_GenerateChat.httprr",  # done_reason length
    "langchaingo--TestClient_GenerateChatStream.httprr",  # plain text stream
    "langchaingo--TestCloudStreaming.httprr",  # thinking, then content; cloud json content-type
    "langchaingo--TestWithFormat.httprr",  # format json
]
TOOLS_FIXTURE = "semantic-kernel--chat_completion_multiple_function_calls_test_response.txt"
SPLITS = [1, 7, None]


def _events(body: bytes, split: int | None) -> list[list[ir.Event]]:
    return drive(TRANSLATOR, StreamState("ollama"), body, split)


def _replay(body: bytes, split: int | None, include_usage: bool = True) -> list[dict[str, Any]]:
    return chat_chunks(_events(body, split), include_usage)


def _normalize_ids(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Generated call ids are random; replace them by position so runs compare."""
    n = 0
    for c in chunks:
        for ch in c["choices"]:
            for tc in ch["delta"].get("tool_calls") or []:
                assert tc["id"].startswith("call_")
                tc["id"] = f"id{n}"
                n += 1
    return chunks


def _usage(u: dict[str, Any]) -> dict[str, int]:
    # Usage encodes with omit_defaults, so a zero count may be absent on the wire.
    return {k: u.get(k, 0) for k in ("prompt_tokens", "completion_tokens", "total_tokens")}


def _upstream_lines(body: bytes) -> list[dict[str, Any]]:
    return [codec.loads(line) for line in body.splitlines() if line.strip()]


@pytest.mark.parametrize("name", STREAM_FIXTURES)
def test_stream_fixture(name: str) -> None:
    (it,) = load(fixture_path("ollama", name))
    assert it.status == 200
    lines = _upstream_lines(it.body)
    final = lines[-1]
    assert final["done"] is True
    for split in SPLITS:
        assert usage_of(flat(_events(it.body, split))) == ir.Usage(
            input=final["prompt_eval_count"], output=final["eval_count"]
        )
    runs = [_normalize_ids(_replay(it.body, split)) for split in SPLITS]
    assert runs[0] == runs[1] == runs[2]
    chunks = runs[0]

    # First chunk opens the assistant message.
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all("role" not in c["choices"][0]["delta"] for c in chunks[1:] if c["choices"])

    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    reasoning = "".join(
        c["choices"][0]["delta"].get("reasoning_content") or "" for c in chunks if c["choices"]
    )
    assert text == "".join(ln["message"].get("content", "") for ln in lines)
    assert reasoning == "".join(ln["message"].get("thinking", "") for ln in lines)
    assert text  # every recording says something

    # Finish reason on a final chunk with an empty delta, then exactly one usage chunk.
    *body_chunks, fin, usage = chunks
    assert fin["choices"] == [
        {"index": 0, "delta": {}, "finish_reason": final["done_reason"], "logprobs": None}
    ]
    assert all(c["choices"][0]["finish_reason"] is None for c in body_chunks)
    assert usage["choices"] == []
    assert _usage(usage["usage"]) == {
        "prompt_tokens": final["prompt_eval_count"],
        "completion_tokens": final["eval_count"],
        "total_tokens": final["prompt_eval_count"] + final["eval_count"],
    }

    # Without include_usage there is no usage chunk at all.
    plain = _normalize_ids(_replay(it.body, None, include_usage=False))
    assert plain == chunks[:-1]


def test_thinking_fixture_reasoning_precedes_content() -> None:
    (it,) = load(fixture_path("ollama", "langchaingo--TestCloudStreaming.httprr"))
    chunks = _replay(it.body, 7)
    kinds = [
        "r" if c["choices"][0]["delta"].get("reasoning_content") else "c"
        for c in chunks
        if c["choices"]
        and (
            c["choices"][0]["delta"].get("reasoning_content")
            or c["choices"][0]["delta"].get("content")
        )
    ]
    assert kinds[0] == "r" and "c" in kinds
    assert kinds == sorted(kinds, key=lambda k: k == "c")  # all thinking before any text
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[1]["choices"][0]["delta"]["reasoning_content"] == "User"


def test_length_fixture_maps_to_length() -> None:
    (it,) = load(fixture_path("ollama", "langchaingo--TestClient_GenerateChat.httprr"))
    assert it.request_body["options"]["num_predict"] == 50
    chunks = _replay(it.body, None)
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["usage"]["completion_tokens"] == 50


def _tools_body() -> bytes:
    return fixture_path("ollama", TOOLS_FIXTURE).read_bytes()


def test_tool_calls_fixture_non_stream() -> None:
    body = _tools_body()
    upstream = codec.loads(body)
    calls = upstream["message"]["tool_calls"]
    assert upstream["done_reason"] == "stop"
    completion = chat_completion(answer(decode_line(body), "ollama"), model="llama3.2")
    (choice,) = completion["choices"]
    assert choice["finish_reason"] == "tool_calls"  # Ollama said "stop"
    msg = choice["message"]
    assert msg["content"] is None
    got = msg["tool_calls"]
    assert [tc["function"]["name"] for tc in got] == [c["function"]["name"] for c in calls]
    assert [codec.loads(tc["function"]["arguments"]) for tc in got] == [
        c["function"].get("arguments", {}) for c in calls
    ]
    assert len({tc["id"] for tc in got}) == len(calls)
    assert all(tc["type"] == "function" for tc in got)
    assert completion["usage"] == {
        "prompt_tokens": upstream["prompt_eval_count"],
        "completion_tokens": upstream["eval_count"],
        "total_tokens": upstream["prompt_eval_count"] + upstream["eval_count"],
    }


@pytest.mark.parametrize("split", SPLITS)
def test_tool_calls_fixture_as_stream(split: int | None) -> None:
    body = _tools_body()
    calls = codec.loads(body)["message"]["tool_calls"]
    chunks = _replay(body + b"\n", split)
    deltas = [
        tc
        for c in chunks
        if c["choices"]
        for tc in c["choices"][0]["delta"].get("tool_calls") or []
    ]
    assert [d["index"] for d in deltas] == list(range(len(calls)))
    assert len({d["id"] for d in deltas}) == len(calls)
    assert [d["function"]["name"] for d in deltas] == [c["function"]["name"] for c in calls]
    assert [codec.loads(d["function"]["arguments"]) for d in deltas] == [
        c["function"].get("arguments", {}) for c in calls
    ]
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert _normalize_ids(chunks) == _normalize_ids(_replay(body + b"\n", None))


def test_tool_calls_across_lines_get_distinct_indexes() -> None:
    """Calls arriving in separate lines must not reuse index 0."""
    lines = [
        {
            "message": {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"function": {"name": "a", "arguments": {}}}],
            },
            "done": False,
        },
        {
            "message": {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {
                        "id": "call_given",
                        "function": {"index": 0, "name": "b", "arguments": {"x": 1}},
                    }
                ],
            },
            "done": False,
        },
        {
            "message": {"role": "assistant", "content": ""},
            "done": True,
            "done_reason": "stop",
            "eval_count": 3,
        },
    ]
    body = b"".join(codec.dumps(ln) + b"\n" for ln in lines)
    chunks = _replay(body, 1)
    deltas = [
        tc
        for c in chunks
        if c["choices"]
        for tc in c["choices"][0]["delta"].get("tool_calls") or []
    ]
    assert [d["index"] for d in deltas] == [0, 1]
    assert deltas[1]["id"] == "call_given"
    assert deltas[1]["function"]["arguments"] == '{"x":1}'
    assert _usage(chunks[-1]["usage"]) == {
        "prompt_tokens": 0,
        "completion_tokens": 3,
        "total_tokens": 3,
    }


def test_tool_support_error_fixture() -> None:
    (it,) = load(fixture_path("ollama", "langchaingo--TestToolCall.httprr"))
    assert it.status == 400
    err = _error_parser("gemma3:1b")("ollama", it.status, it.body, _headers(it))
    assert isinstance(err, UpstreamHTTPError)
    assert err.status == 400
    assert err.type == "invalid_request_error"
    assert err.message == codec.loads(it.body)["error"]
    assert err.param == "tools"
    assert not err.retryable


def _headers(it: Any) -> Any:
    from multidict import CIMultiDict, CIMultiDictProxy

    return CIMultiDictProxy(CIMultiDict(it.headers))


def test_fixture_inventory() -> None:
    """Every Ollama recording is either used above or is /v1-layer traffic this backend never sees."""
    used = set(STREAM_FIXTURES) | {TOOLS_FIXTURE, "langchaingo--TestToolCall.httprr"}
    native_request_only = {"pydantic-ai--test_ollama_local_native_output_uses_json_schema.yaml"}
    v1_layer = {"pydantic-ai--test_ollama_cloud_tool_output.yaml"}
    names = {p.name for p in Path(fixture_path("ollama")).iterdir()}
    assert names == used | native_request_only | v1_layer
