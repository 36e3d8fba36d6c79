"""OpenTelemetry traces (off by default): one SERVER span per API request, one CLIENT
span per upstream attempt, GenAI semantic-convention attributes, W3C ``traceparent``
to upstreams.

Wiring is explicit: the edge builds ``Tracing`` once (``build``) and starts a ``Trace``
per sampled request, stored on the request's ``Record``; the request path reports attempts,
failures and answers to the Record, which forwards them here when ``rec.trace`` is set.
With tracing off nothing here runs: no span objects. A request the sampler drops gets no
``Trace`` either (``begin`` returns None): it costs one header lookup and one comparison.

Spans are plain records (a dict of attributes each), not OpenTelemetry SDK objects: the
SDK's per-span work alone cost more than the 10 % of a request's CPU allowed for tracing
(bench/README.md). ``otlp.py`` encodes them as standard OTLP protobuf and sends batches
from its own thread, so no request ever waits on the collector. Exporter, sampler, batch
sizes and resource come from the standard ``OTEL_*`` environment variables.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import msgspec

from chromagent_proxy.core import codec
from chromagent_proxy.core.errors import ConfigError
from chromagent_proxy.ops.otlp import CLIENT, SERVER, STATUS_ERROR, Encoder, Exporter, encode

if TYPE_CHECKING:
    from chromagent_proxy.core.config import TracingConfig

log = logging.getLogger("chromagent_proxy")

# Upstream headers of an attempt when tracing is off (shared, never written).
NO_HEADERS: Mapping[str, str] = MappingProxyType({})
DEFAULT_SERVICE_NAME = "chromagent-gateway"
# How much captured content one attribute may hold (collectors drop huge spans).
CONTENT_LIMIT = 64 * 1024
_HEX = frozenset("0123456789abcdef")
# What ``Trace.end`` puts on both spans.
_END_KEYS = (
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.cache_read.input_tokens",
    "gen_ai.usage.cache_creation.input_tokens",
    "gen_ai.usage.reasoning.output_tokens",
    "error.type",
)
_SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)


def disabled_by_env() -> bool:
    return os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


def build(config: TracingConfig | None) -> Tracing | None:
    """The process's tracing, or None when it is off (the default)."""
    if config is None or not config.enabled or disabled_by_env():
        return None
    try:
        from opentelemetry.sdk.resources import Resource
    except ImportError:
        raise ConfigError(
            "config $.tracing.enabled: the OpenTelemetry packages are not installed; "
            "install the gateway with its tracing extra: pip install 'chromagent_proxy[tracing]'"
        ) from None
    # The SDK's resource detection, once at start: OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES.
    resource = Resource.create()
    attrs = dict(resource.attributes)
    if str(attrs.get("service.name", "")).startswith("unknown_service"):
        attrs["service.name"] = DEFAULT_SERVICE_NAME
    exporter = Exporter(Encoder(attrs, "chromagent_proxy"))
    return Tracing(exporter, config.capture_content, *sampler_from_env())


def sampler_from_env() -> tuple[bool, int]:
    """``OTEL_TRACES_SAMPLER`` / ``_ARG``: (follow a remote parent's decision, ratio bound).

    The bound is the SDK's TraceIdRatioBased one: a root trace is kept when the low 64 bits
    of its id are below it, so every replica (and every SDK) keeps the same traces."""
    name = os.environ.get("OTEL_TRACES_SAMPLER", "").strip().lower() or "parentbased_always_on"
    if name not in _SAMPLERS:
        log.warning("OTEL_TRACES_SAMPLER=%r is not supported: using parentbased_always_on", name)
        name = "parentbased_always_on"
    rate = 1.0
    if name.endswith("always_off"):
        rate = 0.0
    elif name.endswith("traceidratio"):
        raw = os.environ.get("OTEL_TRACES_SAMPLER_ARG", "").strip()
        try:
            rate = float(raw) if raw else 1.0
        except ValueError:
            log.warning("OTEL_TRACES_SAMPLER_ARG=%r is not a number: using 1.0", raw)
        if not 0.0 <= rate <= 1.0:
            log.warning("OTEL_TRACES_SAMPLER_ARG=%r is outside [0, 1]: using 1.0", raw)
            rate = 1.0
    return name.startswith("parentbased_"), round(rate * (1 << 64))


def _low64(trace_id: bytes) -> int:
    return int.from_bytes(trace_id[8:], "big")


