"""CORS through aiohttp-cors on the real gateway: preflights, simple requests, credentials
(the allowed origin is echoed, never ``*``), config from env, and errors still OpenAI JSON."""

from __future__ import annotations

from typing import Any

import aiohttp

from chromagent_proxy.core.config_load import build_config
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
            # A browser would not let the page read the answer, but the POST itself would run
            # (spending tokens): refused before it reaches a backend.
            assert resp.status == 403
            assert (await resp.json())["error"]["code"] == "origin_not_allowed"
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


# ------------------------------------------------------- drive-by and DNS rebinding (issue 13)


async def raw_post(port: int, headers: dict[str, str], body: bytes = b"{}") -> tuple[int, Any]:
    """A POST with exactly these headers (a browser's text/plain drive-by needs no preflight)."""
    import asyncio
    import json

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lines = ["POST /v1/chat/completions HTTP/1.1", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    data = json.loads(await reader.readexactly(length))
    writer.close()
    return int(head.split(b" ", 2)[1]), data


async def test_cross_site_post_is_refused_without_cors_and_sdks_still_work() -> None:
    body = b'{"model": "echo", "messages": [{"role": "user", "content": "hi"}]}'
    async with run_gateway(MOCK) as gw:
        host = f"127.0.0.1:{gw.port}"
        drive_by = {"Host": host, "Content-Type": "text/plain", "Origin": "https://evil.example"}
        status, data = await raw_post(gw.port, drive_by, body)
        assert status == 403 and data["error"]["code"] == "origin_not_allowed"
        status, data = await raw_post(gw.port, {**drive_by, "Origin": "null"}, body)
        assert status == 403
        # No Origin (SDKs, curl) or the gateway's own origin: served.
        plain = {"Host": host, "Content-Type": "application/json"}
        assert (await raw_post(gw.port, plain, body))[0] == 200
        assert (await raw_post(gw.port, {**plain, "Origin": f"http://{host}"}, body))[0] == 200


async def test_dns_rebinding_host_is_refused_on_loopback() -> None:
    body = b'{"model": "echo", "messages": [{"role": "user", "content": "hi"}]}'
    async with run_gateway(MOCK) as gw:
        ok = {"Content-Type": "application/json"}
        for host in ("localhost", f"localhost:{gw.port}", f"127.0.0.1:{gw.port}", "[::1]:3000"):
            assert (await raw_post(gw.port, {**ok, "Host": host}, body))[0] == 200, host
        for host in ("rebind.attacker.example", f"rebind.attacker.example:{gw.port}", "10.0.0.5"):
            status, data = await raw_post(gw.port, {**ok, "Host": host}, body)
            assert status == 403, host
            assert data["error"]["code"] == "host_not_allowed"
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{gw.url}/metrics", headers={"Host": "rebind.attacker.example"}) as r:
                assert r.status == 403


async def test_host_is_not_checked_when_listening_beyond_loopback() -> None:
    body = b'{"model": "echo", "messages": [{"role": "user", "content": "hi"}]}'
    async with run_gateway({**MOCK, "host": "0.0.0.0"}) as gw:
        headers = {"Content-Type": "application/json", "Host": "gateway.internal.example"}
        assert (await raw_post(gw.port, headers, body))[0] == 200


async def test_wildcard_with_credentials_never_reflects_the_null_origin() -> None:
    async with run_gateway(cfg(origin="*", credentials=True)) as gw, aiohttp.ClientSession() as s:
        r = await preflight(s, gw.url, "null")
        assert r.headers.get("Access-Control-Allow-Origin") != "null"
        assert "Access-Control-Allow-Credentials" not in r.headers
        async with s.get(f"{gw.url}/v1/models", headers={"Origin": "null"}) as resp:
            assert "Access-Control-Allow-Origin" not in resp.headers
        async with s.post(
            f"{gw.url}/v1/chat/completions", json=BODY, headers={"Origin": "null"}
        ) as resp:
            assert resp.status == 403
