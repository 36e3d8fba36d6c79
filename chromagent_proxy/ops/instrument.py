"""What one request did, reported explicitly by the request path (serving.py): which
backend and model served each attempt, how long the gateway waited on upstreams, the
first byte, tokens, and upstream errors. The edge creates the ``Record``, hands it to the
handler on the request (``request[serving.RECORD]``) and turns it into metrics and the
access line when the request ends. Nothing is wired in from the side: no replaced
methods, no context variables.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from chromagent_proxy.core import ir
from chromagent_proxy.core.errors import (
    GatewayError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from chromagent_proxy.ops.genai import FROM_UPSTREAM_CLASS
from chromagent_proxy.ops.metrics import Metrics
from chromagent_proxy.ops.ratelimit import Decision
from chromagent_proxy.ops.tracing import NO_HEADERS, Trace

log = logging.getLogger("chromagent_proxy")
perf = time.perf_counter


class Record:
    """What one request did; filled by the request path, read by the edge at the end."""

    __slots__ = (
        "attempts",
        "backend",
        "cache_read",
        "cache_write",
        "error_type",
        "first_at",
        "ip",
        "killed",
        "metrics",
        "model",
        "reasoning",
        "rl",
        "session",
        "start",
        "stream",
        "streaming",
        "streams",
        "task",
        "tokens_in",
        "tokens_out",
        "trace",
        "upstream_s",
    )

    def __init__(
        self, start: float, metrics: Metrics | None = None, streams: set[Record] | None = None
    ) -> None:
        self.start = start
        self.metrics = metrics
        self.streams = streams  # the edge's open streams (what drain() may end)
        self.backend = ""
        self.model = ""
        self.stream = False
        self.streaming = False  # first chunk arrived: counted in active streams
        self.attempts = 0
        self.upstream_s = 0.0
        self.first_at = 0.0
        self.tokens_in = 0
        self.tokens_out = 0
        self.cache_read = 0
        self.cache_write = 0
        self.reasoning = 0
        self.error_type = ""  # genai.ERROR_TYPES key of the last attempt's failure, if any
        self.ip: str | None = None
        self.rl: Decision | None = None
        self.session: str | None = None
        self.task: asyncio.Task[Any] | None = None
        self.killed = False
        self.trace: Trace | None = None  # the request's spans when tracing is on (edge)

    def attempt(self, backend_id: str, model: str, upstream_model: str = "") -> Mapping[str, str]:
        """An attempt begins; the headers to send upstream with it (trace context)."""
        self.attempts += 1
        self.backend = backend_id
        self.model = model
        self.error_type = ""  # an earlier attempt's failure is not this one's
        if self.trace is None:
            return NO_HEADERS
        providers = self.metrics.genai.providers if self.metrics is not None else {}
        provider = providers.get(backend_id, "")  # genai_provider_name (edge.watch)
        return self.trace.attempt(backend_id, provider, upstream_model or model)

    def stream_opened(self) -> None:
        """A stream attempt began: drain() may end it past shutdownTimeoutMs."""
        self.stream = True
        self.task = asyncio.current_task()
        if self.streams is not None:
            self.streams.add(self)

    def first(self, t: float) -> None:
        """The first bytes for the client are ready; ``t``: when the wait for them began."""
        self.first_at = now = perf()
        self.upstream_s += now - t
        if not self.streaming:
            self.streaming = True
            if self.metrics is not None:
                self.metrics.active_streams += 1

    def usage(self, u: ir.Usage) -> None:
        self.tokens_in = u.prompt_total
        self.tokens_out = u.completion_total
        self.cache_read = u.cache_read
        self.cache_write = u.cache_write
        self.reasoning = u.reasoning

    def counts(self, prompt: int, completion: int) -> None:
        self.tokens_in, self.tokens_out = prompt, completion

    def upstream_failed(self, backend_id: str, exc: BaseException) -> None:
        if self.metrics is not None:
            klass = count_upstream_error(self.metrics, backend_id, exc)
            if klass is not None:
                self.error_type = FROM_UPSTREAM_CLASS[klass]
        if self.trace is not None:
            self.trace.failed(exc, self.error_type)


# The Record of a request is stored on the aiohttp request under this key by the edge.
RECORD = web.RequestKey("chromagent_record", Record)


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
    if isinstance(exc, GatewayError | asyncio.CancelledError | GeneratorExit | StopAsyncIteration):
        return None
    return "other"


def count_upstream_error(metrics: Metrics, backend_id: str, exc: BaseException) -> str | None:
    """Count ``exc`` under its upstream error class (returned); errors that are not the
    upstream's don't count (None)."""
    klass = classify(exc)
    if klass is not None:
        metrics.upstream_error(backend_id, klass)
    return klass
