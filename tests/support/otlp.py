"""A real OTLP/HTTP trace receiver: POST /v1/traces, protobuf decoded with
opentelemetry-proto, spans kept as plain records for assertions."""

from __future__ import annotations

import gzip
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

SERVER, CLIENT = 2, 3  # opentelemetry.proto.trace.v1.Span.SpanKind
STATUS_ERROR = 2


@dataclass
class SpanRecord:
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_id: str
    attrs: dict[str, Any]
    status: int
    service: str


def _value(v: AnyValue) -> Any:
    which = v.WhichOneof("value")
    if which == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, which) if which else None


@dataclass
class OTLPReceiver:
    spans: list[SpanRecord] = field(default_factory=list)
    content_types: list[str] = field(default_factory=list)
    encodings: list[str] = field(default_factory=list)  # Content-Encoding of each export
    headers: list[dict[str, str]] = field(default_factory=list)  # each export's headers
    runner: web.AppRunner | None = None
    port: int = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/traces"

    async def _traces(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.encodings.append(request.headers.get("Content-Encoding", ""))
        self.headers.append({k.lower(): v for k, v in request.headers.items()})
        # aiohttp already inflates a gzip body (auto_decompress); the header stays.
        if request.headers.get("Content-Encoding") == "gzip" and body[:2] == b"\x1f\x8b":
            body = gzip.decompress(body)
        self.content_types.append(request.content_type)
        req = ExportTraceServiceRequest()
        req.ParseFromString(body)
        for rs in req.resource_spans:
            res = {a.key: _value(a.value) for a in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    self.spans.append(
                        SpanRecord(
                            name=s.name,
                            kind=s.kind,
                            trace_id=s.trace_id.hex(),
                            span_id=s.span_id.hex(),
                            parent_id=s.parent_span_id.hex(),
                            attrs={a.key: _value(a.value) for a in s.attributes},
                            status=s.status.code,
                            service=str(res.get("service.name", "")),
                        )
                    )
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )

    async def start(self) -> OTLPReceiver:
        app = web.Application()
        app.router.add_post("/v1/traces", self._traces)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        return self

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    def of_kind(self, kind: int) -> list[SpanRecord]:
        return [s for s in self.spans if s.kind == kind]
