"""HTTP endpoints: /v1/chat/completions, /v1/models, /health. No provider code here:
each API endpoint is one client dialect handed to the request path (serving.py).

Each path is registered for every method and answers 405 itself, and a
catch-all answers 404, so every error is OpenAI JSON without a middleware on
the hot path.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from chromagent_proxy import __version__
from chromagent_proxy.core import codec
from chromagent_proxy.core.errors import (
    GatewayError,
    InvalidRequest,
    MethodNotAllowed,
    ModelNotFound,
    NotFound,
    RequestTooLarge,
)
from chromagent_proxy.dialects.chat.dialect import CHAT
from chromagent_proxy.dialects.embeddings.dialect import EMBEDDINGS
from chromagent_proxy.dialects.messages.models import model_info, wants_anthropic_shape
from chromagent_proxy.dialects.responses.dialect import input_items, retrieve
from chromagent_proxy.service.health_view import backends_health
from chromagent_proxy.service.messages_routes import PATHS as MESSAGES_PATHS
from chromagent_proxy.service.messages_routes import add_messages_routes, anthropic_models
from chromagent_proxy.service.serving import request_id, serve
from chromagent_proxy.service.state import STATE

log = logging.getLogger("chromagent_proxy")

_JSON = "application/json"


_PID = os.getpid()


def error_response(
    err: GatewayError, rid: str, extra: Mapping[str, str] | None = None
) -> web.Response:
    headers = {"x-request-id": rid, **err.headers}
    if extra:
        headers.update(extra)
    return web.Response(status=err.status, body=err.body(), content_type=_JSON, headers=headers)


async def chat_completions(request: web.Request) -> web.StreamResponse:
    rid = request_id(request)
    if request.method != "POST":
        return error_response(MethodNotAllowed("Use POST for /v1/chat/completions"), rid)
    return await serve(request, CHAT, rid)


async def embeddings(request: web.Request) -> web.StreamResponse:
    rid = request_id(request)
    if request.method != "POST":
        return error_response(MethodNotAllowed("Use POST for /v1/embeddings"), rid)
    return await serve(request, EMBEDDINGS, rid)


async def responses_create(request: web.Request) -> web.StreamResponse:
    rid = request_id(request)
    dialect = request.app[STATE].responses
    if request.headers.get("Upgrade", "").lower() == "websocket":
        # Codex tries a WebSocket first; 426 makes it fall back to HTTP at once (a 404 or
        # 405 costs it ~6 s of retries). reference/responses-api.md §7.
        err = GatewayError(
            "WebSocket mode is not supported by this gateway; use POST /v1/responses",
            status=426,
            type="invalid_request_error",
            code="websocket_not_supported",
        )
        return error_response(err, rid, {"Upgrade": "websocket", "Connection": "close"})
    if request.method != "POST":
        return error_response(MethodNotAllowed("Use POST for /v1/responses"), rid)
    if dialect is None:
        return error_response(NotFound("The Responses API is not enabled"), rid)
    return await serve(request, dialect, rid)


async def response_by_id(request: web.Request) -> web.StreamResponse:
    rid = request_id(request)
    state = request.app[STATE]
    store = state.responses.store if state.responses is not None else None
    response_id = request.match_info["response_id"]
    try:
        if request.method == "GET":
            record = await retrieve(store, response_id)
            return _json(record["response"], rid)
        if request.method == "DELETE":
            await retrieve(store, response_id)
            assert store is not None
            await store.delete(response_id)
            return _json({"id": response_id, "object": "response", "deleted": True}, rid)
        raise MethodNotAllowed("Use GET or DELETE for /v1/responses/{id}")
    except GatewayError as err:
        return error_response(err, rid)


async def response_input_items(request: web.Request) -> web.StreamResponse:
    rid = request_id(request)
    state = request.app[STATE]
    store = state.responses.store if state.responses is not None else None
    try:
        if request.method != "GET":
            raise MethodNotAllowed("Use GET for /v1/responses/{id}/input_items")
        record = await retrieve(store, request.match_info["response_id"])
        return _json(input_items(record, request.query), rid)
    except GatewayError as err:
        return error_response(err, rid)


def _json(body: Any, rid: str) -> web.Response:
    return web.Response(body=codec.dumps(body), content_type=_JSON, headers={"x-request-id": rid})


async def _served_models(request: web.Request) -> dict[str, str]:
    """Model → owning backend id: the configured names, then what backends discovered."""
    state = request.app[STATE]
    models = dict(state.router.models())
    for name, backend_id in (await state.discovered_models()).items():
        models.setdefault(name, backend_id)
    return models


def _model_object(model: str, backend_id: str) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": 0, "owned_by": backend_id}


async def list_models(request: web.Request) -> web.Response:
    rid = request_id(request)
    if request.method not in _READ:
        return error_response(MethodNotAllowed("Use GET for /v1/models"), rid)
    if wants_anthropic_shape(request.headers):  # Claude Code's gateway model discovery
        return anthropic_models(request, list(await _served_models(request)), rid)
    data = [_model_object(m, b) for m, b in (await _served_models(request)).items()]
    return web.Response(
        body=codec.dumps({"object": "list", "data": data}),
        content_type=_JSON,
        headers={"x-request-id": rid},
    )


async def retrieve_model(request: web.Request) -> web.Response:
    """``GET /v1/models/{id}``, what the SDKs' ``models.retrieve()`` calls."""
    rid = request_id(request)
    if request.method not in _READ:
        return error_response(MethodNotAllowed("Use GET for /v1/models/{model}"), rid)
    model = request.match_info["model"]
    backend_id = (await _served_models(request)).get(model)
    if backend_id is None:
        return error_response(
            ModelNotFound(
                f"The model '{model}' is not served by this gateway; "
                "GET /v1/models lists the models it serves.",
                param="model",
            ),
            rid,
        )
    info = (
        model_info(model)
        if wants_anthropic_shape(request.headers)
        else _model_object(model, backend_id)
    )
    return web.Response(
        body=codec.dumps(info),
        content_type=_JSON,
        headers={"x-request-id": rid},
    )


