"""OpenAI request → exact Anthropic Messages body (anthropic and vertex-anthropic)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from chromagent_proxy.backends.anthropic.request import build_body
from chromagent_proxy.dialects.chat.decode import to_ir
from chromagent_proxy.dialects.chat.dialect import parse_request
from chromagent_proxy.errors import InvalidRequest
from chromagent_proxy.media_ir import inline_images

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16
PNG_B64 = base64.b64encode(PNG).decode()
JPEG = b"\xff\xd8\xff\xe0" + b"\x01" * 16
JPEG_B64 = base64.b64encode(JPEG).decode()
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Get weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


class StubFetcher:
    """Stands in for the gateway's SSRF-guarded fetcher (runtime.images)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    async def fetch(self, url: str, param: str, budget: Any = None) -> tuple[bytes, str]:
        self.calls.append((url, param))
        return JPEG, "image/jpeg"


def body_for(payload: dict[str, Any], **kw: Any) -> dict[str, Any]:
    req = parse_request(json.dumps({"model": "claude-x", **payload}).encode())
    return build_body(to_ir(req, "anthropic"), stream=bool(req.stream), **kw)


async def body_with_images(
    payload: dict[str, Any], *, vertex: bool, fetcher: StubFetcher | None = None
) -> dict[str, Any]:
    req = to_ir(parse_request(json.dumps({"model": "claude-x", **payload}).encode()), "anthropic")
    if vertex:  # Vertex rejects URL sources: the provider inlines every remote image
        await inline_images(req, fetcher)
    return build_body(req, vertex=vertex)


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": [{"type": "text", "text": text}]}


def test_system_and_multi_turn() -> None:
    body = body_for(
        {
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello."},
                {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
                {"role": "user", "content": "How are you?"},
                {"role": "user", "content": [{"type": "text", "text": "And today?"}]},
            ],
            "temperature": 0.3,
            "top_p": 0.9,
            "max_tokens": 300,
            "stop": "END",
            "user": "u-42",
        }
    )
    assert body == {
        "model": "claude-x",
        "max_tokens": 300,
        "system": "You are terse.\n\nAnswer in French.",
        "messages": [
            user("Hi"),
            {"role": "assistant", "content": [{"type": "text", "text": "Hello."}]},
            # Consecutive user turns are merged (Anthropic wants alternation).
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "How are you?"},
                    {"type": "text", "text": "And today?"},
                ],
            },
        ],
        "temperature": 0.3,
        "top_p": 0.9,
        "stop_sequences": ["END"],
        "metadata": {"user_id": "u-42"},
    }


def test_vertex_body_has_version_and_no_model() -> None:
    body = body_for({"messages": [{"role": "user", "content": "Hi"}], "stream": True}, vertex=True)
    assert body == {
        "anthropic_version": "vertex-2023-10-16",
        "max_tokens": 4096,
        "messages": [user("Hi")],
        "stream": True,
    }


def test_tool_round_trip_with_parallel_results() -> None:
    body = body_for(
        {
            "messages": [
                {"role": "user", "content": "Weather in Paris and Rome?"},
                {
                    "role": "assistant",
                    "content": "Checking both.",
                    "tool_calls": [
                        {
                            "id": "toolu_a",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                        },
                        {
                            "id": "toolu_b",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'},
                        },
                        {
                            "id": "toolu_c",
                            "type": "function",
                            "function": {"name": "get_time", "arguments": ""},
                        },
                    ],
                },
                {"role": "tool", "tool_call_id": "toolu_a", "content": "18C"},
                {
                    "role": "tool",
                    "tool_call_id": "toolu_b",
                    "content": [{"type": "text", "text": "25C"}],
                },
                {"role": "tool", "tool_call_id": "toolu_c", "content": "noon"},
                {"role": "user", "content": "Which is warmer?"},
            ],
            "tools": [WEATHER],
        }
    )
    assert body == {
        "model": "claude-x",
        "max_tokens": 4096,
        "messages": [
            user("Weather in Paris and Rome?"),
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Checking both."},
                    {
                        "type": "tool_use",
                        "id": "toolu_a",
                        "name": "get_weather",
                        "input": {"city": "Paris"},
                    },
                    {
                        "type": "tool_use",
                        "id": "toolu_b",
                        "name": "get_weather",
                        "input": {"city": "Rome"},
                    },
                    {"type": "tool_use", "id": "toolu_c", "name": "get_time", "input": {}},
                ],
            },
            # All results of the turn in ONE user message, tool_result blocks first.
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_a", "content": "18C"},
                    # Text-only results go as a string, whatever shape the client used.
                    {"type": "tool_result", "tool_use_id": "toolu_b", "content": "25C"},
                    {"type": "tool_result", "tool_use_id": "toolu_c", "content": "noon"},
                    {"type": "text", "text": "Which is warmer?"},
                ],
            },
        ],
        "tools": [WEATHER_TOOL],
    }


