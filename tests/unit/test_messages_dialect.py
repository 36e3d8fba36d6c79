"""The Messages dialect's pure parts: the stream grammar the encoder emits, the Message
JSON, decoding into the IR, gateway-sealed signatures and the error envelope."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chromagent_proxy.core import ir
from chromagent_proxy.core.accumulate import Answer
from chromagent_proxy.core.seal import Sealer
from chromagent_proxy.dialects.messages import MessagesDialect
from chromagent_proxy.dialects.messages.signing import Sealed, Signer
from chromagent_proxy.errors import (
    AuthenticationFailed,
    GatewayError,
    InvalidRequest,
    RateLimited,
    RequestTooLarge,
    upstream_http_error,
)

STREAM_EVENTS = {
    "message_start",
    "content_block_start",
    "content_block_delta",
    "content_block_stop",
    "message_delta",
    "message_stop",
}


def sse(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for block in raw.decode().split("\n\n"):
        if not block:
            continue
        name_line, data_line = block.split("\n")
        assert name_line.startswith("event: ") and data_line.startswith("data: ")
        name, data = name_line[7:], json.loads(data_line[6:])
        assert data["type"] == name  # the SDKs dispatch on the event name
        out.append((name, data))
    return out


def check_grammar(events: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """Validate message_start block* message_delta message_stop and fold the message."""
    names = [n for n, _ in events]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    msg: dict[str, Any] = events[0][1]["message"]
    assert msg["content"] == [] and msg["stop_reason"] is None
    for key in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"):
        assert isinstance(msg["usage"][key], int)
    open_index: int | None = None
    blocks: list[dict[str, Any]] = []
    json_bufs: dict[int, str] = {}
    for name, data in events[1:-2]:
        assert name in STREAM_EVENTS
        if name == "content_block_start":
            assert open_index is None, "blocks never overlap"
            assert data["index"] == len(blocks)
            open_index = data["index"]
            blocks.append(dict(data["content_block"]))
        elif name == "content_block_delta":
            assert data["index"] == open_index
            d, b = data["delta"], blocks[data["index"]]
            if d["type"] == "text_delta":
                b["text"] += d["text"]
            elif d["type"] == "thinking_delta":
                b["thinking"] += d["thinking"]
            elif d["type"] == "signature_delta":
                b["signature"] = d["signature"]
            elif d["type"] == "input_json_delta":
                json_bufs[data["index"]] = json_bufs.get(data["index"], "") + d["partial_json"]
            else:
                raise AssertionError(d)
        elif name == "content_block_stop":
            assert data["index"] == open_index
            open_index = None
    assert open_index is None
    for i, buf in json_bufs.items():
        blocks[i]["input"] = json.loads(buf) if buf else {}
    msg["content"] = blocks
    delta = events[-2][1]
    msg["stop_reason"] = delta["delta"]["stop_reason"]
    msg["usage"] = {**msg["usage"], **delta["usage"]}
    return msg


def gemini_turn() -> list[list[ir.Event]]:
    """What a Gemini 3 step yields: thought text, a signed function call, usage."""
    return [
        [ir.Start(model="gemini-3-pro")],
        [ir.ThinkingDelta("Let me look ", origin="gemini")],
        [ir.ThinkingDelta("at the files.", origin="gemini")],
        [
            ir.ToolCallStart(0, "call_1", "Bash", signature="R2VtaW5pU2ln+/==", origin="gemini"),
            ir.ToolCallDelta(0, '{"command": "ls -la",'),
            ir.ToolCallDelta(0, ' "description": "List files"}'),
            ir.ToolCallStart(1, "call_2", "Read", signature=None, origin="gemini"),
            ir.ToolCallDelta(1, '{"file_path": "/tmp/x"}'),
        ],
        [
            ir.Finish("stop"),
            ir.Usage(input=1200, output=40, cache_read=800, reasoning=25),
        ],
    ]


def encode_stream(dialect: MessagesDialect, batches: list[list[ir.Event]]) -> bytes:
    inbound = dialect.parse(
        json.dumps(
            {
                "model": "claude-sonnet-4-5",
                "max_tokens": 100,
                "stream": True,
                "messages": [{"role": "user", "content": "hi"}],
            }
        ).encode(),
        {},
        {},
    )
    enc = dialect.stream_encoder(inbound, "rid1", "claude-sonnet-4-5")
    out = b"".join(enc.encode(b) for b in batches)
    return out + enc.finish()


def test_stream_grammar_thinking_tool_calls_usage() -> None:
    d = MessagesDialect(Sealer("k"))
    msg = check_grammar(sse(encode_stream(d, gemini_turn())))
    kinds = [b["type"] for b in msg["content"]]
    assert kinds == ["thinking", "tool_use", "tool_use"]
    assert msg["content"][0]["thinking"] == "Let me look at the files."
    assert msg["content"][0]["signature"].startswith("cgs1_")
    assert msg["content"][1]["input"] == {"command": "ls -la", "description": "List files"}
    assert msg["content"][2]["input"] == {"file_path": "/tmp/x"}
    assert msg["stop_reason"] == "tool_use"
    assert msg["usage"] == {
        "input_tokens": 1200,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 800,
        "output_tokens": 65,
    }
    assert msg["id"] == "msg_rid1"


def test_text_only_and_stop_reasons() -> None:
    d = MessagesDialect(Sealer("k"))
    for reason, expected in [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("content_filter", "refusal"),
        ("stop_sequence", "stop_sequence"),
    ]:
        batches: list[list[ir.Event]] = [
            [ir.TextDelta("Hel"), ir.TextDelta("lo")],
            [ir.Finish(reason, stop_sequence="END" if reason == "stop_sequence" else None)],  # type: ignore[arg-type]
        ]
        events = sse(encode_stream(d, batches))
        msg = check_grammar(events)
        assert msg["content"] == [{"type": "text", "text": "Hello"}]
        assert msg["stop_reason"] == expected
        stop_seq = events[-2][1]["delta"]["stop_sequence"]
        assert stop_seq == ("END" if reason == "stop_sequence" else None)


def test_empty_stream_is_still_a_valid_message() -> None:
    msg = check_grammar(sse(encode_stream(MessagesDialect(Sealer("k")), [])))
    assert msg["content"] == [] and msg["stop_reason"] == "end_turn"


def test_input_usage_in_message_start_when_known() -> None:
    batches: list[list[ir.Event]] = [[ir.Usage(input=7, cache_write=3), ir.TextDelta("x")]]
    events = sse(encode_stream(MessagesDialect(Sealer("k")), batches))
    usage = events[0][1]["message"]["usage"]
    assert usage["input_tokens"] == 7 and usage["cache_creation_input_tokens"] == 3


def test_anthropic_signature_passes_unsealed() -> None:
    batches: list[list[ir.Event]] = [
        [
            ir.ThinkingDelta("hmm", origin="anthropic"),
            ir.ThinkingDelta(signature="EqAnth", origin="anthropic"),
        ],
        [ir.TextDelta("ok"), ir.Finish("stop")],
    ]
    msg = check_grammar(sse(encode_stream(MessagesDialect(Sealer("k")), batches)))
    assert msg["content"][0] == {"type": "thinking", "thinking": "hmm", "signature": "EqAnth"}


def next_turn(dialect: MessagesDialect, assistant: list[dict[str, Any]]) -> ir.Request:
    tool_ids = [b["id"] for b in assistant if b["type"] == "tool_use"]
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 1000,
        "messages": [
            {"role": "user", "content": "list the files"},
            {"role": "assistant", "content": assistant},
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": t,
                        "content": "ok",
                        "cache_control": {"type": "ephemeral"},
                    }
                    for t in tool_ids
                ],
            },
        ],
    }
    inbound = dialect.parse(json.dumps(body).encode(), {}, {})
    return dialect.to_ir(inbound, "gemini")


def test_gemini_state_round_trips_through_the_signature() -> None:
    d = MessagesDialect(Sealer("k"))
    msg = check_grammar(sse(encode_stream(d, gemini_turn())))
    req = next_turn(d, msg["content"])
    parts = req.messages[1].parts
    thinking, call1, call2 = parts
    assert isinstance(thinking, ir.Thinking) and thinking.origin == "gemini"
    assert thinking.text == "Let me look at the files."
    assert isinstance(call1, ir.ToolCall) and call1.signature == "R2VtaW5pU2ln+/=="
    assert call1.origin == "gemini"
    assert json.loads(call1.arguments) == {"command": "ls -la", "description": "List files"}
    assert isinstance(call2, ir.ToolCall) and call2.signature is None
    results = req.messages[2].parts
    assert [type(p) for p in results] == [ir.ToolResult, ir.ToolResult]
    assert results[0].cache == ir.EPHEMERAL  # type: ignore[union-attr]


def test_signed_call_without_thinking_gets_a_carrier_block() -> None:
    d = MessagesDialect(Sealer("k"))
    batches: list[list[ir.Event]] = [
        [
            ir.ToolCallStart(0, "c1", "Read", signature="sigA", origin="gemini"),
            ir.ToolCallDelta(0, '{"file_path":"a"}'),
            ir.Finish("stop"),
        ],
    ]
    msg = check_grammar(sse(encode_stream(d, batches)))
    assert [b["type"] for b in msg["content"]] == ["thinking", "tool_use"]
    assert msg["content"][0]["thinking"] == ""
    req = next_turn(d, msg["content"])
    (call,) = req.messages[1].parts
    assert isinstance(call, ir.ToolCall) and call.signature == "sigA"


def test_forged_and_foreign_signatures() -> None:
    d = MessagesDialect(Sealer("k"))
    other = Signer(Sealer("another gateway")).seal(Sealed("gemini", "stolen", {"t1": "x"}))
    req = next_turn(
        d,
        [
            {"type": "thinking", "thinking": "a", "signature": other},
            {"type": "thinking", "thinking": "b", "signature": "EqRealAnthropic"},
            {"type": "tool_use", "id": "t1", "name": "Bash", "input": {}},
        ],
    )
    forged, anth, call = req.messages[1].parts
    assert isinstance(forged, ir.Thinking) and forged.signature is None and forged.origin is None
    assert isinstance(anth, ir.Thinking) and anth.signature == "EqRealAnthropic"
    assert anth.origin == "anthropic"
    assert isinstance(call, ir.ToolCall) and call.signature is None


def test_non_stream_message_json() -> None:
    d = MessagesDialect(Sealer("k"))
    answer = Answer()
    for batch in gemini_turn():
        answer.add(batch)
    inbound = d.parse(
        b'{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"}]}', {}, {}
    )
    msg = json.loads(d.complete(inbound, answer, "r9", "claude-x"))
    assert msg["type"] == "message" and msg["id"] == "msg_r9" and msg["role"] == "assistant"
    assert [b["type"] for b in msg["content"]] == ["thinking", "tool_use", "tool_use"]
    assert msg["content"][1]["input"] == {"command": "ls -la", "description": "List files"}
    assert msg["stop_reason"] == "tool_use"
    assert msg["usage"]["output_tokens"] == 65
    req = next_turn(d, msg["content"])
    assert req.messages[1].parts[1].signature == "R2VtaW5pU2ln+/=="  # type: ignore[union-attr]


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
    ("err", "status", "etype"),
    [
        (InvalidRequest("bad"), 400, "invalid_request_error"),
        (AuthenticationFailed("no key"), 401, "authentication_error"),
        (upstream_http_error("b", 404, "no model"), 404, "not_found_error"),
        (RequestTooLarge("big"), 413, "request_too_large"),
        (RateLimited("slow down", headers={"Retry-After": "7"}), 429, "rate_limit_error"),
        (upstream_http_error("b", 500, "boom"), 500, "api_error"),
        (upstream_http_error("b", 529, "busy"), 529, "overloaded_error"),
        (upstream_http_error("b", 504, "slow"), 504, "timeout_error"),
        (GatewayError("bug"), 500, "api_error"),
    ],
)
def test_error_envelope(err: GatewayError, status: int, etype: str) -> None:
    d = MessagesDialect(Sealer("k"))
    got_status, body, headers = d.error_body(err)
    assert got_status == status
    assert json.loads(body) == {"type": "error", "error": {"type": etype, "message": err.message}}
    if status == 429:
        assert headers["Retry-After"] == "7"
    framed = d.stream_error(err, None)
    assert framed.startswith(b"event: error\ndata: ") and framed.endswith(b"\n\n")
    assert json.loads(framed.split(b"data: ", 1)[1])["error"]["type"] == etype


def test_context_overflow_is_worded_like_anthropic() -> None:
    err = upstream_http_error(
        "g",
        400,
        "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).",
    )
    _, body, _ = MessagesDialect(Sealer("k")).error_body(err)
    assert (
        json.loads(body)["error"]["message"]
        == "prompt is too long: 1200000 tokens > 1048576 maximum"
    )


def test_anthropic_model_list_pages_like_the_sdk() -> None:
    from chromagent_proxy.dialects.messages.models import list_body, wants_anthropic_shape

    ids = [f"claude-{i}" for i in range(5)]
    page = json.loads(list_body(ids, {"limit": "2"}))
    assert [m["id"] for m in page["data"]] == ["claude-0", "claude-1"]
    assert page["has_more"] and page["first_id"] == "claude-0" and page["last_id"] == "claude-1"
    assert page["data"][0] == {
        "type": "model",
        "id": "claude-0",
        "display_name": "claude-0",
        "created_at": "1970-01-01T00:00:00Z",
    }
    rest = json.loads(list_body(ids, {"limit": "2", "after_id": "claude-3"}))
    assert [m["id"] for m in rest["data"]] == ["claude-4"] and not rest["has_more"]
    before = json.loads(list_body(ids, {"limit": "2", "before_id": "claude-3"}))
    assert [m["id"] for m in before["data"]] == ["claude-1", "claude-2"] and before["has_more"]
    with pytest.raises(InvalidRequest):
        list_body(ids, {"limit": "0"})
    assert wants_anthropic_shape({"anthropic-version": "2023-06-01"})
    assert not wants_anthropic_shape({"authorization": "Bearer x"})


def test_count_cache_expires_and_is_bounded() -> None:
    from chromagent_proxy.dialects.messages.count import CountCache

    cache = CountCache(ttl=60, size=2)
    keys = [CountCache.key("b", "m", bytes([i])) for i in range(3)]
    for i, k in enumerate(keys):
        cache.put(k, str(i).encode())
    assert cache.get(keys[0]) is None and cache.get(keys[2]) == b"2"
    stale = CountCache(ttl=-1)
    stale.put(keys[0], b"x")
    assert stale.get(keys[0]) is None


def test_origin_less_thought_then_signed_call_is_one_thinking_block() -> None:
    """Gemini's thought text parts carry no signature (so no origin); the function call
    part after them does. One thinking block carries the call's state."""
    d = MessagesDialect(Sealer("k"))
    batches: list[list[ir.Event]] = [
        [ir.ThinkingDelta("pondering")],
        [
            ir.ToolCallStart(0, "c1", "Read", signature="sigG", origin="gemini"),
            ir.ToolCallDelta(0, '{"file_path":"a"}'),
        ],
        [ir.Finish("stop")],
    ]
    msg = check_grammar(sse(encode_stream(d, batches)))
    assert [b["type"] for b in msg["content"]] == ["thinking", "tool_use"]
    answer = Answer()
    for b in batches:
        answer.add(b)
    inbound = d.parse(
        b'{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"}]}', {}, {}
    )
    whole = json.loads(d.complete(inbound, answer, "r", "m"))
    assert [b["type"] for b in whole["content"]] == ["thinking", "tool_use"]
    for content in (msg["content"], whole["content"]):
        req = next_turn(d, content)
        thinking, call = req.messages[1].parts
        assert isinstance(thinking, ir.Thinking) and thinking.origin == "gemini"
        assert isinstance(call, ir.ToolCall) and (call.signature, call.origin) == ("sigG", "gemini")
