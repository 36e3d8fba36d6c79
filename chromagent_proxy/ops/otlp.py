"""OTLP/HTTP export of finished spans: a hand-written protobuf encoder and a batching thread.

Why not the OpenTelemetry SDK's span objects and exporter: per request they cost more than
10 % of the gateway's CPU (two SDK spans ≈ 40 µs, ``encode_spans`` ≈ 80 µs per span pair on
the build machine; bench/README.md). A request's spans arrive as one record of plain fields
(``RequestSpans``), a lone span as a tuple (``SpanData``); the attributes that repeat from
request to request (method, route, provider, model, backend, status) are encoded once and
cached as bytes, so a span encodes in a few joins. The wire format is the standard
``ExportTraceServiceRequest`` (opentelemetry-proto's trace.proto field numbers below), POSTed
as ``application/x-protobuf`` to the OTLP/HTTP endpoint from the standard ``OTEL_*`` variables.
Sending is ``otlp_export.py``.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterable, Mapping
from typing import Any

log = logging.getLogger("chromagent_proxy")

# One finished span: (trace_id (16 bytes), span_id (8 bytes), parent_span_id (8 bytes, or
# b"" for a root), trace_state, name, kind, start_ns, end_ns, encoded attributes (``encode``:
# those fixed per route / backend, encoded once), attributes, status_code, status_message).
# Ids as bytes: the order they go on the wire and in a traceparent.
SpanData = tuple[bytes, bytes, bytes, str, str, int, int, int, bytes, dict[str, Any], int, str]
# A span's name; its encoded name and kind; its encoded fixed attributes; both, joined.
Route = tuple[str, bytes, bytes, bytes]
SERVER, CLIENT = 2, 3  # Span.SpanKind
STATUS_UNSET, STATUS_ERROR = 0, 2  # Status.StatusCode
_TIMES = struct.Struct("<BQBQ")  # tag 7, start (fixed64), tag 8, end
_IDS = struct.Struct("8s16s8s")  # RequestSpans.ids: server span, trace, attempt span
_CACHE_MAX = 4096  # cached encoded attributes (low-cardinality values; cleared when full)


_SMALL = [bytes((i,)) for i in range(0x80)]


def _varint(n: int) -> bytes:
    if 0 <= n < 0x80:
        return _SMALL[n]
    if n < 0:
        n += 1 << 64  # int64 two's complement
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _ld(field: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _any_value(v: Any) -> bytes:
    # AnyValue: string_value = 1, bool_value = 2, int_value = 3, double_value = 4,
    # array_value = 5 (ArrayValue.values = 1).
    if isinstance(v, str):
        return _ld(1, v.encode())
    if isinstance(v, bool):
        return b"\x10" + (b"\x01" if v else b"\x00")
    if isinstance(v, int):
        return b"\x18" + _varint(v)
    if isinstance(v, float):
        return b"\x21" + struct.pack("<d", v)
    if isinstance(v, (list, tuple)):
        return _ld(5, b"".join(_ld(1, _any_value(x)) for x in v))
    return _ld(1, str(v).encode())


def key_value(key: str, v: Any) -> bytes:
    """KeyValue: key = 1, value = 2."""
    return _ld(1, key.encode()) + _ld(2, _any_value(v))


def encode(attrs: Mapping[str, Any]) -> bytes:
    """Span attributes (field 9), encoded: for the ones that repeat as a group."""
    return b"".join(_ld(9, key_value(k, v)) for k, v in attrs.items())


class RequestSpans:
    """One request's spans as the event loop leaves them (``tracing.Trace`` fills these
    slots): the SERVER span and the CLIENT span of the attempt that served it, if one was
    open at the end. Plain fields, no attribute dicts: the encoder builds the attributes
    both spans share (usage, error type, response model, finish reasons) once, off the loop.
    """

    __slots__ = (
        "answer",
        "attempt_route",
        "attempt_start",
        "code",
        "end_ns",
        "error_type",
        "extra",
        "ids",
        "model",
        "parent",
        "route",
        "start",
        "state",
        "status",
        "usage",
    )
    # ids: server span id (8 bytes) + trace id (16) + the current attempt's span id (8), as
    # one string: one random draw, and ids[8:] is what a traceparent carries.
    ids: bytes
    parent: bytes  # the remote parent span id, b"" for a root
    state: str  # the incoming tracestate
    route: Route  # the server span's name, and what only depends on the route (``route``)
    start: int
    model: str  # gen_ai.request.model of the server span ("" when not known)
    attempt_start: int  # 0: no attempt open
    attempt_route: Route
    answer: tuple[str | None, tuple[str, ...]] | None  # (response model, finish reasons)
    extra: dict[str, Any] | None  # rare server span attributes (captured content)
    end_ns: int
    status: int  # http.response.status_code
    error_type: str
    code: int  # Status.StatusCode of both spans
    usage: tuple[int, int, int, int, int]  # in, out, cache read, cache write, reasoning


class ClientOnly:
    """A request's client span without its server span (dropped: the queue was full)."""

    __slots__ = ("spans",)

    def __init__(self, spans: RequestSpans) -> None:
        self.spans = spans


