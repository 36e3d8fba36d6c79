"""Image inputs: data URLs parsed once, remote URLs fetched only through the guarded fetcher.

Translators call ``collect_images`` before building the upstream body; it
returns every image of the request as bytes + media type, keyed by URL, so the
pure request builders never do I/O.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from dataclasses import dataclass

from .backends.base import ImageFetcher
from .errors import InvalidRequest
from .schema.openai import ChatCompletionRequest

MEDIA_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
MAX_DATA_URL_BYTES = 20 * 1024 * 1024


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
    if len(payload) * 3 // 4 > max_bytes:
        raise InvalidRequest(f"image is larger than {max_bytes} bytes", param=param)
    try:
        data = base64.b64decode(payload, validate=True)
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


def image_parts(req: ChatCompletionRequest) -> list[tuple[str, str]]:
    """(url, param) of every image part in the request, in order."""
    out: list[tuple[str, str]] = []
    for i, msg in enumerate(req.messages):
        if isinstance(msg.content, list):
            for j, part in enumerate(msg.content):
                if part.type == "image_url":
                    if part.image_url is None:
                        raise InvalidRequest(
                            "image_url part has no image_url", param=f"messages[{i}].content[{j}]"
                        )
                    out.append((part.image_url.url, f"messages[{i}].content[{j}].image_url"))
    return out


async def collect_images(
    req: ChatCompletionRequest,
    fetcher: ImageFetcher | None,
    *,
    fetch_remote: bool = True,
) -> dict[str, Image]:
    """Every image of the request by URL: data URLs decoded, http(s) URLs fetched
    concurrently (each distinct URL once) when ``fetch_remote``; otherwise remote
    URLs are left out for the translator to pass on as URLs."""
    images: dict[str, Image] = {}
    remote: dict[str, str] = {}
    for url, param in image_parts(req):
        scheme = url[:8].lower()
        if scheme.startswith("data:"):
            if url not in images:
                images[url] = parse_data_url(url, param)
        elif scheme.startswith(("http://", "https://")):
            if fetch_remote:
                remote.setdefault(url, param)
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
        # One task per distinct URL, all at once; the first failure cancels the rest.
        tasks = [asyncio.ensure_future(fetcher.fetch(u, p)) for u, p in remote.items()]
        try:
            results = await asyncio.gather(*tasks)
        except BaseException:
            for t in tasks:
                t.cancel()
            raise
        for url, (data, media_type) in zip(remote, results, strict=True):
            images[url] = Image(data, media_type)
    return images
