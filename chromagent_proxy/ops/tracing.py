"""OpenTelemetry traces (off by default): one SERVER span per API request, one CLIENT
span per upstream attempt, GenAI semantic-convention attributes, W3C ``traceparent``
to upstreams.

Wiring is explicit: the edge builds ``Tracing`` once (``build``) and starts a ``Trace``
per request, stored on the request's ``Record``; the request path reports attempts,
failures and answers to the Record, which forwards them here when ``rec.trace`` is set.
With tracing off nothing here runs: no OpenTelemetry import, no span objects.

Export is OTLP over HTTP through a ``BatchSpanProcessor``: ending a span only queues it;
a background thread sends batches, so no request ever waits on the collector. Exporter,
sampler, batch sizes and resource come from the standard ``OTEL_*`` environment variables.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import msgspec

from chromagent_proxy.core import codec
from chromagent_proxy.core.errors import ConfigError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

    from chromagent_proxy.core.config import TracingConfig

log = logging.getLogger("chromagent_proxy")

# Upstream headers of an attempt when tracing is off (shared, never written).
NO_HEADERS: Mapping[str, str] = MappingProxyType({})
DEFAULT_SERVICE_NAME = "chromagent-gateway"
# How much captured content one attribute may hold (collectors drop huge spans).
CONTENT_LIMIT = 64 * 1024


def disabled_by_env() -> bool:
    return os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


def build(config: TracingConfig | None) -> Tracing | None:
    """The process's tracing, or None when it is off (the default)."""
    if config is None or not config.enabled or disabled_by_env():
        return None
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        raise ConfigError(
            "config $.tracing.enabled: the OpenTelemetry packages are not installed; "
            "install the gateway with its tracing extra: pip install 'chromagent_proxy[tracing]'"
        ) from None
    resource = Resource.create()  # OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": DEFAULT_SERVICE_NAME}))
    # sampler=None: OTEL_TRACES_SAMPLER / _ARG (default parentbased_always_on).
    provider = TracerProvider(resource=resource)
    # Endpoint, headers, timeout, compression: OTEL_EXPORTER_OTLP_[TRACES_]*.
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return Tracing(provider, config.capture_content)


class Tracing:
    """The tracer of one gateway process."""

    def __init__(self, provider: TracerProvider, capture_content: bool) -> None:
        from opentelemetry import propagate, trace

        self.provider = provider
        self.tracer: Tracer = provider.get_tracer("chromagent_proxy")
        self.capture_content = capture_content
        self._propagate = propagate
        self._trace = trace

    def begin(self, headers: Mapping[str, str], method: str, path: str, operation: str) -> Trace:
        """The SERVER span of one request; an incoming ``traceparent`` is its parent."""
        from opentelemetry.trace import SpanKind

        parent = self._propagate.extract(headers)  # the client's trace, if it sent one
        attrs: dict[str, Any] = {
            "http.request.method": method,
            "url.path": path,
            "http.route": path,
        }
        if operation:
            attrs["gen_ai.operation.name"] = operation
        span = self.tracer.start_span(
            f"{method} {path}", context=parent, kind=SpanKind.SERVER, attributes=attrs
        )
        return Trace(self, span, operation or "chat")

    async def close(self) -> None:
        # Flushes queued spans: blocking (network), so off the event loop.
        await asyncio.to_thread(self.provider.shutdown)


