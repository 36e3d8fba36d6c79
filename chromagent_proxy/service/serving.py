"""The request path for every client dialect: parse → route → attempts → answer.

For each attempt of the routing plan:
- the backend relays the client's dialect natively (chat → openai or a custom backend,
  messages → anthropic): bytes in, bytes out, through ``dialect.relay[_stream]``;
- else it translates through the IR: ``dialect.to_ir`` → ``provider.generate[_stream]``
  (or the adapter for custom backends that speak only Chat Completions) → the dialect's
  encoder.
A failure before the first byte may fail over to the next attempt; after it, the
dialect's error event ends the stream. Everything observable (attempts, upstream time,
first byte, usage, upstream errors) is reported to the request's ``Record``, passed in
explicitly (the edge creates it); usage is reported whether or not the client asked to
see it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from aiohttp import web

from chromagent_proxy.backends import adapter
from chromagent_proxy.backends.base import (
    BackendProvider,
    RequestContext,
    current_context,
    set_context,
)
from chromagent_proxy.core import ir
from chromagent_proxy.core.accumulate import Answer
from chromagent_proxy.core.errors import (
    GatewayError,
    InvalidRequest,
    ModelNotFound,
    RequestTooLarge,
    ServiceUnavailable,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from chromagent_proxy.core.jsonlimits import duplicate_routed_key, unencodable
from chromagent_proxy.dialects.base import (
    AnyDialect,
    ConversationDialect,
    Dialect,
    DirectDialect,
    EventEncoder,
    Inbound,
)
from chromagent_proxy.ops.instrument import RECORD, Record
from chromagent_proxy.routing.router import Attempt
from chromagent_proxy.routing.rules import Needs
from chromagent_proxy.service.state import STATE, GatewayState

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


def error_response(
    dialect: Dialect, err: GatewayError, rid: str, extra: Mapping[str, str] | None = None
) -> web.Response:
    status, body, headers = dialect.error_body(err)
    headers = {"x-request-id": rid, **err.headers, **headers}
    if extra:
        headers.update(extra)
    return web.Response(status=status, body=body, content_type=_JSON, headers=headers)


async def serve(request: web.Request, dialect: AnyDialect, rid: str) -> web.StreamResponse:
    """Answer one API request in ``dialect``; never raises a GatewayError."""
    state = request.app[STATE]
    rec: Record = request.get(RECORD) or Record(perf())
    attempts = 0
    backend_id = ""
    try:
        body = await read_body(request)
        dup = duplicate_routed_key(body)
        if dup is not None:
            # Routing would read one copy and the upstream, sent the raw body, maybe the other.
            raise InvalidRequest(
                f"'{dup}' appears more than once in the request body; send it once", param=dup
            )
        inbound = dialect.parse(body, request.headers, request.query)
        del body  # inbound.body holds it until the stream's first part is out (_stream)
        await dialect.resolve(inbound)
        rec.session = inbound.session_id
        if rec.trace is not None:
            rec.trace.request(inbound.model, inbound.body)
        needs = Needs(inbound.stream, inbound.tools, inbound.images)
        try:
            plan = state.router.plan_for(inbound.model, needs)
        except ModelNotFound:
            # Listed models are served: ask the backends' (cached) listings before refusing.
            plan = state.router.plan_for(inbound.model, needs, await state.discovered_models())
        router = state.router
        last_error: GatewayError | None = None
        irs: dict[str, ir.Request] = {}  # the IR request per backend dialect (decoded once)
        for attempt in plan:
            attempts += 1
            backend = attempt.backend
            backend_id = backend.id
            trace_headers = rec.attempt(backend_id, inbound.model, attempt.upstream_model)
            # include_usage=True for every stream: the gateway always wants the usage chunk
            # (to count tokens); the client sees it only if it asked (Dialect.relayed).
            ctx = RequestContext(
                rid,
                inbound.body,
                inbound.model,
                attempt.upstream_model,
                backend_id,
                inbound.stream,
                upstream_headers=trace_headers,
            )
            set_context(ctx)  # the documented custom-backend contract (current_context())
            router.begin(backend)
            try:
                if inbound.stream and isinstance(dialect, ConversationDialect):
                    # stream() reports success to the router once the first part arrived.
                    return await _stream(
                        request, state, dialect, inbound, attempt, ctx, irs, rec, attempts
                    )
                resp = await _complete(dialect, inbound, attempt, ctx, irs, rec, attempts)
            except GatewayError as exc:
                router.failed(backend, exc)
                # Only failures before any byte reached the client get here: safe to retry.
                if exc.retryable and attempts < len(plan):
                    log.warning(
                        "request %s: backend %s failed (%s), failing over",
                        rid,
                        backend_id,
                        exc.message,
                    )
                    router.failover(backend, exc)
                    last_error = exc
                    continue
                raise
            except (asyncio.CancelledError, ConnectionError):
                router.abandoned(backend)
                raise
            except web.HTTPException:
                raise
            except Exception as exc:
                err = _backend_bug(rid, backend_id, exc)
                router.failed(backend, err)
                raise err from None
            router.succeeded(backend)
            await dialect.completed(inbound)
            return resp
        assert last_error is not None
        raise last_error
    except GatewayError as err:
        extra = response_headers(rid, backend_id, attempts) if backend_id else None
        return error_response(dialect, err, rid, extra)
    except (asyncio.CancelledError, ConnectionError, web.HTTPException):
        raise
    except Exception:
        # Last resort: a bug still answers in the client's dialect (never aiohttp's text
        # 500), with the request id to find the traceback in the log.
        log.exception("request %s: unexpected error", rid)
        return error_response(
            dialect,
            GatewayError(f"internal gateway error (request id {rid})", code="internal_error"),
            rid,
        )


async def read_body(request: web.Request) -> bytes:
    """The request body, joined once and not kept by aiohttp.

    ``request.read()`` grows a bytearray chunk by chunk and copies it into bytes (≈ 1 ms of
    CPU per MB, bench/README.md, issue 20), and caches the result on the request, which an
    open stream keeps alive to its end; here the chunks are joined once (a body that
    arrived in one chunk is not copied at all) and only the request path holds them."""
    limit = request.client_max_size
    content = request.content
    chunks: list[bytes] = []
    size = 0
    while chunk := await content.readany():
        size += len(chunk)
        if limit and size > limit:
            raise RequestTooLarge(
                f"The request body is larger than the gateway's limit of "
                f"{request.app[STATE].config.max_body_bytes} bytes (maxBodyBytes)"
            )
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _backend_bug(rid: str, backend_id: str, exc: BaseException) -> GatewayError:
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
    import msgspec

    return msgspec.structs.replace(req, model=model)


async def _complete(
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


async def _stream(
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
        raise _backend_bug(ctx.request_id, backend.id, exc) from None
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
            async with asyncio.timeout(state.first_byte_timeout):
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
            raise _backend_bug(ctx.request_id, backend.id, exc) from None
        rec.first(t)
        # From here on there is no silent switch to another backend.
        state.router.succeeded(backend)
        resp = web.StreamResponse(
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
            if encoder is not None and encoder.usage is not None:
                rec.usage(encoder.usage)
            if tail:
                await resp.write(tail)
            if encoder is not None:
                inbound.state = encoder
            await dialect.completed(inbound)
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
