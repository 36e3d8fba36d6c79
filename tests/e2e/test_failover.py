"""Failover through the real gateway: which failures move on, which return at once, cooldowns."""

from __future__ import annotations

import asyncio
import math
import socket
import time
from email.utils import formatdate
from typing import Any

import aiohttp
import pytest

from chromagent_proxy.errors import GatewayError
from tests.support.gateway import run_gateway, sdk
from tests.support.routing import answer, backend, body, error_reply, hits
from tests.support.upstream import FakeUpstream, Handler, hang, stream_reply


async def post(url: str, payload: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    async with (
        aiohttp.ClientSession() as s,
        s.post(f"{url}/v1/chat/completions", json=payload) as r,
    ):
        return r.status, dict(r.headers), await r.read()


def pair(up: FakeUpstream, first: Handler, **kw: Any) -> dict[str, Any]:
    """Backends a (behaving as ``first``) then b (healthy), both serving model m."""
    return {
        "backends": [
            backend(up, "a", first, modelMapping={"m": "m"}),
            backend(up, "b", modelMapping={"m": "m"}),
        ],
        "timeouts": {"firstByteMs": 400},
        **kw,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("status", [429, 500, 502, 503, 504, 529])
async def test_retryable_status_fails_over(
    upstream: FakeUpstream, status: int, stream: bool
) -> None:
    async with run_gateway(pair(upstream, error_reply(status))) as gw:
        code, headers, data = await post(gw.url, body(stream=stream))
        assert code == 200, data
        assert headers["x-chromagent-backend"] == "b"
        assert headers["x-chromagent-attempts"] == "2"
        assert (b"data: [DONE]" in data) is stream
        assert gw.state is not None and gw.state.router.failovers == 1
    assert hits(upstream, "a") == hits(upstream, "b") == 1


@pytest.mark.parametrize("stream", [False, True])
async def test_connect_error_fails_over(upstream: FakeUpstream, stream: bool) -> None:
    cfg = pair(upstream, answer("a"))
    cfg["backends"][0]["baseUrl"] = f"http://127.0.0.1:{free_port()}/v1"
    async with run_gateway(cfg) as gw:
        code, headers, _ = await post(gw.url, body(stream=stream))
        assert (code, headers["x-chromagent-backend"], headers["x-chromagent-attempts"]) == (
            200,
            "b",
            "2",
        )


@pytest.mark.parametrize(("stream", "before_headers"), [(False, True), (True, True), (True, False)])
async def test_first_byte_timeout_fails_over(
    upstream: FakeUpstream, stream: bool, before_headers: bool
) -> None:
    async with run_gateway(pair(upstream, hang(before_headers))) as gw:
        started = time.monotonic()
        code, headers, _ = await post(gw.url, body(stream=stream))
        assert (code, headers["x-chromagent-backend"], headers["x-chromagent-attempts"]) == (
            200,
            "b",
            "2",
        )
        assert time.monotonic() - started < 2


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("status", "client_status"),
    [(400, 400), (401, 502), (403, 502), (404, 404), (413, 413), (422, 422)],
)
async def test_non_retryable_status_returns_at_once(
    upstream: FakeUpstream, status: int, client_status: int, stream: bool
) -> None:
    async with run_gateway(pair(upstream, error_reply(status))) as gw:
        code, headers, data = await post(gw.url, body(stream=stream))
        assert code == client_status, data
        assert headers["x-chromagent-backend"] == "a"
        assert headers["x-chromagent-attempts"] == "1"
        assert gw.state is not None and gw.state.router.failovers == 0
    assert hits(upstream, "b") == 0


async def test_max_attempts_and_last_error_with_retry_after(upstream: FakeUpstream) -> None:
    cfg = {
        "backends": [
            backend(upstream, name, error_reply(429, {"Retry-After": "7"}), modelMapping={"m": "m"})
            for name in ("x", "y", "z")
        ],
        "maxAttempts": 2,
    }
    async with run_gateway(cfg) as gw:
        client = sdk(gw)
        import openai

        with pytest.raises(openai.RateLimitError) as info:
            await client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}]
            )
        await client.close()
        assert info.value.response.headers["x-chromagent-attempts"] == "2"
        assert info.value.response.headers["Retry-After"] == "7"
    assert hits(upstream, "x") + hits(upstream, "y") + hits(upstream, "z") == 2


async def test_failover_listener_and_counter(upstream: FakeUpstream) -> None:
    seen: list[tuple[str, int]] = []
    async with run_gateway(pair(upstream, error_reply(503))) as gw:
        assert gw.state is not None
        gw.state.router.failover_listeners.append(lambda bid, err: seen.append((bid, err.status)))
        await post(gw.url, body())
        assert gw.state.router.failovers == 1
    assert seen == [("a", 503)]
    assert isinstance(GatewayError("x"), Exception)


