"""Claude Code–shaped traffic through /v1/messages to an Ollama and an OpenAI-compatible
upstream (translated through the IR), with the official anthropic SDK: a realistic first turn
(large system prompt, 24 tools, thinking on, cache_control) streamed, then a full tool loop
(tool_use → tool_result → final answer) twice, checking what the upstream received."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp import web

from tests.support import claude_code
from tests.support.anthropic_sdk import anthropic_client
from tests.support.gateway import run_gateway
from tests.support.upstream import FakeUpstream

MODEL = "claude-sonnet-4-5"


def _openai_chunks(turn: int) -> bytes:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "qwen",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}  # fmt: skip

    if turn < 2:
        call = {"index": 0, "id": f"call_{turn}", "type": "function",
                "function": {"name": "Bash", "arguments": ""}}  # fmt: skip
        events = [
            chunk({"role": "assistant", "content": None, "tool_calls": [call]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"command": "ec'}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": f'ho {turn}"}}'}}]}),
            chunk({}, "tool_calls"),
        ]
    else:
        events = [chunk({"role": "assistant", "content": "Both printed."}), chunk({}, "stop")]
    usage = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "qwen",
             "choices": [], "usage": {"prompt_tokens": 900, "completion_tokens": 12,
                                      "total_tokens": 912}}  # fmt: skip
    body = b"".join(f"data: {json.dumps(e)}\n\n".encode() for e in [*events, usage])
    return body + b"data: [DONE]\n\n"


def _ollama_lines(turn: int) -> bytes:
    if turn < 2:
        msg = {"role": "assistant", "content": "",
               "tool_calls": [{"function": {"name": "Bash",
                                            "arguments": {"command": f"echo {turn}"}}}]}  # fmt: skip
        lines = [{"model": "qwen3", "message": msg, "done": False}]
    else:
        lines = [{"model": "qwen3", "message": {"role": "assistant", "content": "Both printed."},
                  "done": False}]  # fmt: skip
    lines.append({"model": "qwen3", "message": {"role": "assistant", "content": ""}, "done": True,
                  "done_reason": "stop", "prompt_eval_count": 900, "eval_count": 12})  # fmt: skip
    return b"".join(json.dumps(x).encode() + b"\n" for x in lines)


def _scripted(kind: str) -> Any:
    turns = {"n": 0}

    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        turn = turns["n"]
        turns["n"] += 1
        ctype = "text/event-stream" if kind == "openai" else "application/x-ndjson"
        body = _openai_chunks(turn) if kind == "openai" else _ollama_lines(turn)
        resp = web.StreamResponse(headers={"Content-Type": ctype})
        await resp.prepare(request)
        for i in range(0, len(body), 61):  # arbitrary splits across events
            await resp.write(body[i : i + 61])
        await resp.write_eof()
        return resp

    return handler


@pytest.mark.parametrize("kind", ["openai", "ollama"])
async def test_claude_code_tool_loop_through_a_translated_backend(kind: str) -> None:
    up = await FakeUpstream().start()
    path = "/v1/chat/completions" if kind == "openai" else "/api/chat"
    up.route(path, _scripted(kind))
    backend: dict[str, Any] = (
        {"id": "b", "type": "openai", "baseUrl": f"{up.url}/v1", "apiKey": "k"}
        if kind == "openai"
        else {"id": "b", "type": "ollama", "baseUrl": up.url}
    )
    backend["modelMapping"] = {MODEL: "qwen3"}
    try:
        async with run_gateway({"backends": [backend]}) as gw:
            client = anthropic_client(gw)
            body = claude_code.request(MODEL, [claude_code.first_user_turn("Run echo twice")])
            messages: list[Any] = list(body["messages"])
            for turn in range(3):
                async with client.messages.stream(
                    model=MODEL,
                    max_tokens=body["max_tokens"],
                    system=body["system"],
                    tools=body["tools"],
                    messages=messages,
                    thinking=body["thinking"],
                ) as stream:
                    final = await stream.get_final_message()
                if turn < 2:
                    assert final.stop_reason == "tool_use"
                    (use,) = [b for b in final.content if b.type == "tool_use"]
                    # Streamed input_json_delta fragments join to the upstream's arguments.
                    assert use.name == "Bash" and use.input == {"command": f"echo {turn}"}
                    messages.append({"role": "assistant", "content": final.content})
                    messages.append(
                        {
                            "role": "user",
                            "content": [
                                {"type": "tool_result", "tool_use_id": use.id,
                                 "content": f"{turn}\n"}
                            ],
                        }
                    )  # fmt: skip
                else:
                    assert final.stop_reason == "end_turn"
                    assert [b.text for b in final.content if b.type == "text"] == ["Both printed."]
                assert final.usage.input_tokens == 900 and final.usage.output_tokens == 12
    finally:
        await up.close()
    sent = [r.json for r in up.received]
    assert len(sent) == 3
    last = sent[-1]
    if kind == "openai":
        # The system prompt, the 24 tools as functions, and both tool results as tool messages.
        assert last["messages"][0]["role"] == "system"
        assert len(last["tools"]) == len(claude_code.tools())
        tool_msgs = [m for m in last["messages"] if m["role"] == "tool"]
        assert [m["content"] for m in tool_msgs] == ["0\n", "1\n"]
        calls = [m for m in last["messages"] if m.get("tool_calls")]
        assert [json.loads(c["tool_calls"][0]["function"]["arguments"]) for c in calls] == [
            {"command": "echo 0"},
            {"command": "echo 1"},
        ]
    else:
        assert last["messages"][0]["role"] == "system"
        assert len(last["tools"]) == len(claude_code.tools())
        tool_msgs = [m for m in last["messages"] if m["role"] == "tool"]
        assert [m["content"] for m in tool_msgs] == ["0\n", "1\n"]
