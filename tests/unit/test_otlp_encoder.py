"""The hand-written OTLP encoder produces what opentelemetry-proto decodes: every field the
gateway sets, every attribute value type, cached attributes identical to fresh ones, and
W3C traceparent parsing."""

from __future__ import annotations

from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from chromagent_proxy.ops.otlp import CLIENT, SERVER, STATUS_ERROR, Encoder, SpanData, encode
from chromagent_proxy.ops.tracing import parse_traceparent
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