def test_bad_tool_arguments_name_the_param() -> None:
    with pytest.raises(InvalidRequest) as exc:
        body_for(
            {
                "messages": [
                    {"role": "user", "content": "x"},
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {
                                "id": "t",
                                "type": "function",
                                "function": {"name": "f", "arguments": "{"},
                            }
                        ],
                    },
                ]
            }
        )
    assert exc.value.param == "messages[1].tool_calls[0].function.arguments"


IMAGE_MSG = {
    "role": "user",
    "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
    ],
}
URL = "https://img.example.com/potato.jpg"
URL_MSG = {
    "role": "user",
    "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": URL, "detail": "high"}},
    ],
}


@pytest.mark.parametrize("vertex", [False, True])
async def test_image_data_url(vertex: bool) -> None:
    body = await body_with_images({"messages": [IMAGE_MSG]}, vertex=vertex)
    assert body["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64},
                },
            ],
        }
    ]


async def test_image_url_anthropic_is_a_url_source() -> None:
    fetcher = StubFetcher()
    body = await body_with_images({"messages": [URL_MSG]}, vertex=False, fetcher=fetcher)
    assert fetcher.calls == []
    assert body == {
        "model": "claude-x",
        "max_tokens": 4096,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image", "source": {"type": "url", "url": URL}},
                ],
            }
        ],
    }


async def test_image_url_vertex_is_fetched_and_inlined() -> None:
    fetcher = StubFetcher()
    body = await body_with_images({"messages": [URL_MSG]}, vertex=True, fetcher=fetcher)
    assert fetcher.calls == [(URL, "messages[0].content[1].image_url")]
    assert body == {
        "anthropic_version": "vertex-2023-10-16",
        "max_tokens": 4096,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/jpeg", "data": JPEG_B64},
                    },
                ],
            }
        ],
    }


async def test_image_url_vertex_without_fetcher_is_a_clear_400() -> None:
    with pytest.raises(InvalidRequest) as exc:
        await body_with_images({"messages": [URL_MSG]}, vertex=True, fetcher=None)
    assert exc.value.param == "messages[0].content[1].image_url"


