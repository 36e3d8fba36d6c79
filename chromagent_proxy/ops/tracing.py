"""OpenTelemetry traces (off by default): one SERVER span per API request, one CLIENT
span per upstream attempt, GenAI semantic-convention attributes, W3C ``traceparent``
to upstreams.

Wiring is explicit: the edge builds ``Tracing`` once (``build``) and starts a ``Trace``
per sampled request, stored on the request's ``Record``; the request path reports attempts,
failures and answers to the Record, which forwards them here when ``rec.trace`` is set.
With tracing off nothing here runs: no span objects. A request the sampler drops gets no
``Trace`` either (``begin`` returns None): it costs one header lookup and one comparison.

A request's spans are one plain record (``Trace``, an ``otlp.RequestSpans``: slots, no
attribute dicts), not OpenTelemetry SDK objects: the SDK's per-span work alone cost more
than the 10 % of a request's CPU allowed for tracing (bench/README.md). The record goes to
the exporter whole at the end; an attempt that failed over is its own span, sent then. ``otlp.py`` encodes them as standard OTLP protobuf and sends batches
from its own thread, so no request ever waits on the collector. Exporter, sampler, batch
sizes and resource come from the standard ``OTEL_*`` environment variables.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from random import getrandbits
from time import time_ns
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import msgspec

from chromagent_proxy.core import codec
from chromagent_proxy.core.errors import ConfigError
from chromagent_proxy.ops import otlp
from chromagent_proxy.ops.otlp import (
    CLIENT,
    SERVER,
    STATUS_ERROR,
    Encoder,
    RequestSpans,
    Route,
)
from chromagent_proxy.ops.otlp_export import Exporter

if TYPE_CHECKING:
    from chromagent_proxy.core.config import TracingConfig

log = logging.getLogger("chromagent_proxy")

# Upstream headers of an attempt when tracing is off (shared, never written).
NO_HEADERS: Mapping[str, str] = MappingProxyType({})
DEFAULT_SERVICE_NAME = "chromagent-gateway"
# How much captured content one attribute may hold (collectors drop huge spans).
CONTENT_LIMIT = 64 * 1024
_HEX = frozenset("0123456789abcdef")
_LOW64 = (1 << 64) - 1
_LOW128 = (1 << 128) - 1
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
        self.ratio = bound <= _LOW64  # False: every root trace is kept
        # (method, path, operation) → the server span's name and first attributes, encoded
        # once (otlp.route).
        self._heads: dict[tuple[str, str, str], Route] = {}
        # (operation, provider, upstream model, backend) → a client span's name and attributes.
        self.attempt_heads: dict[tuple[str, str, str, str], Route] = {}

    def begin(
        self, headers: Mapping[str, str], method: str, path: str, operation: str
    ) -> Trace | None:
        """The SERVER span of one request (an incoming ``traceparent`` is its parent), or
        None when the sampler drops the request."""
        incoming = headers.get("traceparent")
        ctx = parse_traceparent(incoming) if incoming else None
        if ctx is None:
            # One draw for the ids: server span (64 bits), trace (128), first attempt (64).
            bits = getrandbits(256)
            while not (bits >> 192 and bits & _LOW64 and bits >> 64 & _LOW128):
                bits = getrandbits(256)  # an all-zero id is invalid (p ≈ 2^-63)
            ids = bits.to_bytes(32, "big")
            # Ratio sampling: keep the trace when its id's low 64 bits are under the bound.
            if self.ratio and (bits >> 64) & _LOW64 >= self.bound:
                return None
            parent = b""
            state = ""
        else:
            trace_id, parent, sampled = ctx
            if (not sampled) if self.parent_based else (_low64(trace_id) >= self.bound):
                return None
            state = headers.get("tracestate", "")[:512]
            spans = _span_id() + _span_id()
            ids = spans[:8] + trace_id + spans[8:]
        route = self._heads.get((method, path, operation))
        if route is None:
            attrs: dict[str, Any] = {
                "http.request.method": method,
                "url.path": path,
                "http.route": path,
            }
            if operation:
                attrs["gen_ai.operation.name"] = operation
            if len(self._heads) >= 256:  # paths with an id in them: stay bounded
                self._heads.clear()
            route = self._heads[(method, path, operation)] = otlp.route(
                f"{method} {path}", SERVER, attrs
            )
        return Trace(self, ids, parent, state, route, operation or "chat")

    async def close(self) -> None:
        # Sends the queued spans: blocking (network), so off the event loop.
        await asyncio.to_thread(self.exporter.shutdown)


class Trace(RequestSpans):
    """The spans of one request: the server span and the current attempt's client span.
    Handed to the exporter whole at ``end`` (otlp.RequestSpans: plain fields)."""

    __slots__ = ("operation", "tracing")

    def __init__(
        self,
        tracing: Tracing,
        ids: bytes,
        parent: bytes,
        state: str,
        route: Route,
        operation: str,
    ) -> None:
        self.tracing = tracing
        self.ids = ids
        self.parent = parent
        self.state = state
        self.route = route
        self.operation = operation
        self.model = ""
        self.attempt_start = 0
        self.answer = None
        self.extra = None
        self.start = time_ns()

    def request(self, model: str, body: bytes) -> None:
        self.model = model
        if self.tracing.capture_content:
            content = _request_content(body)
            if content:
                self._extra()["gen_ai.input.messages"] = content

    def attempt(
        self, backend_id: str, provider_name: str, upstream_model: str
    ) -> Mapping[str, str]:
        """Start the CLIENT span of an attempt; the headers that carry it upstream."""
        if self.attempt_start:
            self._end_attempt({}, 0, "")  # an earlier attempt that ended without a report
            self.ids = self.ids[:24] + _span_id()
        self.attempt_start = time_ns()
        key = (self.operation, provider_name, upstream_model, backend_id)
        heads = self.tracing.attempt_heads
        route = heads.get(key)
        if route is None:
            attrs = {
                "gen_ai.operation.name": self.operation,
                "gen_ai.provider.name": provider_name,
                "gen_ai.request.model": upstream_model,
                "chromagent.backend.id": backend_id,
            }
            if len(heads) >= 256:  # models a client may name freely: stay bounded
                heads.clear()
            route = heads[key] = otlp.route(f"{self.operation} {upstream_model}", CLIENT, attrs)
        self.attempt_route = route
        # "00-" trace id "-" span id "-01": the ids after the server span's, in hex.
        if self.state:
            return {
                "traceparent": f"00-{self.ids[8:].hex('-', -16)}-01",
                "tracestate": self.state,
            }
        return {"traceparent": f"00-{self.ids[8:].hex('-', -16)}-01"}

    def failed(self, exc: BaseException, error_type: str) -> None:
        """The current attempt failed (the request may fail over to another)."""
        if not self.attempt_start:
            return
        # No http.response.status_code: the error holds the status the gateway answers
        # with (an upstream 500 becomes a 502), not the upstream's.
        message = getattr(exc, "message", None)
        self._end_attempt(
            {"error.type": error_type or _error_type(exc)},
            STATUS_ERROR,
            message if isinstance(message, str) else "",
        )
        self.ids = self.ids[:24] + _span_id()  # the next attempt's span

    def answered(self, payload: bytes) -> None:
        """A whole answer in the client's dialect: response model and finish reasons."""
        try:
            # Typed decode: only the few fields named below are built (msgspec skips the rest).
            summary = _SUMMARY.decode(payload)
        except msgspec.ValidationError:
            return  # not an answer shape we know (e.g. a list): nothing to record
        except msgspec.DecodeError:
            return
        choices = summary.choices
        if choices is not None and len(choices) == 1:  # the usual answer: one choice
            reason = choices[0].finish_reason
            reasons: tuple[str, ...] = (reason,) if reason else ()
        else:
            reasons = _finish_reasons(summary)
        if summary.model or reasons:
            self.answer = (summary.model, reasons)
        if self.tracing.capture_content:
            content = _response_content(payload)
            if content:
                self._extra()["gen_ai.output.messages"] = content

    def end(self, status: int, error_type: str, usage: tuple[int, int, int, int, int]) -> None:
        """The request is over: the server span and the serving attempt's span (if one is
        open) go to the exporter, encoded there."""
        self.end_ns = time_ns()
        self.status = status
        self.error_type = error_type
        self.usage = usage
        # A 4xx is the client's, not the server's.
        self.code = STATUS_ERROR if error_type and (status >= 500 or status < 400) else 0
        self.tracing.exporter.add(self, 2 if self.attempt_start else 1)

    def _extra(self) -> dict[str, Any]:
        if self.extra is None:
            self.extra = {}
        return self.extra

    def _end_attempt(self, attrs: dict[str, Any], code: int, message: str) -> None:
        """An attempt that did not serve the request: its own span, now."""
        ids, (name, _, fixed, _) = self.ids, self.attempt_route
        self.attempt_start, start = 0, self.attempt_start
        self.tracing.exporter.add(
            (ids[8:24], ids[24:], ids[:8], self.state, name, CLIENT, start, time_ns(),
             fixed, attrs, code, message),
            1,
        )  # fmt: skip


def _span_id() -> bytes:
    return (getrandbits(64) or 1).to_bytes(8, "big")


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
