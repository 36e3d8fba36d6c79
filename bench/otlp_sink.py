"""An OTLP/HTTP trace sink for tracing benchmarks: accepts POST /v1/traces, answers
an empty ExportTraceServiceResponse, counts the bytes. Run as its own process so its CPU
is not the gateway's:

    python -m bench.otlp_sink --port 18109
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=http://127.0.0.1:18109/v1/traces ...
"""

from __future__ import annotations

import argparse

from aiohttp import web

RECEIVED = [0]  # bytes received (a module counter: the app is frozen once it runs)


async def traces(request: web.Request) -> web.Response:
    RECEIVED[0] += len(await request.read())
    return web.Response(body=b"", content_type="application/x-protobuf")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, default=18109)
    args = p.parse_args()
    app = web.Application()
    app.router.add_post("/v1/traces", traces)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None)


if __name__ == "__main__":
    main()
