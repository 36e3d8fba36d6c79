"""OpenAI request → the exact Ollama /api/chat body."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from chromagent_proxy import codec
from chromagent_proxy.backends.ollama.request import build_body
from chromagent_proxy.dialects.chat.decode import to_ir
from chromagent_proxy.errors import InvalidRequest, UnsupportedFeature
from chromagent_proxy.schema.openai import ChatCompletionRequest
from tests.support.fixtures import fixture_path, load

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 8
PNG_URL = "data:image/png;base64," + base64.b64encode(PNG).decode()

WEATHER_PARAMS = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}


def _req(**kw: Any) -> ChatCompletionRequest:
    data = {"model": "client-model", **kw}
    return codec.decoder(ChatCompletionRequest).decode(codec.dumps(data))


def _body(req: ChatCompletionRequest, **kw: Any) -> Any:
    kw.setdefault("stream", False)
    request = to_ir(req, "ollama")
    request.model = "llama3.2"  # what the router maps the client's model to
    # Round-trip through JSON: what matters is the bytes Ollama receives.
    return codec.loads(codec.dumps(build_body(request, **kw)))


def test_multi_turn_with_tools_and_tool_results() -> None:
    req = _req(
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather in Paris and Tokyo?"},
            {
                "role": "assistant",
                "content": None,
                "reasoning_content": "Two cities, two calls.",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    },
                    {
                        "id": "call_2",
                        "type": "function",
                        "function": {"name": "get_time", "arguments": ""},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
            {
                "role": "tool",
                "tool_call_id": "call_2",
                "content": [{"type": "text", "text": "09:00"}],
            },
            {"role": "assistant", "content": "Paris 18C; it is 09:00."},
            {"role": "developer", "content": "Answer in French."},
            {"role": "user", "content": "Merci"},
        ],
        tools=[
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "Current weather",
                    "parameters": WEATHER_PARAMS,
                },
            },
            {"type": "function", "function": {"name": "get_time"}},
        ],
        tool_choice="auto",
    )
    assert _body(req, stream=True) == {
        "model": "llama3.2",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather in Paris and Tokyo?"},
            {
                "role": "assistant",
                "content": "",
                "thinking": "Two cities, two calls.",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "function": {"name": "get_weather", "arguments": {"city": "Paris"}},
                    },
                    {"id": "call_2", "function": {"name": "get_time", "arguments": {}}},
                ],
            },
            {
                "role": "tool",
                "content": "18C",
                "tool_name": "get_weather",
                "tool_call_id": "call_1",
            },
            {"role": "tool", "content": "09:00", "tool_name": "get_time", "tool_call_id": "call_2"},
            {"role": "assistant", "content": "Paris 18C; it is 09:00."},
            {"role": "system", "content": "Answer in French."},
            {"role": "user", "content": "Merci"},
        ],
        "stream": True,
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "Current weather",
                    "parameters": WEATHER_PARAMS,
                },
            },
            {
                "type": "function",
                "function": {
                    "name": "get_time",
                    "parameters": {"type": "object", "properties": {}},
                },
            },
        ],
    }


def test_image_data_url() -> None:
    req = _req(
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": PNG_URL, "detail": "low"}},
                    {"type": "text", "text": "One word."},
                ],
            }
        ]
    )
    assert _body(req) == {
        "model": "llama3.2",
        "messages": [
            {
                "role": "user",
                "content": "What is this?\nOne word.",
                "images": [base64.b64encode(PNG).decode()],
            }
        ],
        "stream": False,
    }


def test_json_schema_from_recorded_request() -> None:
    """The request pydantic-ai sent to Ollama's /v1 layer, translated for the native API."""
    (it,) = load(
        fixture_path("ollama", "pydantic-ai--test_ollama_local_native_output_uses_json_schema.yaml")
    )
    sent = it.request_body
    req = _req(**{k: v for k, v in sent.items() if k != "model"})
    schema = sent["response_format"]["json_schema"]["schema"]
    assert _body(req) == {
        "model": "llama3.2",
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "stream": False,
        "format": schema,
    }


def test_json_object_is_format_json() -> None:
    req = _req(
        messages=[{"role": "user", "content": "hi"}], response_format={"type": "json_object"}
    )
    assert _body(req)["format"] == "json"
    req = _req(messages=[{"role": "user", "content": "hi"}], response_format={"type": "text"})
    assert "format" not in _body(req)


