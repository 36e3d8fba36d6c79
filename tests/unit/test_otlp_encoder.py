"""The hand-written OTLP encoder produces what opentelemetry-proto decodes: every field the
gateway sets, every attribute value type, cached attributes identical to fresh ones, and
W3C traceparent parsing."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from chromagent_proxy.ops.otlp import (
    CLIENT,
    SERVER,
    STATUS_ERROR,
    Encoder,
    SpanData,
    encode,
)
from chromagent_proxy.ops.otlp_export import Exporter
from chromagent_proxy.ops.tracing import Tracing, parse_traceparent
from tests.support.otlp import _value

TRACE = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")
PARENT = bytes.fromhex("b7ad6b7169203331")
S1, S2 = bytes.fromhex("0000000000001111"), bytes.fromhex("0000000000002222")
ATTRS: dict[str, Any] = {
    "http.request.method": "POST",
    "gen_ai.usage.input_tokens": 300,
    "big": 2**62 + 5,
    "negative": -3,
    "ratio": 0.25,
    "flag": True,
    "off": False,
    "gen_ai.response.finish_reasons": ["stop", "length"],
    "long": "é" * 300,  # not cached, multi-byte
}


def _decode(body: bytes) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    req.ParseFromString(body)
    return req


def test_spans_decode_with_opentelemetry_proto() -> None:
    enc = Encoder({"service.name": "gw", "replica": 3}, "chromagent_proxy")
    server: SpanData = (TRACE, S1, PARENT, "vendor=a", "POST /v1/chat/completions",
                        SERVER, 1_700_000_000_000_000_000, 1_700_000_000_250_000_000, b"", ATTRS, 0, "")  # fmt: skip
    client: SpanData = (TRACE, S2, S1, "", "chat gpt", CLIENT, 5, 2**63 + 7,
                        encode({"gen_ai.provider.name": "openai"}), {"error.type": "timeout"}, STATUS_ERROR, "upstream took too long")  # fmt: skip
    for _ in range(2):  # the second round uses the cached attribute bytes
        req = _decode(enc.request([server, client]))
        (rs,) = req.resource_spans
        assert {a.key: _value(a.value) for a in rs.resource.attributes} == {
            "service.name": "gw",
            "replica": 3,
        }
        (ss,) = rs.scope_spans
        assert ss.scope.name == "chromagent_proxy"
        s, c = ss.spans
        assert s.trace_id == TRACE and s.span_id.hex() == "0000000000001111"
        assert s.parent_span_id.hex() == "b7ad6b7169203331" and s.trace_state == "vendor=a"
        assert s.name == "POST /v1/chat/completions" and s.kind == SERVER
        assert s.start_time_unix_nano == 1_700_000_000_000_000_000
        assert s.end_time_unix_nano == 1_700_000_000_250_000_000
        assert {a.key: _value(a.value) for a in s.attributes} == ATTRS
        assert s.status.code == 0 and s.status.message == ""
        assert c.parent_span_id == s.span_id and c.kind == CLIENT and c.trace_state == ""
        assert c.end_time_unix_nano == 2**63 + 7
        assert c.status.code == STATUS_ERROR and c.status.message == "upstream took too long"
        assert {a.key: _value(a.value) for a in c.attributes} == {
            "gen_ai.provider.name": "openai",
            "error.type": "timeout",
        }


def test_no_parent_means_a_root_span() -> None:
    enc = Encoder({}, "x")
    span: SpanData = (b"\0" * 15 + b"\1", S1, b"", "", "n", SERVER, 1, 2, b"", {}, 0, "")
    (s,) = _decode(enc.request([span])).resource_spans[0].scope_spans[0].spans
    assert s.parent_span_id == b"" and s.trace_id.hex() == "0" * 31 + "1"


def test_parse_traceparent() -> None:
    good = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert parse_traceparent(good) == (TRACE, PARENT, True)
    assert parse_traceparent(good[:-2] + "00") == (TRACE, PARENT, False)
    # A future version may add fields; version 00 may not.
    assert parse_traceparent("01" + good[2:] + "-extra") == (TRACE, PARENT, True)
    for bad in (
        good + "-extra",
        "ff" + good[2:],
        "00-" + "0" * 32 + "-b7ad6b7169203331-01",  # all-zero trace id
        "00-0af7651916cd43dd8448eb211c80319c-" + "0" * 16 + "-01",
        "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",  # upper case
        "00-0af7651916cd43dd8448eb211c80319-b7ad6b7169203331-01",  # short
        "garbage",
        "",
    ):
        assert parse_traceparent(bad) is None, bad


def _spans_of(tracing: Tracing) -> list[Any]:
    """What the requests left in the exporter's queue, encoded and decoded."""
    items = [item for item, _ in tracing.exporter.queue]
    tracing.exporter.queue.clear()
    tracing.exporter.shutdown()
    return list(_decode(tracing.exporter.encoder.request(items)).resource_spans[0]
                .scope_spans[0].spans)  # fmt: skip