async def root(request: web.Request) -> web.Response:
    """``GET /`` (and ``HEAD /``, which some clients, e.g. Claude Code, probe): 200 and where
    the API is, rather than a 404 that reads as "no gateway here"."""
    body = {"name": "chromagent_proxy", "version": __version__, "api": "/v1", "health": "/health"}
    return web.Response(body=codec.dumps(body), content_type=_JSON)


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
    rid = request_id(request)
    return error_response(
        NotFound(f"Unknown path {request.method} {request.path}; see the README for the endpoints"),
        rid,
    )


async def expect_continue(request: web.Request) -> web.StreamResponse | None:
    """``Expect: 100-continue``: refuse a body over maxBodyBytes before the client sends it."""
    if request.headers.get("Expect", "").lower() != "100-continue":
        return error_response(
            InvalidRequest(
                "Only 'Expect: 100-continue' is supported", code="expectation_failed", status=417
            ),
            request_id(request),
        )
    limit = request.app[STATE].config.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        resp = error_response(
            RequestTooLarge(
                f"The request body is larger than the gateway's limit of {limit} bytes "
                "(maxBodyBytes)"
            ),
            request_id(request),
        )
        resp.force_close()  # the client must not send the body on this connection
        return resp
    if request.version >= (1, 1):
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0
    return None


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_PATHS = [
    "/v1/chat/completions",
    "/chat/completions",
    "/v1/models",
    "/v1/models/{model:.+}",
    "/v1/responses",
    "/responses",
    "/v1/embeddings",
    "/embeddings",
    "/v1/responses/{response_id}",
    "/v1/responses/{response_id}/input_items",
]
API_PATHS = [*_PATHS, *MESSAGES_PATHS]  # CORS covers all of them
# Every route that answers GET answers HEAD the same way, without the body (aiohttp drops it).
_READ = ("GET", "HEAD")
# With CORS on, explicit methods instead of "*": aiohttp-cors adds the OPTIONS route itself and
# refuses resources that have a "*" route. The handlers still answer 405 for a wrong method.
_CORS_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def add_routes(
    app: web.Application,
    wrap: Callable[[Handler], Handler] | None = None,
    metrics: Handler | None = None,
    cors: bool = False,
) -> None:
    """``wrap`` (edge.Edge.wrap) adds rate limit, API keys, metrics and access log to /v1."""
    handlers: list[Handler] = [
        chat_completions,
        chat_completions,
        list_models,
        retrieve_model,
        responses_create,
        responses_create,
        embeddings,
        embeddings,
        response_by_id,
        response_input_items,
    ]
    if wrap is not None:
        handlers = [wrap(h) for h in handlers]
    for path, handler in zip(_PATHS, handlers, strict=True):
        if cors:
            resource = app.router.add_resource(path)
            for method in _CORS_METHODS:
                resource.add_route(method, handler, expect_handler=expect_continue)
        else:
            app.router.add_route("*", path, handler, expect_handler=expect_continue)
    # Anthropic Messages API: /v1/messages, /v1/messages/count_tokens (messages_routes.py).
    add_messages_routes(app, wrap, _CORS_METHODS if cors else None, expect_continue)
    app.router.add_get("/", root)  # add_get also answers HEAD
    app.router.add_get("/health", health)
    # Behind the API keys (when set): it names backends and their failures.
    app.router.add_get("/health/backends", wrap(backends_health) if wrap else backends_health)
    if metrics is not None:
        app.router.add_get("/metrics", metrics)
    app.router.add_route("*", "/{tail:.*}", not_found)
