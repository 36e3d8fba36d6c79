"""Images of an IR request for backends that need them inline (media_ir.py)."""

from __future__ import annotations

import asyncio
import base64

import pytest

from chromagent_proxy.config import MediaConfig
from chromagent_proxy.core import ir
from chromagent_proxy.errors import InvalidRequest
from chromagent_proxy.media import ImageBudget
from chromagent_proxy.media_ir import INLINE_ENCODE_LIMIT, inline_images

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16


class Fetcher:
    """Stands in for the SSRF-guarded fetcher (runtime.images): records what it is asked."""

    def __init__(self, sizes: dict[str, int] | None = None) -> None:
        self.calls: list[tuple[str, str]] = []
        self.sizes = sizes or {}
        self.running = 0
        self.most = 0

    async def fetch(
        self, url: str, param: str, budget: ImageBudget | None = None
    ) -> tuple[bytes, str]:
        self.calls.append((url, param))
        self.running += 1
        self.most = max(self.most, self.running)
        await asyncio.sleep(0.01)
        self.running -= 1
        return PNG + b"\x01" * self.sizes.get(url, 0), "image/png"


def request(*parts: ir.Part) -> ir.Request:
    return ir.Request(model="m", messages=[ir.Message("user", list(parts))])


async def test_remote_images_fetched_concurrently_once_per_url_and_encoded() -> None:
    big = INLINE_ENCODE_LIMIT + 1  # encoded in a worker thread: same bytes out
    a, b, again = (
        ir.Image(url="https://x.test/a"),
        ir.Image(url="https://x.test/b"),
        ir.Image(url="https://x.test/a"),
    )
    inner = ir.Image(url="https://x.test/c")
    req = request(a, b, again, ir.ToolResult("t", [inner]))
    fetcher = Fetcher({"https://x.test/b": big})
    await inline_images(req, fetcher)
    assert sorted(u for u, _ in fetcher.calls) == [
        "https://x.test/a",
        "https://x.test/b",
        "https://x.test/c",
    ]
    assert fetcher.most == 3  # all at once
    assert a.data == again.data == base64.b64encode(PNG).decode()
    assert b.data == base64.b64encode(PNG + b"\x01" * big).decode()
    assert inner.media_type == "image/png" and inner.data is not None
    assert ("https://x.test/a", "messages[0].content[0].image_url") in fetcher.calls


async def test_inline_images_keep_the_clients_base64_untouched() -> None:
    data = base64.b64encode(PNG).decode()
    img = ir.Image(media_type="image/png", data=data)
    fetcher = Fetcher()
    await inline_images(request(img), fetcher)
    assert img.data is data and not fetcher.calls


async def test_remote_image_without_fetcher_names_the_part() -> None:
    with pytest.raises(InvalidRequest) as info:
        await inline_images(request(ir.Text("x"), ir.Image(url="https://x.test/a")), None)
    assert info.value.param == "messages[0].content[1].image_url"


async def test_media_type_comes_from_the_first_bytes_after_counting() -> None:
    png = base64.b64encode(PNG).decode()
    img = ir.Image(media_type="image/jpeg", data=png)  # what the data URL declared
    await inline_images(request(img), None)
    assert img.media_type == "image/png" and img.data is png
    with pytest.raises(InvalidRequest) as info:
        await inline_images(request(ir.Image(data=base64.b64encode(b"GIF00a....").decode())), None)
    assert info.value.code == "invalid_image"
    assert info.value.param == "messages[0].content[0].image_url"
    # The count is checked before any image is looked at (these are not even base64).
    many = request(*[ir.Image(data="!!") for _ in range(5)])
    with pytest.raises(InvalidRequest) as info:
        await inline_images(many, None, MediaConfig(max_images_per_request=4))
    assert info.value.code == "too_many_images"
    assert info.value.param == "messages[0].content[4]"
