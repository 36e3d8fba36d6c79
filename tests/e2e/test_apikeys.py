"""Gateway API keys: Bearer required on /v1/* (constant-time compare), 401
authentication_error otherwise; /health open; off by default; GATEWAY_API_KEYS."""

from __future__ import annotations

from typing import Any

import aiohttp
import openai
import pytest

from chromagent_proxy.core.config_load import build_config
from chromagent_proxy.core.errors import ConfigError
from tests.support.gateway import run_gateway, sdk

MOCK = {"backends": [{"id": "mock", "type": "mock", "modelMapping": {"echo": "echo"}}]}
MSG: Any = [{"role": "user", "content": "hello"}]
KEYS = ["gw-key-alpha-123", "gw-key-beta-456"]


async def test_sdk_with_a_valid_key_passes_and_a_wrong_key_gets_401() -> None:
    async with run_gateway({**MOCK, "apiKeys": KEYS}) as gw:
        for key in KEYS:
            client = sdk(gw, api_key=key)
            answer = await client.chat.completions.create(model="echo", messages=MSG)
            assert answer.choices[0].message.content == "hello"
            models = await client.models.list()
            assert [m.id for m in models.data] == ["echo"]
            stream = await client.chat.completions.create(model="echo", messages=MSG, stream=True)
            assert (
                "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
                == "hello"
            )
            await client.close()
        for wrong in ("gw-key-alpha-12", "gw-key-alpha-1234", "nope", KEYS[0].upper()):
            client = sdk(gw, api_key=wrong)
            with pytest.raises(openai.AuthenticationError) as info:
                await client.chat.completions.create(model="echo", messages=MSG)
            err = info.value.body
            assert isinstance(err, dict) and err["type"] == "authentication_error"
            assert err["code"] == "invalid_api_key"
            assert wrong not in str(info.value)  # the key is never echoed back
            with pytest.raises(openai.AuthenticationError):
                await client.models.list()
            await client.close()


async def test_missing_or_malformed_header_and_open_health() -> None:
    async with run_gateway({**MOCK, "apiKeys": KEYS}) as gw, aiohttp.ClientSession() as s:
        url = f"{gw.url}/v1/chat/completions"
        body = {"model": "echo", "messages": MSG}
        for headers in (
            {},
            {"Authorization": KEYS[0]},
            {"Authorization": f"Basic {KEYS[0]}"},
            {"Authorization": "Bearer "},
        ):
            async with s.post(url, json=body, headers=headers) as r:
                assert r.status == 401, headers
                assert r.headers["WWW-Authenticate"] == "Bearer"
                assert (await r.json())["error"]["type"] == "authentication_error"
        async with s.post(url, json=body, headers={"Authorization": f"bearer  {KEYS[1]} "}) as r:
            assert r.status == 200  # scheme is case-insensitive, whitespace tolerated
        async with s.post(f"{gw.url}/chat/completions", json=body) as r:
            assert r.status == 401  # the un-prefixed alias is an API route too
        async with s.get(f"{gw.url}/health") as r:
            assert r.status == 200 and (await r.json())["status"] == "ok"
        async with s.get(f"{gw.url}/metrics") as r:
            assert r.status == 200
            text = await r.text()
            assert "chromagent_auth_failures_total 5.0" in text
            assert not any(k in text for k in KEYS)


async def test_off_by_default() -> None:
    async with run_gateway(MOCK) as gw, aiohttp.ClientSession() as s:
        async with s.post(
            f"{gw.url}/v1/chat/completions", json={"model": "echo", "messages": MSG}
        ) as r:
            assert r.status == 200


def test_keys_from_env() -> None:
    c = build_config(MOCK, env={"GATEWAY_API_KEYS": " k1 , k2"})
    assert c.api_keys == ["k1", "k2"]
    # An empty entry is a mistake (it could be the only one): refused, not dropped.
    with pytest.raises(ConfigError, match="GATEWAY_API_KEYS: entry 3 of 4 is empty"):
        build_config(MOCK, env={"GATEWAY_API_KEYS": " k1 , k2,,"})
