"""POST /v1/messages when things go wrong, and the edge in front of it: upstream and
gateway errors in Anthropic's envelope and statuses (the SDK's error classes), the gateway's
API key as x-api-key or Bearer, its 401 / 429 in Anthropic's shape, failover and token
metrics, a stale Vertex token, a cut upstream stream. Official anthropic SDK → real gateway
→ fake Anthropic / Vertex server."""

from __future__ import annotations

import json
import re
from typing import Any

import aiohttp
import anthropic
import pytest
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
from tests.support.upstream import FakeUpstream, json_reply, stream_reply

client = anthropic_client


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


async def test_a_tool_schema_of_the_wrong_kind_is_refused_before_the_relay(
    upstream: FakeUpstream,
) -> None:
    # The anthropic relay sends tools on unread (their schemas stay JSON bytes): the kind
    # of each value is still checked, so the upstream never sees the bad request.
    async with run_gateway(anthropic_cfg(upstream, modelMapping={MODEL: AMODEL})) as gw:
        c = client(gw)
        with pytest.raises(anthropic.BadRequestError) as bad:
            await c.messages.create(
                model=MODEL,
                max_tokens=5,
                messages=[{"role": "user", "content": "x"}],
                tools=[{"name": "Bash", "input_schema": "object"}],  # type: ignore[typeddict-item]
            )
        assert bad.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
        assert "tools.0.input_schema" in bad.value.body["error"]["message"]  # type: ignore[index]
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
