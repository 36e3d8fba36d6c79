"""Reading an upstream's answer: the response protocol both clients satisfy, bodies
inflated step by step and capped, and what a broken stream becomes.

Compressed answers (gzip, deflate) are inflated here, not by aiohttp: a few KB
of gzip can expand to gigabytes, and aiohttp inflates in a loop that does not
give the event loop back while its buffer drains. ``body_chunks`` inflates in
64 KB steps, gives the loop back every MB, and refuses to expand one answer
past ``DECOMPRESSED_LIMIT``.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator
from typing import Any, Protocol

import aiohttp
from multidict import CIMultiDictProxy

from chromagent_proxy.backends import h1client, h1response
from chromagent_proxy.core.errors import GatewayError, UpstreamProtocolError, UpstreamTimeout

DEFAULT_BODY_LIMIT = 64 * 1024 * 1024
# Most bytes one compressed answer (stream or not) may inflate to.
DECOMPRESSED_LIMIT = DEFAULT_BODY_LIMIT
# What upstreams are offered: only what body_chunks can inflate step by step.
ACCEPT_ENCODING = "gzip, deflate"
_WBITS = {"gzip": 31, "x-gzip": 31, "deflate": 15}
_INFLATE_STEP = 64 * 1024
_YIELD_EVERY = 1024 * 1024


class BodyStream(Protocol):
    """The body of an upstream response, read as it arrives."""

    def iter_any(self) -> AsyncIterator[bytes]: ...

    def is_eof(self) -> bool: ...


class UpstreamResponse(Protocol):
    """What ``open_response`` returns: aiohttp's ``ClientResponse`` or the purpose-built
    client's ``h1response.Response`` (README "Upstream client"); readers need no more."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> CIMultiDictProxy[str]: ...

    @property
    def content(self) -> BodyStream: ...

    def release(self) -> Any: ...

    def close(self) -> None: ...


def body_chunks(resp: UpstreamResponse, backend_id: str) -> AsyncIterator[bytes]:
    """The body as it arrives, inflated when the upstream compressed it.

    For responses requested with ``auto_decompress=False`` (``open_response`` does so),
    as are all that ``read_capped`` and ``iter_body`` read.
    """
    raw = (
        resp.encoding
        if type(resp) is h1response.Response  # read at parse time: no headers object built
        else resp.headers.get("Content-Encoding")
    )
    if raw is None:
        return resp.content.iter_any()
    encoding = raw.strip().lower()
    if encoding in ("", "identity"):
        return resp.content.iter_any()
    return _inflate(resp, backend_id, encoding)


async def _inflate(resp: UpstreamResponse, backend_id: str, encoding: str) -> AsyncIterator[bytes]:
    wbits = _WBITS.get(encoding)
    if wbits is None:
        raise UpstreamProtocolError(
            f"backend '{backend_id}' answered with Content-Encoding {encoding[:40]!r}, "
            f"which the gateway does not accept (it asks for {ACCEPT_ENCODING})"
        )
    inflater: Any = None
    total = since_yield = 0
    async for data in resp.content.iter_any():
        if inflater is None:
            # "deflate" should be zlib-wrapped (RFC 9110); some servers send it raw.
            raw = wbits == 15 and bool(data) and data[0] & 0x0F != 8
            inflater = zlib.decompressobj(-15 if raw else wbits)
        pending = data
        while pending and not inflater.eof:
            try:
                out = inflater.decompress(pending, _INFLATE_STEP)
            except zlib.error:
                raise UpstreamProtocolError(
                    f"backend '{backend_id}' sent a corrupt {encoding} body"
                ) from None
            pending = inflater.unconsumed_tail
            total += len(out)
            if total > DECOMPRESSED_LIMIT:
                raise UpstreamProtocolError(
                    f"backend '{backend_id}' sent a {encoding} body that inflates to more "
                    f"than {DECOMPRESSED_LIMIT} bytes"
                )
            if out:
                yield out
            since_yield += len(out)
            if since_yield >= _YIELD_EVERY:
                since_yield = 0
                await asyncio.sleep(0)  # inflating is CPU only: let other requests run
    if inflater is not None and not inflater.eof:
        raise UpstreamProtocolError(f"backend '{backend_id}' ended a {encoding} body early")


def whole_now(resp: UpstreamResponse, limit: int, backend_id: str) -> bytes | None:
    """The whole body when it already arrived with the head (no await), else None."""
    if type(resp) is h1response.Response and resp.encoding is None:
        data = resp.whole()
        if data is not None and len(data) > limit:
            raise too_large(backend_id, limit)
        return data
    return None


async def read_capped(resp: UpstreamResponse, limit: int, backend_id: str) -> bytes:
    """Read a whole body, refusing to hold more than ``limit`` bytes (Content-Length is not trusted)."""
    data = whole_now(resp, limit, backend_id)
    if data is not None:
        return data
    parts: list[bytes] = []
    size = 0
    try:
        async for data in body_chunks(resp, backend_id):
            size += len(data)
            if size > limit:
                raise too_large(backend_id, limit)
            parts.append(data)
    except (TimeoutError, aiohttp.ServerTimeoutError):
        raise UpstreamTimeout(
            f"backend '{backend_id}' stopped sending its response body (idle timeout)"
        ) from None
    except (aiohttp.ClientPayloadError, h1client.PayloadError) as exc:
        raise UpstreamProtocolError(
            f"backend '{backend_id}' closed the connection mid-response: {exc}", retryable=True
        ) from None
    return parts[0] if len(parts) == 1 else b"".join(parts)


def too_large(backend_id: str, limit: int) -> UpstreamProtocolError:
    return UpstreamProtocolError(
        f"backend '{backend_id}' sent a response larger than {limit} bytes"
    )


# What reading a streamed body raises, and what it becomes (``stream_error``): readers
# iterate ``body_chunks`` themselves, no async generator wrapped around it (one less held
# per open stream); the session's sock_read timeout is the idle gap.
STREAM_ERRORS = (
    TimeoutError,
    aiohttp.ServerTimeoutError,
    aiohttp.ClientPayloadError,
    h1client.PayloadError,
)


def stream_error(backend_id: str, exc: BaseException) -> GatewayError:
    if isinstance(exc, (aiohttp.ClientPayloadError, h1client.PayloadError)):
        return UpstreamProtocolError(
            f"backend '{backend_id}' closed the stream unexpectedly: {exc}"
        )
    return UpstreamTimeout(
        f"backend '{backend_id}' went silent mid-stream (idle timeout)", retryable=False
    )
