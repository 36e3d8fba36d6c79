"""POST /v1/messages to anthropic / vertex-anthropic backends: the native path. Official
anthropic SDK → real gateway → fake Anthropic / Vertex server. The body passes with only
the model changed (Vertex: no model, anthropic_version), betas filtered per backend, the
answer relayed byte for byte."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import aiohttp
import anthropic
import pytest
from aiohttp import web

from tests.support import claude_code as cc
from tests.support.anthropic_sdk import anthropic_client, close_anthropic_clients  # noqa: F401
from tests.support.gateway import run_gateway
from tests.support.upstream import FakeUpstream, json_reply, stream_reply

MODEL = "claude-sonnet-4-5"
AMODEL = "claude-sonnet-4-5-20250929"
VMODEL = "claude-sonnet-4-5@20250929"
VBASE = "/v1/projects/proj-1/locations/us-east5/publishers/anthropic/models/"
USAGE = {
    "input_tokens": 2100,
    "cache_creation_input_tokens": 500,
    "cache_read_input_tokens": 20000,
    "output_tokens": 80,
}


def anthropic_cfg(up: FakeUpstream, **backend: Any) -> dict[str, Any]:
    return {
        "backends": [
            {
                "id": "anth",
                "type": "anthropic",
                "baseUrl": up.url,
                "apiKey": "sk-ant-upstream",
                "modelMapping": {MODEL: AMODEL},
                **backend,
            }
        ],
        "defaultBackend": "anth",
    }


def vertex_cfg(up: FakeUpstream, **backend: Any) -> dict[str, Any]:
    return {
        "backends": [
            {
                "id": "vx",
                "type": "vertex-anthropic",
                "baseUrl": f"{up.url}/v1",
                "projectId": "proj-1",
                "location": "us-east5",
                "apiKey": "ya29.pasted-token",
                "modelMapping": {MODEL: VMODEL},
                **backend,
            }
        ],
        "defaultBackend": "vx",
    }


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


@pytest.mark.parametrize(
    ("status", "payload", "headers", "exc", "etype"),
    [
        (
            429,
            {"type": "error", "error": {"type": "rate_limit_error", "message": "slow"}},
            {"Retry-After": "12"},
            anthropic.RateLimitError,
            "rate_limit_error",
        ),
        (
            529,
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
            None,
            anthropic.OverloadedError,
            "overloaded_error",
        ),
        (
            400,
            {
                "type": "error",
                "error": {
                    "type": "invalid_request_error",
                    "message": "prompt is too long: 210519 tokens > 200000 maximum",
                },
            },
            None,
            anthropic.BadRequestError,
            "invalid_request_error",
        ),
        (
            500,
            {"type": "error", "error": {"type": "api_error", "message": "boom"}},
            None,
            anthropic.InternalServerError,
            "api_error",
        ),
    ],
)
async def test_upstream_errors_in_anthropic_shape(
    upstream: FakeUpstream,
    status: int,
    payload: Any,
    headers: Any,
    exc: type[Exception],
    etype: str,
) -> None:
    upstream.route("/v1/messages", json_reply(payload, status=status, headers=headers))
    async with run_gateway(anthropic_cfg(upstream)) as gw:
        with pytest.raises(exc) as info:
            await client(gw).messages.create(
                model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "x"}]
            )
    err: Any = info.value
    assert err.body["type"] == "error" and err.body["error"]["type"] == etype
    if status == 429:
        assert err.response.headers["retry-after"] == "12"
    if status == 400:
        assert "prompt is too long: 210519 tokens > 200000 maximum" in err.body["error"]["message"]


async def test_gateway_errors_in_anthropic_shape(upstream: FakeUpstream) -> None:
    async with run_gateway(
        anthropic_cfg(upstream, modelMapping={MODEL: AMODEL}) | {"defaultBackend": None}
    ) as gw:
        c = client(gw)
        with pytest.raises(anthropic.NotFoundError) as nf:
            await c.messages.create(
                model="claude-unknown", max_tokens=5, messages=[{"role": "user", "content": "x"}]
            )
        assert nf.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
        with pytest.raises(anthropic.BadRequestError) as bad:
            await c.messages.create(
                model=MODEL, max_tokens=5, messages=[{"role": "system", "content": "x"}]
            )
        assert bad.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
        assert "messages.0.role" in bad.value.body["error"]["message"]  # type: ignore[index]
    assert upstream.received == []


async def test_gateway_api_key_as_x_api_key_or_bearer(upstream: FakeUpstream) -> None:
    reply = cc.message([{"type": "text", "text": "ok"}], "end_turn", model=AMODEL, usage=USAGE)
    upstream.route("/v1/messages", json_reply(reply))
    cfg = anthropic_cfg(upstream) | {"apiKeys": ["gw-secret"]}
    msgs: Any = [{"role": "user", "content": "x"}]
    async with run_gateway(cfg) as gw:
        ok = await client(gw, api_key="gw-secret").messages.create(
            model=MODEL, max_tokens=5, messages=msgs
        )
        assert ok.content[0].text == "ok"  # type: ignore[union-attr]
        bearer = anthropic_client(gw, api_key=None, auth_token="gw-secret")
        await bearer.messages.create(model=MODEL, max_tokens=5, messages=msgs)
        with pytest.raises(anthropic.AuthenticationError):
            await client(gw, api_key="wrong").messages.create(
                model=MODEL, max_tokens=5, messages=msgs
            )
    assert len(upstream.received) == 2
    assert all(r.headers["x-api-key"] == "sk-ant-upstream" for r in upstream.received)


async def test_edge_errors_in_anthropic_shape(upstream: FakeUpstream) -> None:
    """The gateway's own 401 (API key) and 429 (rate limit) on /v1/messages."""
    reply = cc.message([{"type": "text", "text": "ok"}], "end_turn", model=AMODEL, usage=USAGE)
    upstream.route("/v1/messages", json_reply(reply))
    cfg = anthropic_cfg(upstream) | {
        "apiKeys": ["gw-secret"],
        "rateLimit": {"windowMs": 60000, "max": 2},
    }
    msgs: Any = [{"role": "user", "content": "x"}]
    async with run_gateway(cfg) as gw:
        with pytest.raises(anthropic.AuthenticationError) as auth:
            await client(gw, api_key="wrong").messages.create(
                model=MODEL, max_tokens=5, messages=msgs
            )
        body: Any = auth.value.body
        assert body["type"] == "error" and body["error"]["type"] == "authentication_error"
        c = client(gw, api_key="gw-secret")
        with pytest.raises(anthropic.RateLimitError) as limited:
            for _ in range(3):
                await c.messages.create(model=MODEL, max_tokens=5, messages=msgs)
        body = limited.value.body
        assert body["type"] == "error" and body["error"]["type"] == "rate_limit_error"
        assert int(limited.value.response.headers["retry-after"]) >= 1


