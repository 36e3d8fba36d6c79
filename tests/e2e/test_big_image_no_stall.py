"""A 5 MB data-URL image going to a translating backend does not stall other streams: the
gateway takes the media type from the first bytes of the base64 and passes the client's
base64 through unchanged (no decode / re-encode on the event loop). Shown as order, not as a
time bound: a concurrent stream keeps delivering chunks while each image request is in flight
(a loop blocked for the whole request would deliver none). The largest gap between the
stream's chunks is printed as a measurement (``pytest -s``), not asserted."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import time
from typing import Any

import aiohttp

from tests.support.gateway import run_gateway
from tests.support.upstream import FakeUpstream, json_reply, stream_reply

PNG = b"\x89PNG\r\n\x1a\n" + os.urandom(5 * 1024 * 1024)
PACE = 0.005  # the upstream sends a chunk every 5 ms


def _gemini_events(n: int) -> list[bytes]:
    out = []
    for i in range(n):
        cand: dict[str, Any] = {"content": {"role": "model", "parts": [{"text": f"w{i} "}]}}
        if i == n - 1:
            cand["finishReason"] = "STOP"
        out.append(f"data: {json.dumps({'candidates': [cand]})}\n\n".encode())
    return out


async def test_five_megabyte_image_does_not_stall_a_concurrent_stream() -> None:
    up = await FakeUpstream().start()
    up.route(
        "/v1beta/models/gem:streamGenerateContent", stream_reply(_gemini_events(300), delay=PACE)
    )
    answer = {
        "candidates": [
            {"content": {"role": "model", "parts": [{"text": "a png"}]}, "finishReason": "STOP"}
        ],
        "usageMetadata": {"promptTokenCount": 258, "candidatesTokenCount": 2},
    }
    up.route("/v1beta/models/gem:generateContent", json_reply(answer))
    cfg = {
        "backends": [
            {"id": "g", "type": "gemini", "apiKey": "k", "baseUrl": f"{up.url}/v1beta",
             "modelMapping": {"gem": "gem"}}
        ],
        "maxBodyBytes": 16 * 1024 * 1024,
    }  # fmt: skip
    data_url = "data:image/png;base64," + base64.b64encode(PNG).decode()
    image_body = {
        "model": "gem",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": data_url}},
                ],
            }
        ],
    }
    try:
        async with run_gateway(cfg) as gw, aiohttp.ClientSession() as s:
            gaps: list[float] = []
            chunks = 0  # stream chunks received so far
            during: list[int] = []  # chunks that arrived while each image request ran

            async def stream() -> None:
                body = {
                    "model": "gem",
                    "stream": True,
                    "messages": [{"role": "user", "content": "go"}],
                }
                async with s.post(f"{gw.url}/v1/chat/completions", json=body) as r:
                    last = time.perf_counter()
                    async for _ in r.content.iter_any():
                        nonlocal chunks
                        chunks += 1
                        now = time.perf_counter()
                        gaps.append(now - last)
                        last = now

            payload = json.dumps(image_body).encode()

            async def images() -> None:
                await asyncio.sleep(0.2)  # the stream is flowing
                for _ in range(3):
                    before = chunks
                    # A file-like body: aiohttp sends it in pieces (raw bytes this size warn).
                    async with s.post(
                        f"{gw.url}/v1/chat/completions",
                        data=io.BytesIO(payload),
                        headers={"Content-Type": "application/json"},
                    ) as r:
                        assert r.status == 200, await r.text()
                    during.append(chunks - before)

            await asyncio.gather(stream(), images())
        sent = [r for r in up.received if r.path.endswith(":generateContent")]
        assert len(sent) == 3
        inline = sent[0].json["contents"][0]["parts"][1]["inlineData"]
        # The client's base64, byte for byte, with the type read from its first bytes.
        assert inline == {"mimeType": "image/png", "data": data_url.partition(",")[2]}
        # The stream flowed while the 7 MB requests were handled (each takes several of the
        # upstream's 5 ms beats even on a fast machine) and ended whole.
        assert sum(during) >= len(during), during
        assert chunks >= 2 and len(gaps) == chunks
        print(f"largest gap between chunks: {max(gaps[1:]) * 1000:.1f} ms; per image: {during}")
    finally:
        await up.close()
