"""Decoding a Messages body into the IR: Claude Code's request shape, bad bodies naming
the field, what translating backends refuse."""

from __future__ import annotations

import json

import pytest

from chromagent_proxy.core import ir
from chromagent_proxy.core.errors import (
    InvalidRequest,
)
from chromagent_proxy.core.seal import Sealer
from chromagent_proxy.dialects.messages import MessagesDialect

CLAUDE_CODE_LIKE = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 32000,
    "stream": True,
    "thinking": {"type": "enabled", "budget_tokens": 31999},
    "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
    "metadata": {"user_id": json.dumps({"device_id": "d" * 64, "session_id": "sess-42"})},
    "system": [
        {"type": "text", "text": "billing line"},
        {"type": "text", "text": "You are a coding agent.", "cache_control": {"type": "ephemeral"}},
    ],
    "tools": [
        {
            "name": "Bash",
            "description": "Run a command",
            "input_schema": {
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "object",
                "properties": {"command": {"type": "string"}},
                "required": ["command"],
                "additionalProperties": False,
            },
        }
    ],
    "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
    "stop_sequences": ["STOP"],
    "top_k": 5,
    "messages": [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look at this"},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
                },
                {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
            ],
        }
    ],
}


def test_decode_claude_code_shape() -> None:
    d = MessagesDialect(Sealer("k"))
    inbound = d.parse(json.dumps(CLAUDE_CODE_LIKE).encode(), {}, {"beta": "true"})
    assert inbound.stream and inbound.tools and inbound.images
    assert inbound.session_id == "sess-42"
    req = d.to_ir(inbound, "gemini")
    assert req.dialect == "messages"
    assert (
        req.system is not None
        and req.system[1].cache == ir.EPHEMERAL
        and req.system[0].cache is None
    )
    assert req.tools is not None and "$schema" not in (req.tools[0].parameters or {})
    assert req.tool_choice == ir.ToolChoice("required", parallel=False)
    assert req.settings.reasoning == ir.Reasoning(budget_tokens=31999, summary=True)
    assert (
        req.settings.max_tokens == 32000
        and req.settings.stop == ["STOP"]
        and req.settings.top_k == 5
    )
    assert req.extra == {"context_management": CLAUDE_CODE_LIKE["context_management"]}
    img1, img2 = req.messages[0].parts[1:]
    assert (
        isinstance(img1, ir.Image)
        and img1.data == "iVBORw0KGgo="
        and img1.media_type == "image/png"
    )
    assert isinstance(img2, ir.Image) and img2.url == "https://example.com/a.png"
    header = d.parse(json.dumps(CLAUDE_CODE_LIKE).encode(), {"X-Claude-Code-Session-Id": "h-1"}, {})
    assert header.session_id == "h-1"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{", None),
        (b'{"model":"m","messages":[{"role":"system","content":"x"}]}', "messages.0.role"),
        (b'{"model":"m","messages":"nope"}', "messages"),
        (b'{"messages":[]}', None),
    ],
)
def test_bad_bodies_name_the_field(body: bytes, param: str | None) -> None:
    with pytest.raises(InvalidRequest) as info:
        MessagesDialect(Sealer("k")).parse(body, {}, {})
    if param is not None:
        assert info.value.param == param


@pytest.mark.parametrize(
    ("tool", "param"),
    [
        ({"name": "t", "description": 5}, "tools.0.description"),
        ({"name": "t", "description": ["a"]}, "tools.0.description"),
        ({"name": "t", "input_schema": "object"}, "tools.0.input_schema"),
        ({"name": "t", "input_schema": [{"type": "object"}]}, "tools.0.input_schema"),
        ({"name": "t", "input_schema": True}, "tools.0.input_schema"),
    ],
)
def test_a_tool_description_or_schema_of_the_wrong_kind_is_a_400_naming_it(
    tool: dict[str, object], param: str
) -> None:
    # Both stay JSON bytes until a translation reads them (schema.ToolIn); the parse still
    # refuses the wrong kind of value, so a relayed request is refused like a translated one.
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    with pytest.raises(InvalidRequest) as info:
        MessagesDialect(Sealer("k")).parse(json.dumps({**body, "tools": [tool]}).encode(), {}, {})
    assert info.value.param == param
    assert param in info.value.message