async def test_failover_and_token_metrics(upstream: FakeUpstream) -> None:
    """A 529 from the first Claude backend fails over to the second before any byte; the
    tokens of native streams are counted (read from message_start / message_delta)."""
    second = await FakeUpstream().start()
    try:
        overloaded = {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}
        upstream.route("/v1/messages", json_reply(overloaded, status=529))
        answer = cc.sse(
            [{"type": "text", "text": "from the second"}], "end_turn", model=AMODEL, usage=USAGE
        )
        second.route("/v1/messages", stream_reply(answer, split=40))
        both = {"modelMapping": {MODEL: AMODEL}, "apiKey": "k", "type": "anthropic"}
        cfg = {
            "backends": [
                {"id": "a1", "baseUrl": upstream.url, **both},
                {"id": "a2", "baseUrl": second.url, **both},
            ]
        }
        async with run_gateway(cfg) as gw:
            c = client(gw)
            async with c.messages.stream(
                model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "x"}]
            ) as stream:
                final = await stream.get_final_message()
                headers = stream.response.headers
            assert final.content[0].text == "from the second"  # type: ignore[union-attr]
            assert headers["x-chromagent-backend"] == "a2"
            assert headers["x-chromagent-attempts"] == "2"
            async with aiohttp.ClientSession() as s, s.get(f"{gw.url}/metrics") as r:
                text = await r.text()
    finally:
        await second.close()
    tokens = {
        (m.group(1), m.group(2)): float(m.group(3))
        for m in re.finditer(
            r'^chromagent_tokens_total\{[^}]*backend="([^"]+)"[^}]*direction="([^"]+)"[^}]*\} (\S+)',
            text,
            re.M,
        )
    }
    assert tokens[("a2", "in")] == 2100 + 500 + 20000
    assert tokens[("a2", "out")] == 80


