"""Large and odd request bodies on the pass-through path (issue 20).

The gateway reads a body once, routes it by its top-level ``model``, lets the decoded
messages go before it relays, and sends the client's own bytes upstream (only the model
value renamed). These tests hold it to that with 1 MB+ bodies full of what trips a
shortcut: escapes, non-ASCII text, ``"model"`` inside strings and nested objects, the model
key first or last; bad bodies still get a 400 in the client's dialect naming the field.
"""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

import aiohttp
import pytest

from chromagent_proxy import BackendConfig, BackendProvider
from chromagent_proxy.backends.registry import DefaultBackendRegistry
from chromagent_proxy.schema.openai import ChatCompletionRequest
from tests.support.gateway import run_gateway
from tests.support.routing import backend, completion, error_reply, hits, sse
from tests.support.upstream import FakeUpstream, json_reply, stream_reply

# Prose with every kind of JSON escape, non-ASCII (2-, 3- and 4-byte UTF-8) and text that
# looks like the key the gateway rewrites.
LINE = 'He said "model": "gpt-4o" — {"model": "x"} \\ path\\to\\file é 日本 😀\t\u0001\n'
# ≈ 1.007 MB encoded; under 1 MiB, past which aiohttp's client warns that a bytes body may
# block its loop (a ResourceWarning, an error under pytest).
REPEAT = 10_600


def big_text() -> str:
    return LINE * REPEAT


def odd_body(model_first: bool, nested: bool = True, **extra: Any) -> bytes:
    """A hand-assembled body (so the spacing and escapes are this client's own, not what a
    re-encoder would write) with a nested ``"model"`` key and the model first or last."""
    messages = json.dumps(
        [
            {"role": "system", "content": big_text()},
            {"role": "user", "content": [{"type": "text", "text": 'say "model"'}]},
        ],
        ensure_ascii=False,  # raw UTF-8 next to the escapes
    )
    fields = [
        f'"messages" :{messages}',
        f'"metadata": {{"{"model" if nested else "m"}": "gpt-4o", "note": "nested, not routed"}}',
        '"temperature":0.50',
        *(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in extra.items()),
    ]
    model = '"model" :\t"gpt-4o"'
    fields = [model, *fields] if model_first else [*fields, model]
    return ("{ " + ",\n ".join(fields) + " }").encode()


def renamed(body: bytes) -> bytes:
    """``body`` with only the top-level model value renamed, byte for byte otherwise."""
    return body.replace(b'"model" :\t"gpt-4o"', b'"model" :\t"gpt-4o-2024-08-06"')


def cfg(up: FakeUpstream, *backends: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"backends": list(backends), "maxBodyBytes": 8 * 1024 * 1024, **extra}


MAPPING = {"gpt-4o": "gpt-4o-2024-08-06"}


async def post(url: str, body: bytes, path: str = "/v1/chat/completions") -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"}
    # A file-like body: aiohttp's client warns when given more than 1 MiB of raw bytes.
    async with (
        aiohttp.ClientSession() as s,
        s.post(f"{url}{path}", data=io.BytesIO(body), headers=headers) as r,
    ):
        return r.status, await r.read()


@pytest.mark.parametrize("model_first", [True, False])
async def test_a_big_odd_body_reaches_the_upstream_with_only_the_model_renamed(
    upstream: FakeUpstream, model_first: bool
) -> None:
    body = odd_body(model_first)
    assert 1_000_000 < len(body) < 2**20
    async with run_gateway(cfg(upstream, backend(upstream, "a", modelMapping=MAPPING))) as gw:
        status, reply = await post(gw.url, body)
    assert status == 200, reply[:300]
    assert json.loads(reply)["choices"][0]["message"]["content"] == "a"
    sent = upstream.received[0].body
    assert sent == renamed(body)
    assert json.loads(sent)["messages"][0]["content"] == big_text()


async def test_a_big_stream_relays_the_same_bytes_and_its_answer(upstream: FakeUpstream) -> None:
    body = odd_body(False, stream=True, stream_options={"include_usage": True})
    async with run_gateway(cfg(upstream, backend(upstream, "a", modelMapping=MAPPING))) as gw:
        status, reply = await post(gw.url, body)
    assert status == 200
    assert reply == sse("a")
    assert upstream.received[0].body == renamed(body)


