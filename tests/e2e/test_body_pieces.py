"""A renamed body is sent as pieces, never joined (core/body.py, issue 20): what reaches the
upstream must still be exactly the client's bytes with only the model value renamed (and
``stream_options.include_usage`` added first when the gateway asks for the usage chunk).

Bodies of ≈ 400 KB cross the upstream client's WRITE_PIECE (256 KB), so the pieces are
written in groups; the model key first (the small piece opens the body) and last (the
OpenAI SDKs' order: the large view comes first). Every relay that renames is covered: chat
(JSON and stream), Anthropic Messages, Responses and embeddings; and the upstream client
itself with pieces of every shape around its group boundary.
"""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

import aiohttp
import pytest
import uvloop

from chromagent_proxy.backends.h1client import WRITE_PIECE
from chromagent_proxy.backends.h1pool import H1Client
from chromagent_proxy.core.body import Pieces
from tests.e2e.test_upstream_client import RawServer, _read, ok, request
from tests.support.anthropic_sdk import AMODEL, MODEL, anthropic_cfg
from tests.support.gateway import run_gateway
from tests.support.routing import backend, completion, sse
from tests.support.upstream import FakeUpstream, json_reply, stream_reply

MAPPING = {"gpt-4o": "gpt-4o-2024-08-06"}
# Escapes, non-ASCII and a quoted "model" in the prompt: the bytes a re-encoder would change.
LINE = 'He said "model": "gpt-4o" \\ é 日本 😀\t\n'
PROMPT = LINE * 9_000  # ≈ 400 KB encoded


def body(model: str, first: bool, **extra: Any) -> bytes:
    """A hand-spaced body (not what any encoder writes) with the model first or last."""
    fields = [
        f'"messages" : [ {{"role": "user", "content": {json.dumps(PROMPT, ensure_ascii=False)}}} ]',
        *(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in extra.items()),
    ]
    key = f'"model" :  "{model}"'
    fields = [key, *fields] if first else [*fields, key]
    return ("\n{ " + ",\n  ".join(fields) + " }").encode()


def rename(raw: bytes, old: str, new: str) -> bytes:
    out = raw.replace(f'"model" :  "{old}"'.encode(), f'"model" :  "{new}"'.encode())
    assert out.count(new.encode()) == 1
    return out


async def post(url: str, raw: bytes, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            url,
            data=io.BytesIO(raw),
            headers={"Content-Type": "application/json", **(headers or {})},
        ) as r,
    ):
        return r.status, await r.read()


@pytest.mark.parametrize("first", [True, False])
@pytest.mark.parametrize(
    ("extra", "usage_added"),
    [
        ({}, False),
        ({"stream": True}, True),  # the gateway asks for the usage chunk itself
        ({"stream": True, "stream_options": {"include_usage": True}}, False),
    ],
)
async def test_chat_relay_sends_the_clients_bytes_with_only_the_model_renamed(
    upstream: FakeUpstream, first: bool, extra: dict[str, Any], usage_added: bool
) -> None:
    raw = body("gpt-4o", first, **extra)
    assert 300_000 < len(raw) < 2**20
    config = {"backends": [backend(upstream, "a", modelMapping=MAPPING)], "defaultBackend": "a"}
    async with run_gateway(config) as gw:
        status, reply = await post(f"{gw.url}/v1/chat/completions", raw)
    assert status == 200, reply[:300]
    if extra:
        assert reply == sse("a")
    else:
        assert json.loads(reply) == completion("a")
    expected = rename(raw, "gpt-4o", "gpt-4o-2024-08-06")
    if usage_added:
        expected = b'\n{"stream_options":{"include_usage":true}, ' + expected[3:]
    assert upstream.received[0].body == expected
    assert json.loads(expected)["messages"][0]["content"] == PROMPT


async def test_a_small_renamed_stream_body_is_exact_too(upstream: FakeUpstream) -> None:
    raw = b'{"messages":[{"role":"user","content":"hi"}],"stream":true,"model":"gpt-4o"}'
    config = {"backends": [backend(upstream, "a", modelMapping=MAPPING)], "defaultBackend": "a"}
    async with run_gateway(config) as gw:
        status, reply = await post(f"{gw.url}/v1/chat/completions", raw)
    assert status == 200 and reply == sse("a")
    assert upstream.received[0].body == (
        b'{"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}],'
        b'"stream":true,"model":"gpt-4o-2024-08-06"}'
    )


@pytest.mark.parametrize("renamed", [True, False])
async def test_a_stream_with_stream_options_null_still_asks_for_the_usage(
    upstream: FakeUpstream, renamed: bool
) -> None:
    # Some clients send every unset option as null. The option put in front of the body
    # would lose to the client's later null (the last key wins in most parsers), and the
    # stream's tokens would go uncounted: the body is re-encoded with the option instead.
    raw = b'{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":null}'
    mapping = MAPPING if renamed else {}
    config = {"backends": [backend(upstream, "a", modelMapping=mapping)], "defaultBackend": "a"}
    async with run_gateway(config) as gw:
        status, reply = await post(f"{gw.url}/v1/chat/completions", raw)
    assert status == 200 and reply == sse("a")
    sent = json.loads(upstream.received[0].body)  # the last copy of a key wins here
    assert sent["stream_options"] == {"include_usage": True}
    assert upstream.received[0].body.count(b"stream_options") == 1
    assert sent["model"] == ("gpt-4o-2024-08-06" if renamed else "gpt-4o")
    assert sent["messages"] == [{"role": "user", "content": "hi"}]