@pytest.mark.parametrize(
    ("tool_choice", "parallel", "want"),
    [
        (None, None, None),
        ("auto", None, {"type": "auto"}),
        ("none", None, {"type": "none"}),
        ("required", None, {"type": "any"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            None,
            {"type": "tool", "name": "get_weather"},
        ),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            False,
            {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
        ),
        ("none", False, {"type": "none"}),
        ("auto", True, {"type": "auto"}),
    ],
)
def test_tool_choice_modes(tool_choice: Any, parallel: bool | None, want: Any) -> None:
    payload: dict[str, Any] = {"messages": [{"role": "user", "content": "Hi"}], "tools": [WEATHER]}
    if tool_choice is not None:
        payload["tool_choice"] = tool_choice
    if parallel is not None:
        payload["parallel_tool_calls"] = parallel
    expected: dict[str, Any] = {
        "model": "claude-x",
        "max_tokens": 4096,
        "messages": [user("Hi")],
        "tools": [WEATHER_TOOL],
    }
    if want is not None:
        expected["tool_choice"] = want
    assert body_for(payload) == expected


def test_tool_choice_without_tools() -> None:
    assert "tool_choice" not in body_for(
        {"messages": [{"role": "user", "content": "Hi"}], "tool_choice": "auto"}
    )
    with pytest.raises(InvalidRequest) as exc:
        body_for({"messages": [{"role": "user", "content": "Hi"}], "tool_choice": "required"})
    assert exc.value.param == "tool_choice"


def test_no_max_tokens_uses_the_default_and_the_config() -> None:
    msgs = {"messages": [{"role": "user", "content": "Hi"}]}
    assert body_for(msgs)["max_tokens"] == 4096
    assert body_for(msgs, default_max_tokens=1000)["max_tokens"] == 1000
    assert body_for({**msgs, "max_completion_tokens": 77, "max_tokens": 5})["max_tokens"] == 77


def test_thinking_on() -> None:
    body = body_for({"messages": [{"role": "user", "content": "Hi"}], "reasoning_effort": "medium"})
    assert body == {
        "model": "claude-x",
        "max_tokens": 4096 + 8192,
        "messages": [user("Hi")],
        "thinking": {"type": "enabled", "budget_tokens": 8192},
    }
    capped = body_for(
        {
            "messages": [{"role": "user", "content": "Hi"}],
            "reasoning_effort": "high",
            "max_tokens": 5000,
        }
    )
    assert capped["max_tokens"] == 5000
    assert capped["thinking"] == {"type": "enabled", "budget_tokens": 4999}
    assert "thinking" not in body_for(
        {"messages": [{"role": "user", "content": "Hi"}], "reasoning_effort": "none"}
    )
    with pytest.raises(InvalidRequest) as exc:
        body_for(
            {
                "messages": [{"role": "user", "content": "Hi"}],
                "reasoning_effort": "low",
                "max_tokens": 800,
            }
        )
    assert exc.value.param == "max_tokens"
    with pytest.raises(InvalidRequest) as exc:
        body_for({"messages": [{"role": "user", "content": "Hi"}], "reasoning_effort": "huge"})
    assert exc.value.param == "reasoning_effort"


def test_signed_thinking_is_replayed_first() -> None:
    body = body_for(
        {
            "messages": [
                {"role": "user", "content": "Weather?"},
                {
                    "role": "assistant",
                    "content": None,
                    "reasoning_content": "I should call the tool.",
                    "thinking_blocks": [
                        {
                            "index": 0,
                            "type": "thinking",
                            "thinking": "I should call the tool.",
                            "signature": "sig==",
                        },
                        {"type": "redacted_thinking", "data": "opaque"},
                        {"type": "thinking", "thinking": "unsigned, dropped"},
                    ],
                    "tool_calls": [
                        {
                            "id": "toolu_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": "{}"},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
            ],
            "tools": [WEATHER],
            "reasoning_effort": "low",
        }
    )
    assert body["messages"][1] == {
        "role": "assistant",
        "content": [
            {"type": "thinking", "thinking": "I should call the tool.", "signature": "sig=="},
            {"type": "redacted_thinking", "data": "opaque"},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}},
        ],
    }
    assert body["messages"][2] == {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"}],
    }


def test_response_format_json_schema_is_a_forced_tool() -> None:
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string"}},
        "required": ["answer"],
    }
    body = body_for(
        {
            "messages": [{"role": "user", "content": "Hi"}],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "out", "schema": schema},
            },
        }
    )
    assert body["tools"] == [
        {
            "name": "json_response",
            "description": "Give your final answer by calling this tool; its input is the answer.",
            "input_schema": schema,
        }
    ]
    assert body["tool_choice"] == {"type": "tool", "name": "json_response"}
    obj = body_for(
        {
            "messages": [{"role": "user", "content": "Hi"}],
            "response_format": {"type": "json_object"},
        }
    )
    assert obj["tools"][0]["input_schema"] == {"type": "object"}
    # With client tools the model must stay free to call them.
    both = body_for(
        {
            "messages": [{"role": "user", "content": "Hi"}],
            "tools": [WEATHER],
            "response_format": {"type": "json_object"},
        }
    )
    assert [t["name"] for t in both["tools"]] == ["get_weather", "json_response"]
    assert both["tool_choice"] == {"type": "auto"}
    assert "tools" not in body_for(
        {"messages": [{"role": "user", "content": "Hi"}], "response_format": {"type": "text"}}
    )


def test_temperature_outside_anthropics_range_is_refused_not_clamped() -> None:
    assert (
        body_for({"messages": [{"role": "user", "content": "Hi"}], "temperature": 1.0})[
            "temperature"
        ]
        == 1.0
    )
    with pytest.raises(InvalidRequest) as info:
        body_for({"messages": [{"role": "user", "content": "Hi"}], "temperature": 1.7})
    assert info.value.param == "temperature"


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"frequency_penalty": -1.0}, "frequency_penalty"),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}
                ]
            },
            "messages[0].content[0].type",
        ),
        ({"messages": [{"role": "system", "content": "only system"}]}, "messages"),
        ({"reasoning_effort": "max"}, "reasoning_effort"),
        ({"tools": [{"type": "custom", "function": {"name": "x"}}]}, "tools[0].type"),
    ],
)
def test_unsupported_params_are_400s_naming_them(extra: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        body_for({"messages": [{"role": "user", "content": "Hi"}], **extra})
    assert exc.value.param == param
    assert exc.value.status == 400


def test_neutral_values_are_accepted() -> None:
    body = body_for(
        {
            "messages": [{"role": "user", "content": "Hi"}],
            "n": 1,
            "presence_penalty": 0,
            "frequency_penalty": 0,
            "logprobs": False,
        }
    )
    assert body == {"model": "claude-x", "max_tokens": 4096, "messages": [user("Hi")]}