def test_options_mapping_with_backend_defaults_and_keep_alive() -> None:
    req = _req(
        messages=[{"role": "user", "content": "hi"}],
        temperature=0.2,
        top_p=0.9,
        seed=7,
        stop="END",
        max_tokens=64,
        presence_penalty=0.5,
        frequency_penalty=0.25,
        reasoning_effort="high",
    )
    body = _body(
        req, default_options={"num_ctx": 8192, "temperature": 1.0, "top_k": 20}, keep_alive="10m"
    )
    assert body == {
        "model": "llama3.2",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": False,
        "options": {
            "num_ctx": 8192,
            "temperature": 0.2,
            "top_k": 20,
            "top_p": 0.9,
            "seed": 7,
            "stop": ["END"],
            "num_predict": 64,
            "presence_penalty": 0.5,
            "frequency_penalty": 0.25,
        },
        "think": "high",
        "keep_alive": "10m",
    }


@pytest.mark.parametrize(
    ("effort", "think"),
    [("none", False), ("minimal", "low"), ("low", "low"), ("medium", "medium"), ("xhigh", "high")],
)
def test_reasoning_effort_to_think(effort: str, think: Any) -> None:
    req = _req(messages=[{"role": "user", "content": "hi"}], reasoning_effort=effort)
    assert _body(req)["think"] == think


def test_max_completion_tokens_and_stop_list_and_default_max_tokens() -> None:
    req = _req(
        messages=[{"role": "user", "content": "hi"}],
        max_completion_tokens=5,
        max_tokens=99,
        stop=["a", "b"],
    )
    assert _body(req)["options"] == {"num_predict": 5, "stop": ["a", "b"]}
    req = _req(messages=[{"role": "user", "content": "hi"}])
    assert _body(req, default_max_tokens=300)["options"] == {"num_predict": 300}
    assert _body(req, default_max_tokens=300, default_options={"num_predict": 10})["options"] == {
        "num_predict": 10
    }
    assert "options" not in _body(req)


def test_tool_choice_none_drops_tools() -> None:
    req = _req(
        messages=[{"role": "user", "content": "hi"}],
        tools=[{"type": "function", "function": {"name": "f"}}],
        tool_choice="none",
    )
    assert "tools" not in _body(req)


def test_legacy_function_role_and_unknown_call_id() -> None:
    req = _req(
        messages=[
            {"role": "user", "content": "hi"},
            {"role": "function", "name": "lookup", "content": "42"},
            {"role": "tool", "tool_call_id": "call_unknown", "content": "x"},
        ]
    )
    # (The IR puts a turn's tool results ahead of its text, so only the tool messages.)
    tools = [m for m in _body(req)["messages"] if m["role"] == "tool"]
    assert tools == [
        {"role": "tool", "content": "42", "tool_name": "lookup", "tool_call_id": "call_lookup"},
        {"role": "tool", "content": "x", "tool_call_id": "call_unknown"},
    ]


@pytest.mark.parametrize(
    ("kw", "param", "exc"),
    [
        ({"n": 2}, "n", UnsupportedFeature),
        ({"logprobs": True}, "logprobs", UnsupportedFeature),
        ({"tool_choice": "required"}, "tool_choice", UnsupportedFeature),
        (
            {"tool_choice": {"type": "function", "function": {"name": "f"}}},
            "tool_choice",
            UnsupportedFeature,
        ),
        ({"reasoning_effort": "max"}, "reasoning_effort", InvalidRequest),
        ({"response_format": {"type": "grammar"}}, "response_format.type", InvalidRequest),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
            "response_format.json_schema",
            InvalidRequest,
        ),
    ],
)
def test_unsupported_parameters_are_400_naming_the_param(
    kw: dict[str, Any], param: str, exc: type[Exception]
) -> None:
    req = _req(messages=[{"role": "user", "content": "hi"}], **kw)
    with pytest.raises(exc) as info:
        _body(req)
    assert getattr(info.value, "param", None) == param
    assert getattr(info.value, "status", None) == 400


def test_bad_tool_arguments_and_content_parts() -> None:
    req = _req(
        messages=[
            {"role": "user", "content": "hi"},
            {
                "role": "assistant",
                "tool_calls": [
                    {"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1]"}}
                ],
            },
        ]
    )
    with pytest.raises(InvalidRequest) as info:
        _body(req)
    assert info.value.param == "messages[1].tool_calls[0].function.arguments"
    req = _req(messages=[{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}])
    with pytest.raises(UnsupportedFeature) as info2:
        _body(req)
    assert info2.value.param == "messages[0].content[0].type"