@pytest.mark.parametrize("stream", [False, True])
async def test_failover_before_the_first_byte_sends_the_same_bytes_again(
    upstream: FakeUpstream, stream: bool
) -> None:
    """The first backend fails before any byte reached the client: the second gets the
    client's body exactly as the first did, though the request path let the decoded
    messages go when it relayed to the first."""
    body = odd_body(True, stream=stream)
    config = cfg(
        upstream,
        backend(upstream, "a", error_reply(503), modelMapping=MAPPING),
        backend(upstream, "b", modelMapping=MAPPING),
    )
    async with run_gateway(config) as gw:
        status, reply = await post(gw.url, body)
    assert status == 200, reply[:300]
    assert (reply == sse("b")) if stream else json.loads(reply) == completion("b")
    assert hits(upstream, "a") == 1 and hits(upstream, "b") == 1
    sent = [r.body for r in upstream.received]
    expected = renamed(body)
    if stream:  # the gateway asks every upstream for the usage chunk
        expected = b'{"stream_options":{"include_usage":true},' + expected[1:]
    assert sent == [expected, expected]


class Inspecting(BackendProvider):
    """A custom backend that answers with what it was given."""

    async def chat_completion(
        self, request: ChatCompletionRequest, config: BackendConfig
    ) -> dict[str, Any]:
        first = request.messages[0].content
        return completion(f"{request.model} {len(request.messages)} {first == big_text()}")


async def test_failover_from_the_relay_to_a_custom_backend_gets_the_decoded_request(
    upstream: FakeUpstream,
) -> None:
    """A custom backend after a failed relay still gets the whole decoded request (decoded
    again from the body, which the relay sent as bytes)."""
    registry = DefaultBackendRegistry()
    registry.register_custom_backend("inspecting", Inspecting)
    config = cfg(
        upstream,
        backend(upstream, "a", error_reply(503), modelMapping=MAPPING),
        {"id": "i", "type": "inspecting", "modelMapping": MAPPING},
    )
    async with run_gateway(config, registry) as gw:
        status, reply = await post(gw.url, odd_body(False))
    assert status == 200, reply[:300]
    assert hits(upstream, "a") == 1
    assert json.loads(reply)["choices"][0]["message"]["content"] == "gpt-4o-2024-08-06 2 True"


@pytest.mark.parametrize(
    ("dup", "key"),
    [
        (b'"model": "other"', "model"),
        (b'"mod\\u0065l": "gpt-4o"', "model"),
        (b'"stream": true', "stream"),
    ],
)
@pytest.mark.parametrize("model_first", [True, False])
async def test_a_big_body_with_a_repeated_routed_key_is_a_400(
    upstream: FakeUpstream, dup: bytes, key: str, model_first: bool
) -> None:
    body = odd_body(model_first, stream=False)
    body = body[:-1] + b", " + dup + b"}"
    async with run_gateway(cfg(upstream, backend(upstream, "a", modelMapping=MAPPING))) as gw:
        status, reply = await post(gw.url, body)
    assert status == 400
    err = json.loads(reply)["error"]
    assert err["message"] == f"'{key}' appears more than once in the request body; send it once"
    assert err["param"] == key
    assert upstream.received == []


async def test_a_big_body_with_another_key_repeated_is_relayed_like_a_small_one(
    upstream: FakeUpstream,
) -> None:
    small = b'{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"n":1,"n":1}'
    # No other "model" key anywhere: with one, the gateway refuses any repeated key, as it
    # does for a small body (test_request_limits.py).
    big = odd_body(True, nested=False)[:-1] + b', "n": 1, "n": 1}'
    async with run_gateway(cfg(upstream, backend(upstream, "a", modelMapping=MAPPING))) as gw:
        assert (await post(gw.url, small))[0] == 200
        assert (await post(gw.url, big))[0] == 200
    assert [r.body for r in upstream.received] == [
        small.replace(b'"gpt-4o"', b'"gpt-4o-2024-08-06"'),
        renamed(big),
    ]


@pytest.mark.parametrize(
    ("patch", "param", "says"),
    [
        ({"role": 5}, "messages[1].role", "Expected `str`, got `int`"),
        ({"role": "robot"}, "messages[1].role", "must be one of"),
        ({"content": {"x": 1}}, "messages[1].content", "Expected `str | array | null`"),
    ],
)
async def test_a_big_bad_body_is_the_same_400_as_a_small_one(
    upstream: FakeUpstream, patch: dict[str, Any], param: str, says: str
) -> None:
    def bad(text: str) -> bytes:
        msgs = [{"role": "system", "content": text}, {"role": "user", "content": "hi", **patch}]
        return json.dumps({"model": "gpt-4o", "messages": msgs}, ensure_ascii=False).encode()

    async with run_gateway(cfg(upstream, backend(upstream, "a", modelMapping=MAPPING))) as gw:
        replies = [await post(gw.url, bad(text)) for text in ("short", big_text())]
    errors = []
    for status, reply in replies:
        assert status == 400
        errors.append(json.loads(reply)["error"])
    assert errors[0] == errors[1]
    assert errors[0]["param"] == param and says in errors[0]["message"]
    assert upstream.received == []


