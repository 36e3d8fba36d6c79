"""The Messages dialect's pure parts: the stream grammar the encoder emits, the Message
JSON, decoding into the IR, gateway-sealed signatures and the error envelope."""

from __future__ import annotations

import json
from typing import Any

from chromagent_proxy.core import ir
from chromagent_proxy.core.accumulate import Answer
from chromagent_proxy.core.seal import Sealer
from chromagent_proxy.dialects.messages import MessagesDialect
from chromagent_proxy.dialects.messages.signing import Sealed, Signer

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