class Trace:
    """The spans of one request: the server span and the current attempt's client span."""

    __slots__ = ("attempt_span", "operation", "span", "tracing")

    def __init__(self, tracing: Tracing, span: Span, operation: str) -> None:
        self.tracing = tracing
        self.span = span
        self.operation = operation
        self.attempt_span: Span | None = None

    def request(self, model: str, body: bytes) -> None:
        self.span.set_attribute("gen_ai.request.model", model)
        if self.tracing.capture_content:
            content = _request_content(body)
            if content:
                self.span.set_attribute("gen_ai.input.messages", content)

    def attempt(
        self, backend_id: str, provider_name: str, upstream_model: str
    ) -> Mapping[str, str]:
        """Start the CLIENT span of an attempt; the headers that carry it upstream."""
        from opentelemetry.trace import SpanKind

        self._end_attempt()  # an earlier attempt that ended without a report
        t = self.tracing
        span = t.tracer.start_span(
            f"{self.operation} {upstream_model}",
            context=t._trace.set_span_in_context(self.span),
            kind=SpanKind.CLIENT,
            attributes={
                "gen_ai.operation.name": self.operation,
                "gen_ai.provider.name": provider_name,
                "gen_ai.request.model": upstream_model,
                "chromagent.backend.id": backend_id,
            },
        )
        self.attempt_span = span
        headers: dict[str, str] = {}
        t._propagate.inject(headers, context=t._trace.set_span_in_context(span))
        return headers

    def failed(self, exc: BaseException, error_type: str) -> None:
        """The current attempt failed (the request may fail over to another)."""
        from opentelemetry.trace import StatusCode

        span = self.attempt_span
        if span is None:
            return
        self.attempt_span = None
        # No http.response.status_code: the error holds the status the gateway answers
        # with (an upstream 500 becomes a 502), not the upstream's.
        span.set_attribute("error.type", error_type or _error_type(exc))
        message = getattr(exc, "message", None)
        span.set_status(StatusCode.ERROR, message if isinstance(message, str) else None)
        span.end()

    def answered(self, payload: bytes) -> None:
        """A whole answer in the client's dialect: response model and finish reasons."""
        try:
            # Typed decode: only the few fields named below are built (msgspec skips the rest).
            summary = _SUMMARY.decode(payload)
        except msgspec.ValidationError:
            return  # not an answer shape we know (e.g. a list): nothing to record
        except msgspec.DecodeError:
            return
        reasons = _finish_reasons(summary)
        for s in (self.attempt_span, self.span):
            if s is None:
                continue
            if summary.model:
                s.set_attribute("gen_ai.response.model", summary.model)
            if reasons:
                s.set_attribute("gen_ai.response.finish_reasons", reasons)
        if self.tracing.capture_content:
            content = _response_content(payload)
            if content:
                self.span.set_attribute("gen_ai.output.messages", content)

    def end(self, status: int, error_type: str, usage: tuple[int, int, int, int, int]) -> None:
        """The request is over: end the serving attempt's span and the server span."""
        from opentelemetry.trace import StatusCode

        tokens_in, tokens_out, cache_read, cache_write, reasoning = usage
        spans = [s for s in (self.attempt_span, self.span) if s is not None]
        for s in spans:
            if tokens_in or tokens_out:
                s.set_attribute("gen_ai.usage.input_tokens", tokens_in)
                s.set_attribute("gen_ai.usage.output_tokens", tokens_out)
            if cache_read:
                s.set_attribute("gen_ai.usage.cache_read.input_tokens", cache_read)
            if cache_write:
                s.set_attribute("gen_ai.usage.cache_creation.input_tokens", cache_write)
            if reasoning:
                s.set_attribute("gen_ai.usage.reasoning.output_tokens", reasoning)
            if error_type:
                s.set_attribute("error.type", error_type)
                if status >= 500 or status < 400:  # a 4xx is the client's, not the server's
                    s.set_status(StatusCode.ERROR)
        self.span.set_attribute("http.response.status_code", status)
        self._end_attempt()
        self.span.end()

    def _end_attempt(self) -> None:
        span, self.attempt_span = self.attempt_span, None
        if span is not None:
            span.end()


def _error_type(exc: BaseException) -> str:
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    code = getattr(exc, "code", None)
    return code if isinstance(code, str) and code else type(exc).__name__


class _Choice(msgspec.Struct):
    finish_reason: str | None = None


class _Summary(msgspec.Struct):
    """What spans take from a whole answer, in any client dialect."""

    model: str | None = None
    object: str | None = None
    choices: list[_Choice] | None = None  # chat completions
    stop_reason: str | None = None  # messages
    status: str | None = None  # responses


_SUMMARY = msgspec.json.Decoder(_Summary)


def _finish_reasons(summary: _Summary) -> list[str]:
    if summary.choices is not None:
        return [c.finish_reason for c in summary.choices if c.finish_reason]
    if summary.stop_reason:
        return [summary.stop_reason]
    if summary.status and summary.object == "response":
        return [summary.status]
    return []


def _clip(value: Any) -> str:
    text = codec.dumps(value).decode()
    return text if len(text) <= CONTENT_LIMIT else text[:CONTENT_LIMIT] + "…"


def _request_content(body: bytes) -> str:
    try:
        data: Any = codec.loads(body)
    except ValueError:
        return ""
    if not isinstance(data, dict):
        return ""
    picked = {k: data[k] for k in ("system", "instructions", "messages", "input") if k in data}
    return _clip(picked) if picked else ""


def _response_content(payload: bytes) -> str:
    try:
        data: Any = codec.loads(payload)
    except ValueError:
        return ""
    if not isinstance(data, dict):
        return ""
    for key in ("choices", "content", "output"):
        if key in data:
            return _clip(data[key])
    return ""