def _attrs(span: Any) -> dict[str, Any]:
    return {a.key: _value(a.value) for a in span.attributes}


def test_request_records_encode_both_spans_and_a_failed_attempt(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "600000")  # nothing leaves on its own
    encoder = Encoder({}, "x")
    answer = (b'{"model": "gpt-up-1", "choices": [{"finish_reason": "stop"}, '
              b'{"finish_reason": "length"}], "usage": {}}')  # fmt: skip
    for _ in range(2):  # the second request's attributes come from the encoder's caches
        tracing = Tracing(Exporter(encoder), True, True, 1 << 64)
        trace = tracing.begin({}, "POST", "/v1/chat/completions", "chat")
        assert trace is not None
        trace.request("gpt", b'{"messages": [{"role": "user", "content": "hi"}]}')
        first = trace.attempt("a", "openai", "gpt-up")["traceparent"]
        trace.failed(RuntimeError("boom"), "upstream_server_error")
        second = trace.attempt("b", "openai", "gpt-up")["traceparent"]
        trace.answered(answer)
        trace.end(200, "", (11, 3, 4, 2, 1))
        failed, served, server = _spans_of(tracing)
    assert first == f"00-{failed.trace_id.hex()}-{failed.span_id.hex()}-01"
    assert second == f"00-{served.trace_id.hex()}-{served.span_id.hex()}-01"
    assert failed.trace_id == served.trace_id == server.trace_id
    assert failed.parent_span_id == served.parent_span_id == server.span_id
    assert len({failed.span_id, served.span_id, server.span_id}) == 3
    assert server.parent_span_id == b"" and server.kind == SERVER
    assert failed.status.code == STATUS_ERROR and served.status.code == server.status.code == 0
    assert _attrs(failed) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-up",
        "chromagent.backend.id": "a",
        "error.type": "upstream_server_error",
    }
    shared = {
        "gen_ai.usage.input_tokens": 11,
        "gen_ai.usage.output_tokens": 3,
        "gen_ai.usage.cache_read.input_tokens": 4,
        "gen_ai.usage.cache_creation.input_tokens": 2,
        "gen_ai.usage.reasoning.output_tokens": 1,
        "gen_ai.response.model": "gpt-up-1",
        "gen_ai.response.finish_reasons": ["stop", "length"],
    }
    fixed = {k: v for k, v in _attrs(failed).items() if k != "error.type"}
    assert _attrs(served) == {**fixed, "chromagent.backend.id": "b", **shared}
    assert _attrs(server) == {
        "http.request.method": "POST",
        "url.path": "/v1/chat/completions",
        "http.route": "/v1/chat/completions",
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "gpt",
        "http.response.status_code": 200,
        "gen_ai.input.messages": '{"messages":[{"role":"user","content":"hi"}]}',
        "gen_ai.output.messages": '[{"finish_reason":"stop"},{"finish_reason":"length"}]',
        **shared,
    }
    assert server.start_time_unix_nano <= failed.start_time_unix_nano
    assert failed.end_time_unix_nano <= served.start_time_unix_nano
    assert served.end_time_unix_nano == server.end_time_unix_nano


def test_a_continued_trace_that_fails_marks_both_spans(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "600000")
    tracing = Tracing(Exporter(Encoder({}, "x")), False, True, 1 << 64)
    incoming = {
        "traceparent": f"00-{TRACE.hex()}-{PARENT.hex()}-01",
        "tracestate": "vendor=a",
    }
    trace = tracing.begin(incoming, "POST", "/v1/messages", "chat")
    assert trace is not None
    headers = trace.attempt("an", "anthropic", "claude")
    assert headers["tracestate"] == "vendor=a"
    trace.end(502, "upstream_server_error", (0, 0, 0, 0, 0))
    client, server = _spans_of(tracing)
    assert headers["traceparent"] == f"00-{TRACE.hex()}-{client.span_id.hex()}-01"
    assert server.trace_id == client.trace_id == TRACE and server.parent_span_id == PARENT
    assert server.trace_state == client.trace_state == "vendor=a"
    assert server.status.code == client.status.code == STATUS_ERROR
    assert _attrs(client)["error.type"] == _attrs(server)["error.type"] == "upstream_server_error"
    assert "gen_ai.usage.input_tokens" not in _attrs(server)
    assert _attrs(server)["http.response.status_code"] == 502
    assert "gen_ai.request.model" not in _attrs(server)  # request() was not reached
