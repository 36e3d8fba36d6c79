"""IR request → exact upstream bodies for what only the IR carries: cache markers,
signatures with their origin (a foreign one is never sent), thinking replay."""

from __future__ import annotations

from chromagent_proxy.backends.anthropic.request import build_body as anthropic_body
from chromagent_proxy.backends.gemini.request import SKIP_SIGNATURE
from chromagent_proxy.backends.gemini.request import build_body as gemini_body
from chromagent_proxy.core import ir

EPH = {"type": "ephemeral"}


def conversation(model: str = "m") -> ir.Request:
    return ir.Request(
        model=model,
        system=[ir.Text("You are terse."), ir.Text("Long shared context", ir.CacheMark("1h"))],
        messages=[
            ir.Message(
                "user",
                [
                    ir.Text("Look:", ir.EPHEMERAL),
                    ir.Image(media_type="image/png", data="iVBORw0KGgo=", cache=ir.EPHEMERAL),
                ],
            ),
            ir.Message(
                "assistant",
                [
                    ir.Thinking("mine", signature="a-sig", origin="anthropic"),
                    ir.Thinking("theirs", signature="g-sig", origin="gemini"),
                    ir.Thinking("unsigned"),
                    ir.RedactedThinking("opaque", origin="anthropic"),
                    ir.RedactedThinking("foreign", origin="other"),
                    ir.Text("Calling."),
                    ir.ToolCall("c1", "f", '{"x": 1}', signature="g-call", origin="gemini"),
                    ir.ToolCall(
                        "c2", "f", "", signature="a-call", origin="anthropic", cache=ir.EPHEMERAL
                    ),
                ],
            ),
            ir.Message(
                "user",
                [
                    ir.ToolResult("c1", [ir.Text("one")], name="f", cache=ir.EPHEMERAL),
                    ir.ToolResult("c2", [ir.Text("bad", ir.EPHEMERAL)], name="f", is_error=True),
                ],
            ),
        ],
        tools=[ir.Tool("f", "does f", {"type": "object"}, cache=ir.EPHEMERAL)],
    )


def test_anthropic_cache_control_everywhere_and_only_own_thinking() -> None:
    body = anthropic_body(conversation())
    assert body == {
        "model": "m",
        "max_tokens": 4096,
        "system": [
            {"type": "text", "text": "You are terse."},
            {
                "type": "text",
                "text": "Long shared context",
                "cache_control": {"type": "ephemeral", "ttl": "1h"},
            },
        ],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Look:", "cache_control": EPH},
                    {
                        "type": "image",
                        "source": {
                            "type": "base64",
                            "media_type": "image/png",
                            "data": "iVBORw0KGgo=",
                        },
                        "cache_control": EPH,
                    },
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "mine", "signature": "a-sig"},
                    {"type": "redacted_thinking", "data": "opaque"},
                    {"type": "text", "text": "Calling."},
                    {"type": "tool_use", "id": "c1", "name": "f", "input": {"x": 1}},
                    {
                        "type": "tool_use",
                        "id": "c2",
                        "name": "f",
                        "input": {},
                        "cache_control": EPH,
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "c1",
                        "content": "one",
                        "cache_control": EPH,
                    },
                    {
                        "type": "tool_result",
                        "tool_use_id": "c2",
                        "content": [{"type": "text", "text": "bad", "cache_control": EPH}],
                        "is_error": True,
                    },
                ],
            },
        ],
        "tools": [
            {
                "name": "f",
                "description": "does f",
                "input_schema": {"type": "object"},
                "cache_control": EPH,
            }
        ],
    }


def test_anthropic_system_without_marks_is_one_string() -> None:
    req = ir.Request(
        model="m",
        system=[ir.Text("a"), ir.Text("b")],
        messages=[ir.Message("user", [ir.Text("hi")])],
    )
    assert anthropic_body(req)["system"] == "a\n\nb"


def test_anthropic_remote_image_is_a_url_source_unless_inlined() -> None:
    req = ir.Request(
        model="m", messages=[ir.Message("user", [ir.Image(url="https://img.test/a.png")])]
    )
    assert anthropic_body(req)["messages"][0]["content"] == [
        {"type": "image", "source": {"type": "url", "url": "https://img.test/a.png"}}
    ]


def test_gemini_sends_back_only_its_own_signatures_and_no_thinking() -> None:
    body = gemini_body(conversation("gemini-2.5-flash"))
    model_turn = body["contents"][1]
    assert model_turn == {
        "role": "model",
        "parts": [
            {"text": "Calling."},
            {"functionCall": {"name": "f", "args": {"x": 1}}, "thoughtSignature": "g-call"},
            {"functionCall": {"name": "f", "args": {}}},
        ],
    }
    # Cache markers mean nothing to Gemini: the texts go as they are.
    assert body["systemInstruction"] == {
        "parts": [{"text": "You are terse."}, {"text": "Long shared context"}]
    }


def test_gemini_3_foreign_signature_becomes_the_placeholder() -> None:
    req = ir.Request(
        model="gemini-3-pro-preview",
        messages=[
            ir.Message("user", [ir.Text("x")]),
            ir.Message(
                "assistant",
                [ir.ToolCall("c1", "f", "{}", signature="a-sig", origin="anthropic")],
            ),
            ir.Message("user", [ir.ToolResult("c1", [ir.Text("1")])]),
        ],
    )
    parts = gemini_body(req)["contents"][1]["parts"]
    assert parts == [
        {"functionCall": {"name": "f", "args": {}}, "thoughtSignature": SKIP_SIGNATURE}
    ]
