"""What does aiohttp's ``web.Application`` cost over the low-level ``web.Server``?

    python -m bench.servers [-r 3] [-d 3]

Runs the gateway's route table (``*`` routes for the API paths, ``GET /health``,
a catch-all) on ``web.Application`` and the same dispatch as a dict lookup on
``web.Server``, each answering a fixed chat.completion JSON with no upstream,
pinned to the gateway core; interleaved rounds, medians. This isolates the
server-side framework cost that DESIGN.md §8 asks about.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys

from bench import scenarios as sc
from bench import targets as tg
from bench.load import run_load, scenario_job

BODY = (
    b'{"id":"x","object":"chat.completion","created":1,"model":"fake-n20-g0","choices":[{"index":0,'
    b'"message":{"role":"assistant","content":"w0 w1 w2 w3 w4 w5 w6 w7 w8 w9 w10 w11 w12 w13 '
    b'w14 w15 w16 w17 w18 w19 "},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,'
    b'"completion_tokens":1,"total_tokens":2}}'
)


def serve(kind: str, port: int) -> None:
    from aiohttp import web

    async def chat(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=BODY, content_type="application/json")

    async def other(request: web.Request) -> web.Response:
        return web.Response(status=404)

    async def main() -> None:
        if kind == "application":
            app = web.Application()
            for path in ("/v1/chat/completions", "/chat/completions", "/v1/models"):
                app.router.add_route("*", path, chat)
            app.router.add_route("GET", "/health", other)
            app.router.add_route("*", "/{tail:.*}", other)
            runner: web.BaseRunner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        else:
            routes = {"/v1/chat/completions": chat, "/chat/completions": chat}

            async def dispatch(request: web.BaseRequest) -> web.StreamResponse:
                return await routes.get(request.path, other)(request)  # type: ignore[arg-type]

            server = web.Server(dispatch, handler_cancellation=True, access_log=None)
            runner = web.ServerRunner(server)
        await runner.setup()
        await web.TCPSite(runner, tg.HOST, port).start()
        await asyncio.Event().wait()

    import uvloop

    uvloop.run(main())


async def measure(kind: str, duration: float) -> tuple[float, float]:
    port = tg.PORTS["gateway"]
    proc = subprocess.Popen(
        tg.pinned([sys.executable, "-m", "bench.servers", "--serve", kind], tg.TARGET_CORE),
        env=dict(os.environ, PYTHONPATH=str(tg.ROOT)),
    )
    try:
        tg.wait_port(port, proc, 15)
        scen = next(s for s in sc.all_scenarios() if s.name == "openai-json")
        job = scenario_job(scen, tg.HOST, port)
        pids = tg.tree(proc.pid)
        marks: dict[str, float] = {}

        def on_window(edge: str) -> None:
            marks[edge] = tg.cpu_seconds(pids)

        res = await run_load(job, 64, duration, 0.5, on_window=on_window)
        return res.rps, (marks["end"] - marks["start"]) / max(res.counted, 1) * 1e6
    finally:
        proc.terminate()
        proc.wait(5)


async def main_async(rounds: int, duration: float) -> None:
    got: dict[str, list[tuple[float, float]]] = {"application": [], "server": []}
    for r in range(rounds):
        kinds = ["application", "server"] if r % 2 == 0 else ["server", "application"]
        for kind in kinds:
            got[kind].append(await measure(kind, duration))
            rps, cpu = got[kind][-1]
            print(f"  round {r + 1} {kind:<11}: {rps:,.0f} req/s, {cpu:.1f} µs CPU/req", flush=True)
    for kind, vals in got.items():
        rps = statistics.median(v[0] for v in vals)
        cpu = statistics.median(v[1] for v in vals)
        print(f"{kind:<11}: {rps:,.0f} req/s, {cpu:.1f} µs CPU/req (median of {rounds})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--serve", choices=["application", "server"])
    p.add_argument("-r", "--rounds", type=int, default=3)
    p.add_argument("-d", "--duration", type=float, default=3.0)
    args = p.parse_args()
    if args.serve:
        serve(args.serve, tg.PORTS["gateway"])
        return
    if tg.TASKSET:
        os.sched_setaffinity(0, {tg.LOAD_CORE})
    import uvloop

    uvloop.run(main_async(args.rounds, args.duration))


if __name__ == "__main__":
    main()
