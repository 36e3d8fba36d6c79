"""Upstream redirects are never followed (issue 13, item 2).

A redirect would re-send the provider key (and with 307/308 the prompt) to
whatever host the upstream names, and relay that host's answer as the model's.
Each upstream below answers with a redirect to a second local server that
records every hit: it must see none, and the client gets a 502 naming the
backend without the redirect target.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import openai
import pytest
from aiohttp import web

from chromagent_proxy.auth.google import GoogleAuth
from chromagent_proxy.errors import UpstreamHTTPError
from tests.support.gateway import run_gateway, sdk
from tests.support.upstream import FakeUpstream
from tests.unit.test_google_auth import write_service_account

MSG: Any = [{"role": "user", "content": "where am I sent?"}]


@pytest.fixture
async def target() -> AsyncIterator[FakeUpstream]:
    """The redirect target: any hit at all is the bug."""
    up = await FakeUpstream().start()
    up.route("*", lambda request: _ok(request))
    yield up
    await up.close()


async def _ok(request: web.Request) -> web.StreamResponse:
    return web.json_response({"access_token": "stolen", "expires_in": 3600})


@pytest.fixture
async def redirector() -> AsyncIterator[FakeUpstream]:
    up = await FakeUpstream().start()
    yield up
    await up.close()


def redirect_to(url: str, status: int) -> Callable[[web.Request], Any]:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, headers={"Location": url + request.path})

    return handler


BACKENDS: dict[str, Callable[[str], dict[str, Any]]] = {
    "openai": lambda url: {"type": "openai", "baseUrl": f"{url}/v1", "apiKey": "sk-provider"},
    "anthropic": lambda url: {"type": "anthropic", "baseUrl": url, "apiKey": "sk-ant-provider"},
    "gemini": lambda url: {"type": "gemini", "baseUrl": url, "apiKey": "AIza-provider"},
    "ollama": lambda url: {"type": "ollama", "baseUrl": url},
}


@pytest.mark.parametrize("status", [302, 307, 308])
@pytest.mark.parametrize("kind", sorted(BACKENDS))
@pytest.mark.parametrize("stream", [False, True])
async def test_chat_redirect_is_a_502_and_never_followed(
    kind: str, status: int, stream: bool, redirector: FakeUpstream, target: FakeUpstream
) -> None:
    redirector.route("*", redirect_to(target.url, status))
    cfg = {
        "backends": [{"id": "up", **BACKENDS[kind](redirector.url), "modelMapping": {"m": "m"}}],
        "defaultBackend": "up",
    }
    async with run_gateway(cfg) as gw, sdk(gw) as client:
        with pytest.raises(openai.APIStatusError) as info:
            if stream:
                s = await client.chat.completions.create(model="m", messages=MSG, stream=True)
                async for _ in s:
                    pass
            else:
                await client.chat.completions.create(model="m", messages=MSG)
    assert info.value.status_code == 502
    message = info.value.message
    assert "backend 'up'" in message and f"HTTP {status}" in message
    assert target.url not in message and str(target.port) not in message
    assert len(redirector.received) == 1
    assert target.received == []


async def test_ollama_model_listing_does_not_follow_redirects(
    redirector: FakeUpstream, target: FakeUpstream
) -> None:
    redirector.route("*", redirect_to(target.url, 302))
    cfg = {"backends": [{"id": "ol", "type": "ollama", "baseUrl": redirector.url}]}
    async with run_gateway(cfg) as gw, sdk(gw) as client:
        await client.models.list()
    assert any(r.path == "/api/tags" for r in redirector.received)
    assert target.received == []


async def test_token_endpoint_redirect_is_not_followed(
    tmp_path: Path, redirector: FakeUpstream, target: FakeUpstream
) -> None:
    redirector.route("/token", redirect_to(target.url, 307))
    sa = write_service_account(tmp_path, f"{redirector.url}/token")
    auth = GoogleAuth(api_key=None, credentials_file=str(sa), label="backend 'vx'")
    with pytest.raises(UpstreamHTTPError) as info:
        await auth.headers()
    assert info.value.status == 502 and "backend 'vx'" in info.value.message
    assert len(redirector.received) == 1
    assert target.received == []


async def test_connect_failure_does_not_show_the_upstream_address() -> None:
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    cfg = {
        "backends": [{"id": "gone", "type": "openai", "baseUrl": f"http://127.0.0.1:{port}/v1"}],
        "defaultBackend": "gone",
    }
    async with run_gateway(cfg) as gw, sdk(gw) as client:
        with pytest.raises(openai.APIStatusError) as info:
            await client.chat.completions.create(model="m", messages=MSG)
    assert info.value.status_code == 502
    assert "'gone'" in info.value.message and "unreachable" in info.value.message
    assert str(port) not in info.value.message and "127.0.0.1" not in info.value.message
