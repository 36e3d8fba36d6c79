"""Images of an IR request, for backends that need them inline.

Data-URL images already carry the client's base64 (decoded only far enough to learn the
media type, in dialects/chat/decode.py): they are never decoded or re-encoded here.
Remote (``url``) images are fetched through the SSRF-guarded fetcher, all at once, each
distinct URL once, and base64-encoded once — in a worker thread above
``INLINE_ENCODE_LIMIT`` bytes so a large image never stalls the event loop.
"""

from __future__ import annotations

import asyncio
import base64

from .backends.base import ImageFetcher
from .core import ir
from .errors import InvalidRequest

# Below this, encoding on the loop (~1 µs/KB) is cheaper than a thread hop.
INLINE_ENCODE_LIMIT = 256 * 1024


def remote_images(request: ir.Request) -> list[tuple[ir.Image, str]]:
    """(image, param) of every image that is a URL still to fetch, in order."""
    out: list[tuple[ir.Image, str]] = []
    for i, msg in enumerate(request.messages):
        for j, part in enumerate(msg.parts):
            if type(part) is ir.Image:
                if part.data is None:
                    out.append((part, f"messages[{i}].content[{j}].image_url"))
            elif type(part) is ir.ToolResult:
                for k, sub in enumerate(part.content):
                    if type(sub) is ir.Image and sub.data is None:
                        out.append((sub, f"messages[{i}].content[{j}].content[{k}]"))
    return out


async def _b64(data: bytes) -> str:
    if len(data) > INLINE_ENCODE_LIMIT:
        encoded = await asyncio.to_thread(base64.b64encode, data)
    else:
        encoded = base64.b64encode(data)
    return encoded.decode("ascii")


async def _fetch(fetcher: ImageFetcher, url: str, param: str) -> tuple[str, str]:
    data, media_type = await fetcher.fetch(url, param)
    return await _b64(data), media_type


async def inline_images(request: ir.Request, fetcher: ImageFetcher | None) -> None:
    """Fetch every URL image of ``request`` and fill in its ``data`` and ``media_type``
    (in place: a failover to another backend reuses the bytes instead of fetching again)."""
    pending = remote_images(request)
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
    # One task per distinct URL, all at once; the first failure cancels the rest.
    tasks = [asyncio.ensure_future(_fetch(fetcher, u, p)) for u, p in urls.items()]
    try:
        results = await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        raise
    fetched = dict(zip(urls, results, strict=True))
    for img, _ in pending:
        img.data, img.media_type = fetched[img.url or ""]