def parse_traceparent(value: str) -> tuple[bytes, bytes, bool] | None:
    """(trace id, parent span id, sampled) from a W3C ``traceparent``, None if invalid."""
    parts = value.strip().split("-")
    if len(parts) < 4 or len(parts[0]) != 2 or parts[0] == "ff":
        return None
    version, tid, sid, flags = parts[:4]
    if (version == "00" and len(parts) != 4) or len(tid) != 32 or len(sid) != 16:
        return None
    if len(flags) != 2 or not _HEX.issuperset(version + tid + sid + flags):
        return None
    if tid == "0" * 32 or sid == "0" * 16:
        return None
    return bytes.fromhex(tid), bytes.fromhex(sid), bool(int(flags, 16) & 1)


class Tracing:
    """The tracer of one gateway process."""

    def __init__(
        self, exporter: Exporter, capture_content: bool, parent_based: bool, bound: int
    ) -> None:
        self.exporter = exporter
        self.capture_content = capture_content
        self.parent_based = parent_based
        self.bound = bound  # keep root traces whose low 64 id bits are below this
        # (method, path, operation) → the server span's name and first attributes.
        # Names and pre-encoded attributes that only depend on these keys (encoded once).
        self._heads: dict[tuple[str, str, str], tuple[str, bytes]] = {}
        # (operation, provider, upstream model, backend) → a client span's name and attributes.
        self.attempt_heads: dict[tuple[str, str, str, str], tuple[str, bytes]] = {}

    def begin(
        self, headers: Mapping[str, str], method: str, path: str, operation: str
    ) -> Trace | None:
        """The SERVER span of one request (an incoming ``traceparent`` is its parent), or
        None when the sampler drops the request."""
        parent = b""
        state = ""
        incoming = headers.get("traceparent")
        ctx = parse_traceparent(incoming) if incoming else None
        if ctx is not None:
            trace_id, parent, sampled = ctx
            if (not sampled) if self.parent_based else (_low64(trace_id) >= self.bound):
                return None
            state = headers.get("tracestate", "")[:512]
        else:
            bits = random.getrandbits(128) or 1
            if bits & 0xFFFFFFFFFFFFFFFF >= self.bound:
                return None
            trace_id = bits.to_bytes(16, "big")
        head = self._heads.get((method, path, operation))
        if head is None:
            attrs: dict[str, Any] = {
                "http.request.method": method,
                "url.path": path,
                "http.route": path,
            }
            if operation:
                attrs["gen_ai.operation.name"] = operation
            if len(self._heads) >= 256:  # paths with an id in them: stay bounded
                self._heads.clear()
            head = self._heads[(method, path, operation)] = (f"{method} {path}", encode(attrs))
        name, fixed = head
        return Trace(self, trace_id, parent, state, name, fixed, operation or "chat")

    async def close(self) -> None:
        # Sends the queued spans: blocking (network), so off the event loop.
        await asyncio.to_thread(self.exporter.shutdown)


