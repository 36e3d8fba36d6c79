"""Claude Code's request shape through POST /v1/messages to Gemini 3 (translated): the
anthropic SDK → real gateway → fake Gemini API. A full tool loop, twice, where Gemini's
thought signatures leave as gateway-made thinking signatures and come back to Gemini on the
function calls they belong to; Claude Code's tool schemas reach Gemini cleaned."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from tests.support import claude_code as cc
from tests.support.anthropic_sdk import anthropic_client, close_anthropic_clients  # noqa: F401
from tests.support.gateway import run_gateway
from tests.support.upstream import FakeUpstream, stream_reply

MODEL = "claude-opus-4-1"
GMODEL = "gemini-3-pro-preview"
PATH = f"/v1beta/models/{GMODEL}:streamGenerateContent"
SIG1 = "Q2lRQmpvNGFQZ2VtaW5pLXNpZy0x"
SIG2 = "Q2lRQmpvNGFQZ2VtaW5pLXNpZy0y"
GEMINI_KEYWORDS = {
    "type",
    "format",
    "description",
    "nullable",
    "enum",
    "properties",
    "required",
    "items",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "minLength",
    "maxLength",
    "pattern",
    "minimum",
    "maximum",
    "anyOf",
    "title",
    "propertyOrdering",
}


def chunk(parts: list[dict[str, Any]], finish: str | None = None, usage: bool = False) -> bytes:
    cand: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish:
        cand["finishReason"] = finish
    body: dict[str, Any] = {"candidates": [cand], "modelVersion": GMODEL, "responseId": "r1"}
    if usage:
        body["usageMetadata"] = {
            "promptTokenCount": 5000,
            "cachedContentTokenCount": 4000,
            "candidatesTokenCount": 30,
            "thoughtsTokenCount": 20,
            "totalTokenCount": 5050,
        }
    return b"data: " + json.dumps(body).encode() + b"\r\n\r\n"


def call_turn(sig: str, name: str, args: dict[str, Any]) -> list[bytes]:
    return [
        chunk([{"text": "Thinking about which tool to use.", "thought": True}]),
        chunk([{"functionCall": {"name": name, "args": args}, "thoughtSignature": sig}]),
        chunk([], "STOP", usage=True),
    ]


def keys(node: Any) -> set[str]:
    out: set[str] = set()
    if isinstance(node, dict):
        for k, v in node.items():
            out.add(k)
            if k == "properties":
                for sub in v.values():
                    out |= keys(sub)
            elif k == "items":
                out |= keys(v)
            elif k == "anyOf":
                for sub in v:
                    out |= keys(sub)
    return out


async def test_claude_code_tool_loop_twice_on_gemini(upstream: FakeUpstream) -> None:
    turns = [
        call_turn(SIG1, "Shell", {"command": "ls", "description": "List files"}),
        call_turn(SIG2, "TaskEdit", {"taskId": "7", "status": "dropped"}),
        [chunk([{"text": "Task 7 "}]), chunk([{"text": "is dropped."}], "STOP", usage=True)],
    ]
    served = iter(turns)

    async def handler(request: web.Request) -> web.StreamResponse:
        return await stream_reply(next(served))(request)

    upstream.route(PATH, handler)
    cfg = {
        "backends": [
            {
                "id": "gem",
                "type": "gemini",
                "baseUrl": f"{upstream.url}/v1beta",
                "apiKey": "g-key",
                "modelMapping": {MODEL: GMODEL},
                "options": {"includeThoughts": True},
            }
        ],
        "defaultBackend": "gem",
    }
    messages: list[dict[str, Any]] = [cc.first_user_turn("Drop task 7 after looking around.")]
    finals = []
    async with run_gateway(cfg) as gw:
        c = anthropic_client(gw, default_headers=cc.HEADERS)
        for _ in range(3):
            body = cc.request(MODEL, messages)
            body.pop("stream")
            async with c.beta.messages.stream(**body) as stream:
                final = await stream.get_final_message()
            finals.append(final)
            if final.stop_reason != "tool_use":
                break
            assistant = [b.model_dump(exclude_none=True) for b in final.content]
            call = next(b for b in assistant if b["type"] == "tool_use")
            assert call["input"]  # arguments arrived (never {})
            cc.without_cache_tail(messages)
            messages += [
                {"role": "assistant", "content": assistant},
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": call["id"],
                            "content": "done",
                            "cache_control": cc.EPHEMERAL,
                        }
                    ],
                },
            ]
    assert [f.stop_reason for f in finals] == ["tool_use", "tool_use", "end_turn"]
    first: Any = finals[0]
    # The signature is the gateway's own sealed value, never Gemini's raw thought signature.
    assert first.content[0].type == "thinking" and first.content[0].signature
    assert SIG1 not in first.content[0].signature
    assert first.content[1].input == {"command": "ls", "description": "List files"}
    assert first.usage.input_tokens == 1000 and first.usage.cache_read_input_tokens == 4000
    assert first.usage.output_tokens == 50
    assert finals[2].content[0].text == "Task 7 is dropped."  # type: ignore[union-attr]

    assert len(upstream.received) == 3
    sent = [r.json for r in upstream.received]
    assert upstream.received[0].headers["x-goog-api-key"] == "g-key"
    decls = sent[0]["tools"][0]["functionDeclarations"]
    assert len(decls) == 24
    for d in decls:
        assert keys(d["parameters"]) <= GEMINI_KEYWORDS, d["name"]
    assert sent[0]["generationConfig"]["thinkingConfig"]["thinkingBudget"] == 31999
    # Turn 2 carries Gemini's own signature on the function call it belongs to; turn 3 both.
    model_calls = [
        p
        for c in sent[2]["contents"]
        if c["role"] == "model"
        for p in c["parts"]
        if "functionCall" in p
    ]
    assert [(p["functionCall"]["name"], p["thoughtSignature"]) for p in model_calls] == [
        ("Shell", SIG1),
        ("TaskEdit", SIG2),
    ]
    results = [
        p["functionResponse"]["name"]
        for c in sent[2]["contents"]
        if c["role"] == "user"
        for p in c["parts"]
        if "functionResponse" in p
    ]
    assert results == ["Shell", "TaskEdit"]


async def test_count_tokens_uses_gemini_count_tokens(upstream: FakeUpstream) -> None:
    from tests.support.upstream import json_reply

    upstream.route(f"/v1beta/models/{GMODEL}:countTokens", json_reply({"totalTokens": 5120}))
    cfg = {
        "backends": [
            {
                "id": "gem",
                "type": "gemini",
                "baseUrl": f"{upstream.url}/v1beta",
                "apiKey": "g-key",
                "modelMapping": {MODEL: GMODEL},
            }
        ],
        "defaultBackend": "gem",
    }
    shaped: Any = {
        "messages": [cc.first_user_turn("count this")],
        "system": cc.system(),
        "tools": cc.tools(),
    }
    async with run_gateway(cfg) as gw:
        got = await anthropic_client(gw).messages.count_tokens(model=MODEL, **shaped)
    assert got.input_tokens == 5120
    sent = upstream.received[0].json["generateContentRequest"]
    assert sent["model"] == f"models/{GMODEL}"
    assert len(sent["tools"][0]["functionDeclarations"]) == 24
    assert sent["systemInstruction"]["parts"]
    assert sent["contents"][0]["parts"][-1]["text"] == "count this"
