"""POST /v1/messages to anthropic / vertex-anthropic backends: the native path. Official
anthropic SDK → real gateway → fake Anthropic / Vertex server. The body passes with only
the model changed (Vertex: no model, anthropic_version), betas filtered per backend, the
answer relayed byte for byte."""

from __future__ import annotations

import copy
import json
from typing import Any

import aiohttp
from aiohttp import web

from tests.support import claude_code as cc
from tests.support.anthropic_sdk import (  # noqa: F401
    AMODEL,
    MODEL,
    USAGE,
    VBASE,
    VMODEL,
    anthropic_cfg,
    anthropic_client,
    close_anthropic_clients,
    vertex_cfg,
)
from tests.support.gateway import run_gateway
from tests.support.upstream import FakeUpstream, Received, json_reply, stream_reply

client = anthropic_client


THINK = {
    "type": "thinking",
    "thinking": "I should list the files.",
    "signature": "EqQBCkYIBRgCKkDrealSig+/==",
}
CALL = {
    "type": "tool_use",
    "id": "toolu_01A",
    "name": "Shell",
    "input": {"command": "ls", "description": "List files"},
}


async def test_stream_relayed_byte_for_byte_and_body_unchanged_but_model(
    upstream: FakeUpstream,
) -> None:
    answer = cc.sse([THINK, CALL], "tool_use", model=AMODEL, usage=USAGE)
    upstream.route("/v1/messages", stream_reply(answer, split=97))
    body = cc.request(MODEL, [cc.first_user_turn("What is in this directory?")])
    async with run_gateway(anthropic_cfg(upstream)) as gw:
        async with aiohttp.ClientSession() as s:
            async with s.post(
                f"{gw.url}/v1/messages?beta=true",
                data=json.dumps(body, separators=(",", ":")),
                headers={
                    **cc.HEADERS,
                    "anthropic-version": "2023-06-01",
                    "x-api-key": "client-key",
                    "content-type": "application/json",
                },
            ) as resp:
                assert resp.status == 200
                assert resp.headers["content-type"].startswith("text/event-stream")
                got = await resp.read()
    assert got == answer  # the upstream's bytes, unchanged
    sent = upstream.received[0]
    assert sent.path == "/v1/messages"
    assert sent.headers["x-api-key"] == "sk-ant-upstream"  # never the client's key
    assert sent.headers["anthropic-beta"] == cc.BETAS  # anthropic: every beta forwarded
    assert sent.headers["anthropic-version"] == "2023-06-01"
    want = copy.deepcopy(body)
    want["model"] = AMODEL
    assert sent.json == want  # cache_control, thinking, context_management, metadata intact


