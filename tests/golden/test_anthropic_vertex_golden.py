"""vertex-anthropic golden cases: the recorded Messages traffic served at the Vertex paths.

Claude on Vertex answers byte-for-byte like the Messages API (fixtures/vertex-anthropic/README.md),
so every anthropic recording is replayed by a fake Vertex server at
``…/publishers/anthropic/models/{model}:streamRawPredict`` (or ``:rawPredict``), in 7-byte
pieces, through the real gateway; what the client receives must equal the pure translation.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from chromagent_proxy.backends.anthropic.stream import answer, decode_message
from tests.golden.test_anthropic_golden import MESSAGES, STREAMS, replay, summarize
from tests.support.gateway import run_gateway
from tests.support.translate import chat_completion
from tests.support.upstream import FakeUpstream, json_reply, stream_reply

MODEL = "claude-sonnet-4-5@20250929"
PATH = f"/v1/projects/p-1/locations/global/publishers/anthropic/models/{MODEL}"


def config(up: FakeUpstream) -> dict[str, Any]:
    return {
        "backends": [
            {
                "id": "vx",
                "type": "vertex-anthropic",
                "baseUrl": f"{up.url}/v1",
                "projectId": "p-1",
                "location": "global",
                "apiKey": "ya29.test",
                "modelMapping": {"claude": MODEL},
            }
        ],
        "defaultBackend": "vx",
    }


async def post(gw: Any, body: dict[str, Any]) -> tuple[int, bytes]:
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            f"{gw.url}/v1/chat/completions", json=body, headers={"x-request-id": "golden"}
        ) as resp,
    ):
        return resp.status, await resp.read()


def sse_payloads(raw: bytes) -> list[dict[str, Any]]:
    events = [e for e in raw.decode().split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    return [json.loads(e.removeprefix("data: ")) for e in events[:-1]]


@pytest.mark.parametrize(("name", "body"), STREAMS, ids=[n for n, _ in STREAMS])
async def test_vertex_stream(upstream: FakeUpstream, name: str, body: bytes) -> None:
    upstream.route(f"{PATH}:streamRawPredict", stream_reply(body, split=7))
    async with run_gateway(config(upstream)) as gw:
        status, raw = await post(
            gw,
            {
                "model": "claude",
                "messages": [{"role": "user", "content": "hi"}],
                "stream": True,
                "stream_options": {"include_usage": True},
            },
        )
    assert status == 200
    got = sse_payloads(raw)
    want = replay(body, None)
    assert len({c["created"] for c in got}) == 1
    for c in want:
        c["id"], c["created"] = "chatcmpl-golden", got[0]["created"]
    # The same answer; how tool call starts and arguments share chunks follows the reads.
    assert summarize(got) == summarize(want)
    assert got[0] == want[0] and got[-2:] == want[-2:]
    sent = upstream.received[0]
    assert sent.path == f"{PATH}:streamRawPredict"
    assert sent.json["anthropic_version"] == "vertex-2023-10-16" and "model" not in sent.json


@pytest.mark.parametrize(("name", "body"), MESSAGES, ids=[n for n, _ in MESSAGES])
async def test_vertex_message(upstream: FakeUpstream, name: str, body: bytes) -> None:
    upstream.route(f"{PATH}:rawPredict", json_reply(body))
    async with run_gateway(config(upstream)) as gw:
        status, raw = await post(
            gw, {"model": "claude", "messages": [{"role": "user", "content": "hi"}]}
        )
    assert status == 200
    got = json.loads(raw)
    want = chat_completion(
        answer(decode_message(body)), id="chatcmpl-golden", created=got["created"], model=MODEL
    )
    assert got == want
    assert upstream.received[0].path == f"{PATH}:rawPredict"
