"""Per-request image bounds, end to end: official SDK → real gateway → guarded fetcher.

``media.maxImagesPerRequest`` (counted before anything is decoded),
``media.maxTotalBytes`` (data URLs and fetched bytes together) and
``media.fetchConcurrency`` (one request's share of the fetcher's pool, so another
client's image is fetched while a request with many slow images waits), and
``inlineImages`` letting only the part types the gateway vets reach the upstream.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest

from chromagent_proxy import GatewayServer
from chromagent_proxy.errors import ConfigError
from chromagent_proxy.media import parse_data_url
from tests.support.gateway import run_gateway, sdk
from tests.support.image_server import PNG, CountingServer, Writer, reply
from tests.support.upstream import FakeUpstream, json_reply

ANSWER = {
    "candidates": [
        {"content": {"role": "model", "parts": [{"text": "a cat"}]}, "finishReason": "STOP"}
    ],
    "usageMetadata": {"promptTokenCount": 1, "candidatesTokenCount": 1, "totalTokenCount": 2},
}
OPENAI_ANSWER = {
    "id": "c1",
    "object": "chat.completion",
    "created": 1,
    "model": "m",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
    ],
}


def data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def image_msg(*urls: str) -> Any:
    parts: list[dict[str, Any]] = [{"type": "text", "text": "What is this?"}]
    parts += [{"type": "image_url", "image_url": {"url": u}} for u in urls]
    return [{"role": "user", "content": parts}]


def gemini_config(up: FakeUpstream, **media: Any) -> dict[str, Any]:
    return {
        "backends": [{"id": "g", "type": "gemini", "apiKey": "k", "baseUrl": f"{up.url}/v1beta"}],
        "defaultBackend": "g",
        "media": {"allowCidrs": ["127.0.0.1/32"], **media},
    }


@pytest.fixture
async def images() -> AsyncIterator[CountingServer]:
    srv = await CountingServer().start()
    srv.routes["/cat.png"] = reply(200, PNG)
    yield srv
    await srv.close()


async def bad_request(client: openai.AsyncOpenAI, messages: Any) -> dict[str, Any]:
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(model="gemini-2.5-flash", messages=messages)
    body = info.value.body
    assert isinstance(body, dict)
    return body


async def test_image_count_cap_applies_before_anything_is_decoded(upstream: FakeUpstream) -> None:
    upstream.route("*", json_reply(ANSWER))
    async with run_gateway(gemini_config(upstream, maxImagesPerRequest=3)) as gw:
        client = sdk(gw)
        ok = await client.chat.completions.create(
            model="gemini-2.5-flash", messages=image_msg(*[data_url(PNG)] * 3)
        )
        assert ok.choices[0].message.content == "a cat"
        err = await bad_request(client, image_msg(*[data_url(PNG)] * 4))
        assert err["code"] == "too_many_images"
        assert err["param"] == "messages[0].content[4]"
        assert "3" in err["message"] and "maxImagesPerRequest" in err["message"]
    assert len(upstream.received) == 1


async def test_100k_tiny_data_urls_are_refused_by_count_without_decoding(
    upstream: FakeUpstream,
) -> None:
    upstream.route("*", json_reply(ANSWER))
    # Not valid base64: had any of them been decoded first, the error would say so.
    tiny = "data:image/png;base64,!!"
    body = json.dumps({"model": "gemini-2.5-flash", "messages": image_msg(*[tiny] * 100_000)})
    async with run_gateway(gemini_config(upstream)) as gw:
        # Raw HTTP: the SDK itself takes most of a minute to build 100,000 parts.
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{gw.url}/v1/chat/completions",
                # A stream: aiohttp warns (ResourceWarning) that large raw bytes block its loop.
                data=io.BytesIO(body.encode()),
                headers={"Content-Type": "application/json", "Authorization": "Bearer k"},
            ) as resp,
        ):
            assert resp.status == 400
            err = (await resp.json())["error"]
        assert err["code"] == "too_many_images"
        assert err["param"] == "messages[0].content[101]"  # the default cap is 100
        # The gateway is still serving.
        ok = await sdk(gw).chat.completions.create(
            model="gemini-2.5-flash", messages=image_msg(data_url(PNG))
        )
        assert ok.choices[0].message.content == "a cat"
    assert len(upstream.received) == 1


async def test_total_image_bytes_cap_counts_data_urls_and_fetched_images(
    upstream: FakeUpstream, images: CountingServer
) -> None:
    upstream.route("*", json_reply(ANSWER))
    big = PNG + b"\0" * 3000  # ~3 KB each
    images.routes["/big.png"] = reply(200, big)
    images.routes["/big-unsized.png"] = reply(200, big, content_length=False)
    async with run_gateway(gemini_config(upstream, maxTotalBytes=8000)) as gw:
        client = sdk(gw)
        # Two images fit; a third one (a data URL) goes over.
        ok = await client.chat.completions.create(
            model="gemini-2.5-flash", messages=image_msg(data_url(big), images.url("/big.png"))
        )
        assert ok.choices[0].message.content == "a cat"
        err = await bad_request(
            client, image_msg(data_url(big), data_url(big + b"\1"), data_url(big + b"\2"))
        )
        assert err["code"] == "images_too_large"
        assert err["param"] == "messages[0].content[3].image_url"
        assert "8000" in err["message"] and "maxTotalBytes" in err["message"]
        # Fetched images count too, with or without a Content-Length.
        for path in ("/big.png", "/big-unsized.png"):
            err = await bad_request(
                client,
                image_msg(data_url(big), data_url(big + b"\1"), images.url(path)),
            )
            assert err["code"] == "images_too_large", path
            assert err["param"] == "messages[0].content[3].image_url"
        # One URL three times is fetched once but sent upstream three times: it counts thrice.
        fetched = len(images.requests)
        err = await bad_request(client, image_msg(*[images.url("/big.png")] * 3))
        assert err["code"] == "images_too_large"
        assert err["param"] == "messages[0].content[3].image_url"
        assert len(images.requests) == fetched + 1
    assert len(upstream.received) == 1


async def test_one_request_with_many_slow_images_does_not_starve_another_client(
    upstream: FakeUpstream, images: CountingServer
) -> None:
    upstream.route("*", json_reply(ANSWER))
    release = asyncio.Event()
    active = 0
    peak = 0

    async def slow(writer: Writer) -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        try:
            await release.wait()
            await reply(200, PNG)(writer)
        finally:
            active -= 1

    for i in range(40):
        images.routes[f"/slow{i}.png"] = slow
    async with run_gateway(gemini_config(upstream, fetchConcurrency=3)) as gw:
        client = sdk(gw)
        # 40 slow images (on the same host as the other client's image): more than the
        # fetcher's 8 connections per host and a good part of its 64 in all.
        hog = asyncio.create_task(
            client.chat.completions.create(
                model="gemini-2.5-flash",
                messages=image_msg(*[images.url(f"/slow{i}.png") for i in range(40)]),
            )
        )
        while active < 3 and not hog.done():
            await asyncio.sleep(0.01)
        # Another client's small image is fetched and answered while all 40 still wait.
        other = await client.chat.completions.create(
            model="gemini-2.5-flash", messages=image_msg(images.url("/cat.png"))
        )
        assert other.choices[0].message.content == "a cat"
        assert not hog.done()
        assert active == 3 and peak == 3  # the hog never held more than its share
        release.set()
        done = await hog
        assert done.choices[0].message.content == "a cat"
    assert peak == 3
    assert len([r for r in images.requests if r.path.startswith("/slow")]) == 40


def test_a_data_url_is_decoded_once_from_the_request_text() -> None:
    image = PNG + bytes(range(256)) * 16_384  # 4 MB
    url = data_url(image)
    tracemalloc.start()
    try:
        decoded = parse_data_url(url, "p", max_bytes=len(image))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert decoded.data == image
    # The decoded image plus at most one copy of its base64 text (4/3 of it): b64decode's
    # extra bytes copy of the text and a partition() copy would be two more.
    assert peak < len(image) * 2.5


# -- inlineImages: only part types the gateway handles reach a self-hosted upstream

URL_PARTS: list[dict[str, Any]] = [
    {"type": "video_url", "video_url": {"url": "http://10.0.0.1/v.mp4"}},
    {"type": "audio_url", "audio_url": {"url": "http://10.0.0.1/a.wav"}},
    {"type": "file_url", "file_url": {"url": "http://169.254.169.254/latest"}},
    {"type": "image_pil", "image_pil": "http://10.0.0.1/i.png"},
    {"type": "image_embeds", "image_embeds": "http://10.0.0.1/e.bin"},
    {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
    {"type": "file", "file": {"file_data": "data:application/pdf;base64,AAAA"}},
]


def openai_config(up: FakeUpstream, inline: bool) -> dict[str, Any]:
    return {
        "backends": [
            {"id": "vllm", "type": "openai", "baseUrl": f"{up.url}/v1", "inlineImages": inline}
        ],
        "defaultBackend": "vllm",
        "media": {"allowCidrs": ["127.0.0.1/32"]},
    }


@pytest.mark.parametrize("part", URL_PARTS, ids=lambda p: str(p["type"]))
async def test_inline_images_refuses_part_types_it_cannot_vet(
    upstream: FakeUpstream, part: dict[str, Any]
) -> None:
    upstream.route("/v1/chat/completions", json_reply(OPENAI_ANSWER))
    messages: Any = [{"role": "user", "content": [{"type": "text", "text": "hi"}, part]}]
    async with run_gateway(openai_config(upstream, inline=True)) as gw:
        with pytest.raises(openai.BadRequestError) as info:
            await sdk(gw).chat.completions.create(model="m", messages=messages)
    err = info.value.body
    assert isinstance(err, dict)
    assert err["param"] == "messages[0].content[1].type"
    assert repr(part["type"]) in err["message"] and "'vllm'" in err["message"]
    assert upstream.received == []
    # Without inlineImages the relay passes the part on unchanged (the operator's choice).
    async with run_gateway(openai_config(upstream, inline=False)) as gw:
        ok = await sdk(gw).chat.completions.create(model="m", messages=messages)
    assert ok.choices[0].message.content == "ok"
    assert upstream.received[0].json["messages"][0]["content"][1] == part


async def test_inline_images_still_passes_text_images_and_refusals(
    upstream: FakeUpstream, images: CountingServer
) -> None:
    upstream.route("/v1/chat/completions", json_reply(OPENAI_ANSWER))
    messages: Any = [
        {"role": "user", "content": image_msg(images.url("/cat.png"), data_url(PNG))[0]["content"]},
        {"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}]},
        {"role": "user", "content": "again"},
    ]
    async with run_gateway(openai_config(upstream, inline=True)) as gw:
        ok = await sdk(gw).chat.completions.create(model="m", messages=messages)
    assert ok.choices[0].message.content == "ok"
    sent = upstream.received[0].json["messages"]
    assert [p["image_url"]["url"] for p in sent[0]["content"][1:]] == [data_url(PNG)] * 2
    assert sent[1]["content"] == [{"type": "refusal", "refusal": "no"}]


@pytest.mark.parametrize("key", ["maxImagesPerRequest", "maxTotalBytes", "fetchConcurrency"])
def test_limits_below_one_stop_start_up_naming_the_key(key: str) -> None:
    with pytest.raises(ConfigError, match=rf"config \$\.media\.{key}: Expected `int` >= 1"):
        GatewayServer({"backends": [{"id": "m", "type": "mock"}], "media": {key: 0}})