async def test_sdk_stream_final_message_and_create(upstream: FakeUpstream) -> None:
    upstream.route(
        "/v1/messages",
        stream_reply(cc.sse([THINK, CALL], "tool_use", model=AMODEL, usage=USAGE), split=50),
    )
    async with run_gateway(anthropic_cfg(upstream)) as gw:
        c = client(gw)
        async with c.messages.stream(
            model=MODEL,
            max_tokens=1000,
            messages=[{"role": "user", "content": "ls please"}],
            thinking={"type": "enabled", "budget_tokens": 500},
        ) as stream:
            final = await stream.get_final_message()
        assert [b.type for b in final.content] == ["thinking", "tool_use"]
        assert final.content[0].signature == THINK["signature"]  # type: ignore[union-attr]
        assert final.content[1].input == CALL["input"]  # type: ignore[union-attr]
        assert final.stop_reason == "tool_use"
        assert final.usage.cache_read_input_tokens == 20000 and final.usage.output_tokens == 80

        upstream.route(
            "/v1/messages",
            json_reply(
                cc.message([{"type": "text", "text": "Hi!"}], "end_turn", model=AMODEL, usage=USAGE)
            ),
        )
        msg = await c.messages.create(
            model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
        assert msg.content[0].text == "Hi!"  # type: ignore[union-attr]
        assert msg.usage.input_tokens == 2100
    assert (
        upstream.received[-1].json["model"] == AMODEL and "stream" not in upstream.received[-1].json
    )


def _vertex_reply(turns: list[bytes]) -> Any:
    served = iter(turns)

    async def handler(request: web.Request) -> web.StreamResponse:
        return await stream_reply(next(served), split=64)(request)

    return handler


async def test_claude_code_tool_loop_twice_through_vertex(upstream: FakeUpstream) -> None:
    """A Claude Code session: tool_use → tool_result → tool_use → tool_result → answer."""
    think2 = {"type": "thinking", "thinking": "Now read it.", "signature": "EqSecondSig=="}
    call2 = {
        "type": "tool_use",
        "id": "toolu_01B",
        "name": "TaskEdit",
        "input": {"taskId": "7", "status": "dropped", "extra": {"k": None}},
    }
    turns = [
        cc.sse([THINK, CALL], "tool_use", model=VMODEL, usage=USAGE),
        cc.sse([think2, call2], "tool_use", model=VMODEL, usage=USAGE),
        cc.sse(
            [{"type": "text", "text": "Done: the task is dropped."}],
            "end_turn",
            model=VMODEL,
            usage=USAGE,
        ),
    ]
    upstream.route(f"{VBASE}{VMODEL}:streamRawPredict", _vertex_reply(turns))
    messages: list[dict[str, Any]] = [cc.first_user_turn("Drop task 7 after checking the files.")]
    async with run_gateway(vertex_cfg(upstream)) as gw:
        c = client(gw, default_headers=cc.HEADERS)
        finals = []
        for _turn in range(3):
            body = cc.request(MODEL, messages)
            async with c.beta.messages.stream(
                **{k: v for k, v in body.items() if k != "stream"}
            ) as stream:
                final = await stream.get_final_message()
            finals.append(final)
            if final.stop_reason != "tool_use":
                break
            assistant = [b.model_dump(exclude_none=True) for b in final.content]
            tool_id = next(b["id"] for b in assistant if b["type"] == "tool_use")
            cc.without_cache_tail(messages)
            messages += [
                {"role": "assistant", "content": assistant},
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": tool_id,
                            "content": "ok",
                            "is_error": False,
                            "cache_control": cc.EPHEMERAL,
                        }
                    ],
                },
            ]
    assert [f.stop_reason for f in finals] == ["tool_use", "tool_use", "end_turn"]
    assert finals[2].content[0].text == "Done: the task is dropped."  # type: ignore[union-attr]
    assert len(upstream.received) == 3
    for n, sent in enumerate(upstream.received):
        assert sent.path == f"{VBASE}{VMODEL}:streamRawPredict"
        assert sent.headers["Authorization"] == "Bearer ya29.pasted-token"
        # Vertex refuses betas it does not know: only the safe ones pass.
        assert (
            sent.headers["anthropic-beta"]
            == "interleaved-thinking-2025-05-14,context-management-2025-06-27"
        )
        got = sent.json
        assert "model" not in got and got["anthropic_version"] == "vertex-2023-10-16"
        assert got["tools"] == cc.tools() and got["system"] == cc.system()
        assert got["context_management"] == {
            "edits": [{"type": "clear_thinking_20251015", "keep": "all"}]
        }
        if n:
            # The replayed thinking keeps Anthropic's signature byte for byte, and the tail breakpoint moved.
            replay = got["messages"][2 * n - 1]["content"]
            assert replay[0]["signature"] == (THINK if n == 1 else think2)["signature"]
            assert got["messages"][-1]["content"][-1]["cache_control"] == cc.EPHEMERAL
    assert upstream.received[2].json["messages"][3]["content"][1]["input"] == call2["input"]


