"""Soak test (`make soak`): 10 minutes of mixed load with aborts and upstream failures.

This process runs the real gateway (GatewayServer, production settings) and a
misbehaving fake upstream; a separate client process (this file with
``--client``) drives mixed traffic: complete and aborted streams, complete and
abandoned non-stream requests, a backend pool where one member answers 503,
streams cut mid-event, streams that go silent (idle timeout). Every interval it
prints the gateway process's RSS, live asyncio tasks, open file descriptors,
upstream connections in use and active streams.

It fails (exit 1) if, between the end of the warm-up and the end of the run,
RSS grew by more than --max-rss-growth-mb, or if after the load stops the task
count, file descriptors or in-use upstream connections do not return to their
warm-up level (a leak), or if the client saw any 5xx other than the expected
upstream ones (502/503/504 from the failing models) or any 500.

    python bench/soak.py                       # 600 s, 64 concurrent clients
    python bench/soak.py --duration 60 --interval 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from chromagent_proxy import GatewayServer  # noqa: E402


def chunk(text: str, role: bool = False) -> bytes:
    delta: dict[str, Any] = {"content": text}
    if role:
        delta["role"] = "assistant"
    c = {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
    }
    return b"data: " + json.dumps(c).encode() + b"\n\n"


COMPLETION = json.dumps(
    {
        "id": "c",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }
).encode()


async def upstream_handler(request: web.Request) -> web.StreamResponse:
    try:
        return await _upstream(request)
    except ConnectionError:  # the gateway dropped us (aborted client, idle timeout): expected
        return web.Response(status=499)


async def _upstream(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    if request.path.startswith("/bad/"):
        return web.json_response(
            {"error": {"message": "overloaded", "type": "server_error"}}, status=503
        )
    model, stream = body.get("model"), bool(body.get("stream"))
    if not stream:
        await asyncio.sleep(random.random() * 0.02)
        return web.Response(body=COMPLETION, content_type="application/json")
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    await resp.write(chunk("", role=True))
    for i in range(random.randint(5, 40)):
        await asyncio.sleep(0.005)
        if model == "cut" and i == 3:
            assert request.transport is not None
            request.transport.close()  # cut mid-stream
            return resp
        if model == "slow" and i == 2:
            await asyncio.sleep(3)  # past the gateway's idle timeout
        await resp.write(chunk(" word"))
    await resp.write(b"data: [DONE]\n\n")
    await resp.write_eof()
    return resp


def gateway_config(up: str) -> dict[str, Any]:
    return {
        "host": "127.0.0.1",
        "port": 0,
        "logLevel": "error",
        "timeout": 2000,
        "timeouts": {"idleMs": 500},
        "defaultBackend": "good",
        "failover": {"cooldownMs": 2000},
        "backends": [
            {
                "id": "good",
                "type": "openai",
                "baseUrl": f"{up}/good/v1",
                "apiKey": "k",
                "modelMapping": {"ok": "ok", "cut": "cut", "slow": "slow", "pool": "pool"},
            },
            {
                "id": "bad",
                "type": "openai",
                "baseUrl": f"{up}/bad/v1",
                "apiKey": "k",
                "modelMapping": {"pool": "pool"},
            },
        ],
    }


def sample(gw: GatewayServer) -> dict[str, float]:
    pid = os.getpid()
    with open(f"/proc/{pid}/statm") as fh:
        rss = int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    connector = getattr(getattr(gw, "_session", None), "connector", None)
    metrics = getattr(getattr(gw, "edge", None), "metrics", None)
    return {
        "rss_mb": rss / 2**20,
        "tasks": len([t for t in asyncio.all_tasks() if not t.done()]),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "upstream_in_use": len(getattr(connector, "_acquired", ())),
        "active_streams": -1.0 if metrics is None else float(metrics.active_streams),
    }


async def serve(args: argparse.Namespace) -> int:
    # Failovers and cooldowns are expected here and logged as warnings; show errors only.
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s %(message)s")
    # The fake upstream lives in the client process, so every task, socket and byte
    # measured here belongs to the gateway.
    client = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--client",
        "--duration",
        str(args.duration),
        "--concurrency",
        str(args.concurrency),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert client.stdin is not None and client.stdout is not None
    up_port = int((await client.stdout.readline()).split()[1])
    gw = GatewayServer(gateway_config(f"http://127.0.0.1:{up_port}"))
    await gw.start()
    client.stdin.write(f"{gw.url}\n".encode())
    await client.stdin.drain()
    warmup_end = time.monotonic() + args.duration * 0.2
    start = time.monotonic()
    baseline: dict[str, float] | None = None
    print(
        f"{'t(s)':>6} {'rss MiB':>8} {'tasks':>6} {'fds':>5} {'up in use':>9} {'streams':>7}",
        flush=True,
    )
    while client.returncode is None:
        try:
            await asyncio.wait_for(client.wait(), args.interval)
        except TimeoutError:
            pass
        s = sample(gw)
        print(
            f"{time.monotonic() - start:6.0f} {s['rss_mb']:8.1f} {s['tasks']:6.0f} {s['fds']:5.0f} "
            f"{s['upstream_in_use']:9.0f} {s['active_streams']:7.0f}",
            flush=True,
        )
        if baseline is None and time.monotonic() >= warmup_end:
            baseline = s
    assert client.stdout is not None
    report = json.loads((await client.stdout.read()).decode() or "{}")
    # Let aborted work finish unwinding, then compare with the warm-up sample.
    await asyncio.sleep(2)
    idle = sample(gw)
    await gw.stop()
    print("client:", json.dumps(report, sort_keys=True))
    problems = []
    if baseline is None:
        problems.append("run too short to take a warm-up sample")
    else:
        growth = idle["rss_mb"] - baseline["rss_mb"]
        print(
            f"RSS after warm-up {baseline['rss_mb']:.1f} MiB, at the end {idle['rss_mb']:.1f} MiB "
            f"(growth {growth:+.1f} MiB, bound {args.max_rss_growth_mb} MiB)"
        )
        if growth > args.max_rss_growth_mb:
            problems.append(f"RSS grew {growth:.1f} MiB")
    # Idle gateway: only the server's own tasks and pooled sockets remain.
    if idle["upstream_in_use"] != 0:
        problems.append(f"{idle['upstream_in_use']:.0f} upstream connections still in use")
    if idle["tasks"] > 5:
        problems.append(f"{idle['tasks']:.0f} tasks alive with no load (leak)")
    if baseline is not None and idle["fds"] > baseline["fds"] + 20:
        problems.append(f"file descriptors {baseline['fds']:.0f} -> {idle['fds']:.0f}")
    statuses = Counter(report.get("statuses", {}))
    if statuses.get("500"):
        problems.append(f"{statuses['500']} responses were 500")
    if report.get("errors_unexpected"):
        problems.append(f"unexpected client-side failures: {report['errors_unexpected']}")
    if not report.get("completed"):
        problems.append("no request completed")
    for p in problems:
        print("FAIL:", p)
    print("soak:", "FAILED" if problems else "passed")
    return 1 if problems else 0


async def drive(args: argparse.Namespace) -> int:
    """The client process: hosts the fake upstream, then drives mixed traffic until the
    deadline and prints one JSON report on stdout."""
    app = web.Application()
    app.router.add_route("POST", "/{tail:.*}", upstream_handler)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print("UPSTREAM", site._server.sockets[0].getsockname()[1], flush=True)  # type: ignore[union-attr]
    gateway_url = (await asyncio.to_thread(sys.stdin.readline)).strip()
    deadline = time.monotonic() + args.duration
    statuses: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    unexpected: Counter[str] = Counter()
    completed = 0
    rng = random.Random(7)
    url = f"{gateway_url}/v1/chat/completions"

    async def one(session: aiohttp.ClientSession) -> None:
        nonlocal completed
        model = rng.choices(["ok", "pool", "cut", "slow"], [70, 15, 8, 7])[0]
        stream = rng.random() < 0.6
        abort = rng.random() < 0.25
        kinds[f"{model}-{'stream' if stream else 'json'}{'-abort' if abort else ''}"] += 1
        payload = {
            "model": model,
            "messages": [{"role": "user", "content": "hi"}],
            "stream": stream,
        }
        try:
            async with asyncio.timeout(rng.random() * 0.05 if abort else 30):
                async with session.post(url, json=payload) as r:
                    statuses[str(r.status)] += 1
                    if abort and stream:
                        await r.content.read(rng.randrange(1, 400))
                        return  # leaving the block closes the connection mid-stream
                    data = await r.read()
                    if r.status == 200 and stream:
                        ok_end = data.endswith(b"data: [DONE]\n\n") or b'"error"' in data[-600:]
                        if not ok_end:
                            unexpected["stream ended without [DONE] or an error event"] += 1
                    completed += 1
        except TimeoutError:
            if not abort:
                unexpected["timeout"] += 1
        except aiohttp.ClientError as exc:
            if not abort:
                unexpected[type(exc).__name__] += 1

    async def worker(session: aiohttp.ClientSession) -> None:
        while time.monotonic() < deadline:
            await one(session)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        await asyncio.gather(*(worker(session) for _ in range(args.concurrency)))
    print(
        json.dumps(
            {
                "statuses": statuses,
                "kinds": kinds,
                "completed": completed,
                "errors_unexpected": unexpected,
            }
        ),
        flush=True,
    )
    await runner.cleanup()
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=600.0, help="seconds of load (default 600)")
    p.add_argument("--interval", type=float, default=30.0, help="seconds between samples")
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument(
        "--max-rss-growth-mb",
        type=float,
        default=40.0,
        help="allowed RSS growth after warm-up (default 40 MiB)",
    )
    p.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    return asyncio.run(drive(args) if args.client else serve(args))


if __name__ == "__main__":
    raise SystemExit(main())
