"""Routing rules through the real gateway: each condition kind, their order, the fallbacks."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from tests.support.gateway import run_gateway, sdk
from tests.support.routing import IMAGE_MSG, TOOLS, backend, body, hits
from tests.support.upstream import FakeUpstream


async def post(url: str, payload: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    async with (
        aiohttp.ClientSession() as s,
        s.post(f"{url}/v1/chat/completions", json=payload) as r,
    ):
        return r.status, dict(r.headers), await r.read()


async def served_by(url: str, payload: dict[str, Any]) -> str:
    status, headers, data = await post(url, payload)
    assert status == 200, data
    return headers["x-chromagent-backend"]


def config(up: FakeUpstream, rules: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
    return {
        "backends": [
            backend(up, "claude"),
            backend(up, "tools"),
            backend(up, "vision"),
            backend(up, "streamer"),
            backend(up, "mapped", modelMapping={"gpt-4o": "gpt-4o-2024", "claude-3": "c3"}),
            backend(up, "fallback"),
        ],
        "routingRules": rules,
        "defaultBackend": "fallback",
        **kw,
    }


async def test_each_condition_kind_routes_to_its_backend(upstream: FakeUpstream) -> None:
    rules = [
        {"condition": "model: claude-*", "backendId": "claude"},
        {"condition": "has_tools: true", "backendId": "tools"},
        {"condition": "has_images: true", "backendId": "vision"},
        {"condition": "stream: true", "backendId": "streamer"},
    ]
    async with run_gateway(config(upstream, rules)) as gw:
        assert await served_by(gw.url, body("claude-3-opus")) == "claude"
        assert await served_by(gw.url, body("x", tools=TOOLS)) == "tools"
        assert await served_by(gw.url, {"model": "x", "messages": IMAGE_MSG}) == "vision"
        assert await served_by(gw.url, body("x", stream=True)) == "streamer"
        # No rule: the modelMapping backend, then the default backend.
        assert await served_by(gw.url, body("gpt-4o")) == "mapped"
        assert await served_by(gw.url, body("anything-else")) == "fallback"
        # The official SDK sees the same routing, stream and not.
        client = sdk(gw)
        raw = await client.chat.completions.with_raw_response.create(
            model="claude-3-haiku", messages=[{"role": "user", "content": "hi"}]
        )
        assert raw.headers["x-chromagent-backend"] == "claude"
        assert raw.parse().choices[0].message.content == "claude"
        got = [
            c
            async for c in await client.chat.completions.create(
                model="y", messages=[{"role": "user", "content": "hi"}], stream=True
            )
        ]
        assert "".join(c.choices[0].delta.content or "" for c in got if c.choices) == "streamer"
        await client.close()


async def test_first_matching_rule_wins_and_rules_beat_model_mapping(
    upstream: FakeUpstream,
) -> None:
    rules = [
        {"condition": "model: claude-3 && has_tools: true", "backendId": "tools"},
        {"condition": "model: claude-*", "backendId": "claude"},
        {"condition": "has_tools: true", "backendId": "vision"},
    ]
    async with run_gateway(config(upstream, rules)) as gw:
        # "mapped" maps claude-3, but the rule comes first.
        assert await served_by(gw.url, body("claude-3")) == "claude"
        assert await served_by(gw.url, body("claude-3", tools=TOOLS)) == "tools"
        assert await served_by(gw.url, body("claude-4", tools=TOOLS)) == "claude"
        assert await served_by(gw.url, body("other", tools=TOOLS)) == "vision"


async def test_false_conditions_and_conjunctions(upstream: FakeUpstream) -> None:
    rules = [
        {"condition": "stream: false && has_images: false && model: gpt-?o", "backendId": "claude"},
        {"condition": "has_tools: false && stream: true", "backendId": "streamer"},
    ]
    async with run_gateway(config(upstream, rules)) as gw:
        assert await served_by(gw.url, body("gpt-4o")) == "claude"
        assert await served_by(gw.url, body("gpt-4o", stream=True)) == "streamer"
        assert await served_by(gw.url, body("gpt-4o", stream=True, tools=TOOLS)) == "mapped"
        assert await served_by(gw.url, {"model": "gpt-4o", "messages": IMAGE_MSG}) == "mapped"
        assert await served_by(gw.url, body("gpt-4oo")) == "fallback"  # glob did not match


async def test_rule_target_maps_model_only_if_its_mapping_has_it(upstream: FakeUpstream) -> None:
    rules = [{"condition": "model: *", "backendId": "mapped"}]
    async with run_gateway(config(upstream, rules)) as gw:
        assert await served_by(gw.url, body("gpt-4o")) == "mapped"
        assert await served_by(gw.url, body("unmapped-model")) == "mapped"
    models = [r.json["model"] for r in upstream.received]
    assert models == ["gpt-4o-2024", "unmapped-model"]


async def test_backend_ids_balance_and_failover_stays_with_model_servers(
    upstream: FakeUpstream,
) -> None:
    from tests.support.routing import error_reply

    cfg = config(upstream, [{"condition": "model: claude-*", "backendIds": ["claude", "tools"]}])
    async with run_gateway(cfg) as gw:
        got = [await served_by(gw.url, body("claude-x")) for _ in range(4)]
        assert got == ["claude", "tools", "claude", "tools"]
    # Both rule backends down: the model's mapping backends are next, never the default.
    upstream.route("/claude/v1/chat/completions", error_reply(503))
    upstream.route("/tools/v1/chat/completions", error_reply(503))
    cfg["routingRules"] = [{"condition": "model: claude-*", "backendIds": ["claude", "tools"]}]
    async with run_gateway(cfg) as gw:
        status, headers, _ = await post(gw.url, body("claude-3"))
        assert status == 200
        assert headers["x-chromagent-backend"] == "mapped"
        assert headers["x-chromagent-attempts"] == "3"
        status, headers, _ = await post(gw.url, body("claude-9"))
        assert status == 503
        assert headers["x-chromagent-attempts"] == "2"
    assert hits(upstream, "fallback") == 0


@pytest.mark.parametrize("stream", [False, True])
async def test_headers_on_success_and_error(upstream: FakeUpstream, stream: bool) -> None:
    cfg = {"backends": [backend(upstream, "only", modelMapping={"m": "m"})]}
    async with run_gateway(cfg) as gw:
        status, headers, _ = await post(gw.url, body("m", stream=stream))
        assert status == 200
        assert headers["x-chromagent-backend"] == "only"
        assert headers["x-chromagent-attempts"] == "1"
        status, headers, data = await post(gw.url, body("nope", stream=stream))
        assert status == 404
        assert b"model_not_found" in data