async def test_beta_filter_setting(upstream: FakeUpstream) -> None:
    upstream.route(
        "/v1/messages",
        json_reply(
            cc.message([{"type": "text", "text": "x"}], "end_turn", model=AMODEL, usage=USAGE)
        ),
    )
    cfg = anthropic_cfg(upstream, anthropicBetas=["context-1m-2025-08-07"])
    async with run_gateway(cfg) as gw:
        c = client(
            gw, default_headers={"anthropic-beta": "context-1m-2025-08-07,claude-code-20250219"}
        )
        await c.messages.create(
            model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    assert upstream.received[0].headers["anthropic-beta"] == "context-1m-2025-08-07"


async def test_gateway_made_thinking_is_not_sent_to_anthropic(upstream: FakeUpstream) -> None:
    upstream.route(
        "/v1/messages",
        json_reply(
            cc.message([{"type": "text", "text": "x"}], "end_turn", model=AMODEL, usage=USAGE)
        ),
    )
    messages = [
        {"role": "user", "content": "hi"},
        {
            "role": "assistant",
            "content": [
                {
                    "type": "thinking",
                    "thinking": "from gemini",
                    "signature": "cgs1_" + "B" * 60,
                },
                {"type": "text", "text": "hello"},
            ],
        },
        {"role": "user", "content": "again"},
    ]
    async with run_gateway(anthropic_cfg(upstream)) as gw:
        await client(gw).messages.create(model=MODEL, max_tokens=5, messages=messages)  # type: ignore[arg-type]
    assert upstream.received[0].json["messages"][1]["content"] == [
        {"type": "text", "text": "hello"}
    ]


async def _relay_raw(upstream: FakeUpstream, body: bytes) -> Received:
    """POST these exact bytes to /v1/messages; what the Anthropic upstream received."""
    upstream.route(
        "/v1/messages",
        json_reply(
            cc.message([{"type": "text", "text": "x"}], "end_turn", model=AMODEL, usage=USAGE)
        ),
    )
    async with (
        run_gateway(anthropic_cfg(upstream)) as gw,
        aiohttp.ClientSession() as s,
        s.post(
            f"{gw.url}/v1/messages",
            data=body,
            headers={"anthropic-version": "2023-06-01", "content-type": "application/json"},
        ) as resp,
    ):
        await resp.read()
        assert resp.status == 200
    return upstream.received[0]


async def test_gateway_thinking_is_found_however_its_signature_is_spelled(
    upstream: FakeUpstream,
) -> None:
    # The parse reads the signatures (decode.scan), so a JSON escape in
    # one ("\u0063gs1_" is "cgs1_") does not carry a gateway-made block to Anthropic.
    body = (
        b'{"model":"%s","max_tokens":5,"messages":[{"role":"user","content":"hi"},'
        b'{"role":"assistant","content":[{"type":"thinking","thinking":"t",'
        b'"signature":"\\u0063gs1_BBBB"},{"type":"text","text":"hello"}]},'
        b'{"role":"user","content":"again"}]}' % MODEL.encode()
    )
    sent = await _relay_raw(upstream, body)
    assert sent.json["messages"][1]["content"] == [{"type": "text", "text": "hello"}]


async def test_a_gateway_signature_in_text_leaves_the_body_as_sent(upstream: FakeUpstream) -> None:
    # Only a thinking block's signature counts: the same characters in a text (or an
    # Anthropic signature) are the client's bytes, relayed with only the model renamed.
    body = (
        b'{"model":"%s", "max_tokens":5, "messages":[{"role":"user","content":'
        b'"what is \\"cgs1_ABC\\"?"},{"role":"assistant","content":[{"type":"thinking",'
        b'"thinking":"t","signature":"EqQBCkYIBxgCcgs1_"},{"type":"text","text":"a tag"}]},'
        b'{"role":"user","content":[{"type":"text","text":"\\"cgs1_ again"}]}]}' % MODEL.encode()
    )
    sent = await _relay_raw(upstream, body)
    assert sent.body == body.replace(MODEL.encode(), AMODEL.encode(), 1)


async def test_count_tokens_native_and_cached(upstream: FakeUpstream) -> None:
    upstream.route("/v1/messages/count_tokens", json_reply({"input_tokens": 4242}))
    upstream.route(f"{VBASE}count-tokens:rawPredict", json_reply({"input_tokens": 777}))
    msgs = [{"role": "user", "content": "count me"}]
    async with run_gateway(anthropic_cfg(upstream)) as gw:
        c = client(gw, default_headers={"anthropic-beta": cc.BETAS})
        for _ in range(2):
            got = await c.messages.count_tokens(model=MODEL, messages=msgs)  # type: ignore[arg-type]
            assert got.input_tokens == 4242
    assert len(upstream.received) == 1  # the second answer came from the cache
    assert upstream.received[0].json["model"] == AMODEL
    assert upstream.received[0].headers["anthropic-beta"] == cc.BETAS
    async with run_gateway(vertex_cfg(upstream)) as gw:
        c = client(gw, default_headers={"anthropic-beta": cc.BETAS})
        got = await c.messages.count_tokens(model=MODEL, messages=msgs, tools=cc.tools())  # type: ignore[arg-type]
        assert got.input_tokens == 777
    sent = upstream.received[-1]
    assert sent.path == f"{VBASE}count-tokens:rawPredict"
    assert sent.json["model"] == VMODEL and sent.json["anthropic_version"] == "vertex-2023-10-16"
    assert "anthropic-beta" not in sent.headers  # Vertex's count endpoint refuses betas


async def test_model_discovery_and_head_probe(upstream: FakeUpstream) -> None:
    """Claude Code's start-up probe (HEAD /) and its gateway model discovery
    (GET /v1/models with anthropic-version): Anthropic's list shape, paged like the SDK."""
    cfg = anthropic_cfg(upstream, modelMapping={MODEL: AMODEL, "claude-haiku-4-5": AMODEL})
    async with run_gateway(cfg) as gw:
        c = client(gw)
        page = await c.models.list(limit=1)
        assert [m.id for m in page.data] == [MODEL] and page.has_more
        everything = [m.id async for m in c.models.list(limit=1)]
        assert everything == [MODEL, "claude-haiku-4-5"]
        one = await c.models.retrieve("claude-haiku-4-5")
        assert one.id == "claude-haiku-4-5" and one.type == "model"
        async with aiohttp.ClientSession() as s:
            async with s.head(f"{gw.url}/") as r:
                assert r.status == 200
            async with s.get(f"{gw.url}/v1/models") as r:  # an OpenAI client: OpenAI's shape
                assert (await r.json())["object"] == "list"
    assert upstream.received == []