@pytest.mark.parametrize("form", ["seconds", "http-date"])
async def test_retry_after_cools_down_then_half_open_probe_recovers(
    upstream: FakeUpstream, form: str
) -> None:
    # The cooldown ends at a known wall-clock instant: 1.5 s after the 429 (a fraction, to show
    # fractional seconds count), or the whole second an HTTP-date names, at least 1.5 s ahead
    # (an HTTP-date has whole seconds only, so it is rounded up, never down to ~0 s).
    state: dict[str, Any] = {"fail": True, "until": 0.0}
    ok = answer("a")

    async def flaky(request: Any) -> Any:
        if not state["fail"]:
            return await ok(request)
        if form == "seconds":
            state["until"] = time.time() + 1.5
            value = "1.5"
        else:
            state["until"] = float(math.ceil(time.time() + 1.5))
            value = formatdate(state["until"], usegmt=True)
        return await error_reply(429, {"Retry-After": value})(request)

    async with run_gateway(pair(upstream, flaky)) as gw:
        code, headers, _ = await post(gw.url, body())
        assert (code, headers["x-chromagent-backend"]) == (200, "b")
        # Cooling down: a is skipped entirely, b takes every request.
        for _ in range(4):
            code, headers, _ = await post(gw.url, body())
            assert headers["x-chromagent-backend"] == "b"
        assert time.time() < state["until"], "the cooldown checks ran past its end"
        assert hits(upstream, "a") == 1
        state["fail"] = False
        await asyncio.sleep(state["until"] - time.time() + 0.05)
        # Half-open: the next request probes a; it answers, so a is back in rotation.
        got = [(await post(gw.url, body()))[1]["x-chromagent-backend"] for _ in range(4)]
        assert got.count("a") == 2 and got.count("b") == 2


async def test_retry_after_seconds_and_http_date_skip_backend(upstream: FakeUpstream) -> None:
    for value in ("120", formatdate(time.time() + 3600, usegmt=True)):
        upstream.received.clear()
        async with run_gateway(pair(upstream, error_reply(503, {"Retry-After": value}))) as gw:
            for _ in range(5):
                code, headers, _ = await post(gw.url, body())
                assert (code, headers["x-chromagent-backend"]) == (200, "b")
        assert hits(upstream, "a") == 1


async def test_repeated_failures_cool_down_with_backoff(upstream: FakeUpstream) -> None:
    cfg = pair(upstream, error_reply(500), failover={"failureThreshold": 2, "cooldownMs": 300})
    async with run_gateway(cfg) as gw:
        for _ in range(6):
            code, headers, _ = await post(gw.url, body())
            assert (code, headers["x-chromagent-backend"]) == (200, "b")
        # Round robin put a first on two of the first three requests; then it cooled down.
        assert hits(upstream, "a") == 2
        await asyncio.sleep(0.35)
        # One half-open probe, which fails: cooled down again, now for 600 ms.
        for _ in range(4):
            await post(gw.url, body())
        assert hits(upstream, "a") == 3
        # Two requests in a row always give a its turn once it is ready again.
        await asyncio.sleep(0.35)
        for _ in range(2):
            await post(gw.url, body())
        assert hits(upstream, "a") == 3
        await asyncio.sleep(0.3)
        for _ in range(2):
            await post(gw.url, body())
        assert hits(upstream, "a") == 4


async def test_every_candidate_cooling_still_tries_the_soonest(upstream: FakeUpstream) -> None:
    cfg = {
        "backends": [
            backend(
                upstream, "a", error_reply(503, {"Retry-After": "3600"}), modelMapping={"m": "m"}
            ),
            backend(
                upstream, "b", error_reply(503, {"Retry-After": "60"}), modelMapping={"m": "m"}
            ),
        ]
    }
    async with run_gateway(cfg) as gw:
        code, headers, _ = await post(gw.url, body())
        assert (code, headers["x-chromagent-attempts"]) == (503, "2")
        upstream.route("/b/v1/chat/completions", answer("b"))
        code, headers, _ = await post(gw.url, body())
        # Both cooling: b's cooldown ends first, so it is tried (and answers) rather than failing.
        assert (code, headers["x-chromagent-backend"], headers["x-chromagent-attempts"]) == (
            200,
            "b",
            "1",
        )


async def test_no_silent_switch_once_streaming_began(upstream: FakeUpstream) -> None:
    first = (
        b'data: {"id":"x","object":"chat.completion.chunk","created":1,"model":"m",'
        b'"choices":[{"index":0,"delta":{"role":"assistant","content":"par"}}]}\n\n'
    )
    broken = stream_reply(
        [first, b'data: {"error": {"message": "boom", "type": "server_error"}}\n\n']
    )
    async with run_gateway(pair(upstream, broken)) as gw:
        client = sdk(gw)
        import openai

        stream = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        got: list[str] = []
        with pytest.raises(openai.APIError, match="boom"):
            async for chunk in stream:
                got.append(chunk.choices[0].delta.content or "")
        await client.close()
        assert got == ["par"]
    assert hits(upstream, "b") == 0
