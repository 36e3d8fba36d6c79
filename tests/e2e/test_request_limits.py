"""JSON the gateway cannot re-encode, and ambiguous routed keys, are the client's fault
(issue 13, item 12 and the duplicate-key item): a 400 naming the field, no traceback, no
upstream call, and the gateway carries on."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest

from tests.support.gateway import run_gateway, sdk
from tests.support.upstream import FakeUpstream, json_reply

MSG: Any = [{"role": "user", "content": "hi"}]
OPENAI_ANSWER = {
    "id": "x",
    "object": "chat.completion",
    "created": 1,
    "model": "m",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
    ],
}


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    up = await FakeUpstream().start()
    up.route("*", json_reply(OPENAI_ANSWER))
    yield up
    await up.close()


def config(up: FakeUpstream) -> dict[str, Any]:
    return {
        "backends": [
            # The relay re-encodes the body when the model name is mapped to another one.
            {
                "id": "relay",
                "type": "openai",
                "baseUrl": f"{up.url}/v1",
                "modelMapping": {"r": "up-r"},
            },
            {
                "id": "ant",
                "type": "anthropic",
                "baseUrl": up.url,
                "apiKey": "k",
                "modelMapping": {"a": "a"},
            },
            {
                "id": "gem",
                "type": "gemini",
                "baseUrl": up.url,
                "apiKey": "k",
                "modelMapping": {"g": "g"},
            },
            {"id": "oll", "type": "ollama", "baseUrl": up.url, "modelMapping": {"o": "o"}},
        ]
    }


def deep(levels: int) -> dict[str, Any]:
    node: dict[str, Any] = {"type": "string"}
    for _ in range(levels):
        node = {"type": "object", "properties": {"p": node}}
    return node


def tools(parameters: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"type": "function", "function": {"name": "f", "parameters": parameters}}]


# The relay with a renamed model rewrites only the model's bytes (rawjson.py): like the
# relay without a rename it never re-encodes, so these values reach the upstream exactly.
RELAYED = [{"seed": 2**64}, {"metadata": {"n": -(2**63) - 1}}, {"extra": deep(300)}]
CASES = [
    (
        "a",
        {"tools": tools({"type": "object", "maximum": 2**64})},
        "tools[0].function.parameters.maximum",
    ),
    ("a", {"tools": tools(deep(200))}, "tools[0].function.parameters"),
    ("g", {"seed": 2**70}, "seed"),
    (
        "o",
        {"tools": tools({"type": "object", "minimum": -(2**65)})},
        "tools[0].function.parameters.minimum",
    ),
]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(("model", "extra", "field"), CASES)
async def test_unencodable_values_are_a_400_naming_the_field(
    upstream: FakeUpstream,
    caplog: pytest.LogCaptureFixture,
    model: str,
    extra: dict[str, Any],
    field: str,
    stream: bool,
) -> None:
    async with run_gateway(config(upstream)) as gw, sdk(gw) as client:
        with caplog.at_level(logging.WARNING), pytest.raises(openai.BadRequestError) as info:
            await client.chat.completions.create(
                model=model,
                messages=MSG,
                stream=stream,
                extra_body=extra,
            )
        # The gateway carries on.
        ok = await client.chat.completions.create(model="r", messages=MSG)
        assert ok.choices[0].message.content == "hi"
    err = info.value.body
    assert isinstance(err, dict)
    assert err["param"].startswith(field), err
    assert field.split(".")[0].split("[")[0] in err["message"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(upstream.received) == 1  # only the good request went upstream


@pytest.mark.parametrize("extra", RELAYED)
async def test_relay_rename_keeps_values_it_cannot_re_encode_exact(
    upstream: FakeUpstream, extra: dict[str, Any]
) -> None:
    async with run_gateway(config(upstream)) as gw, sdk(gw) as client:
        ok = await client.chat.completions.create(
            model="r",
            messages=MSG,
            extra_body=extra,
        )
        assert ok.choices[0].message.content == "hi"
    sent = upstream.received[0].json
    assert sent["model"] == "up-r"
    assert {k: sent[k] for k in extra} == extra  # big ints exact, deep nesting intact


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b'{"model": "r", "model": "a", "messages": [{"role": "user", "content": "hi"}]}', "model"),
        (
            b'{"model": "r", "mod\\u0065l": "a", "messages": [{"role": "user", "content": "hi"}]}',
            "model",
        ),
        (
            b'{"model": "r", "stream": false, "messages": [{"role": "user", "content": "hi"}], '
            b'"stream": true}',
            "stream",
        ),
    ],
)
async def test_duplicate_routed_keys_are_a_400(
    upstream: FakeUpstream, raw: bytes, field: str
) -> None:
    async with run_gateway(config(upstream)) as gw, aiohttp.ClientSession() as s:
        async with s.post(
            f"{gw.url}/v1/chat/completions", data=raw, headers={"Content-Type": "application/json"}
        ) as r:
            assert r.status == 400
            err = (await r.json())["error"]
        # The word "model" inside content, nested objects, or repeated at other levels is fine.
        fine = (
            b'{"model": "r", "messages": [{"role": "user", "content": "model"}, '
            b'{"role": "user", "content": "stream"}], "metadata": {"model": "x", "stream": "y"}}'
        )
        async with s.post(
            f"{gw.url}/v1/chat/completions", data=fine, headers={"Content-Type": "application/json"}
        ) as r:
            assert r.status == 200, await r.text()
    assert err["param"] == field and "more than once" in err["message"]
    assert len(upstream.received) == 1


@pytest.mark.parametrize(
    ("path", "raw"),
    [
        (
            "/v1/messages",
            b'{"model": "r", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}], '
            b'"m\\u006fdel": "a"}',
        ),
        ("/v1/responses", b'{"model": "r", "input": "hi", "stream": true, "stream": false}'),
        ("/v1/embeddings", b'{"model": "r", "input": "hi", "model": "a"}'),
    ],
)
async def test_every_dialect_refuses_a_repeated_routed_key(
    upstream: FakeUpstream, path: str, raw: bytes
) -> None:
    async with run_gateway(config(upstream)) as gw, aiohttp.ClientSession() as s:
        async with s.post(
            f"{gw.url}{path}", data=raw, headers={"Content-Type": "application/json"}
        ) as r:
            assert r.status == 400
            body = await r.json()
    # Each dialect's own error shape (Anthropic's carries a type at the top).
    err = body["error"]
    assert "more than once" in err["message"]
    if path == "/v1/messages":
        assert body["type"] == "error" and err["type"] == "invalid_request_error"
    assert upstream.received == []
