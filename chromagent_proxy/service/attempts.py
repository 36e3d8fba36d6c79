"""One attempt of a request on one backend: a whole answer, or a stream.

``serving.serve`` runs the attempts in plan order; an attempt here either returns the whole
answer (``complete``) or streams it (``stream``: relayed bytes, or IR events through the
dialect's encoder), reporting what it did to the request's ``Record``. A failure before the
first byte propagates (the caller may fail over); after it, the dialect's error event ends
the stream.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from aiohttp import web

from chromagent_proxy.backends import adapter
from chromagent_proxy.backends.base import (
    BackendProvider,
    RequestContext,
    current_context,
)
from chromagent_proxy.core import ir
from chromagent_proxy.core.accumulate import Answer
from chromagent_proxy.core.errors import (
    GatewayError,
    ServiceUnavailable,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from chromagent_proxy.core.jsonlimits import unencodable
from chromagent_proxy.dialects.base import (
    AnyDialect,
    ConversationDialect,
    DirectDialect,
    EventEncoder,
    Inbound,
)
from chromagent_proxy.ops.instrument import Record
from chromagent_proxy.routing.router import Attempt
from chromagent_proxy.service.state import GatewayState

log = logging.getLogger("chromagent_proxy")
perf = time.perf_counter
_JSON = "application/json"


def response_headers(
    rid: str, backend_id: str, attempts: int, inbound: Inbound | None = None
) -> dict[str, str]:
    headers = {
        "x-request-id": rid,
        "x-chromagent-backend": backend_id,
        "x-chromagent-attempts": str(attempts),
    }
    if inbound is not None and inbound.headers:
        headers.update(inbound.headers)
    return headers


def backend_bug(rid: str, backend_id: str, exc: BaseException) -> GatewayError:
    # A value no encoder takes (an integer past 64 bits, nesting past 254) is the client's
    # fault: a 400 naming the field, found only now that encoding failed.
    if isinstance(exc, (TypeError, RecursionError)):
        bad = unencodable(current_context().raw_body)
        if bad is not None:
            return bad
    # A backend bug (custom backends included): a 502 naming it, never a crash.
    log.error("request %s: backend %s raised", rid, backend_id, exc_info=exc)
    return UpstreamError(
        f"backend '{backend_id}' failed: {exc.__class__.__name__}: {exc}", retryable=False
    )


def _ir_request(
    dialect: ConversationDialect,
    inbound: Inbound,
    provider: BackendProvider,
    model: str,
    irs: dict[str, ir.Request],
) -> ir.Request:
    key = provider.dialect
    req = irs.get(key)
    if req is None:
        req = irs[key] = dialect.to_ir(inbound, key)
    if req.model != model:
        req = irs[key] = _with_model(req, model)
    return req


def _with_model(req: ir.Request, model: str) -> ir.Request:
    return msgspec.structs.replace(req, model=model)


async def complete(
    dialect: AnyDialect,
    inbound: Inbound,
    attempt: Attempt,
    ctx: RequestContext,
    irs: dict[str, ir.Request],
    rec: Record,
    attempts: int,
) -> web.Response:
    provider = attempt.backend.provider
    backend_id = attempt.backend.id
    t = perf()
    try:
        if dialect.relays(provider):
            payload, usage = await dialect.relay(provider, inbound, ctx)
        elif isinstance(dialect, DirectDialect):
            payload, usage = await dialect.answer(provider, inbound, ctx)
        else:
            req = _ir_request(dialect, inbound, provider, attempt.upstream_model, irs)
            events = (
                await provider.generate(req, ctx)
                if provider.translates
                else await adapter.legacy_generate(provider, req, ctx)
            )
            answer = Answer()
            answer.add(events)
            usage = answer.usage
            payload = dialect.complete(inbound, answer, ctx.request_id, attempt.upstream_model)
    except BaseException as exc:
        rec.upstream_failed(backend_id, exc)
        raise
    finally:
        rec.upstream_s += perf() - t
    if usage is not None:
        rec.usage(usage)
    if rec.trace is not None:
        rec.trace.answered(payload)
    return web.Response(
        body=payload,
        content_type=_JSON,
        headers=response_headers(ctx.request_id, backend_id, attempts, inbound),
    )


def _open_parts(
    dialect: ConversationDialect,
    inbound: Inbound,
    attempt: Attempt,
    ctx: RequestContext,
    irs: dict[str, ir.Request],
) -> tuple[AsyncIterator[Any], bool]:
    """The backend's stream: (parts, relayed). Relayed parts are the client's bytes (or
    chunks of a custom backend); IR parts are lists of events for the dialect's encoder."""
    provider = attempt.backend.provider
    if dialect.relays(provider):
        return dialect.relay_stream(provider, inbound, ctx), True
    req = _ir_request(dialect, inbound, provider, attempt.upstream_model, irs)
    if provider.translates:
        return provider.generate_stream(req, ctx), False
    return adapter.legacy_generate_stream(provider, req, ctx), False