async def test_a_body_over_the_limit_is_a_413_in_each_dialect(upstream: FakeUpstream) -> None:
    body = odd_body(True)
    messages = json.dumps(
        {"model": "gpt-4o", "max_tokens": 5, "messages": [{"role": "user", "content": big_text()}]}
    ).encode()
    config = cfg(upstream, backend(upstream, "a", json_reply({}), modelMapping=MAPPING))
    config["maxBodyBytes"] = 1_000_000
    async with run_gateway(config) as gw:
        chat = await post(gw.url, body)
        anthropic = await post(gw.url, messages, "/v1/messages")
        ok = await post(gw.url, b'{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}')
    assert chat[0] == 413
    assert "maxBodyBytes" in json.loads(chat[1])["error"]["message"]
    assert anthropic[0] == 413
    err = json.loads(anthropic[1])
    assert err["type"] == "error" and "maxBodyBytes" in err["error"]["message"]
    assert ok[0] == 200  # the gateway carries on
    assert len(upstream.received) == 1


async def test_a_stream_still_completes_after_the_request_is_let_go(
    upstream: FakeUpstream,
) -> None:
    """Once the first part is out the gateway drops the body and the decoded request; the
    rest of the stream, the usage chunk and [DONE] still arrive."""
    pieces = [sse("x")[i : i + 40] for i in range(0, len(sse("x")), 40)]
    upstream.route("/slow/v1/chat/completions", stream_reply(pieces, delay=0.01))
    config = cfg(
        upstream,
        {
            "id": "slow",
            "type": "openai",
            "baseUrl": f"{upstream.url}/slow/v1",
            "modelMapping": MAPPING,
        },
    )
    body = odd_body(False, stream=True)
    async with run_gateway(config) as gw:
        status, reply = await post(gw.url, body)
    assert status == 200
    assert reply == sse("x")


async def post_chunked(url: str, body: bytes, cuts: list[int]) -> tuple[int, bytes]:
    """``body`` sent with ``Transfer-Encoding: chunked``, one HTTP chunk per piece."""

    async def pieces() -> Any:
        start = 0
        for end in [*cuts, len(body)]:
            yield body[start:end]
            start = end

    async with (
        aiohttp.ClientSession() as s,
        s.post(
            f"{url}/v1/chat/completions",
            data=pieces(),
            headers={"Content-Type": "application/json"},
        ) as r,
    ):
        return r.status, await r.read()


async def test_a_chunked_upload_is_read_whole_and_held_to_the_limit(upstream: FakeUpstream) -> None:
    """Bodies a client streams in HTTP chunks (no Content-Length) of odd sizes: read part by
    part to the end, renamed like any other; over maxBodyBytes a 413, and the gateway
    carries on."""
    body = odd_body(False)
    cuts = [1, 7_000, 7_001, 300_000, len(body) - 2]
    config = cfg(upstream, backend(upstream, "a", modelMapping=MAPPING))
    async with run_gateway(config) as gw:
        status, reply = await post_chunked(gw.url, body, cuts)
        assert status == 200, reply[:300]
        assert upstream.received[0].body == renamed(body)
    config["maxBodyBytes"] = 1_000_000
    async with run_gateway(config) as gw:
        status, reply = await post_chunked(gw.url, body, cuts)
        assert status == 413
        assert "maxBodyBytes" in json.loads(reply)["error"]["message"]
        small = b'{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}'
        status, _ = await post_chunked(gw.url, small, [10, 11])
        assert status == 200
    assert len(upstream.received) == 2


async def test_a_chunk_whose_end_arrives_late_does_not_end_the_body(
    upstream: FakeUpstream,
) -> None:
    """An HTTP chunk's data read before its closing CRLF arrives: the reader then sees an
    empty end-of-chunk, which is not the end of the body."""
    body = b'{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}'
    config = cfg(upstream, backend(upstream, "a", modelMapping=MAPPING))
    async with run_gateway(config) as gw:
        host, port = gw.url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}:{port}\r\n".encode()
            + b"Connection: close\r\nContent-Type: application/json\r\n"
            + b"Transfer-Encoding: chunked\r\n\r\n"
            + f"{20:x}\r\n".encode()
            + body[:20]
        )
        await writer.drain()
        await asyncio.sleep(0.2)  # the gateway reads the first chunk's data alone
        writer.write(b"\r\n" + f"{len(body) - 20:x}\r\n".encode() + body[20:] + b"\r\n0\r\n\r\n")
        await writer.drain()
        reply = await reader.read()
        writer.close()
    assert reply.startswith(b"HTTP/1.1 200"), reply[:300]
    assert upstream.received[0].body == body.replace(b'"gpt-4o"', b'"gpt-4o-2024-08-06"')
