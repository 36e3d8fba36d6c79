"""A Codex CLI–shaped session through /v1/responses to the translating backends (Gemini 3,
Claude, Ollama, an OpenAI-compatible server), with the official openai SDK: long developer
instructions, Codex's tool set (function tools, a namespace, hosted web_search),
``store: false``, ``include: ["reasoning.encrypted_content"]``; turn 1 streams a function
call, turn 2 sends back the reasoning item, the call and its output — and the backend gets
its own reasoning state back (Gemini thought signature, Claude signed thinking)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp import web

from tests.support.gateway import run_gateway, sdk
from tests.support.upstream import FakeUpstream

INSTRUCTIONS = (
    "You are a coding agent working in a terminal. Be precise and safe. "
    + "When a command is needed, call exec_command with the shell string. " * 40
)


def _fn(name: str, props: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "function",
        "name": name,
        "description": f"{name} tool",
        "strict": False,
        "parameters": {"type": "object", "properties": props, "additionalProperties": False},
    }


TOOLS: list[Any] = [
    _fn("exec_command", {"cmd": {"type": "string"}, "workdir": {"type": "string"}}),
    _fn("write_stdin", {"session_id": {"type": "number"}, "chars": {"type": "string"}}),
    _fn("request_user_input", {"prompt": {"type": "string"}}),
    _fn("view_image", {"path": {"type": "string"}}),
    _fn("get_goal", {}),
    _fn("create_goal", {"goal": {"type": "string"}}),
    _fn("update_goal", {"goal": {"type": "string"}, "done": {"type": "boolean"}}),
    {
        "type": "namespace",
        "name": "agents",
        "description": "helper agents",
        "tools": [_fn("spawn_agent", {"task": {"type": "string"}})],
    },
    {"type": "web_search", "external_web_access": False},
]
FIRST: list[Any] = [
    {"type": "message", "role": "developer",
     "content": [{"type": "input_text", "text": INSTRUCTIONS}]},
    {"type": "message", "role": "user",
     "content": [{"type": "input_text", "text": "Run echo hello and tell me what it printed."}]},
]  # fmt: skip
ARGS = {"cmd": "echo hello"}


def _gemini(turn: int) -> bytes:
    if turn == 0:
        parts = [
            {"text": "I should run it.", "thought": True},
            {
                "functionCall": {"name": "exec_command", "args": ARGS},
                "thoughtSignature": "R0VNU0lH",
            },
        ]
        cand = {"content": {"role": "model", "parts": parts}, "finishReason": "STOP"}
    else:
        cand = {"content": {"role": "model", "parts": [{"text": "It printed hello."}]},
                "finishReason": "STOP"}  # fmt: skip
    ev = {"candidates": [cand], "usageMetadata": {"promptTokenCount": 1200,
          "candidatesTokenCount": 9, "thoughtsTokenCount": 20, "totalTokenCount": 1229}}  # fmt: skip
    return f"data: {json.dumps(ev)}\n\n".encode()


def _anthropic(turn: int) -> bytes:
    def ev(e: dict[str, Any]) -> bytes:
        return f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode()

    out = [ev({"type": "message_start", "message": {"id": "msg_1", "type": "message",
              "role": "assistant", "model": "claude", "content": [], "stop_reason": None,
              "usage": {"input_tokens": 1200, "output_tokens": 1}}})]  # fmt: skip
    if turn == 0:
        out += [
            ev({"type": "content_block_start", "index": 0,
                "content_block": {"type": "thinking", "thinking": ""}}),
            ev({"type": "content_block_delta", "index": 0,
                "delta": {"type": "thinking_delta", "thinking": "I should run it."}}),
            ev({"type": "content_block_delta", "index": 0,
                "delta": {"type": "signature_delta", "signature": "Q0xBVURFU0lH"}}),
            ev({"type": "content_block_stop", "index": 0}),
            ev({"type": "content_block_start", "index": 1, "content_block": {
                "type": "tool_use", "id": "toolu_1", "name": "exec_command", "input": {}}}),
            ev({"type": "content_block_delta", "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": '{"cmd": "echo hello"}'}}),
            ev({"type": "content_block_stop", "index": 1}),
            ev({"type": "message_delta", "delta": {"stop_reason": "tool_use"},
                "usage": {"output_tokens": 30}}),
        ]  # fmt: skip
    else:
        out += [
            ev({"type": "content_block_start", "index": 0,
                "content_block": {"type": "text", "text": ""}}),
            ev({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": "It printed hello."}}),
            ev({"type": "content_block_stop", "index": 0}),
            ev({"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                "usage": {"output_tokens": 5}}),
        ]  # fmt: skip
    return b"".join([*out, ev({"type": "message_stop"})])


def _ollama(turn: int) -> bytes:
    msg: dict[str, Any] = (
        {"role": "assistant", "content": "", "thinking": "I should run it.",
         "tool_calls": [{"function": {"name": "exec_command", "arguments": ARGS}}]}
        if turn == 0
        else {"role": "assistant", "content": "It printed hello."}
    )  # fmt: skip
    lines = [{"model": "m", "message": msg, "done": False},
             {"model": "m", "message": {"role": "assistant", "content": ""}, "done": True,
              "done_reason": "stop", "prompt_eval_count": 1200, "eval_count": 9}]  # fmt: skip
    return b"".join(json.dumps(x).encode() + b"\n" for x in lines)


def _openai(turn: int) -> bytes:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}  # fmt: skip

    if turn == 0:
        call = {"index": 0, "id": "call_oa", "type": "function",
                "function": {"name": "exec_command", "arguments": json.dumps(ARGS)}}  # fmt: skip
        evs = [chunk({"role": "assistant", "tool_calls": [call]}), chunk({}, "tool_calls")]
    else:
        evs = [chunk({"role": "assistant", "content": "It printed hello."}), chunk({}, "stop")]
    evs.append({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                "choices": [], "usage": {"prompt_tokens": 1200, "completion_tokens": 9,
                                         "total_tokens": 1209}})  # fmt: skip
    return b"".join(f"data: {json.dumps(e)}\n\n".encode() for e in evs) + b"data: [DONE]\n\n"


KINDS = {
    "gemini": ("/v1beta/models/gemini-3-pro-preview:streamGenerateContent", _gemini, "text/event-stream"),
    "anthropic": ("/v1/messages", _anthropic, "text/event-stream"),
    "ollama": ("/api/chat", _ollama, "application/x-ndjson"),
    "openai": ("/v1/chat/completions", _openai, "text/event-stream"),
}  # fmt: skip


def _backend(kind: str, up: FakeUpstream) -> dict[str, Any]:
    b: dict[str, Any] = {
        "gemini": {"type": "gemini", "apiKey": "k", "baseUrl": f"{up.url}/v1beta",
                   "modelMapping": {"codex-model": "gemini-3-pro-preview"}},
        "anthropic": {"type": "anthropic", "apiKey": "k", "baseUrl": up.url,
                      "modelMapping": {"codex-model": "claude-sonnet-4-5"}},
        "ollama": {"type": "ollama", "baseUrl": up.url, "modelMapping": {"codex-model": "qwen3"}},
        "openai": {"type": "openai", "apiKey": "k", "baseUrl": f"{up.url}/v1",
                   "modelMapping": {"codex-model": "qwen3"}},
    }[kind]  # fmt: skip
    return {"id": kind, **b}


@pytest.mark.parametrize("kind", list(KINDS))
async def test_codex_session_through_a_translated_backend(kind: str) -> None:
    path, script, ctype = KINDS[kind]
    turns = {"n": 0}

    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        body = script(turns["n"])
        turns["n"] += 1
        resp = web.StreamResponse(headers={"Content-Type": ctype})
        await resp.prepare(request)
        for i in range(0, len(body), 53):
            await resp.write(body[i : i + 53])
        await resp.write_eof()
        return resp

    up = await FakeUpstream().start()
    up.route(path, handler)
    try:
        async with run_gateway({"backends": [_backend(kind, up)]}) as gw:
            client = sdk(gw)
            opts: Any = {
                "model": "codex-model",
                "tools": TOOLS,
                "tool_choice": "auto",
                "parallel_tool_calls": True,
                "reasoning": {"summary": "auto"},
                "store": False,
                "include": ["reasoning.encrypted_content"],
                "prompt_cache_key": "session-1",
                "extra_body": {"client_metadata": {"session": "s1"}},
            }
            async with client.responses.stream(input=FIRST, **opts) as stream:
                first = await stream.get_final_response()
            calls = [o for o in first.output if o.type == "function_call"]
            assert [(c.name, json.loads(c.arguments)) for c in calls] == [("exec_command", ARGS)]
            history: list[Any] = [
                *FIRST,
                *[o.model_dump(exclude_none=True) for o in first.output],
                {"type": "function_call_output", "call_id": calls[0].call_id, "output": "hello\n"},
            ]
            async with client.responses.stream(input=history, **opts) as stream:
                second = await stream.get_final_response()
            assert second.output_text == "It printed hello."
            assert second.usage is not None and second.usage.input_tokens == 1200
    finally:
        await up.close()
    sent = up.received[-1].json
    if kind == "gemini":
        parts = [p for c in sent["contents"] for p in c["parts"]]
        call = next(p for p in parts if "functionCall" in p)
        # Gemini 3's thought signature came back on its function call.
        assert call["thoughtSignature"] == "R0VNU0lH"
        assert call["functionCall"] == {"name": "exec_command", "args": ARGS}
        assert sent["systemInstruction"]["parts"][0]["text"].startswith("You are a coding agent")
    elif kind == "anthropic":
        assistant = next(m for m in sent["messages"] if m["role"] == "assistant")
        # Claude's signed thinking came back first, unchanged, before its tool_use.
        assert assistant["content"][0] == {
            "type": "thinking", "thinking": "I should run it.", "signature": "Q0xBVURFU0lH"
        }  # fmt: skip
        assert assistant["content"][1]["type"] == "tool_use"
        assert assistant["content"][1]["input"] == ARGS
    else:
        tool_msgs = [m for m in sent["messages"] if m["role"] == "tool"]
        assert [m["content"] for m in tool_msgs] == ["hello\n"]
    # web_search was left out (Codex always sends it); the namespace was flattened.
    names = json.dumps(sent)
    assert "agents__spawn_agent" in names and "web_search" not in names
