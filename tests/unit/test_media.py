"""media.py: data URLs, signature sniffing, and collect_images (dedupe, concurrency, errors)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from chromagent_proxy.core.config import MediaConfig
from chromagent_proxy.core.errors import InvalidRequest
from chromagent_proxy.media.fetcher import GuardedFetcher
from chromagent_proxy.media.images import Image, collect_images, image_parts, parse_data_url, sniff
from chromagent_proxy.schema.openai import ChatCompletionRequest
from tests.support.image_server import GIF, JPEG, PNG, WEBP, CountingServer, Writer, reply


def data_url(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def request(*urls: str, text_first: bool = True) -> ChatCompletionRequest:
    parts: list[dict[str, Any]] = [{"type": "text", "text": "what is this?"}] if text_first else []
    parts += [{"type": "image_url", "image_url": {"url": u}} for u in urls]
    body = {"model": "m", "messages": [{"role": "user", "content": parts}]}
    return msgspec.json.decode(msgspec.json.encode(body), type=ChatCompletionRequest)


@pytest.mark.parametrize(
    ("data", "expected"),
    [(PNG, "image/png"), (JPEG, "image/jpeg"), (GIF, "image/gif"), (WEBP, "image/webp"),
     (b"GIF87a...", "image/gif"), (b"<html>", None), (b"RIFF\0\0\0\0WAVE", None), (b"", None)],
)  # fmt: skip
def test_sniff(data: bytes, expected: str | None) -> None:
    assert sniff(data) == expected


def test_data_url_decodes_once_and_the_bytes_decide_the_type() -> None:
    img = parse_data_url(data_url(PNG), "p")
    assert img == Image(PNG, "image/png")
    assert img.b64 == base64.b64encode(PNG).decode()
    # A mislabelled image keeps its bytes and gets its real type (providers reject mismatches).
    assert parse_data_url(data_url(JPEG, "image/png"), "p").media_type == "image/jpeg"
    assert parse_data_url(data_url(JPEG, "image/jpg"), "p").media_type == "image/jpeg"
    assert (
        parse_data_url("DATA:IMAGE/PNG;BASE64," + base64.b64encode(PNG).decode(), "p").data == PNG
    )


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("data:image/png,rawbytes", "base64"),
        ("data:image/png;base64", "malformed"),
        ("data:image/svg+xml;base64,PHN2Zz4=", "not supported"),
        ("data:text/html;base64,PGgxPg==", "not supported"),
        ("data:;base64,AAAA", "not supported"),
        ("data:image/png;base64,!!!notbase64!!!", "not valid base64"),
        ("data:image/png;base64," + base64.b64encode(b"<html>hello</html>").decode(), "not a png"),
    ],
)
def test_bad_data_urls(url: str, words: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_data_url(url, "messages[0].content[1].image_url")
    assert info.value.status == 400
    assert info.value.param == "messages[0].content[1].image_url"
    assert words in info.value.message


def test_data_url_size_cap() -> None:
    big = data_url(PNG + b"\0" * 2000)
    with pytest.raises(InvalidRequest, match="larger than 1000 bytes"):
        parse_data_url(big, "p", max_bytes=1000)
    assert len(parse_data_url(big, "p", max_bytes=3000).data) == len(PNG) + 2000


def test_image_parts_name_each_part() -> None:
    req = request("https://a/1.png", data_url(PNG))
    assert image_parts(req) == [
        ("https://a/1.png", "messages[0].content[1].image_url"),
        (data_url(PNG), "messages[0].content[2].image_url"),
    ]


class FakeFetcher:
    def __init__(self, delay: float = 0.0, fail: dict[str, str] | None = None) -> None:
        self.calls: list[tuple[str, str]] = []
        self.active = 0
        self.peak = 0
        self.cancelled: list[str] = []
        self.delay = delay
        self.fail = fail or {}

    async def fetch(self, url: str, param: str, budget: Any = None) -> tuple[bytes, str]:
        self.calls.append((url, param))
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            if url in self.fail:
                await asyncio.sleep(0.01)
                raise InvalidRequest(self.fail[url], param=param)
            await asyncio.sleep(self.delay)
        except asyncio.CancelledError:
            self.cancelled.append(url)
            raise
        finally:
            self.active -= 1
        return PNG, "image/png"


async def test_collect_images_fetches_each_distinct_url_once_concurrently() -> None:
    fetcher = FakeFetcher(delay=0.05)
    req = request("https://a/1.png", data_url(GIF), "https://a/2.png", "https://a/1.png")
    images = await collect_images(req, fetcher)
    assert fetcher.calls == [
        ("https://a/1.png", "messages[0].content[1].image_url"),
        ("https://a/2.png", "messages[0].content[3].image_url"),
    ]
    assert fetcher.peak == 2
    assert images == {
        "https://a/1.png": Image(PNG, "image/png"),
        data_url(GIF): Image(GIF, "image/gif"),
        "https://a/2.png": Image(PNG, "image/png"),
    }


async def test_first_failure_cancels_the_other_fetches() -> None:
    fetcher = FakeFetcher(delay=30, fail={"https://a/bad.png": "image URL returned HTTP 404"})
    req = request("https://a/slow.png", "https://a/bad.png")
    with pytest.raises(InvalidRequest) as info:
        await asyncio.wait_for(collect_images(req, fetcher), 5)
    assert info.value.param == "messages[0].content[2].image_url"
    await asyncio.sleep(0)
    assert fetcher.cancelled == ["https://a/slow.png"]


async def test_remote_urls_left_alone_when_the_upstream_fetches_them() -> None:
    fetcher = FakeFetcher()
    images = await collect_images(
        request("https://a/1.png", data_url(PNG)), fetcher, fetch_remote=False
    )
    assert list(images) == [data_url(PNG)] and fetcher.calls == []


async def test_remote_url_without_a_fetcher_is_a_clear_400() -> None:
    with pytest.raises(InvalidRequest) as info:
        await collect_images(request("HTTPS://a/1.png"), None)
    assert info.value.param == "messages[0].content[1].image_url"
    assert "remote image fetching is off" in info.value.message


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://a/b.png", "gs://bucket/a.png", "/local.png"]
)
async def test_other_schemes_are_refused(url: str) -> None:
    with pytest.raises(InvalidRequest, match="data: URL or an http"):
        await collect_images(request(url), FakeFetcher())


# -- with the real fetcher against a counting server


@pytest.fixture
async def server() -> AsyncIterator[CountingServer]:
    srv = await CountingServer().start()
    yield srv
    await srv.close()


async def test_real_fetcher_runs_one_request_per_url_in_parallel(server: CountingServer) -> None:
    both_in_flight = asyncio.Event()
    waiting = 0

    def gated(body: bytes) -> Any:
        async def route(writer: Writer) -> None:
            nonlocal waiting
            waiting += 1
            if waiting == 2:
                both_in_flight.set()
            # Only answers once the other request is also in flight: proves concurrency.
            await asyncio.wait_for(both_in_flight.wait(), 5)
            await reply(200, body)(writer)

        return route

    server.routes["/a.png"] = gated(PNG)
    server.routes["/b.gif"] = gated(GIF)
    fetcher = GuardedFetcher(MediaConfig(allow_cidrs=["127.0.0.1/32"]))
    try:
        a, b = server.url("/a.png"), server.url("/b.gif")
        images = await collect_images(request(a, b, a, b, a), fetcher)
    finally:
        await fetcher.close()
    assert images == {a: Image(PNG, "image/png"), b: Image(GIF, "image/gif")}
    assert sorted(r.path for r in server.requests) == ["/a.png", "/b.gif"]
