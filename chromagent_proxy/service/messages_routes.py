"""The Anthropic Messages endpoints: ``POST /v1/messages`` (the one serving loop,
serving.py, with the MessagesDialect), ``POST /v1/messages/count_tokens`` and the
Anthropic-shaped model list. ``add_messages_routes`` registers them (handlers.py's
``add_routes`` calls it before its catch-all)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web

from chromagent_proxy.backends.base import RequestContext, set_context
from chromagent_proxy.core.errors import GatewayError, MethodNotAllowed
from chromagent_proxy.core.seal import Sealer
from chromagent_proxy.dialects.base import Inbound
from chromagent_proxy.dialects.messages import MessagesDialect
from chromagent_proxy.dialects.messages import count as counting
from chromagent_proxy.dialects.messages import models as model_list
from chromagent_proxy.dialects.messages.relay import MessagesNative
from chromagent_proxy.routing.router import Attempt
from chromagent_proxy.routing.rules import Needs
from chromagent_proxy.service.serving import error_response as serving_error_response
from chromagent_proxy.service.serving import read_body, request_id, serve
from chromagent_proxy.service.state import STATE

log = logging.getLogger("chromagent_proxy")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_JSON = "application/json"
COUNT_PATH = "/v1/messages/count_tokens"


MESSAGES = web.AppKey("chromagent_messages", MessagesDialect)
MESSAGES_PATH = "/v1/messages"
PATHS = [MESSAGES_PATH, COUNT_PATH]


def error_response(dialect: MessagesDialect, err: GatewayError, rid: str) -> web.Response:
    status, body, headers = dialect.error_body(err)
    return web.Response(
        status=status,
        body=body,
        content_type=_JSON,
        headers={"x-request-id": rid, "request-id": rid, **headers},
    )


def _plan(request: web.Request, inbound: Inbound) -> list[Attempt]:
    return request.app[STATE].router.plan_for(
        inbound.model, Needs(inbound.stream, inbound.tools, inbound.images)
    )


def count_tokens_handler(dialect: MessagesDialect, cache: counting.CountCache) -> Handler:
    async def count_tokens(request: web.Request) -> web.StreamResponse:
        rid = request_id(request)
        try:
            if request.method != "POST":
                raise MethodNotAllowed(f"Use POST for {COUNT_PATH}")
            body = await read_body(request)
            inbound = dialect.parse(body, request.headers, request.query)
            plan = _plan(request, inbound)
            last: GatewayError | None = None
            for n, attempt in enumerate(plan, 1):
                backend = attempt.backend
                key = cache.key(backend.id, attempt.upstream_model, body)
                hit = cache.get(key)
                if hit is None:
                    try:
                        hit = await _count(dialect, inbound, attempt, rid)
                    except GatewayError as exc:
                        if exc.retryable and n < len(plan):
                            last = exc
                            continue
                        raise
                    cache.put(key, hit)
                return web.Response(
                    body=hit,
                    content_type=_JSON,
                    headers={
                        "x-request-id": rid,
                        "request-id": rid,
                        "x-chromagent-backend": backend.id,
                    },
                )
            assert last is not None
            raise last
        except GatewayError as err:
            return error_response(dialect, err, rid)

    return count_tokens


async def _count(dialect: MessagesDialect, inbound: Inbound, attempt: Attempt, rid: str) -> bytes:
    provider = attempt.backend.provider
    parsed = inbound.native
    if dialect.relays(provider) and isinstance(provider, MessagesNative):
        return await provider.count_messages_tokens(
            inbound.body, parsed.headers, attempt.upstream_model
        )
    if isinstance(provider, counting.TokenCounter):
        req = dialect.to_ir(inbound, provider.dialect)
        req.model = attempt.upstream_model
        ctx = RequestContext(rid, inbound.body, inbound.model, req.model, attempt.backend.id)
        set_context(ctx)
        return counting.answer(await provider.count_tokens(req, ctx))
    return counting.answer(counting.estimate(parsed.request))


def anthropic_models(request: web.Request, models: list[str], rid: str) -> web.Response:
    """GET /v1/models for a request that carries anthropic-version / x-api-key."""
    try:
        body = model_list.list_body(models, request.query)
    except GatewayError as err:
        return error_response(request.app[MESSAGES], err, rid)
    return web.Response(body=body, content_type=_JSON, headers={"x-request-id": rid})


async def messages_create(request: web.Request) -> web.StreamResponse:
    """POST /v1/messages (``?beta=true`` too): the one serving loop with the Messages dialect."""
    rid = request_id(request)
    dialect = request.app[MESSAGES]
    if request.method != "POST":
        return error_response(dialect, MethodNotAllowed(f"Use POST for {MESSAGES_PATH}"), rid)
    return await serve(request, dialect, rid)


def add_messages_routes(
    app: web.Application,
    wrap: Callable[..., Handler] | None = None,
    cors_methods: tuple[str, ...] | None = None,
    expect_handler: Callable[[web.Request], Awaitable[web.StreamResponse | None]] | None = None,
) -> None:
    """Register ``PATHS`` (before the catch-all); the dialect seals with ``stateSecret``."""
    dialect = MessagesDialect(Sealer(app[STATE].config.state_secret))
    app[MESSAGES] = dialect
    handlers: list[Handler] = [
        messages_create,
        count_tokens_handler(dialect, counting.CountCache()),
    ]
    if wrap is not None:
        # The edge's own 401 / 429 / 503 in Anthropic's shape too (edge.Edge.wrap's render).
        def render(err: GatewayError, rid: str, extra: Mapping[str, str] | None) -> web.Response:
            return serving_error_response(dialect, err, rid, extra)

        handlers = [wrap(h, render) for h in handlers]
    for path, handler in zip(PATHS, handlers, strict=True):
        if cors_methods:
            resource = app.router.add_resource(path)
            for method in cors_methods:
                resource.add_route(method, handler, expect_handler=expect_handler)
        else:
            app.router.add_route("*", path, handler, expect_handler=expect_handler)
