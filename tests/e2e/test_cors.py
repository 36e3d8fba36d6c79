"""CORS through aiohttp-cors on the real gateway: preflights, simple requests, credentials
(the allowed origin is echoed, never ``*``), config from env, and errors still OpenAI JSON."""

from __future__ import annotations

from typing import Any

import aiohttp

from chromagent_proxy.config import build_config
from tests.support.gateway import run_gateway

MOCK = {"backends": [{"id": "mock", "type": "mock", "modelMapping": {"echo": "echo"}}]}
BODY = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}
APP = "https://app.example"


def cfg(**cors: Any) -> dict[str, Any]:
    return {**MOCK, "cors": cors}


async def preflight(
    s: aiohttp.ClientSession, url: str, origin: str, path: str = "/v1/chat/completions"
) -> aiohttp.ClientResponse:
    async with s.options(
        url + path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, x-request-id",
        },
    ) as r:
        await r.read()
        return r


async def test_preflight_and_simple_request_for_a_listed_origin_with_credentials() -> None:
    conf = cfg(origin=[APP, "https://other.example"], credentials=True, maxAge=900)
    async with run_gateway(conf) as gw, aiohttp.ClientSession() as s:
        for path in ("/v1/chat/completions", "/chat/completions", "/v1/models"):
            r = await preflight(s, gw.url, APP, path)
            assert r.status == 200
            assert r.headers["Access-Control-Allow-Origin"] == APP
            assert r.headers["Access-Control-Allow-Credentials"] == "true"
            assert r.headers["Access-Control-Max-Age"] == "900"
            assert r.headers["Access-Control-Allow-Methods"] == "POST"
            allowed = r.headers["Access-Control-Allow-Headers"].lower().split(",")
            assert {"authorization", "content-type", "x-request-id"} <= set(allowed)
        async with s.post(f"{gw.url}/v1/chat/completions", json=BODY, headers={"Origin": APP}) as r:
            assert r.status == 200
            assert r.headers["Access-Control-Allow-Origin"] == APP
            assert r.headers["Access-Control-Allow-Credentials"] == "true"
            exposed = r.headers["Access-Control-Expose-Headers"].lower().split(",")
            assert "x-request-id" in exposed and "x-ratelimit-remaining" in exposed
        async with s.get(f"{gw.url}/v1/models", headers={"Origin": "https://other.example"}) as r:
            assert r.status == 200
            assert r.headers["Access-Control-Allow-Origin"] == "https://other.example"


async def test_unlisted_origin_gets_no_cors_headers() -> None:
    async with run_gateway(cfg(origin=[APP])) as gw, aiohttp.ClientSession() as s:
        r = await preflight(s, gw.url, "https://evil.example")
        assert r.status == 403
        assert "Access-Control-Allow-Origin" not in r.headers
        async with s.post(
            f"{gw.url}/v1/chat/completions", json=BODY, headers={"Origin": "https://evil.example"}
        ) as resp:
            assert resp.status == 200  # CORS is the browser's guard; the server just adds nothing
            assert "Access-Control-Allow-Origin" not in resp.headers


async def test_wildcard_with_credentials_echoes_the_origin_never_star() -> None:
    async with run_gateway(cfg(origin="*", credentials=True)) as gw, aiohttp.ClientSession() as s:
        for origin in ("https://a.example", "http://localhost:5173"):
            r = await preflight(s, gw.url, origin)
            assert r.headers["Access-Control-Allow-Origin"] == origin
            async with s.post(
                f"{gw.url}/v1/chat/completions", json=BODY, headers={"Origin": origin}
            ) as resp:
                assert resp.headers["Access-Control-Allow-Origin"] == origin
                assert resp.headers["Access-Control-Allow-Credentials"] == "true"


async def test_wildcard_without_credentials_allows_any_origin_without_credentials_header() -> None:
    async with run_gateway(cfg(origin="*")) as gw, aiohttp.ClientSession() as s:
        r = await preflight(s, gw.url, "https://any.example")
        assert r.status == 200 and r.headers["Access-Control-Allow-Origin"] != ""
        assert "Access-Control-Allow-Credentials" not in r.headers


async def test_errors_rate_limits_and_health_keep_working_with_cors_on() -> None:
    conf = {**cfg(origin=[APP]), "rateLimit": {"windowMs": 60_000, "max": 1}}
    async with run_gateway(conf) as gw, aiohttp.ClientSession() as s:
        async with s.get(f"{gw.url}/v1/chat/completions", headers={"Origin": APP}) as r:
            assert r.status == 405
            assert (await r.json())["error"]["code"] == "method_not_allowed"
        # The 405 above used the budget of 1: the 429 carries CORS headers so a browser sees it.
        async with s.post(f"{gw.url}/v1/chat/completions", json=BODY, headers={"Origin": APP}) as r:
            assert r.status == 429
            assert r.headers["Access-Control-Allow-Origin"] == APP
        r = await preflight(s, gw.url, APP)
        assert r.status == 200  # preflights are never rate limited
        async with s.get(f"{gw.url}/health") as r:
            assert r.status == 200


def test_cors_from_env() -> None:
    c = build_config(
        MOCK,
        env={
            "GATEWAY_CORS_ORIGIN": "https://a.example, https://b.example",
            "GATEWAY_CORS_CREDENTIALS": "true",
        },
    )
    assert c.cors is not None
    assert c.cors.origin == ["https://a.example", "https://b.example"] and c.cors.credentials
    star = build_config(MOCK, env={"GATEWAY_CORS_ORIGIN": "*"})
    assert star.cors is not None and star.cors.origin == "*"