Item = SpanData | RequestSpans | ClientOnly  # what the exporter queues


def route(name: str, kind: int, attrs: Mapping[str, Any]) -> Route:
    """A span's name; its name and kind (fields 5, 6) and fixed attributes, encoded (once
    per route or backend and model)."""
    head, fixed = _ld(5, name.encode()) + b"\x30" + bytes((kind,)), encode(attrs)
    return name, head, fixed, head + fixed


_USAGE_KEYS = (
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.cache_read.input_tokens",
    "gen_ai.usage.cache_creation.input_tokens",
    "gen_ai.usage.reasoning.output_tokens",
)


def _length(n: int) -> bytes:
    """``ScopeSpans.spans`` tag (field 2) and a span's length."""
    return _LENGTHS[n] if n < 2048 else b"\x12" + _varint(n)


_LENGTHS = [b"\x12" + _varint(n) for n in range(2048)]  # spans are a few hundred bytes
# Span.status (field 15) of the gateway's spans without a message, by code.
_STATUS = {STATUS_ERROR: b"\x7a\x02\x18\x02"}


class Encoder:
    """Spans → ``ExportTraceServiceRequest`` bytes, one resource and one scope per batch."""

    def __init__(self, resource: Mapping[str, Any], scope: str) -> None:
        self.resource = dict(resource)
        # Resource: attributes = 1. InstrumentationScope: name = 1.
        res = b"".join(_ld(1, key_value(k, v)) for k, v in resource.items())
        self._head = _ld(1, res)  # ResourceSpans.resource = 1
        self._scope = _ld(1, _ld(1, scope.encode()))  # ScopeSpans.scope = 1
        self._cache: dict[tuple[str, Any], bytes] = {}  # (key, value) → encoded attribute
        self._names: dict[tuple[str, int], bytes] = {}  # (name, kind) → encoded fields 5, 6
        # What both spans of a request share, by (usage, error type, answer): repeats often.
        self._shared: dict[tuple[Any, ...], bytes] = {}
        self._routes: dict[tuple[Route, str, int], bytes] = {}  # see _route_head

    def _attr(self, item: tuple[str, Any]) -> bytes:
        """Span.attributes (field 9) entry, cached by (key, value) for the short strings, ints
        and tuples of strings that repeat (methods, routes, providers, models, statuses,
        token counts, finish reasons). One key must keep one value type: (k, 1), (k, 1.0)
        and (k, True) are the same dict key (the gateway sets no bool or float attribute)."""
        try:
            return self._cache[item]
        except (KeyError, TypeError):
            pass
        key, v = item
        encoded = _ld(9, key_value(key, v))
        t = type(v)
        if t is int or (t is str and len(v) <= 256) or (t is tuple and len(v) <= 8):
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[item] = encoded
        return encoded

    def span(self, s: SpanData, out: list[bytes]) -> None:
        """Append one ``ScopeSpans.spans`` (field 2) entry to ``out``, in pieces (no copy)."""
        trace_id, span_id, parent, state, name, kind, start, end, fixed, attrs, code, msg = s
        head = self._names.get((name, kind))
        if head is None:
            if len(self._names) >= _CACHE_MAX:
                self._names.clear()
            head = self._names[(name, kind)] = _ld(5, name.encode()) + b"\x30" + bytes((kind,))
        try:
            # All cached (the usual case): one C-level pass, no bytecode per attribute.
            attributes = b"".join(map(self._cache.__getitem__, attrs.items()))
        except (KeyError, TypeError):  # a new value, or an unhashable one
            attributes = b"".join(map(self._attr, attrs.items()))
        # trace_id = 1, span_id = 2, [trace_state = 3], [parent_span_id = 4], name = 5,
        # kind = 6, start / end_time_unix_nano = 7 / 8 (fixed64), attributes = 9, status = 15.
        parts = [b"\x0a\x10", trace_id, b"\x12\x08", span_id]
        if state:
            parts.append(_ld(3, state.encode()))
        if parent:
            parts.append(b"\x22\x08")
            parts.append(parent)
        parts.append(head)
        parts.append(_TIMES.pack(0x39, start, 0x41, end))
        parts.append(fixed)
        parts.append(attributes)
        if code:
            parts.append(_status(code, msg))
        out.append(b"\x12" + _varint(sum(map(len, parts))))
        out.extend(parts)

    def _shared_attrs(self, r: RequestSpans) -> bytes:
        """The attributes a request's server span and serving client span both carry."""
        key = (r.usage, r.error_type, r.answer)
        try:
            return self._shared[key]
        except KeyError:
            pass
        attr = self._attr
        usage = r.usage
        parts = []
        if usage[0] or usage[1]:
            parts.append(attr((_USAGE_KEYS[0], usage[0])))
            parts.append(attr((_USAGE_KEYS[1], usage[1])))
        for i in (2, 3, 4):
            if usage[i]:
                parts.append(attr((_USAGE_KEYS[i], usage[i])))
        if r.answer is not None:
            model, reasons = r.answer
            if model:
                parts.append(attr(("gen_ai.response.model", model)))
            if reasons:
                parts.append(attr(("gen_ai.response.finish_reasons", reasons)))
        if r.error_type:
            parts.append(attr(("error.type", r.error_type)))
        encoded = b"".join(parts)
        if len(self._shared) >= _CACHE_MAX:
            self._shared.clear()
        self._shared[key] = encoded
        return encoded

    def request_spans(self, r: RequestSpans, out: list[bytes], server: bool = True) -> None:
        """Append a request's client span (if any) and server span to ``out``. The times
        come before the name here (protobuf fields may come in any order): what follows
        them is then cached whole, by route."""
        sid, trace, aid = _IDS.unpack(r.ids)
        shared = self._shared_attrs(r)
        status = _STATUS[r.code] if r.code else b""
        state = _ld(3, r.state.encode()) if r.state else b""
        end = r.end_ns
        if r.attempt_start:
            body = b"".join((
                b"\x0a\x10", trace, b"\x12\x08", aid, state, b"\x22\x08", sid,
                _TIMES.pack(0x39, r.attempt_start, 0x41, end), r.attempt_route[3], shared, status,
            ))  # fmt: skip
            n = len(body)
            out.append(_LENGTHS[n] if n < 2048 else _length(n))
            out.append(body)
        if not server:
            return
        key = (r.route, r.model, r.status)
        head = self._routes.get(key)
        if head is None:
            head = self._route_head(key)
        if r.extra:
            head += b"".join(map(self._attr, r.extra.items()))
        body = b"".join((
            b"\x0a\x10", trace, b"\x12\x08", sid, state,
            b"\x22\x08" + r.parent if r.parent else b"",
            _TIMES.pack(0x39, r.start, 0x41, end), head, shared, status,
        ))  # fmt: skip
        n = len(body)
        out.append(_LENGTHS[n] if n < 2048 else _length(n))
        out.append(body)

    def _route_head(self, key: tuple[Route, str, int]) -> bytes:
        """A server span's name, kind, fixed attributes, request model and HTTP status."""
        route, model, status = key
        head = route[3] + self._attr(("http.response.status_code", status))
        if model:
            head += self._attr(("gen_ai.request.model", model))
        if len(self._routes) >= _CACHE_MAX:
            self._routes.clear()
        self._routes[key] = head
        return head

    def request(self, spans: Iterable[Item]) -> bytes:
        pieces: list[bytes] = []
        for s in spans:
            if isinstance(s, RequestSpans):
                self.request_spans(s, pieces)
            elif isinstance(s, tuple):
                self.span(s, pieces)
            else:
                self.request_spans(s.spans, pieces, server=False)
        inner = len(self._scope) + sum(map(len, pieces))
        scope_spans = b"\x12" + _varint(inner)  # ResourceSpans.scope_spans = 2
        size = len(self._head) + len(scope_spans) + inner
        # ExportTraceServiceRequest.resource_spans = 1, joined once.
        return b"".join([b"\x0a", _varint(size), self._head, scope_spans, self._scope, *pieces])


def _status(code: int, msg: str) -> bytes:
    # Span.status = 15; Status: message = 2, code = 3.
    return _ld(15, (_ld(2, msg.encode()) if msg else b"") + b"\x18" + bytes((code,)))
