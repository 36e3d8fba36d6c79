"""The request path for every client dialect: parse → route → attempts → answer.

For each attempt of the routing plan (one attempt: ``attempts.py``):
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
import itertools
import logging
import os
import time
from collections.abc import Mapping

from aiohttp import web

from chromagent_proxy.backends.base import (
    RequestContext,
    set_context,
)
from chromagent_proxy.core import ir
from chromagent_proxy.core.errors import (
    GatewayError,
    ModelNotFound,
    RequestTooLarge,
)
from chromagent_proxy.dialects.base import (
    AnyDialect,
    ConversationDialect,
    Dialect,
)
from chromagent_proxy.ops.instrument import RECORD, Record
from chromagent_proxy.routing.rules import Needs
from chromagent_proxy.service.attempts import backend_bug, complete, response_headers, stream
from chromagent_proxy.service.state import STATE

log = logging.getLogger("chromagent_proxy")
perf = time.perf_counter
_JSON = "application/json"


def error_response(
    dialect: Dialect, err: GatewayError, rid: str, extra: Mapping[str, str] | None = None
) -> web.Response:
    status, body, headers = dialect.error_body(err)
    headers = {"x-request-id": rid, **err.headers, **headers}
    if extra:
        headers.update(extra)
    return web.Response(status=status, body=body, content_type=_JSON, headers=headers)


_RID_PREFIX = os.urandom(8).hex()
_RID_COUNTER = itertools.count(1)


def request_id(request: web.Request) -> str:
    """The client's ``x-request-id`` (≤ 128 printable characters), else a new one."""
    rid = request.headers.get("x-request-id")
    if rid and len(rid) <= 128 and rid.isprintable():
        return rid
    # A per-process random prefix and a counter: unique like uuid4, without a urandom
    # syscall per request (uuid4().hex cost ~5 µs, this ~0.5 µs; see bench/README.md).
    return f"{_RID_PREFIX}{next(_RID_COUNTER):016x}"


async def serve(request: web.Request, dialect: AnyDialect, rid: str) -> web.StreamResponse:
    """Answer one API request in ``dialect``; never raises a GatewayError."""
    state = request.app[STATE]
    rec: Record = request.get(RECORD) or Record(perf())
    attempts = 0
    backend_id = ""
    try:
        body = await read_body(request)
        # parse refuses a repeated model or stream key (dialects/routed.py): routing would
        # read one copy and the upstream, sent the raw body, maybe the other.
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
                    return await stream(
                        request, state, dialect, inbound, attempt, ctx, irs, rec, attempts
                    )
                resp = await complete(dialect, inbound, attempt, ctx, irs, rec, attempts)
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
                err = backend_bug(rid, backend_id, exc)
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
    arrived in one chunk is not copied at all) and only the request path holds them.
    ``readchunk`` hands over one buffered part at a time: ``readany`` joins all the parts
    buffered so far first, a second copy of the body (≈ 10 % of a 1 MB request's CPU).
    With chunked transfer encoding it still joins the parts of one HTTP chunk."""
    limit = request.client_max_size
    content = request.content
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk, _ = await content.readchunk()
        if not chunk:
            if content.at_eof():
                break
            continue  # the end of an empty HTTP chunk
        size += len(chunk)
        if limit and size > limit:
            raise RequestTooLarge(
                f"The request body is larger than the gateway's limit of "
                f"{request.app[STATE].config.max_body_bytes} bytes (maxBodyBytes)"
            )
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