class Trace:
    """The spans of one request: the server span and the current attempt's client span."""

    __slots__ = (
        "attempt_attrs",
        "attempt_fixed",
        "attempt_id",
        "attempt_name",
        "attempt_start",
        "attrs",
        "fixed",
        "name",
        "operation",
        "parent",
        "span_id",
        "start",
        "state",
        "trace_id",
        "tracing",
    )

    def __init__(
        self,
        tracing: Tracing,
        trace_id: bytes,
        parent: bytes,
        state: str,
        name: str,
        fixed: bytes,
        operation: str,
    ) -> None:
        self.tracing = tracing
        self.trace_id = trace_id
        self.parent = parent
        self.state = state
        self.span_id = _span_id()
        self.start = time.time_ns()
        self.name = name
        self.fixed = fixed  # the server span's request-independent attributes, encoded
        self.attrs: dict[str, Any] = {}  # and the rest
        self.operation = operation
        self.attempt_id = b""  # the current attempt's client span, b"" when none is open
        self.attempt_name = ""
        self.attempt_start = 0
        self.attempt_attrs: dict[str, Any] = {}
        self.attempt_fixed = b""

    def request(self, model: str, body: bytes) -> None:
        self.attrs["gen_ai.request.model"] = model
        if self.tracing.capture_content:
            content = _request_content(body)
            if content:
                self.attrs["gen_ai.input.messages"] = content

    def attempt(
        self, backend_id: str, provider_name: str, upstream_model: str
    ) -> Mapping[str, str]:
        """Start the CLIENT span of an attempt; the headers that carry it upstream."""
        if self.attempt_id:
            self._end_attempt(0, "")  # an earlier attempt that ended without a report
        self.attempt_id = span_id = _span_id()
        self.attempt_start = time.time_ns()
        key = (self.operation, provider_name, upstream_model, backend_id)
        heads = self.tracing.attempt_heads
        head = heads.get(key)
        if head is None:
            attrs = {
                "gen_ai.operation.name": self.operation,
                "gen_ai.provider.name": provider_name,
                "gen_ai.request.model": upstream_model,
                "chromagent.backend.id": backend_id,
            }
            if len(heads) >= 256:  # models a client may name freely: stay bounded
                heads.clear()
            head = heads[key] = (f"{self.operation} {upstream_model}", encode(attrs))
        self.attempt_name, self.attempt_fixed = head
        self.attempt_attrs = {}
        headers = {"traceparent": f"00-{self.trace_id.hex()}-{span_id.hex()}-01"}
        if self.state:
            headers["tracestate"] = self.state
        return headers

    def failed(self, exc: BaseException, error_type: str) -> None:
        """The current attempt failed (the request may fail over to another)."""
        if not self.attempt_id:
            return
        # No http.response.status_code: the error holds the status the gateway answers
        # with (an upstream 500 becomes a 502), not the upstream's.
        self.attempt_attrs["error.type"] = error_type or _error_type(exc)
        message = getattr(exc, "message", None)
        self._end_attempt(STATUS_ERROR, message if isinstance(message, str) else "")

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
        spans = (self.attempt_attrs, self.attrs) if self.attempt_id else (self.attrs,)
        for a in spans:
            if summary.model:
                a["gen_ai.response.model"] = summary.model
            if reasons:
                a["gen_ai.response.finish_reasons"] = reasons
        if self.tracing.capture_content:
            content = _response_content(payload)
            if content:
                self.attrs["gen_ai.output.messages"] = content

    def end(self, status: int, error_type: str, usage: tuple[int, int, int, int, int]) -> None:
        """The request is over: end the serving attempt's span and the server span."""
        tokens_in, tokens_out, cache_read, cache_write, reasoning = usage
        code = 0
        attrs = self.attrs
        # On the server span, then copied to the serving attempt's span (if one is open).
        if tokens_in or tokens_out:
            attrs["gen_ai.usage.input_tokens"] = tokens_in
            attrs["gen_ai.usage.output_tokens"] = tokens_out
        if cache_read:
            attrs["gen_ai.usage.cache_read.input_tokens"] = cache_read
        if cache_write:
            attrs["gen_ai.usage.cache_creation.input_tokens"] = cache_write
        if reasoning:
            attrs["gen_ai.usage.reasoning.output_tokens"] = reasoning
        if error_type:
            attrs["error.type"] = error_type
            if status >= 500 or status < 400:  # a 4xx is the client's, not the server's
                code = STATUS_ERROR
        if self.attempt_id:
            a = self.attempt_attrs
            for key in _END_KEYS:
                if key in attrs:
                    a[key] = attrs[key]
            self._end_attempt(code, "")
        attrs["http.response.status_code"] = status
        self.tracing.exporter.add(
            (self.trace_id, self.span_id, self.parent, self.state, self.name, SERVER,
             self.start, time.time_ns(), self.fixed, attrs, code, "")
        )  # fmt: skip

    def _end_attempt(self, code: int, message: str) -> None:
        span_id, self.attempt_id = self.attempt_id, b""
        if span_id:
            self.tracing.exporter.add(
                (self.trace_id, span_id, self.span_id, self.state, self.attempt_name, CLIENT,
                 self.attempt_start, time.time_ns(), self.attempt_fixed, self.attempt_attrs,
                 code, message)
            )  # fmt: skip


def _span_id() -> bytes:
    return (random.getrandbits(64) or 1).to_bytes(8, "big")


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


def _finish_reasons(summary: _Summary) -> tuple[str, ...]:
    # A tuple: hashable, so the exporter encodes a repeated value once.
    if summary.choices is not None:
        return tuple(c.finish_reason for c in summary.choices if c.finish_reason)
    if summary.stop_reason:
        return (summary.stop_reason,)
    if summary.status and summary.object == "response":
        return (summary.status,)
    return ()


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
