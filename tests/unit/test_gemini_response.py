"""Gemini response/stream translation edge cases and the provider's URL/auth shapes."""

from __future__ import annotations

from typing import Any

import pytest

from chromagent_proxy import codec
from chromagent_proxy.backends.gemini import stream
from chromagent_proxy.backends.gemini.errors import trailing_error
from chromagent_proxy.backends.gemini.provider import GeminiBackend, VertexGeminiBackend
from chromagent_proxy.config import BackendConfig
from chromagent_proxy.core import ir
from chromagent_proxy.errors import UpstreamHTTPError, UpstreamProtocolError
from tests.support.translate import chat_chunks, chat_completion


def completion(payload: dict[str, Any]) -> dict[str, Any]:
    return chat_completion(stream.answer(stream.decode_event(codec.dumps(payload)), "g"))


def run(events: list[dict[str, Any]], include_usage: bool = True) -> list[dict[str, Any]]:
    state = stream.StreamState("g")
    batches = [stream.step(state, stream.decode_event(codec.dumps(ev))) for ev in events]
    batches.append(stream.finish(state))
    return chat_chunks(batches, include_usage)


def cand(parts: list[dict[str, Any]], finish: str | None = None, index: int = 0) -> dict[str, Any]:
    c: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": index}
    if finish:
        c["finishReason"] = finish
    return c


def test_n_greater_than_one_gives_several_choices() -> None:
    out = completion(
        {
            "candidates": [
                cand([{"text": "B"}], "STOP", 1),
                cand([{"text": "A"}], "MAX_TOKENS", 0),
            ],
            "usageMetadata": {
                "promptTokenCount": 3,
                "candidatesTokenCount": 4,
                "totalTokenCount": 7,
            },
        }
    )
    assert [(c["index"], c["message"]["content"], c["finish_reason"]) for c in out["choices"]] == [
        (0, "A", "length"),
        (1, "B", "stop"),
    ]


def test_usage_with_reasoning_cached_and_tool_prompt_tokens() -> None:
    out = completion(
        {
            "candidates": [cand([{"text": "x"}], "STOP")],
            "usageMetadata": {
                "promptTokenCount": 100,
                "toolUsePromptTokenCount": 5,
                "candidatesTokenCount": 10,
                "thoughtsTokenCount": 40,
                "cachedContentTokenCount": 64,
                "totalTokenCount": 155,
            },
        }
    )
    events = stream.answer(
        stream.decode_event(
            codec.dumps(
                {
                    "candidates": [cand([{"text": "x"}], "STOP")],
                    "usageMetadata": {
                        "promptTokenCount": 100,
                        "toolUsePromptTokenCount": 5,
                        "candidatesTokenCount": 10,
                        "thoughtsTokenCount": 40,
                        "cachedContentTokenCount": 64,
                    },
                }
            )
        ),
        "g",
    )
    # Disjoint: promptTokenCount (+ tool-use prompt) includes the cached tokens.
    assert events[-1] == ir.Usage(input=41, output=10, cache_read=64, reasoning=40)
    assert out["usage"] == {
        "prompt_tokens": 105,
        "completion_tokens": 50,
        "total_tokens": 155,
        "prompt_tokens_details": {"cached_tokens": 64},
        "completion_tokens_details": {"reasoning_tokens": 40},
    }


