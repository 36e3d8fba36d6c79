"""Per-request facts from the backends: which backend and model served an attempt, how
long the gateway waited on it, tokens, upstream errors, and streams open.

Each backend's ``chat_completion`` / ``chat_completion_stream`` gets a thin wrapper once at
start-up (instance attributes shadowing the methods), so the handlers' failover loop needs
no hooks. The wrappers write into the request's ``Record`` (a context variable the edge
sets); outside a request (embedding, tests calling a provider directly) they pass through.
A stream is not wrapped (memory per open stream): the handler's write loop reports its
first part, usage and errors through ``watch_stream`` / ``stream_*`` below.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextvars import ContextVar
from typing import Any

from .backends.base import StreamPart, current_context
from .config import BackendConfig
from .errors import (
    GatewayError,
    ServiceUnavailable,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from .metrics import Metrics
from .ratelimit import Decision
from .routing import Backend
from .schema.openai import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest

log = logging.getLogger("chromagent_proxy")
perf = time.perf_counter


class Record:
    """What one request did; filled by the route wrapper and the backend wrappers."""

    __slots__ = (
        "attempts",
        "backend",
        "first_at",
        "ip",
        "killed",
        "metrics",
        "model",
        "rl",
        "start",
        "stream",
        "streaming",
        "task",
        "tokens_in",
        "tokens_out",
        "upstream_s",
        "want_usage",
        "watched",
    )

    def __init__(self, start: float) -> None:
        self.start = start
        self.backend = ""
        self.model = ""
        self.stream = False
        self.streaming = False  # first chunk arrived: counted in active streams
        self.attempts = 0
        self.upstream_s = 0.0
        self.first_at = 0.0
        self.tokens_in = 0
        self.tokens_out = 0
        self.ip: str | None = None
        self.rl: Decision | None = None
        self.task: asyncio.Task[Any] | None = None
        self.killed = False
        self.want_usage = False
        self.metrics: Metrics | None = None  # set by a stream wrapper: where the handler reports
        self.watched = False


RECORD: ContextVar[Record | None] = ContextVar("chromagent_edge_record", default=None)


_PROMPT = re.compile(rb'"prompt_tokens"\s*:\s*(\d+)')
_COMPLETION = re.compile(rb'"completion_tokens"\s*:\s*(\d+)')


def _usage(result: Any) -> tuple[int, int] | None:
    """Token counts of a result or chunk in any shape a backend may return."""
    if type(result) is bytes:
        # Relayed JSON: look only at the "usage" object (at the end in practice) with two
        # regex searches instead of decoding the whole body.
        i = result.rfind(b'"usage"')
        if i < 0:
            return None
        p = _PROMPT.search(result, i)
        c = _COMPLETION.search(result, i)
        if p is None and c is None:
            return None
        return int(p.group(1)) if p else 0, int(c.group(1)) if c else 0
    if isinstance(result, (ChatCompletion, ChatCompletionChunk)):
        u = result.usage
        return (u.prompt_tokens, u.completion_tokens) if u is not None else None
    if isinstance(result, Mapping):
        d = result.get("usage")
        if isinstance(d, Mapping):
            return int(d.get("prompt_tokens") or 0), int(d.get("completion_tokens") or 0)
    return None


def classify(exc: BaseException) -> str | None:
    """Upstream error class for metrics; None for errors that are not the upstream's."""
    if isinstance(exc, UpstreamTimeout):
        return "timeout"
    if isinstance(exc, UpstreamUnavailable):
        return "connect"
    if isinstance(exc, UpstreamProtocolError):
        return "protocol"
    if isinstance(exc, UpstreamError):
        if exc.status == 429:
            return "429"
        if exc.code == "upstream_auth_failed":
            return "auth"
        return "5xx" if exc.status >= 500 else "4xx"
    if isinstance(exc, GatewayError | asyncio.CancelledError | GeneratorExit):
        return None
    return "other"


def count_upstream_error(metrics: Metrics, backend_id: str, exc: BaseException) -> None:
    """Count ``exc`` under its upstream error class; errors that are not the upstream's don't count."""
    klass = classify(exc)
    if klass is not None:
        metrics.upstream_error(backend_id, klass)


