"""HTTP endpoints: /v1/chat/completions, /v1/models, /health. No provider code here.

Each path is registered for every method and answers 405 itself, and a
catch-all answers 404, so every error is OpenAI JSON without a middleware on
the hot path.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import msgspec
from aiohttp import web

from . import __version__, codec
from .backends.base import RequestContext, set_context
from .errors import (
    GatewayError,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    RequestTooLarge,
    UpstreamError,
)
from .health_view import backends_health
from .schema.openai import ChatCompletionRequest, validation_param
from .state import STATE
from .streaming import response_headers, stream_response

log = logging.getLogger("chromagent_proxy")

_decode_request = codec.decoder(ChatCompletionRequest).decode
_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
_JSON = "application/json"


_RID_PREFIX = os.urandom(8).hex()
_PID = os.getpid()
_RID_COUNTER = itertools.count(1)


def _request_id(request: web.Request) -> str:
    rid = request.headers.get("x-request-id")
    if rid and len(rid) <= 128 and rid.isprintable():
        return rid
    # A per-process random prefix and a counter: unique like uuid4, without a urandom
    # syscall per request (uuid4().hex cost ~5 µs, this ~0.5 µs; see bench/README.md).
    return f"{_RID_PREFIX}{next(_RID_COUNTER):016x}"


def error_response(
    err: GatewayError, rid: str, extra: Mapping[str, str] | None = None
) -> web.Response:
    headers = {"x-request-id": rid, **err.headers}
    if extra:
        headers.update(extra)
    return web.Response(status=err.status, body=err.body(), content_type=_JSON, headers=headers)


def parse_request(body: bytes) -> ChatCompletionRequest:
    try:
        req = _decode_request(body)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"Invalid request: {exc}", param=validation_param(exc)) from None
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}") from None
    except UnicodeDecodeError:
        # msgspec raises this (not DecodeError) for invalid UTF-8 inside a JSON string.
        raise InvalidRequest("The request body is not valid UTF-8") from None
    except RecursionError:
        # Skipping a deeply nested unknown field recurses; refuse rather than 500.
        raise InvalidRequest("The request body is nested too deeply") from None
    if not req.messages:
        raise InvalidRequest("'messages' must contain at least one message", param="messages")
    for i, msg in enumerate(req.messages):
        if msg.role not in _ROLES:
            raise InvalidRequest(
                f"messages[{i}].role must be one of system, developer, user, assistant, tool "
                f"(got {msg.role!r})",
                param=f"messages[{i}].role",
            )
        if msg.role == "tool" and not msg.tool_call_id:
            raise InvalidRequest(
                f"messages[{i}] has role 'tool' but no tool_call_id",
                param=f"messages[{i}].tool_call_id",
            )
    if req.n is not None and req.n < 1:
        raise InvalidRequest("'n' must be at least 1", param="n")
    return req


async def chat_completions(request: web.Request) -> web.StreamResponse:
    rid = _request_id(request)
    if request.method != "POST":
        return error_response(MethodNotAllowed("Use POST for /v1/chat/completions"), rid)
    state = request.app[STATE]
    attempts = 0
    backend_id = ""
    try:
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise RequestTooLarge(
                f"The request body is larger than the gateway's limit of "
                f"{state.config.max_body_bytes} bytes (maxBodyBytes)"
            ) from None
        req = parse_request(body)
        plan = state.router.plan(req)
        stream = bool(req.stream)
        include_usage = bool(stream and req.stream_options and req.stream_options.include_usage)
        last_error: GatewayError | None = None
        router = state.router
        for attempt in plan:
            attempts += 1
            backend = attempt.backend
            backend_id = backend.id
            set_context(
                RequestContext(
                    rid, body, req.model, attempt.upstream_model, backend_id, include_usage
                )
            )
            upstream_req = (
                req
                if attempt.upstream_model == req.model
                else msgspec.structs.replace(req, model=attempt.upstream_model)
            )
            router.begin(backend)
            try:
                if stream:
                    # _stream reports success to the router once the first part arrived.
                    return await stream_response(
                        request, state, attempt, upstream_req, rid, attempts
                    )
                result = await backend.provider.chat_completion(upstream_req, backend.config)
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
                # A backend bug (custom backends included): a 502 naming it, never a crash.
                log.exception("request %s: backend %s raised", rid, backend_id)
                err = UpstreamError(
                    f"backend '{backend_id}' failed: {exc.__class__.__name__}: {exc}",
                    retryable=False,
                )
                router.failed(backend, err)
                raise err from None
            router.succeeded(backend)
            try:
                payload = (
                    result
                    if isinstance(result, bytes)
                    else (
                        codec.dumps(result) if isinstance(result, Mapping) else codec.encode(result)
                    )
                )
            except (TypeError, ValueError) as exc:
                raise UpstreamError(
                    f"backend '{backend_id}' returned a result that is not JSON: {exc}",
                    retryable=False,
                ) from None
            return web.Response(
                body=payload,
                content_type=_JSON,
                headers=response_headers(rid, backend_id, attempts),
            )
        assert last_error is not None
        raise last_error
    except GatewayError as err:
        extra = response_headers(rid, backend_id, attempts) if backend_id else None
        return error_response(err, rid, extra)
    except (asyncio.CancelledError, ConnectionError, web.HTTPException):
        raise
    except Exception:
        # Last resort: a bug must still answer in OpenAI JSON (never aiohttp's text 500),
        # with the request id to find the traceback in the log.
        log.exception("request %s: unexpected error", rid)
        return error_response(
            GatewayError(f"internal gateway error (request id {rid})", code="internal_error"), rid
        )


async def list_models(request: web.Request) -> web.Response:
    rid = _request_id(request)
    if request.method != "GET":
        return error_response(MethodNotAllowed("Use GET for /v1/models"), rid)
    state = request.app[STATE]
    models = dict(state.router.models())
    for backend_id, names in (await state.extra_models()).items():
        for name in names:
            models.setdefault(name, backend_id)
    data: list[dict[str, Any]] = [
        {"id": m, "object": "model", "created": 0, "owned_by": b} for m, b in models.items()
    ]
    return web.Response(
        body=codec.dumps({"object": "list", "data": data}),
        content_type=_JSON,
        headers={"x-request-id": rid},
    )


async def health(request: web.Request) -> web.Response:
    state = request.app[STATE]
    status = "draining" if state.draining else "ok"
    body = {
        "status": status,
        "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "version": __version__,
        "configVersion": state.version,
        "pid": _PID,  # which worker answered (--workers): versions can be checked per worker
    }
    return web.Response(
        status=503 if state.draining else 200, body=codec.dumps(body), content_type=_JSON
    )


async def not_found(request: web.Request) -> web.Response:
    rid = _request_id(request)
    return error_response(
        NotFound(f"Unknown path {request.method} {request.path}; see the README for the endpoints"),
        rid,
    )


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
API_PATHS = ["/v1/chat/completions", "/chat/completions", "/v1/models"]
# With CORS on, explicit methods instead of "*": aiohttp-cors adds the OPTIONS route itself and
# refuses resources that have a "*" route. The handlers still answer 405 for a wrong method.
_CORS_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def add_routes(
    app: web.Application,
    wrap: Callable[[Handler], Handler] | None = None,
    metrics: Handler | None = None,
    cors: bool = False,
) -> None:
    """``wrap`` (edge.Edge.wrap) adds rate limit, API keys, metrics and access log to /v1."""
    chat: Handler = chat_completions
    models: Handler = list_models
    if wrap is not None:
        chat, models = wrap(chat), wrap(models)
    for path, handler in zip(API_PATHS, (chat, chat, models), strict=True):
        if cors:
            resource = app.router.add_resource(path)
            for method in _CORS_METHODS:
                resource.add_route(method, handler)
        else:
            app.router.add_route("*", path, handler)
    app.router.add_route("GET", "/health", health)
    # Behind the API keys (when set): it names backends and their failures.
    app.router.add_route(
        "GET", "/health/backends", wrap(backends_health) if wrap else backends_health
    )
    if metrics is not None:
        app.router.add_route("GET", "/metrics", metrics)
    app.router.add_route("*", "/{tail:.*}", not_found)