@pytest.mark.parametrize(
    "reason", ["SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "MODEL_ARMOR"]
)
def test_content_filter_finish_reasons(reason: str) -> None:
    out = completion({"candidates": [{"finishReason": reason, "index": 0}]})
    assert out["choices"][0]["finish_reason"] == "content_filter"
    assert out["choices"][0]["message"]["content"] == ""


def test_blocked_prompt_non_stream() -> None:
    out = completion(
        {
            "promptFeedback": {
                "blockReason": "MODEL_ARMOR",
                "blockReasonMessage": "Blocked by policy",
            },
            "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9},
        }
    )
    choice = out["choices"][0]
    assert choice["finish_reason"] == "content_filter"
    # The IR carries no refusal text: the client sees an empty, filtered answer.
    assert choice["message"]["content"] == ""
    assert "tool_calls" not in choice["message"]
    assert out["usage"]["prompt_tokens"] == 9


def test_thoughts_become_reasoning_content_and_text_stays_clean() -> None:
    out = completion(
        {"candidates": [cand([{"text": "hmm", "thought": True}, {"text": "Answer"}], "STOP")]}
    )
    msg = out["choices"][0]["message"]
    assert msg["content"] == "Answer"
    assert msg["reasoning_content"] == "hmm"


def test_text_and_parallel_calls_non_stream() -> None:
    out = completion(
        {
            "candidates": [
                cand(
                    [
                        {"text": "Let me check."},
                        {
                            "functionCall": {"name": "a", "args": {"x": 1}},
                            "thoughtSignature": "c2ln",
                        },
                        {"functionCall": {"name": "b"}},
                    ],
                    "STOP",
                )
            ]
        }
    )
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    calls = choice["message"]["tool_calls"]
    assert [(c["function"]["name"], c["function"]["arguments"]) for c in calls] == [
        ("a", '{"x":1}'),
        ("b", "{}"),
    ]
    assert calls[0]["id"].endswith("__thought__c2ln") and "__thought__" not in calls[1]["id"]
    assert choice["message"]["content"] == "Let me check."


def test_stream_n_2_and_thoughts() -> None:
    chunks = run(
        [
            {
                "candidates": [
                    cand([{"text": "t", "thought": True}], None, 0),
                    cand([{"text": "B"}], None, 1),
                ]
            },
            {"candidates": [cand([{"text": "A"}], "STOP", 0), cand([], "STOP", 1)]},
        ],
        include_usage=False,
    )
    by_choice: dict[int, list[dict[str, Any]]] = {}
    for c in chunks:
        ch = c["choices"][0]
        by_choice.setdefault(ch["index"], []).append(ch)
    for index, text in ((0, "A"), (1, "B")):
        items = by_choice[index]
        assert items[0]["delta"] == {"role": "assistant", "content": ""}
        assert "".join(i["delta"].get("content", "") for i in items) == text
        assert items[-1]["finish_reason"] == "stop"
    assert by_choice[0][1]["delta"] == {"reasoning_content": "t"}


def test_stream_empty_signature_part_makes_no_empty_delta() -> None:
    chunks = run(
        [
            {"candidates": [cand([{"text": "Hi"}])]},
            {"candidates": [cand([{"text": "", "thoughtSignature": "c2ln"}], "STOP")]},
        ],
        include_usage=False,
    )
    assert [c["choices"][0]["delta"] for c in chunks] == [
        {"role": "assistant", "content": ""},
        {"content": "Hi"},
        {},
    ]


def test_stream_error_event_raises() -> None:
    state = stream.StreamState("g")
    stream.step(state, stream.decode_event(codec.dumps({"candidates": [cand([{"text": "a"}])]})))
    err = {"error": {"code": 429, "message": "Resource exhausted", "status": "RESOURCE_EXHAUSTED"}}
    with pytest.raises(UpstreamHTTPError) as info:
        stream.step(state, stream.decode_event(codec.dumps(err)))
    assert info.value.status == 429
    assert "Resource exhausted" in info.value.message
    assert not info.value.retryable


def test_stream_cut_or_empty_is_a_protocol_error() -> None:
    with pytest.raises(UpstreamProtocolError, match="before the answer was finished"):
        run([{"candidates": [cand([{"text": "a"}])]}])
    with pytest.raises(UpstreamProtocolError, match="without an answer"):
        run([])


def test_trailing_raw_json_error_is_found() -> None:
    tail = b'data: {"candidates": []}\r\n\r\n{\n  "error": {\n    "code": 503,\n    "message": "overloaded",\n    "status": "UNAVAILABLE"\n  }\n}\n'
    err = trailing_error("g", tail)
    assert err is not None and err.status == 503 and "overloaded" in err.message
    assert trailing_error("g", b"data: {}\n\n") is None


# ---------------------------------------------------------------- URL and auth shapes


def provider(
    cls: type[GeminiBackend] = GeminiBackend, **cfg: Any
) -> tuple[GeminiBackend, list[str]]:
    p = cls()
    ok, errors = p.validate_config(BackendConfig(id="b", type=cls.type, **cfg))
    assert ok == (not errors)
    return p, errors


def test_gemini_api_default_url_and_key_header() -> None:
    p, errors = provider(api_key="k")
    assert not errors
    assert p.url("gemini-2.5-flash", stream=False) == (
        "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent"
    )
    assert p.url("models/gemini-2.5-flash", stream=True) == (
        "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash"
        ":streamGenerateContent?alt=sse"
    )
    assert p._headers["x-goog-api-key"] == "k"
    assert "k" not in p.url("m", stream=True)


def test_vertex_gemini_without_project_is_the_gemini_api() -> None:
    p, errors = provider(
        VertexGeminiBackend,
        api_key="k",
        base_url="https://generativelanguage.googleapis.com/v1beta",
    )
    assert not errors and p._auth is None
    assert p.url("m", stream=False).endswith("/v1beta/models/m:generateContent")


@pytest.mark.parametrize(
    ("cfg", "prefix"),
    [
        (
            {"base_url": "https://us-central1-aiplatform.googleapis.com/v1"},
            "https://us-central1-aiplatform.googleapis.com/v1/projects/p/locations/us-central1/",
        ),
        (
            {"base_url": "https://aiplatform.googleapis.com/v1"},
            "https://aiplatform.googleapis.com/v1/projects/p/locations/global/",
        ),
        (
            {"location": "global"},
            "https://aiplatform.googleapis.com/v1/projects/p/locations/global/",
        ),
        (
            {"location": "europe-west4"},
            "https://europe-west4-aiplatform.googleapis.com/v1/projects/p/locations/europe-west4/",
        ),
        ({}, "https://aiplatform.googleapis.com/v1/projects/p/locations/global/"),
    ],
)
def test_vertex_urls(cfg: dict[str, Any], prefix: str) -> None:
    p, errors = provider(VertexGeminiBackend, project_id="p", api_key="tok", **cfg)
    assert not errors
    assert p.url("gemini-2.5-pro", stream=False) == (
        prefix + "publishers/google/models/gemini-2.5-pro:generateContent"
    )
    assert p._auth is not None and not p._auth.refreshable


def test_config_errors() -> None:
    _, errors = provider()
    assert errors == ["apiKey is required for the Gemini API (or set projectId to use Vertex AI)"]
    _, errors = provider(
        VertexGeminiBackend,
        project_id="p",
        location="us-east1",
        base_url="https://europe-west4-aiplatform.googleapis.com/v1",
    )
    assert errors and "does not match the baseUrl host" in errors[0]
    _, errors = provider(VertexGeminiBackend, project_id="p", credentials_file="/nonexistent.json")
    assert errors and "credentialsFile" in errors[0]
    _, errors = provider(
        VertexGeminiBackend, project_id="p", api_key="t", base_url="http://127.0.0.1:9/v1"
    )
    assert errors == [
        "location is required (it cannot be read from the baseUrl host 'http://127.0.0.1:9/v1')"
    ]