MESSAGE = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": AMODEL,
    "content": [{"type": "text", "text": "hi"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 3, "output_tokens": 1},
}


@pytest.mark.parametrize("first", [True, False])
async def test_anthropic_messages_relay_renames_only_the_model_bytes(
    upstream: FakeUpstream, first: bool
) -> None:
    upstream.route("/v1/messages", json_reply(MESSAGE))
    raw = body(MODEL, first, max_tokens=64)
    async with run_gateway(anthropic_cfg(upstream)) as gw:
        status, reply = await post(
            f"{gw.url}/v1/messages", raw, {"anthropic-version": "2023-06-01"}
        )
    assert status == 200, reply[:300]
    assert json.loads(reply)["content"] == [{"type": "text", "text": "hi"}]
    assert upstream.received[0].body == rename(raw, MODEL, AMODEL)


RESPONSE = {
    "id": "resp_1",
    "object": "response",
    "created_at": 1,
    "status": "completed",
    "model": "gpt-5",
    "output": [
        {
            "type": "message",
            "id": "msg_1",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "hi", "annotations": []}],
        }
    ],
    "usage": {"input_tokens": 3, "output_tokens": 1, "total_tokens": 4},
}


def _responses_cfg(up: FakeUpstream) -> dict[str, Any]:
    return {
        "backends": [
            {"id": "oa", "type": "openai", "baseUrl": f"{up.url}/v1", "nativeResponses": True,
             "modelMapping": {"gpt": "gpt-5", "emb": "text-embedding-3-small"}}
        ]
    }  # fmt: skip


@pytest.mark.parametrize("first", [True, False])
async def test_responses_relay_renames_only_the_model_bytes(
    upstream: FakeUpstream, first: bool
) -> None:
    upstream.route("/v1/responses", json_reply(RESPONSE))
    raw = body("gpt", first, store=False).replace(b'"messages" :', b'"input" :')
    async with run_gateway(_responses_cfg(upstream)) as gw:
        status, reply = await post(f"{gw.url}/v1/responses", raw)
    assert status == 200, reply[:300]
    assert json.loads(reply)["output"][0]["content"][0]["text"] == "hi"
    assert upstream.received[0].body == rename(raw, "gpt", "gpt-5")


async def test_responses_stream_relay_renames_only_the_model_bytes(upstream: FakeUpstream) -> None:
    done = {"type": "response.completed", "sequence_number": 1, "response": RESPONSE}
    events = b"event: response.completed\ndata: " + json.dumps(done).encode() + b"\n\n"
    upstream.route("/v1/responses", stream_reply(events))
    raw = body("gpt", False, stream=True, store=False).replace(b'"messages" :', b'"input" :')
    async with run_gateway(_responses_cfg(upstream)) as gw:
        status, reply = await post(f"{gw.url}/v1/responses", raw)
    assert status == 200 and b"response.completed" in reply
    assert upstream.received[0].body == rename(raw, "gpt", "gpt-5")


async def test_embeddings_relay_renames_only_the_model_bytes(upstream: FakeUpstream) -> None:
    answer = {
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": [0.5, 0.25]}],
        "model": "text-embedding-3-small",
        "usage": {"prompt_tokens": 5, "total_tokens": 5},
    }
    upstream.route("/v1/embeddings", json_reply(answer))
    raw = ('{"input" : [ "a \\"model\\": x",  "é"],\n "model" :  "emb"}').encode()
    async with run_gateway(_responses_cfg(upstream)) as gw:
        status, reply = await post(f"{gw.url}/v1/embeddings", raw)
    assert status == 200, reply[:300]
    assert json.loads(reply)["data"][0]["embedding"] == [0.5, 0.25]
    assert upstream.received[0].body == rename(raw, "emb", "text-embedding-3-small")


def _shapes() -> list[list[bytes]]:
    """Pieces around the client's group boundary: one byte either side of WRITE_PIECE,
    empty pieces, many small ones, one large one in the middle."""
    big = bytes(range(256)) * (WRITE_PIECE // 256)
    return [
        [b"a", b"b"],
        [big[:-300], b"x" * 300],  # the head makes the first group overflow by its size
        [big, b"y"],
        [b"y", big, b""],
        [b"", big + big + b"z", b"q", big[:1000]],
        [b"%d," % i for i in range(120_000)],  # ≈ 790 KB in 120,000 pieces
        [big[: WRITE_PIECE // 2]] * 7,
    ]


async def test_the_upstream_client_writes_pieces_as_one_body() -> None:
    await _pieces_as_one_body()


def test_the_upstream_client_writes_pieces_as_one_body_on_uvloop() -> None:
    """The CLI runs uvloop, whose ``writelines`` sends a group's views with one writev
    instead of joining them (asyncio's default loop joins each group)."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_pieces_as_one_body())


async def _pieces_as_one_body() -> None:
    srv = RawServer(ok)
    url = await srv.start()
    client = H1Client()
    try:
        for parts in _shapes():
            views = tuple(memoryview(p) if i % 2 else p for i, p in enumerate(parts))
            assert await _read(await request(client, url, Pieces(views))) == b"hello"
            _, head, got = srv.requests[-1]
            whole = b"".join(parts)
            assert got == whole
            assert f"\r\nContent-Length: {len(whole)}\r\n".encode() in head
        assert srv.connections == 1  # every body was whole: the connection carried on
    finally:
        await client.close()
        await srv.close()
