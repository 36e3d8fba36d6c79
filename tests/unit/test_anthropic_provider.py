"""anthropic / vertex-anthropic: config validation, URLs, error mapping, response_format answers."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from chromagent_proxy.backends.anthropic.errors import (
    http_error,
    stream_error,
)
from chromagent_proxy.backends.anthropic.provider import AnthropicBackend, VertexAnthropicBackend
from chromagent_proxy.backends.anthropic.stream import answer, decode_message
from chromagent_proxy.backends.registry import DefaultBackendRegistry
from chromagent_proxy.backends.vertex import location_of, vertex_base_url
from chromagent_proxy.config import BackendConfig
from chromagent_proxy.core import ir
from chromagent_proxy.errors import ConfigError
from tests.support.translate import chat_completion


def backend(**kw: Any) -> BackendConfig:
    return msgspec.convert({"id": "b", **kw}, BackendConfig)


def headers(**h: str) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(h))


@pytest.mark.parametrize(
    ("url", "region"),
    [
        ("https://us-central1-aiplatform.googleapis.com/v1", "us-central1"),
        ("https://europe-west4-aiplatform.googleapis.com/v1/", "europe-west4"),
        ("https://aiplatform.googleapis.com/v1", "global"),
        ("https://aiplatform.eu.rep.googleapis.com/v1", "eu"),
        ("http://127.0.0.1:8080/v1", None),
    ],
)
def test_region_of(url: str, region: str | None) -> None:
    assert location_of(url) == region


def test_default_base_url() -> None:
    assert vertex_base_url("us-east5") == "https://us-east5-aiplatform.googleapis.com/v1"
    assert vertex_base_url("global") == "https://aiplatform.googleapis.com/v1"
    assert vertex_base_url("us") == "https://aiplatform.us.rep.googleapis.com/v1"


def test_vertex_urls_from_the_readme_config() -> None:
    p = VertexAnthropicBackend()
    ok, errors = p.validate_config(
        backend(
            type="vertex-anthropic",
            baseUrl="https://us-central1-aiplatform.googleapis.com/v1",
            projectId="my-proj",
            apiKey="ya29.x",
        )
    )
    assert ok, errors
    prefix = (
        "https://us-central1-aiplatform.googleapis.com/v1/projects/my-proj/locations/us-central1"
        "/publishers/anthropic/models/claude-sonnet-4-5@20250929"
    )
    assert p._url_for("claude-sonnet-4-5@20250929", False) == prefix + ":rawPredict"
    assert p._url_for("claude-sonnet-4-5@20250929", True) == prefix + ":streamRawPredict"
    assert p.auth is not None and not p.auth.refreshable


def test_vertex_location_alone_derives_the_host() -> None:
    p = VertexAnthropicBackend()
    ok, _ = p.validate_config(
        backend(type="vertex-anthropic", projectId="p", location="global", apiKey="t")
    )
    assert ok
    assert p._url_for("m", False) == (
        "https://aiplatform.googleapis.com/v1/projects/p/locations/global/publishers/anthropic/models/m:rawPredict"
    )


def test_vertex_without_api_key_uses_refreshable_google_credentials() -> None:
    p = VertexAnthropicBackend()
    ok, _ = p.validate_config(backend(type="vertex-anthropic", projectId="p", location="us-east5"))
    assert ok and p.auth is not None and p.auth.refreshable


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"location": "us-east5"}, "projectId is required"),
        ({"projectId": "p", "baseUrl": "http://127.0.0.1:9/v1"}, "location is required"),
        ({"projectId": "p"}, "set baseUrl"),
        ({"projectId": "p", "location": "global", "defaultMaxTokens": 0}, "defaultMaxTokens"),
        (
            {"projectId": "p", "location": "global", "credentialsFile": "/nonexistent/sa.json"},
            "credentialsFile",
        ),
    ],
)
def test_vertex_config_errors(cfg: dict[str, Any], message: str) -> None:
    registry = DefaultBackendRegistry()
    with pytest.raises(ConfigError, match=message):
        registry.create(backend(type="vertex-anthropic", **cfg))


def test_anthropic_config() -> None:
    p = AnthropicBackend()
    ok, _ = p.validate_config(backend(type="anthropic", apiKey="k"))
    assert ok and p._url == "https://api.anthropic.com/v1/messages"
    assert p._headers == {
        "content-type": "application/json",
        "anthropic-version": "2023-06-01",
        "x-api-key": "k",
    }
    with pytest.raises(ConfigError, match="apiKey is required"):
        DefaultBackendRegistry().create(backend(type="anthropic"))
    with pytest.raises(ConfigError, match="baseUrl must start with"):
        DefaultBackendRegistry().create(
            backend(type="anthropic", apiKey="k", baseUrl="api.anthropic.com")
        )


def test_both_types_are_registered() -> None:
    types = DefaultBackendRegistry().types()
    assert {"anthropic", "vertex-anthropic"} <= types


# ---------------------------------------------------------------- errors


def test_anthropic_envelope() -> None:
    body = json.dumps(
        {
            "type": "error",
            "error": {"type": "not_found_error", "message": "model: claude-9"},
            "request_id": "r",
        }
    ).encode()
    err = http_error("b", 404, body, headers())
    assert (err.status, err.type, err.code) == (404, "invalid_request_error", "model_not_found")
    assert err.message == "model: claude-9"


def test_google_envelope_object_and_array() -> None:
    obj = {
        "error": {
            "code": 400,
            "message": "Project p is not allowed to use Publisher Model",
            "status": "FAILED_PRECONDITION",
        }
    }
    err = http_error("b", 400, json.dumps(obj).encode(), headers())
    assert err.status == 400 and "not allowed" in err.message and err.code == "failed_precondition"
    arr = json.dumps(
        [{"error": {"code": 429, "message": "Quota exceeded", "status": "RESOURCE_EXHAUSTED"}}]
    )
    err = http_error("b", 429, arr.encode(), headers(**{"Retry-After": "3"}))
    assert err.status == 429 and err.type == "rate_limit_error" and err.retryable
    assert err.headers == {"Retry-After": "3"} and "Quota exceeded" in err.message


def test_overloaded_is_503_retryable_whatever_the_status() -> None:
    body = b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
    for status in (529, 429):
        err = http_error("b", status, body, headers(**{"retry-after": "2"}))
        assert (err.status, err.code, err.retryable) == (503, "upstream_overloaded", True)
        assert err.headers == {"Retry-After": "2"}


def test_401_non_json_body() -> None:
    err = http_error("b", 401, b"<html>denied</html>", headers())
    assert err.status == 502 and err.code == "upstream_auth_failed" and not err.retryable
    assert "denied" not in err.message and "status 401" in err.message  # never relayed


@pytest.mark.parametrize(
    ("etype", "status", "retryable"),
    [
        ("overloaded_error", 503, True),
        ("rate_limit_error", 429, True),
        ("api_error", 502, True),
        ("invalid_request_error", 400, False),
        ("something_new", 502, True),
    ],
)
def test_stream_error_mapping(etype: str, status: int, retryable: bool) -> None:
    err = stream_error("b", etype, "boom")
    assert err.status == status and err.retryable is retryable and "boom" in err.message


# ---------------------------------------------------------------- response_format answers


def test_response_tool_answer_is_content_not_a_tool_call() -> None:
    body = json.dumps(
        {
            "id": "msg_1",
            "model": "claude-x",
            "content": [
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "json_response",
                    "input": {"answer": "Paris"},
                }
            ],
            "stop_reason": "tool_use",
            "usage": {
                "input_tokens": 10,
                "output_tokens": 5,
                "cache_read_input_tokens": 100,
                "cache_creation_input_tokens": 20,
            },
        }
    ).encode()
    events = answer(decode_message(body), response_tool="json_response")
    assert events[-1] == ir.Usage(input=10, output=5, cache_read=100, cache_write=20)
    done = chat_completion(events)
    choice = done["choices"][0]
    assert json.loads(choice["message"]["content"]) == {"answer": "Paris"}
    assert "tool_calls" not in choice["message"] and choice["finish_reason"] == "stop"
    assert done["usage"] == {
        "prompt_tokens": 130,
        "completion_tokens": 5,
        "total_tokens": 135,
        "prompt_tokens_details": {"cached_tokens": 100, "cache_creation_tokens": 20},
    }


def test_thinking_and_redacted_blocks_in_a_message() -> None:
    body = json.dumps(
        {
            "model": "claude-x",
            "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "s1"},
                {"type": "redacted_thinking", "data": "opaque"},
                {"type": "text", "text": "Hi"},
            ],
            "stop_reason": "max_tokens",
            "usage": {"input_tokens": 1, "output_tokens": 2},
        }
    ).encode()
    msg = chat_completion(answer(decode_message(body)))
    choice = msg["choices"][0]
    assert choice["message"]["content"] == "Hi"
    assert choice["message"]["reasoning_content"] == "hmm"
    assert choice["message"]["thinking_blocks"] == [
        {"index": 0, "type": "thinking", "thinking": "hmm", "signature": "s1"},
        {"index": 1, "type": "redacted_thinking", "data": "opaque"},
    ]
    assert choice["finish_reason"] == "length"
