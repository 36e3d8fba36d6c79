"""A/B: the same scenario against two copies of the gateway's source, interleaved.

    python -m bench.ab /tmp/ab/before /tmp/ab/after openai-json:64 openai-stream:64 -r 5

Each argument directory holds a ``chromagent_proxy/`` package; the word ``nginx``
instead of a directory runs nginx ``proxy_pass`` (the floor) in that slot, so
``python -m bench.ab nginx . openai-json:64`` gives the gateway's CPU per request
as a ratio to nginx's, median of interleaved rounds (issue 20); ``relay-aiohttp`` and
``relay-protocol`` run the relays with no gateway logic (``bench/floors.py``). Rounds alternate
A and B (and which goes first), each on a freshly started gateway pinned like
``make bench``, so background load hits both alike; medians are reported. This
is how every optimisation in bench/README.md was measured.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench import floors
from bench import scenarios as sc
from bench import targets as tg
from bench.load import run_count, run_load, run_slow

NGINX = Path("nginx")


WARMUP = [0.5]  # seconds of load before the window (--warmup; 1,024 clients need more)
CONFIG = {"A": tg.ROOT / "config" / "bench.json", "B": tg.ROOT / "config" / "bench.json"}
OVERLAY: dict[str, dict[str, Any]] = {"A": {}, "B": {}}  # --tracing-b: B traces
# With --instr and --tracing-b, spans leave in full batches only (OTEL_BSP_MAX_EXPORT_BATCH_SIZE,
# 512 by default, as a busy gateway sends them): with 2 spans per request and --instr a
# multiple of 256, the counted window encodes and sends as many spans as it makes.


def target(src: Path, raw: Path, label: str) -> tg.Target:
    if src == NGINX:
        return tg.Nginx(raw)
    if str(src) in floors.KINDS:
        return floors.Floor(str(src), raw)
    return tg.Gateway(raw, CONFIG[label], src, OVERLAY[label])


async def one(
    src: Path, scen: sc.Scenario, conc: int, duration: float, label: str
) -> tuple[float, float, float, float]:
    raw = tg.ROOT / "bench" / "results" / "raw" / f"ab-{tg.UPSTREAM_PORT}"
    raw.mkdir(parents=True, exist_ok=True)
    gw = target(src, raw, label)
    gw.start()
    try:
        job = gw.job(scen)
        assert job is not None, f"{gw.name} cannot run {scen.name}"
        await run_load(job, 8, 0.5, 0.0)
        pids = gw.pids()
        marks: dict[str, float] = {}

        def on_window(edge: str) -> None:
            marks[edge] = tg.cpu_seconds(pids)

        res = await run_load(job, conc, duration, WARMUP[0], on_window=on_window)
        if res.errors:
            print(f"  errors: {dict(res.errors)}", flush=True)
        cpu = (marks["end"] - marks["start"]) / max(res.counted, 1) * 1e6
        lat = sorted(res.latencies) or [0.0]
        p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))] * 1000
        return res.rps, cpu, lat[len(lat) // 2] * 1000, p99
    finally:
        gw.stop()


async def slow_kb(src: Path, scen: sc.Scenario, n: int, label: str) -> float:
    """KB of RSS per open slow stream, measured like ``make bench`` (run.py run_slow): a
    fresh target, a 4-connection warm-up, then ``n`` streams open at once."""
    raw = tg.ROOT / "bench" / "results" / "raw" / f"ab-{tg.UPSTREAM_PORT}"
    raw.mkdir(parents=True, exist_ok=True)
    gw = target(src, raw, label)
    gw.start()
    try:
        warm = next(s for s in sc.all_scenarios() if s.name == "openai-json")
        warm_job = gw.job(warm)
        assert warm_job is not None
        await run_load(warm_job, 4, 0.5, 0.0)
        await asyncio.sleep(0.3)
        job = gw.job(scen)
        assert job is not None, f"{gw.name} cannot run {scen.name}"
        pids = gw.pids()
        before = tg.rss_bytes(pids)
        seen: dict[str, int] = {}

        def on_open() -> None:
            seen["rss"] = tg.rss_bytes(pids)

        res = await run_slow(job, n, on_open=on_open, timeout=60.0)
        if res.errors:
            print(f"  errors: {dict(res.errors)}", flush=True)
        return (seen.get("rss", before) - before) / 1024 / n
    finally:
        gw.stop()


async def instructions(
    src: Path, scen: sc.Scenario, conc: int, total: int, label: str = "A"
) -> float:
    """Instructions per request under callgrind: deterministic where wall time is not."""
    raw = tg.ROOT / "bench" / "results" / "raw" / f"ab-{tg.UPSTREAM_PORT}"
    raw.mkdir(parents=True, exist_ok=True)
    out = raw / f"callgrind.{src.name}.{label}.{tg.UPSTREAM_PORT}.out"
    gw = target(src, raw, label)
    if src == NGINX:
        raise SystemExit("--instr counts a Python target: nginx runs a worker process")
    gw.prepare()
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}.%p", *gw.command()]
    proc = subprocess.Popen(
        cmd, cwd=raw, env=gw.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        tg.wait_port(gw.port, proc, 1200)  # valgrind on a busy machine: minutes
        job = gw.job(scen)
        assert job is not None, f"{gw.name} cannot run {scen.name}"
        await run_count(job, conc, 300)  # warm: imports, caches, connection pool
        for f in raw.glob(f"{out.name}.*"):
            f.unlink()
        subprocess.run(["callgrind_control", "-z", str(proc.pid)], capture_output=True, check=True)
        res = await run_count(job, conc, total)
        if OVERLAY[label].get("tracing"):
            await asyncio.sleep(3)  # the export thread sends the window's last batch
        subprocess.run(["callgrind_control", "-d", str(proc.pid)], capture_output=True, check=True)
        if res.errors:
            print(f"  errors: {dict(res.errors)}", flush=True)
        events = 0
        for f in raw.glob(f"{out.name}.*"):
            for line in f.read_text(errors="replace").splitlines():
                if line.startswith(("summary:", "totals:")):
                    events = max(events, int(line.split()[1]))
        return events / total
    finally:
        proc.terminate()
        proc.wait(30)


async def main_async(args: argparse.Namespace) -> None:
    scens = {s.name: s for s in sc.all_scenarios()}
    for spec in args.points:
        name, _, c = spec.partition(":")
        scen, conc = scens[name], int(c or 64)
        if args.instr:
            ia = await instructions(args.a, scen, conc, args.instr, "A")
            ib = await instructions(args.b, scen, conc, args.instr, "B")
            print(
                f"{name} c={conc}: A {ia:,.0f} instructions/req | B {ib:,.0f} instructions/req"
                f" | {ib / ia - 1:+.1%}",
                flush=True,
            )
            continue
        if scen.kind == "slow":
            kb: dict[str, list[float]] = {"A": [], "B": []}
            for r in range(args.rounds):
                order = [("A", args.a), ("B", args.b)]
                if r % 2:
                    order.reverse()
                for label, src in order:
                    kb[label].append(await slow_kb(src, scen, conc, label))
                    print(f"  {name} n={conc} round {r + 1} {label}: {kb[label][-1]:.1f} KB/stream")
            ka, kb_ = statistics.median(kb["A"]), statistics.median(kb["B"])
            print(
                f"{name} n={conc}: A {ka:.1f} KB/stream | B {kb_:.1f} KB/stream | {kb_ - ka:+.1f} KB"
            )
            continue
        got: dict[str, list[tuple[float, float, float, float]]] = {"A": [], "B": []}
        for r in range(args.rounds):
            order = [("A", args.a), ("B", args.b)]
            if r % 2:
                order.reverse()
            for label, src in order:
                got[label].append(await one(src, scen, conc, args.duration, label))
                rps, cpu, p50, p99 = got[label][-1]
                print(f"  {name} c={conc} round {r + 1} {label}: {rps:,.0f} req/s, "
                      f"{cpu:.1f} µs CPU/req, p50 {p50:.3f} ms, p99 {p99:.3f} ms", flush=True)  # fmt: skip
        med = {k: [statistics.median(x[i] for x in v) for i in range(4)] for k, v in got.items()}
        (ra, ca, ma, la), (rb, cb, mb, lb) = med["A"], med["B"]
        # Per-round ratio B/A (same background load within a round), then the median.
        ratios = [b[1] / a[1] for a, b in zip(got["A"], got["B"], strict=True) if a[1]]
        print(
            f"{name} c={conc}: A {ra:,.0f} req/s {ca:.1f} µs/req p50 {ma:.3f} p99 {la:.3f} ms | "
            f"B {rb:,.0f} req/s {cb:.1f} µs/req p50 {mb:.3f} p99 {lb:.3f} ms | "
            f"req/s {rb / ra - 1:+.1%}, CPU/req {cb / ca - 1:+.1%}, "
            f"CPU B/A per round {', '.join(f'{x:.2f}' for x in ratios)} "
            f"(median {statistics.median(ratios):.2f}×)",
            flush=True,
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("a", type=Path)
    p.add_argument("b", type=Path)
    p.add_argument("points", nargs="+", help="scenario[:concurrency]")
    p.add_argument("-r", "--rounds", type=int, default=3)
    p.add_argument("-d", "--duration", type=float, default=3.0)
    p.add_argument(
        "--instr",
        type=int,
        default=0,
        help="count instructions (callgrind) over this many requests",
    )
    p.add_argument("--port-offset", type=int, default=0, help="run several A/Bs side by side")
    p.add_argument("--config-a", type=Path, help="gateway config for A (default bench.json)")
    p.add_argument("--config-b", type=Path, help="gateway config for B (e.g. workers: 2)")
    p.add_argument(
        "--tracing-b",
        action="store_true",
        help="B with tracing.enabled, spans exported to bench.otlp_sink (its own process)",
    )
    p.add_argument(
        "--no-pin", action="store_true", help="no taskset: targets may use every core (--workers)"
    )
    p.add_argument("--warmup", type=float, default=0.5, help="seconds of load before the window")
    args = p.parse_args()
    WARMUP[0] = args.warmup
    CONFIG["A"] = args.config_a or CONFIG["A"]
    CONFIG["B"] = args.config_b or CONFIG["B"]
    if args.no_pin:
        tg.TASKSET = None
    tg.UPSTREAM_PORT += args.port_offset
    tg.PORTS["gateway"] += args.port_offset
    tg.PORTS["nginx"] += args.port_offset
    if tg.TASKSET:
        os.sched_setaffinity(0, {tg.LOAD_CORE})
    sink: subprocess.Popen[bytes] | None = None
    if args.tracing_b:
        OVERLAY["B"] = {"tracing": {"enabled": True}}
        sink_port = 18109 + args.port_offset
        os.environ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = f"http://127.0.0.1:{sink_port}/v1/traces"
        if args.instr:
            os.environ["OTEL_BSP_SCHEDULE_DELAY"] = "3600000"
        sink = subprocess.Popen(
            tg.pinned(
                [sys.executable, "-m", "bench.otlp_sink", "--port", str(sink_port)], tg.LOAD_CORE
            ),
            env=dict(os.environ, PYTHONPATH=str(tg.ROOT)),
            stdout=subprocess.DEVNULL,
        )
        tg.wait_port(sink_port, sink, 15)
    try:
        tg.run_with_upstreams(lambda: main_async(args))
    finally:
        if sink is not None:
            sink.terminate()
            sink.wait(5)


if __name__ == "__main__":
    main()
