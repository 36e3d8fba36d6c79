"""Streaming answers: pull the first part before the 200, then frame and write each part.

A failure before the first part is an ordinary HTTP error (and may fail over);
after it, one ``data: {"error": ...}`` event ends the stream. Writes are awaited,
so a slow client slows the upstream read (no queue in between).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

from aiohttp import web

from . import codec
from .backends.base import StreamPart
from .errors import GatewayError, UpstreamError, UpstreamProtocolError, UpstreamTimeout
from .instrument import stream_failed, stream_first, stream_part, watch_stream
from .routing import Attempt
from .schema.openai import ChatCompletionChunk, ChatCompletionRequest
from .sse import DONE, Framed, frame
from .state import GatewayState

log = logging.getLogger("chromagent_proxy")
perf = time.perf_counter


def _framed(part: StreamPart) -> bytes:
    # Framed: events a relay read together, already framed; one write for all of them.
    return part if type(part) is Framed else frame(_encode_part(part))


def _encode_part(part: StreamPart) -> bytes:
    if isinstance(part, bytes):
        return part
    if isinstance(part, ChatCompletionChunk):
        return codec.encode(part)
    return codec.dumps(part)


def response_headers(rid: str, backend_id: str, attempts: int) -> dict[str, str]:
    return {
        "x-request-id": rid,
        "x-chromagent-backend": backend_id,
        "x-chromagent-attempts": str(attempts),
    }


async def stream_response(
    request: web.Request,
    state: GatewayState,
    attempt: Attempt,
    req: ChatCompletionRequest,
    rid: str,
    attempts: int,
) -> web.StreamResponse:
    backend = attempt.backend
    try:
        parts: AsyncIterator[StreamPart] = backend.provider.chat_completion_stream(
            req, backend.config
        )
    except GatewayError:
        raise
    except Exception as exc:
        log.exception("request %s: backend %s raised", rid, backend.id)
        raise UpstreamError(
            f"backend '{backend.id}' failed: {exc.__class__.__name__}: {exc}", retryable=False
        ) from None
    rec = watch_stream()  # metrics (instrument.py), or None
    try:
        # Pull the first part before committing to 200, so early failures are plain HTTP errors.
        try:
            async with asyncio.timeout(state.first_byte_timeout):
                t = perf()
                try:
                    first = await anext(parts)
                except BaseException as exc:
                    if rec is not None:
                        stream_failed(rec, backend.id, exc, t)
                    raise
                if rec is not None:
                    stream_first(rec, t)
        except TimeoutError:
            err = UpstreamTimeout(
                f"backend '{backend.id}' sent no data within {state.first_byte_timeout:g}s"
            )
            if state.on_upstream_error is not None:
                state.on_upstream_error(backend.id, err)
            raise err from None
        except StopAsyncIteration:
            raise UpstreamProtocolError(
                f"backend '{backend.id}' returned an empty stream"
            ) from None
        except (GatewayError, asyncio.CancelledError):
            raise
        except Exception as exc:
            log.exception("request %s: backend %s raised", rid, backend.id)
            raise UpstreamError(
                f"backend '{backend.id}' failed: {exc.__class__.__name__}: {exc}",
                retryable=False,
            ) from None
        # From here on there is no silent switch to another backend.
        state.router.succeeded(backend)
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                # nginx (and proxies that honour it) would otherwise buffer the stream.
                "X-Accel-Buffering": "no",
                **response_headers(rid, backend.id, attempts),
            }
        )
        try:
            await resp.prepare(request)
            await resp.write(_framed(first))
            if rec is None:
                async for part in parts:
                    await resp.write(_framed(part))
            else:
                # Not `async for`: errors of the stream are reported, a failed write is not.
                while True:
                    try:
                        part = await anext(parts)
                    except StopAsyncIteration:
                        break
                    except BaseException as exc:
                        stream_failed(rec, backend.id, exc, None)
                        raise
                    stream_part(rec, part)
                    await resp.write(_framed(part))
            await resp.write(DONE)
        except GatewayError as err:
            await _write_error(resp, err)
        except ConnectionError:
            # The client left: returning lets aiohttp end the response quietly; raising
            # would log an "Error handling request" traceback for every aborted stream.
            return resp
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("request %s: stream from backend %s failed", rid, backend.id)
            await _write_error(
                resp,
                UpstreamError(
                    f"backend '{backend.id}' failed mid-stream: {exc.__class__.__name__}"
                ),
            )
        return resp
    finally:
        await _aclose(parts)


async def _aclose(parts: AsyncIterator[StreamPart]) -> None:
    aclose = getattr(parts, "aclose", None)
    if aclose is not None:
        try:
            await aclose()
        except Exception:
            log.debug("closing a backend stream raised", exc_info=True)


async def _write_error(resp: web.StreamResponse, err: GatewayError) -> None:
    try:
        await resp.write(frame(err.body()))
    except ConnectionError:
        pass
