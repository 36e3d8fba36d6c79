"""Images of an IR request, for backends that need them inline.

Data-URL images already carry the client's base64 (decoded only far enough to learn the
media type, in dialects/chat/decode.py): they are never decoded or re-encoded here, only
counted by their decoded size. Remote (``url``) images are fetched through the
SSRF-guarded fetcher, each distinct URL once, a few at a time, and base64-encoded once —
in a worker thread above ``INLINE_ENCODE_LIMIT`` bytes so a large image never stalls the
event loop. The request's ``media`` limits (media.py) hold here as on the relay path.
"""

from __future__ import annotations

import asyncio
import base64
import binascii

from .backends.base import ImageFetcher
from .config import MediaConfig
from .core import ir
from .errors import InvalidRequest
from .media import ImageBudget, decoded_size, sniff

_DEFAULTS = MediaConfig()

# Below this, encoding on the loop (~1 µs/KB) is cheaper than a thread hop.
INLINE_ENCODE_LIMIT = 256 * 1024


def images(request: ir.Request, max_images: int) -> list[tuple[ir.Image, str]]:
    """(image, param) of every image of the request, in order; a 400 as soon as there are
    more than ``max_images`` (before anything is fetched)."""
    out: list[tuple[ir.Image, str]] = []

    def add(img: ir.Image, param: str) -> None:
        if len(out) >= max_images:
            raise InvalidRequest(
                f"the request has more than {max_images} images (media.maxImagesPerRequest)",
                param=param,
                code="too_many_images",
            )
        out.append((img, param))

    for i, msg in enumerate(request.messages):
        for j, part in enumerate(msg.parts):
            if type(part) is ir.Image:
                add(part, f"messages[{i}].content[{j}]")
            elif type(part) is ir.ToolResult:
                for k, sub in enumerate(part.content):
                    if type(sub) is ir.Image:
                        add(sub, f"messages[{i}].content[{j}].content[{k}]")
    return out


def media_type_of(b64: str, param: str) -> str:
    """The image format from the first bytes of its base64 (16 characters decoded: the
    rest is never touched); a 400 naming ``param`` when it is not PNG, JPEG, GIF or WebP."""
    try:
        first = binascii.a2b_base64(b64[:16], strict_mode=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest("the image data URL is not valid base64", param=param) from None
    media_type = sniff(first)
    if media_type is None:
        raise InvalidRequest(
            "the image is not PNG, JPEG, GIF or WebP (checked from its first bytes)",
            param=param,
            code="invalid_image",
        )
    return media_type


async def _b64(data: bytes) -> str:
    if len(data) > INLINE_ENCODE_LIMIT:
        encoded = await asyncio.to_thread(base64.b64encode, data)
    else:
        encoded = base64.b64encode(data)
    return encoded.decode("ascii")


async def inline_images(
    request: ir.Request,
    fetcher: ImageFetcher | None,
    limits: MediaConfig = _DEFAULTS,
    *,
    fetch_remote: bool = True,
) -> None:
    """Check the request's images against ``limits`` and, when ``fetch_remote``, fetch every
    URL image and fill in its ``data`` and ``media_type`` (in place: a failover to another
    backend reuses the bytes instead of fetching again). Without ``fetch_remote``, URL
    images stay URLs for an upstream that fetches them itself."""
    budget = ImageBudget(limits.max_total_bytes)
    pending: list[tuple[ir.Image, str]] = []
    for img, part in images(request, limits.max_images_per_request):
        param = f"{part}.image_url"
        if img.data is not None:
            size = decoded_size(img.data)
            if size > limits.max_bytes:
                raise InvalidRequest(f"image is larger than {limits.max_bytes} bytes", param=param)
            budget.take(size, param)
            img.media_type = media_type_of(img.data, param)
        elif fetch_remote:
            pending.append((img, param))
    if not pending:
        return
    if fetcher is None:
        raise InvalidRequest(
            "this backend needs images inline and remote image fetching is off; "
            "send the image as a data: URL",
            param=pending[0][1],
        )
    urls: dict[str, str] = {}
    for img, param in pending:
        urls.setdefault(img.url or "", param)
    # A few downloads at once (a fair share of the fetcher's pool), each distinct URL once;
    # the first failure cancels the rest.
    gate = asyncio.Semaphore(limits.fetch_concurrency)

    async def fetch(url: str, param: str) -> tuple[str, str, int]:
        async with gate:
            data, media_type = await fetcher.fetch(url, param, budget)
        return await _b64(data), media_type, len(data)

    tasks = [asyncio.ensure_future(fetch(u, p)) for u, p in urls.items()]
    try:
        results = await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        raise
    fetched = dict(zip(urls, results, strict=True))
    seen: set[str] = set()
    for img, param in pending:
        url = img.url or ""
        b64, img.media_type, size = fetched[url]
        img.data = b64
        if url in seen:  # every part is a copy in the upstream body: repeats count too
            budget.take(size, param)
        seen.add(url)
