"""Image inputs: data URLs parsed once, remote URLs fetched only through the guarded fetcher.

Translators call ``collect_images`` before building the upstream body; it
returns every image of the request as bytes + media type, keyed by URL, so the
pure request builders never do I/O.

One request is bounded (``media`` config): at most ``maxImagesPerRequest`` image
parts (counted before anything is decoded), ``maxTotalBytes`` of image bytes in
all (data URLs by their decoded size before decoding, fetched images while they
arrive), and ``fetchConcurrency`` downloads at a time, well below the fetcher's
pool, so one request with many slow images cannot starve everyone else's.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from dataclasses import dataclass
from typing import Protocol

from chromagent_proxy.core.config import MediaConfig
from chromagent_proxy.core.errors import InvalidRequest, UnsupportedFeature
from chromagent_proxy.schema.openai import ChatCompletionRequest

MEDIA_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
MAX_DATA_URL_BYTES = 20 * 1024 * 1024
_DEFAULTS = MediaConfig()
# Part types a gateway that inlines images (openai ``inlineImages``) lets through: the
# ones that carry no URL, or whose URL it fetches itself (image_url).
INLINE_PART_TYPES = ("text", "image_url", "refusal")


class ImageBudget:
    """Image bytes one request may still bring in (``media.maxTotalBytes``), shared by all
    of its data URLs and fetches; running out is a 400 naming the part that overran."""

    __slots__ = ("left", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.left = limit

    def take(self, size: int, param: str) -> None:
        self.left -= size
        if self.left < 0:
            raise InvalidRequest(
                f"the request's images add up to more than {self.limit} bytes "
                "(media.maxTotalBytes); send fewer or smaller images",
                param=param,
                code="images_too_large",
            )


@dataclass(slots=True, frozen=True)
class Image:
    data: bytes
    media_type: str

    @property
    def b64(self) -> str:
        return base64.b64encode(self.data).decode("ascii")


def sniff(data: bytes) -> str | None:
    """The media type from the file signature, or None when it is not a supported image."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def decoded_size(b64: str) -> int:
    """Bytes that base64 text decodes to (for well-formed text), without decoding it."""
    return len(b64) * 3 // 4 - b64[-2:].count("=")


def _data_url_size(url: str) -> int:
    """``decoded_size`` of a data URL's payload without slicing it out (no copy)."""
    return (len(url) - url.find(",") - 1) * 3 // 4 - url[-2:].count("=")