def instrument(backends: Mapping[str, Backend], metrics: Metrics, streams: set[Record]) -> None:
    """Wrap every backend's chat_completion / chat_completion_stream (once, at start-up)."""
    for b in backends.values():
        p = b.provider
        try:
            # Instance attributes shadow the methods: the handler calls these wrappers.
            setattr(p, "chat_completion", _wrap_call(b.id, p.chat_completion, metrics))  # noqa: B010
            setattr(  # noqa: B010
                p,
                "chat_completion_stream",
                _wrap_stream(b.id, p.chat_completion_stream, metrics, streams),
            )
        except AttributeError:  # a provider with __slots__ and no __dict__
            log.info("backend %s: metrics see only whole requests (slots provider)", b.id)


def _begin(rec: Record, backend_id: str, request: ChatCompletionRequest) -> None:
    rec.attempts += 1
    rec.backend = backend_id
    try:
        ctx = current_context()
    except LookupError:
        rec.model = request.model
        return
    rec.model = ctx.client_model
    rec.want_usage = ctx.include_usage


def _wrap_call(
    backend_id: str,
    call: Callable[[ChatCompletionRequest, BackendConfig], Awaitable[Any]],
    metrics: Metrics,
) -> Callable[[ChatCompletionRequest, BackendConfig], Awaitable[Any]]:

    async def chat_completion(request: ChatCompletionRequest, config: BackendConfig) -> Any:
        rec = RECORD.get()
        if rec is None:
            return await call(request, config)
        _begin(rec, backend_id, request)
        t = perf()
        try:
            result = await call(request, config)
        except BaseException as exc:
            count_upstream_error(metrics, backend_id, exc)
            raise
        finally:
            rec.upstream_s += perf() - t
        usage = _usage(result)
        if usage is not None:
            rec.tokens_in, rec.tokens_out = usage
        return result

    return chat_completion


def _wrap_stream(
    backend_id: str,
    call: Callable[[ChatCompletionRequest, BackendConfig], AsyncIterator[StreamPart]],
    metrics: Metrics,
    streams: set[Record],
) -> Callable[[ChatCompletionRequest, BackendConfig], AsyncIterator[StreamPart]]:
    def chat_completion_stream(
        request: ChatCompletionRequest, config: BackendConfig
    ) -> AsyncIterator[StreamPart]:
        rec = RECORD.get()
        parts = call(request, config)
        if rec is None:
            return parts
        _begin(rec, backend_id, request)
        rec.stream = True
        rec.task = asyncio.current_task()  # what drain() cancels past shutdownTimeoutMs
        streams.add(rec)
        # The stream is not wrapped in another async generator (a frame and its awaitables
        # held for the stream's whole life, ~0.5 KB per open stream): the handler reports
        # its first part, usage and errors to the Record through the functions below.
        rec.metrics = metrics
        rec.watched = True
        return parts

    return chat_completion_stream


# -- called by the handler's stream loop (streaming.stream_response) ------------------------------


def watch_stream() -> Record | None:
    """Right after ``chat_completion_stream()``: the request's Record if that call went
    through a wrapper above (the handler then reports to it), else None."""
    rec = RECORD.get()
    if rec is None or not rec.watched:
        return None
    rec.watched = False  # a failover to a provider without the wrapper reports nothing
    return rec


def stream_first(rec: Record, t: float) -> None:
    """The first part arrived; ``t`` is when the handler began waiting for it."""
    rec.first_at = now = perf()
    rec.upstream_s += now - t
    if not rec.streaming:
        rec.streaming = True
        if rec.metrics is not None:
            rec.metrics.active_streams += 1


def stream_part(rec: Record, part: StreamPart) -> None:
    """A later part; usage comes only when the client asked for it (include_usage)."""
    if rec.want_usage:
        usage = _usage(part)
        if usage is not None:
            rec.tokens_in, rec.tokens_out = usage


def stream_failed(rec: Record, backend_id: str, exc: BaseException, t: float | None) -> None:
    """The stream raised ``exc`` while the handler waited for a part (``t``: when it began
    waiting for the first part; None for later parts). Raises ServiceUnavailable instead of
    a CancelledError from drain() past shutdownTimeoutMs, so the handler ends the stream
    with an error event rather than dropping the connection."""
    if t is not None:
        rec.upstream_s += perf() - t
    if isinstance(exc, StopAsyncIteration):
        return  # an empty stream: the handler reports it
    if isinstance(exc, asyncio.CancelledError):
        if rec.killed and rec.task is not None:
            rec.task.uncancel()
            raise ServiceUnavailable(
                "The gateway is shutting down and this stream ran past shutdownTimeoutMs."
            ) from None
        return
    if rec.metrics is not None:
        count_upstream_error(rec.metrics, backend_id, exc)