async def stream(
    request: web.Request,
    state: GatewayState,
    dialect: ConversationDialect,
    inbound: Inbound,
    attempt: Attempt,
    ctx: RequestContext,
    irs: dict[str, ir.Request],
    rec: Record,
    attempts: int,
) -> web.StreamResponse:
    backend = attempt.backend
    try:
        parts, relayed = _open_parts(dialect, inbound, attempt, ctx, irs)
    except GatewayError:
        raise
    except Exception as exc:
        raise backend_bug(ctx.request_id, backend.id, exc) from None
    rec.stream_opened()
    encoder = (
        None if relayed else dialect.stream_encoder(inbound, ctx.request_id, ctx.upstream_model)
    )
    want_usage = inbound.include_usage
    try:
        # Pull parts until one gives the client bytes, before committing to a 200: a
        # failure before that is an ordinary HTTP error (and may fail over).
        t = perf()
        try:
            with state.deadlines.start(state.first_byte_timeout):
                while True:
                    try:
                        part = await anext(parts)
                    except StopAsyncIteration:
                        raise UpstreamProtocolError(
                            f"backend '{backend.id}' returned an empty stream"
                        ) from None
                    first = (
                        _relayed(dialect, part, rec, want_usage)
                        if encoder is None
                        else _encoded(encoder, part)
                    )
                    if first:
                        break
        except TimeoutError:
            err = UpstreamTimeout(
                f"backend '{backend.id}' sent no data within {state.first_byte_timeout:g}s"
            )
            rec.upstream_failed(backend.id, err)
            rec.upstream_s += perf() - t
            raise err from None
        except BaseException as exc:
            rec.upstream_s += perf() - t
            rec.upstream_failed(backend.id, exc)
            if isinstance(exc, GatewayError | asyncio.CancelledError):
                raise
            raise backend_bug(ctx.request_id, backend.id, exc) from None
        rec.first(t)
        # From here on there is no silent switch to another backend.
        state.router.succeeded(backend)
        resp = _EventStream(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
                **response_headers(ctx.request_id, backend.id, attempts, inbound),
            }
        )
        try:
            await resp.prepare(request)
            await resp.write(first)
            # No failover from here on: what only another attempt would read goes now,
            # not when the stream ends (memory per open stream, bench/README.md).
            dialect.release(inbound)
            ctx.raw_body = b""
            irs.clear()
            del first
            while True:
                try:
                    part = await anext(parts)
                except StopAsyncIteration:
                    break
                except BaseException as exc:
                    rec.upstream_failed(backend.id, exc)
                    raise
                data = (
                    _relayed(dialect, part, rec, want_usage)
                    if encoder is None
                    else _encoded(encoder, part)
                )
                if data:
                    await resp.write(data)
            tail = dialect.stream_end if encoder is None else encoder.finish() + dialect.stream_end
            if encoder is not None:
                if encoder.usage is not None:
                    rec.usage(encoder.usage)
                inbound.state = encoder
            # Stored (Responses) before the client sees the end, then the last events and
            # the chunked terminator in one write (two sends per stream less than a write
            # of the tail and aiohttp's write_eof after the handler).
            await dialect.completed(inbound)
            await resp.write_eof(tail)
        except GatewayError as err:
            await _write_error(resp, dialect, err, encoder)
        except ConnectionError:
            # The client left: returning lets aiohttp end the response quietly; raising
            # would log an "Error handling request" traceback for every aborted stream.
            return resp
        except asyncio.CancelledError:
            if not rec.killed:
                raise
            # Shutdown ran past shutdownTimeoutMs (edge.drain): end with an error event.
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            await _write_error(
                resp,
                dialect,
                ServiceUnavailable(
                    "The gateway is shutting down and this stream ran past shutdownTimeoutMs."
                ),
                encoder,
            )
        except Exception as exc:
            log.exception("request %s: stream from backend %s failed", ctx.request_id, backend.id)
            await _write_error(
                resp,
                dialect,
                UpstreamError(
                    f"backend '{backend.id}' failed mid-stream: {exc.__class__.__name__}"
                ),
                encoder,
            )
        return resp
    finally:
        await _aclose(parts)


class _EventStream(web.StreamResponse):
    """An event stream whose headers leave with its first bytes (one send, not two): the
    response is prepared only once the first part is ready, and written at once."""

    _send_headers_immediately = False


def _encoded(encoder: EventEncoder, events: list[ir.Event]) -> bytes:
    for ev in events:
        if type(ev) is ir.Error:
            raise UpstreamError(ev.message, type=ev.kind, retryable=False)
    return encoder.encode(events)


def _relayed(dialect: ConversationDialect, part: Any, rec: Record, want_usage: bool) -> bytes:
    data, usage = dialect.relayed(part, want_usage)
    if usage is not None:
        rec.usage(usage)
    return data


async def _aclose(parts: AsyncIterator[Any]) -> None:
    aclose = getattr(parts, "aclose", None)
    if aclose is not None:
        try:
            await aclose()
        except Exception:
            log.debug("closing a backend stream raised", exc_info=True)


async def _write_error(
    resp: web.StreamResponse,
    dialect: ConversationDialect,
    err: GatewayError,
    encoder: EventEncoder | None,
) -> None:
    try:
        await resp.write(dialect.stream_error(err, encoder))
    except ConnectionError:
        pass