async def test_vertex_stale_token_refreshed_once(upstream: FakeUpstream) -> None:
    statuses = iter([401, 200, 401, 401])
    ok = cc.message([{"type": "text", "text": "fresh"}], "end_turn", model=VMODEL, usage=USAGE)
    unauth = {"error": {"code": 401, "message": "bad token", "status": "UNAUTHENTICATED"}}

    async def handler(request: web.Request) -> web.StreamResponse:
        if next(statuses) == 401:
            return web.json_response(unauth, status=401)
        return web.json_response(ok)

    class FakeAuth:
        refreshable = True

        def __init__(self) -> None:
            self.n = 0
            self.invalidated: list[str | None] = []

        async def headers(self) -> dict[str, str]:
            self.n += 1
            return {"Authorization": f"Bearer token-{self.n}"}

        async def invalidate(self, token: str | None = None) -> None:
            self.invalidated.append(token)

    upstream.route(f"{VBASE}{VMODEL}:rawPredict", handler)
    msgs: Any = [{"role": "user", "content": "x"}]
    async with run_gateway(vertex_cfg(upstream)) as gw:
        auth = FakeAuth()
        gw.backends["vx"].provider.auth = auth  # type: ignore[attr-defined]
        c = client(gw)
        msg = await c.messages.create(model=MODEL, max_tokens=5, messages=msgs)
        assert msg.content[0].text == "fresh"  # type: ignore[union-attr]
        assert auth.invalidated == ["Bearer token-1"]
        with pytest.raises(anthropic.InternalServerError) as failed:
            await c.messages.create(model=MODEL, max_tokens=5, messages=msgs)
    assert "credentials" in failed.value.body["error"]["message"]  # type: ignore[index]
    assert [r.headers["Authorization"] for r in upstream.received] == [
        "Bearer token-1",
        "Bearer token-2",
        "Bearer token-3",
        "Bearer token-4",
    ]


async def test_cut_upstream_stream_ends_with_an_error_event(upstream: FakeUpstream) -> None:
    """The upstream closes mid-event: the client gets only whole events, then event: error
    (never a half event, never a made-up message_stop)."""
    full = cc.sse(
        [{"type": "text", "text": "partial answer"}], "end_turn", model=AMODEL, usage=USAGE
    )
    cut = full.index(b"event: content_block_delta") + 30
    upstream.route("/v1/messages", stream_reply([full[:cut]]))
    body = {
        "model": MODEL,
        "max_tokens": 5,
        "stream": True,
        "messages": [{"role": "user", "content": "x"}],
    }
    async with run_gateway(anthropic_cfg(upstream)) as gw:
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{gw.url}/v1/messages", json=body) as resp:
                assert resp.status == 200
                got = await resp.read()
    events = [e for e in got.split(b"\n\n") if e]
    assert got.startswith(full[: full.index(b"event: content_block_delta")])
    assert events[-1].startswith(b"event: error\ndata: ")
    assert json.loads(events[-1].split(b"data: ", 1)[1])["type"] == "error"
    assert b"event: message_stop" not in got
    assert all(e.startswith(b"event: ") for e in events)