def test_tool_descriptions_and_schemas_reach_the_ir_as_sent() -> None:
    d = MessagesDialect(Sealer("k"))
    schema = {
        "type": "object",
        "properties": {"q": {"type": "string", "description": 'caf\u00e9 "x"\n', "maximum": 2**70}},
    }
    tools = [
        {"name": "a", "description": 'Run "it"\n\u2603 caf\u00e9', "input_schema": schema},
        {"name": "b", "description": None, "input_schema": None},
        {"name": "c"},
        {"name": "d", "description": "", "input_schema": {}},
    ]
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    for raw in (
        json.dumps({**body, "tools": tools}),
        json.dumps({**body, "tools": tools}, indent=2),
    ):
        req = d.to_ir(d.parse(raw.encode(), {}, {}), "gemini")
        assert req.tools is not None
        got = [(t.name, t.description, t.parameters) for t in req.tools]
        assert got == [
            ("a", 'Run "it"\n\u2603 caf\u00e9', schema),
            ("b", None, None),
            ("c", None, None),
            ("d", "", {}),
        ]


def test_server_tools_and_unknown_blocks_are_refused_on_translating_backends() -> None:
    d = MessagesDialect(Sealer("k"))
    body = {**CLAUDE_CODE_LIKE, "tools": [{"type": "web_search_20250305", "name": "web_search"}]}
    with pytest.raises(InvalidRequest, match="web_search") as info:
        d.to_ir(d.parse(json.dumps(body).encode(), {}, {}), "gemini")
    assert info.value.param == "tools.0.type"
    body = {
        "model": "m",
        "max_tokens": 5,
        "messages": [
            {
                "role": "user",
                "content": [{"type": "document", "source": {"type": "text", "data": "x"}}],
            }
        ],
    }
    with pytest.raises(InvalidRequest, match="document") as info:
        d.to_ir(d.parse(json.dumps(body).encode(), {}, {}), "ollama")
    assert info.value.param == "messages.0.content.0.type"


@pytest.mark.parametrize(
    ("content", "images", "gateway_thinking"),
    [
        ([{"type": "text", "text": "x"}], False, False),
        ([{"type": "image", "source": {"type": "url", "url": "https://e.x/a.png"}}], True, False),
        (
            [
                {
                    "type": "tool_result",
                    "tool_use_id": "t1",
                    "content": [
                        {"type": "image", "source": {"type": "url", "url": "https://e.x/b"}}
                    ],
                }
            ],
            True,
            False,
        ),
        ([{"type": "thinking", "thinking": "t", "signature": "EqQBCkYI"}], False, False),
        ([{"type": "thinking", "thinking": "t", "signature": "cgs1_AAAA"}], False, True),
        (
            [
                {"type": "thinking", "thinking": "t", "signature": "cgs1_AAAA"},
                {"type": "image", "source": {"type": "url", "url": "https://e.x/c"}},
            ],
            True,
            True,
        ),
    ],
)
def test_one_walk_finds_images_and_gateway_thinking(
    content: list[dict[str, object]], images: bool, gateway_thinking: bool
) -> None:
    body = {
        "model": "m",
        "max_tokens": 5,
        "messages": [
            {"role": "user", "content": "x"},
            {"role": "assistant", "content": content},
            {"role": "user", "content": "y"},
        ],
    }
    inbound = MessagesDialect(Sealer("k")).parse(json.dumps(body).encode(), {}, {})
    assert inbound.images is images
    assert inbound.native.gateway_thinking is gateway_thinking