def parse_data_url(url: str, param: str, max_bytes: int = MAX_DATA_URL_BYTES) -> Image:
    """``data:image/png;base64,...`` → Image; a clear 400 naming ``param`` otherwise."""
    head, sep, payload = url.partition(",")
    if not sep or head[:5].lower() != "data:":
        raise InvalidRequest(
            "image data URL is malformed (expected data:<type>;base64,<data>)", param=param
        )
    meta = [m.strip().lower() for m in head[5:].split(";")]
    media_type = meta[0]
    if "base64" not in meta[1:]:
        raise InvalidRequest("image data URL must be base64-encoded", param=param)
    if media_type not in MEDIA_TYPES and media_type != "image/jpg":
        raise InvalidRequest(
            f"image media type {media_type or '(none)'} is not supported "
            f"(use one of {', '.join(MEDIA_TYPES)})",
            param=param,
        )
    if decoded_size(payload) > max_bytes:
        raise InvalidRequest(f"image is larger than {max_bytes} bytes", param=param)
    try:
        # One pass in C over the text as it is (an ASCII str is read in place), where
        # b64decode(validate=True) would first copy it to bytes and run a regex over it.
        data = binascii.a2b_base64(payload, strict_mode=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest("image data URL is not valid base64", param=param) from None
    if len(data) > max_bytes:
        raise InvalidRequest(f"image is larger than {max_bytes} bytes", param=param)
    # The bytes decide the type: providers reject a media_type that does not match them.
    sniffed = sniff(data)
    if sniffed is None:
        raise InvalidRequest(
            "image data is not a png, jpeg, gif or webp file", param=param, code="invalid_image"
        )
    return Image(data, sniffed)


def image_parts(req: ChatCompletionRequest, max_images: int | None = None) -> list[tuple[str, str]]:
    """(url, param) of every image part in the request, in order; a 400 as soon as there
    are more than ``max_images`` (before any is decoded or fetched)."""
    out: list[tuple[str, str]] = []
    for i, msg in enumerate(req.messages):
        if isinstance(msg.content, list):
            for j, part in enumerate(msg.content):
                if part.type == "image_url":
                    if part.image_url is None:
                        raise InvalidRequest(
                            "image_url part has no image_url", param=f"messages[{i}].content[{j}]"
                        )
                    if max_images is not None and len(out) >= max_images:
                        raise InvalidRequest(
                            f"the request has more than {max_images} images "
                            "(media.maxImagesPerRequest)",
                            param=f"messages[{i}].content[{j}]",
                            code="too_many_images",
                        )
                    out.append((part.image_url.url, f"messages[{i}].content[{j}].image_url"))
    return out


def check_inline_parts(req: ChatCompletionRequest, backend_id: str) -> None:
    """With ``inlineImages`` the upstream must never fetch a user URL itself: only part
    types the gateway understands (and fetches for) may pass; others are a 400."""
    for i, msg in enumerate(req.messages):
        if isinstance(msg.content, list):
            for j, part in enumerate(msg.content):
                if part.type not in INLINE_PART_TYPES:
                    raise UnsupportedFeature(
                        f"content part type {part.type!r} is not supported by backend "
                        f"'{backend_id}' (inlineImages allows only "
                        f"{', '.join(INLINE_PART_TYPES)})",
                        param=f"messages[{i}].content[{j}].type",
                    )


async def collect_images(
    req: ChatCompletionRequest,
    fetcher: ImageFetcher | None,
    *,
    fetch_remote: bool = True,
    decode_data: bool = True,
    limits: MediaConfig = _DEFAULTS,
) -> dict[str, Image]:
    """Every image of the request by URL: data URLs decoded (only counted and checked for
    size when not ``decode_data``), http(s) URLs fetched (each distinct URL once, at most
    ``limits.fetch_concurrency`` at a time) when ``fetch_remote``; otherwise remote URLs
    are left out for the translator to pass on as URLs."""
    images: dict[str, Image] = {}
    remote: dict[str, str] = {}
    # Every part counts, repeats too: each one is a copy in the upstream body.
    budget = ImageBudget(limits.max_total_bytes)
    repeats: dict[str, list[str]] = {}  # remote URL -> params of its later parts
    for url, param in image_parts(req, limits.max_images_per_request):
        scheme = url[:8].lower()
        if scheme.startswith("data:"):
            # Checked by its decoded size before decoding anything.
            budget.take(_data_url_size(url), param)
            if decode_data and url not in images:
                images[url] = parse_data_url(url, param, limits.max_bytes)
        elif scheme.startswith(("http://", "https://")):
            if fetch_remote:
                if url in remote:
                    repeats.setdefault(url, []).append(param)
                else:
                    remote[url] = param
        else:
            raise InvalidRequest("image URL must be a data: URL or an http(s) URL", param=param)
    if remote:
        if fetcher is None:
            first_param = next(iter(remote.values()))
            raise InvalidRequest(
                "this backend needs images inline and remote image fetching is off; "
                "send the image as a data: URL",
                param=first_param,
            )
        # One task per distinct URL, a few downloading at once (a fair share of the
        # fetcher's pool); the first failure cancels the rest.
        gate = asyncio.Semaphore(limits.fetch_concurrency)

        async def fetch(url: str, param: str) -> tuple[bytes, str]:
            async with gate:
                return await fetcher.fetch(url, param, budget)

        tasks = [asyncio.ensure_future(fetch(u, p)) for u, p in remote.items()]
        try:
            results = await asyncio.gather(*tasks)
        except BaseException:
            for t in tasks:
                t.cancel()
            raise
        for url, (data, media_type) in zip(remote, results, strict=True):
            images[url] = Image(data, media_type)
            for param in repeats.get(url, ()):
                budget.take(len(data), param)
    return images


class ImageFetcher(Protocol):
    """Fetches a remote image for a backend that needs inline bytes (media/fetcher.py is the gateway's)."""

    async def fetch(
        self, url: str, param: str, budget: ImageBudget | None = None
    ) -> tuple[bytes, str]:
        """(bytes, media type); every byte read is taken from ``budget`` (the request's)."""
        ...
