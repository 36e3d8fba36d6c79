"""Ollama non-stream objects, error bodies and config checks (no network)."""

from __future__ import annotations

from typing import Any

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from chromagent_proxy import codec
from chromagent_proxy.backends.ollama.errors import error_parser as _error_parser
from chromagent_proxy.backends.ollama.provider import OllamaBackend
from chromagent_proxy.backends.ollama.stream import StreamState, answer, decode_line, step
from chromagent_proxy.config import BackendConfig
from chromagent_proxy.core import ir
from chromagent_proxy.errors import GatewayError, UpstreamHTTPError, UpstreamProtocolError
from tests.support.translate import chat_completion


def _completion(obj: dict[str, Any]) -> dict[str, Any]:
    return chat_completion(answer(decode_line(codec.dumps(obj)), "ollama"))


def test_thinking_and_length() -> None:
    out = _completion(
        {
            "message": {"role": "assistant", "content": "Par", "thinking": "capital?"},
            "done": True,
            "done_reason": "length",
            "prompt_eval_count": 3,
            "eval_count": 7,
        }
    )
    assert out["object"] == "chat.completion"
    (choice,) = out["choices"]
    assert choice["message"] == {
        "role": "assistant",
        "content": "Par",
        "reasoning_content": "capital?",
        "refusal": None,  # OpenAI's spec requires the key on every message
    }
    assert choice["finish_reason"] == "length"
    assert out["usage"] == {"prompt_tokens": 3, "completion_tokens": 7, "total_tokens": 10}
    events = answer(
        decode_line(codec.dumps({"done": True, "prompt_eval_count": 3, "eval_count": 7})), "o"
    )
    assert events[-1] == ir.Usage(input=3, output=7)


def test_empty_done_reason_is_stop() -> None:
    out = _completion({"message": {"role": "assistant", "content": "ok"}, "done": True})
    assert out["choices"][0]["finish_reason"] == "stop"


def test_error_object_with_200_raises() -> None:
    with pytest.raises(UpstreamHTTPError, match="boom"):
        _completion({"error": "boom"})
    with pytest.raises(UpstreamProtocolError, match="empty answer"):
        _completion({"done": False})


def test_mid_stream_error_line_raises_after_content() -> None:
    state = StreamState("ollama")
    assert step(state, decode_line(b'{"message":{"role":"assistant","content":"a"},"done":false}'))
    with pytest.raises(GatewayError) as info:
        step(state, decode_line(b'{"error":"an error was encountered while running the model"}'))
    assert "backend 'ollama'" in info.value.message
    assert not info.value.retryable


def _parse(status: int, body: bytes, headers: dict[str, str] | None = None) -> GatewayError:
    h = CIMultiDictProxy(CIMultiDict(headers or {}))
    return _error_parser("llama3.2")("ollama", status, body, h)


def test_error_mapping() -> None:
    err = _parse(404, b'{"error":"model \\"llama3.2\\" not found, try pulling it first"}')
    assert (err.status, err.code, err.param) == (404, "model_not_found", "model")
    assert "llama3.2" in err.message and not err.retryable
    # A 404 that is not Ollama's JSON: something else answers at baseUrl.
    err = _parse(404, b"404 page not found")
    assert err.status == 502 and "baseUrl" in err.message
    err = _parse(429, b'{"error":"too many requests"}', {"Retry-After": "3"})
    assert (err.status, err.headers.get("Retry-After"), err.retryable) == (429, "3", True)
    err = _parse(500, b'{"error":"llama runner process has terminated"}')
    assert err.status == 502 and "llama runner" in err.message and err.retryable
    err = _parse(400, b'{"error":"invalid format"}')
    assert (err.status, err.message, err.param) == (400, "invalid format", None)


@pytest.mark.parametrize(
    ("base", "ok", "chat"),
    [
        (None, True, "http://localhost:11434/api/chat"),
        ("http://gpu-box:11434/", True, "http://gpu-box:11434/api/chat"),
        ("https://ollama.com/api", True, "https://ollama.com/api/chat"),
        ("http://localhost:11434/v1", False, None),
        ("localhost:11434", False, None),
    ],
)
def test_validate_config(base: str | None, ok: bool, chat: str | None) -> None:
    p = OllamaBackend()
    valid, errors = p.validate_config(BackendConfig(id="o", type="ollama", base_url=base))
    assert valid is ok and (not errors) is ok
    if chat:
        assert p._chat_url == chat


def test_api_key_and_headers() -> None:
    p = OllamaBackend()
    p.validate_config(
        BackendConfig(id="o", type="ollama", api_key="k", additional_headers={"X-Team": "a"})
    )
    assert p._headers == {
        "Content-Type": "application/json",
        "Authorization": "Bearer k",
        "X-Team": "a",
    }
