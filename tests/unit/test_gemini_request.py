"""Chat request → IR → exact Gemini body (dialects/chat/decode.py, backends/gemini/request.py)."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from chromagent_proxy import codec
from chromagent_proxy.backends.gemini.request import SKIP_SIGNATURE, build_body
from chromagent_proxy.dialects.chat.decode import to_ir
from chromagent_proxy.dialects.chat.ids import join_tool_call_id, split_tool_call_id
from chromagent_proxy.errors import InvalidRequest
from chromagent_proxy.media_ir import inline_images
from chromagent_proxy.schema.openai import ChatCompletionRequest

_decode = codec.decoder(ChatCompletionRequest).decode
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16


async def body_of(payload: dict[str, Any], model: str = "gemini-2.5-flash") -> dict[str, Any]:
    req = to_ir(_decode(codec.dumps({"model": model, **payload})), "gemini")
    await inline_images(req, None)
    return build_body(req)


def weather_tool(**params: Any) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": params
            or {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }


async def test_system_and_multi_turn() -> None:
    body = await body_of(
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
                {"role": "user", "content": "Hi"},
                {"role": "user", "content": [{"type": "text", "text": "Capital of France?"}]},
                {"role": "assistant", "content": "Paris."},
                {"role": "user", "content": "And Italy?"},
            ],
            "temperature": 0.2,
            "top_p": 0.9,
            "max_tokens": 100,
            "stop": "END",
            "seed": 7,
            "presence_penalty": 0.1,
            "frequency_penalty": 0.3,
            "n": 2,
        }
    )
    assert body == {
        "systemInstruction": {"parts": [{"text": "Be brief."}, {"text": "Answer in French."}]},
        "contents": [
            {"role": "user", "parts": [{"text": "Hi"}, {"text": "Capital of France?"}]},
            {"role": "model", "parts": [{"text": "Paris."}]},
            {"role": "user", "parts": [{"text": "And Italy?"}]},
        ],
        "generationConfig": {
            "temperature": 0.2,
            "topP": 0.9,
            "maxOutputTokens": 100,
            "stopSequences": ["END"],
            "candidateCount": 2,
            "seed": 7,
            "presencePenalty": 0.1,
            "frequencyPenalty": 0.3,
        },
    }


async def test_max_completion_tokens_wins() -> None:
    body = await body_of(
        {
            "messages": [{"role": "user", "content": "x"}],
            "max_tokens": 10,
            "max_completion_tokens": 20,
        }
    )
    assert body["generationConfig"] == {"maxOutputTokens": 20}


async def test_tool_round_trip_with_signature() -> None:
    call_id = join_tool_call_id("call_1", "+vv8/f7/+/8/Png=")
    body = await body_of(
        {
            "messages": [
                {"role": "user", "content": "Weather in Paris?"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": call_id,
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": call_id, "content": "22C and sunny"},
            ],
            "tools": [weather_tool()],
        }
    )
    assert body == {
        "contents": [
            {"role": "user", "parts": [{"text": "Weather in Paris?"}]},
            {
                "role": "model",
                "parts": [
                    {
                        "functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                        "thoughtSignature": "+vv8/f7/+/8/Png=",
                    }
                ],
            },
            {
                "role": "user",
                "parts": [
                    {
                        "functionResponse": {
                            "name": "get_weather",
                            "response": {"output": "22C and sunny"},
                        }
                    }
                ],
            },
        ],
        "tools": [
            {
                "functionDeclarations": [
                    {
                        "name": "get_weather",
                        "description": "Weather for a city",
                        "parameters": {
                            "type": "OBJECT",
                            "properties": {"city": {"type": "STRING"}},
                            "required": ["city"],
                        },
                    }
                ]
            }
        ],
    }


async def test_parallel_tool_results_go_in_one_turn_and_user_text_after_in_another() -> None:
    body = await body_of(
        {
            "messages": [
                {"role": "user", "content": "Weather in Paris and Rome?"},
                {
                    "role": "assistant",
                    "content": "Checking both.",
                    "tool_calls": [
                        {
                            "id": "a",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                        },
                        {
                            "id": "b",
                            "type": "function",
                            "function": {"name": "get_time", "arguments": ""},
                        },
                    ],
                },
                {"role": "tool", "tool_call_id": "a", "content": '{"temp": 22}'},
                {"role": "tool", "tool_call_id": "b", "content": [{"type": "text", "text": "9am"}]},
                {"role": "user", "content": "Thanks; which is warmer?"},
            ],
        },
    )
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "Weather in Paris and Rome?"}]},
        {
            "role": "model",
            "parts": [
                {"text": "Checking both."},
                {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
                {"functionCall": {"name": "get_time", "args": {}}},
            ],
        },
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"name": "get_weather", "response": {"temp": 22}}},
                {"functionResponse": {"name": "get_time", "response": {"output": "9am"}}},
            ],
        },
        {"role": "user", "parts": [{"text": "Thanks; which is warmer?"}]},
    ]


async def test_gemini_3_gets_the_documented_placeholder_for_a_lost_signature() -> None:
    body = await body_of(
        {
            "messages": [
                {"role": "user", "content": "x"},
                {
                    "role": "assistant",
                    "tool_calls": [
                        {"id": "c1", "function": {"name": "f", "arguments": "{}"}},
                        {"id": "c2", "function": {"name": "f", "arguments": "{}"}},
                    ],
                },
                {"role": "tool", "tool_call_id": "c1", "content": "1"},
                {"role": "tool", "tool_call_id": "c2", "content": "2"},
            ]
        },
        model="gemini-3-pro-preview",
    )
    parts = body["contents"][1]["parts"]
    assert parts[0]["thoughtSignature"] == SKIP_SIGNATURE
    assert "thoughtSignature" not in parts[1]  # only the first call of a turn carries one


def test_signature_survives_the_id() -> None:
    sig = base64.b64encode(b"\xfb\xef\xff signature bytes!").decode()
    assert "+" in sig or "/" in sig
    call_id = join_tool_call_id("call_1", sig)
    assert call_id.startswith("call_1__thought__")
    assert all(c.isalnum() or c in "_-" for c in call_id)
    assert split_tool_call_id(call_id) == (call_id.split("__thought__")[0], sig)
    assert split_tool_call_id("call_plain") == ("call_plain", None)


async def test_image_data_url_becomes_inline_data() -> None:
    url = "data:image/png;base64," + base64.b64encode(PNG).decode()
    body = await body_of(
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is this?"},
                        {"type": "image_url", "image_url": {"url": url}},
                    ],
                }
            ]
        }
    )
    assert body["contents"] == [
        {
            "role": "user",
            "parts": [
                {"text": "What is this?"},
                {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(PNG).decode()}},
            ],
        }
    ]


async def test_remote_image_without_fetcher_is_a_clear_400() -> None:
    with pytest.raises(InvalidRequest) as info:
        await body_of(
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}}
                        ],
                    }
                ]
            }
        )
    assert info.value.param == "messages[0].content[0].image_url"


async def test_json_object_and_json_schema() -> None:
    msgs = [{"role": "user", "content": "x"}]
    body = await body_of({"messages": msgs, "response_format": {"type": "json_object"}})
    assert body["generationConfig"] == {"responseMimeType": "application/json"}
    body = await body_of(
        {
            "messages": msgs,
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": "person",
                    "strict": True,
                    "schema": {
                        "type": "object",
                        "properties": {
                            "name": {"type": "string"},
                            "age": {"type": ["integer", "null"]},
                        },
                        "required": ["name", "age"],
                        "additionalProperties": False,
                    },
                },
            },
        }
    )
    assert body["generationConfig"] == {
        "responseMimeType": "application/json",
        "responseSchema": {
            "type": "OBJECT",
            "properties": {
                "name": {"type": "STRING"},
                "age": {"type": "INTEGER", "nullable": True},
            },
            "required": ["name", "age"],
        },
    }


@pytest.mark.parametrize(
    ("choice", "config"),
    [
        ("auto", {"functionCallingConfig": {"mode": "AUTO"}}),
        ("none", {"functionCallingConfig": {"mode": "NONE"}}),
        ("required", {"functionCallingConfig": {"mode": "ANY"}}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}},
        ),
    ],
)
async def test_tool_choice_modes(choice: Any, config: dict[str, Any]) -> None:
    body = await body_of(
        {
            "messages": [{"role": "user", "content": "x"}],
            "tools": [weather_tool()],
            "tool_choice": choice,
        }
    )
    assert body["toolConfig"] == config


async def test_tool_choice_naming_an_unknown_tool_is_a_400() -> None:
    with pytest.raises(InvalidRequest) as info:
        await body_of(
            {
                "messages": [{"role": "user", "content": "x"}],
                "tools": [weather_tool()],
                "tool_choice": {"type": "function", "function": {"name": "nope"}},
            }
        )
    assert info.value.param == "tool_choice"


async def test_schema_with_rejected_keywords_is_cleaned_without_losing_meaning() -> None:
    params = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "$id": "urn:x",
        "type": "object",
        "additionalProperties": False,
        "$defs": {
            "Unit": {"type": "string", "enum": ["c", "f"], "description": "Temperature unit"}
        },
        "properties": {
            "city": {"type": "string", "format": "uri", "examples": ["Paris"]},
            "unit": {"$ref": "#/$defs/Unit"},
            "days": {"type": "integer", "exclusiveMinimum": 0, "default": 1},
            "kind": {"const": "forecast"},
            "note": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            "level": {"enum": [1, 2, 3], "type": "integer"},
            "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
            "extra": {"type": "object", "additionalProperties": {"type": "number"}},
            "either": {"oneOf": [{"type": "string"}, {"type": "number"}]},
        },
        "required": ["city", "unit", "missing"],
    }
    body = await body_of(
        {"messages": [{"role": "user", "content": "x"}], "tools": [weather_tool(**params)]}
    )
    assert body["tools"][0]["functionDeclarations"][0]["parameters"] == {
        "type": "OBJECT",
        "properties": {
            "city": {"type": "STRING", "description": 'format: uri; examples: ["Paris"]'},
            "unit": {"type": "STRING", "enum": ["c", "f"], "description": "Temperature unit"},
            "days": {"type": "INTEGER", "description": "greater than 0; default: 1"},
            "kind": {"type": "STRING", "enum": ["forecast"]},
            "note": {"type": "STRING", "nullable": True},
            "level": {"type": "INTEGER", "description": "one of 1, 2, 3"},
            "tags": {
                "type": "ARRAY",
                "items": {"type": "STRING"},
                "description": "items must be unique",
            },
            "extra": {"type": "OBJECT", "description": "an object with any keys; values: number"},
            "either": {"anyOf": [{"type": "STRING"}, {"type": "NUMBER"}]},
        },
        "required": ["city", "unit"],
    }


async def test_recursive_ref_and_no_arg_function() -> None:
    node = {
        "type": "object",
        "$defs": {"Node": {"type": "object", "properties": {"child": {"$ref": "#/$defs/Node"}}}},
        "properties": {"root": {"$ref": "#/$defs/Node"}},
    }
    body = await body_of(
        {
            "messages": [{"role": "user", "content": "x"}],
            "tools": [
                weather_tool(**node),
                {
                    "type": "function",
                    "function": {
                        "name": "ping",
                        "parameters": {"type": "object", "properties": {}},
                    },
                },
            ],
        }
    )
    decls = body["tools"][0]["functionDeclarations"]
    root = decls[0]["parameters"]["properties"]["root"]
    assert root["properties"]["child"] == {"type": "OBJECT"}
    assert decls[1] == {"name": "ping"}


@pytest.mark.parametrize(
    ("model", "effort", "thinking"),
    [
        ("gemini-2.5-flash", "low", {"thinkingBudget": 1024}),
        ("gemini-2.5-flash", "none", {"thinkingBudget": 0}),
        ("gemini-2.5-pro", "high", {"thinkingBudget": 24576}),
        ("gemini-3-pro-preview", "high", {"thinkingLevel": "high"}),
        ("gemini-3-flash-preview", "minimal", {"thinkingLevel": "minimal"}),
    ],
)
async def test_reasoning_effort(model: str, effort: str, thinking: dict[str, Any]) -> None:
    body = await body_of(
        {"messages": [{"role": "user", "content": "x"}], "reasoning_effort": effort}, model=model
    )
    assert body["generationConfig"] == {"thinkingConfig": thinking}


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"logprobs": True}, "logprobs"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"parallel_tool_calls": False, "tools": [weather_tool()]}, "parallel_tool_calls"),
        ({"reasoning_effort": "extreme"}, "reasoning_effort"),
        ({"response_format": {"type": "xml"}}, "response_format.type"),
        ({"stop": ["a", "b", "c", "d", "e", "f"]}, "stop"),
        (
            {"tools": [{"type": "function", "function": {"name": "9bad name"}}]},
            "tools[0].function.name",
        ),
    ],
)
async def test_parameters_gemini_cannot_honour_are_400s(extra: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        await body_of({"messages": [{"role": "user", "content": "x"}], **extra})
    assert info.value.status == 400
    assert info.value.param == param


async def test_bad_tool_arguments_and_unknown_tool_call_id() -> None:
    with pytest.raises(InvalidRequest) as info:
        await body_of(
            {
                "messages": [
                    {"role": "user", "content": "x"},
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {"id": "a", "function": {"name": "f", "arguments": "{oops"}}
                        ],
                    },
                ]
            }
        )
    assert info.value.param == "messages[1].tool_calls[0].function.arguments"
    with pytest.raises(InvalidRequest) as info:
        await body_of(
            {
                "messages": [
                    {"role": "user", "content": "x"},
                    {"role": "tool", "tool_call_id": "zzz", "content": "r"},
                ]
            }
        )
    assert info.value.param == "messages"
    assert "tool_call_id 'zzz'" in info.value.message
