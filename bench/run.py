"""Orchestrate one benchmark run: stubs, targets, every scenario, then the report.

    python -m bench.run            # full run (the README's numbers)
    python -m bench.run --quick    # under two minutes
    python -m bench.run --peers    # also LiteLLM proxy and Portkey gateway

Layout: the fake upstreams and this driver share core 0; each target (our
gateway, nginx, a peer) runs alone on core 1, one at a time. Raw results go to
bench/results/latest.json (not committed); the report to latest.md/.png.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from bench import floors, report
from bench import scenarios as sc
from bench import targets as tg
from bench.load import Job, Result, run_load, run_slow, scenario_job

RESULTS = tg.ROOT / "bench" / "results"
WARM = next(s for s in sc.all_scenarios() if s.name == "openai-json")


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.quick = args.quick
        self.warmup = 0.25 if args.quick else 1.0
        self.duration = 0.8 if args.quick else 4.0
        self.rows: list[dict[str, Any]] = []
        self.targets_info: dict[str, dict[str, Any]] = {}
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        self.workdir = RESULTS / "raw" / stamp
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.upstream: subprocess.Popen[bytes] | None = None
        wanted = set(args.only.split(",")) if args.only else None
        self.scenarios = [s for s in sc.all_scenarios() if wanted is None or s.name in wanted]

    # -- helpers --------------------------------------------------------------------------

    def levels(self, scen: sc.Scenario) -> tuple[int, ...]:
        if not self.quick:
            return scen.levels
        if scen.note.startswith("translation"):
            return (64,)
        return scen.quick_levels

    async def warm(self, target: tg.Target, concurrency: int = 64) -> None:
        """Pass-through requests, then a pause: what "idle" means in the report.

        64 connections for a second fill the pools and warm the code paths before the first
        point; before the slow-stream run only 4, so few upstream connections are already open
        when memory per stream is measured.
        """
        job = target.job(WARM) or scenario_job(WARM, tg.HOST, target.port)
        await run_load(job, concurrency, 1.0 if concurrency > 4 else 0.5, 0.0)
        await asyncio.sleep(0.3)

    def start_upstream(self) -> None:
        cmd = [sys.executable, "-m", "bench.upstreams", "--port", str(tg.UPSTREAM_PORT)]
        logf = (self.workdir / "upstream.log").open("wb")
        env = dict(os.environ, PYTHONPATH=str(tg.ROOT))
        self.upstream = subprocess.Popen(
            tg.pinned(cmd, tg.LOAD_CORE), stdout=logf, stderr=subprocess.STDOUT, env=env
        )
        tg.wait_port(tg.UPSTREAM_PORT, self.upstream, 15)

    def load_pids(self) -> list[int]:
        return [os.getpid()] + ([self.upstream.pid] if self.upstream else [])

    async def measure(
        self, target: tg.Target | None, scen: sc.Scenario, job: Job, level: int
    ) -> dict[str, Any]:
        """One closed-loop run; CPU and RSS of the target sampled at the window edges."""
        pids = target.pids() if target else ([self.upstream.pid] if self.upstream else [])
        marks: dict[str, float] = {}

        def on_window(edge: str) -> None:
            marks[f"{edge}_cpu"] = tg.cpu_seconds(pids)
            marks[f"{edge}_load"] = tg.cpu_seconds(self.load_pids())
            marks[f"{edge}_t"] = time.perf_counter()
            if edge == "end":
                marks["rss"] = tg.rss_bytes(pids)

        # 1,024 clients open 1,024 client and upstream connections first: a short warm-up
        # would open the window before the first requests are done (bench/README.md).
        warmup = self.warmup * 4 if level >= 1024 else self.warmup
        res = await run_load(job, level, self.duration, warmup, on_window=on_window)
        row = self._row(target, scen, res)
        if "end_cpu" in marks and res.counted:
            wall = marks["end_t"] - marks["start_t"]
            row["cpu_us_per_req"] = round(
                (marks["end_cpu"] - marks["start_cpu"]) / res.counted * 1e6, 1
            )
            row["target_cpu_pct"] = round((marks["end_cpu"] - marks["start_cpu"]) / wall * 100)
            row["load_cpu_pct"] = round((marks["end_load"] - marks["start_load"]) / wall * 100)
            row["rss_mb"] = round(marks["rss"] / 2**20, 1)
        return row

    def _row(self, target: tg.Target | None, scen: sc.Scenario, res: Result) -> dict[str, Any]:
        return {
            "target": target.name if target else "direct",
            "scenario": scen.name,
            **res.summary(),
        }

    def progress(self, row: dict[str, Any]) -> None:
        extra = ""
        if row.get("ttft_p50_ms") is not None:
            extra = f" ttft p50 {row['ttft_p50_ms']}ms complete {row.get('complete')}"
        cpu = f" cpu {row['cpu_us_per_req']}µs/req" if "cpu_us_per_req" in row else ""
        lat = ""
        if row["lat_p50_ms"] is not None:
            lat = f"{row['rps']:>9,.0f} req/s  p50 {row['lat_p50_ms']}ms p99 {row['lat_p99_ms']}ms "
        log(
            f"{row['target']:<8} {row['scenario']:<24} c={row['concurrency']:<4} {lat}"
            f"errors {row['errors']}{extra}{cpu}"
            + (f"  ({next(iter(row['error_kinds']))})" if row["errors"] else "")
        )

    # -- phases ---------------------------------------------------------------------------

    async def run_target(self, target: tg.Target | None) -> None:
        name = target.name if target else "direct"
        info: dict[str, Any] = {"version": target.version if target else "bench.upstreams"}
        if target is not None:
            try:
                target.start()
            except RuntimeError as exc:
                log(f"{name}: cannot run here: {exc}")
                info["error"] = str(exc)[:300]
                self.targets_info[name] = info
                return
            info["version"] = target.version
            # Idle: started and warmed by a few requests, nothing in flight.
            await self.warm(target)
            info["rss_idle_mb"] = round(tg.rss_bytes(target.pids()) / 2**20, 1)
            info["skip"] = target.skip
            log(f"{name} {target.version} up, idle RSS {info['rss_idle_mb']} MB")
        self.targets_info[name] = info
        try:
            for scen in self.scenarios:
                if scen.kind == "slow":
                    continue
                job = scenario_job(scen, tg.HOST, tg.UPSTREAM_PORT, direct=True)
                job2 = target.job(scen) if target else job
                if job2 is None:
                    continue
                for level in self.levels(scen):
                    row = await self.measure(target, scen, job2, level)
                    self.rows.append(row)
                    self.progress(row)
            for scen in self.scenarios:
                if scen.kind == "slow" and (target is None or target.job(scen) is not None):
                    await self.run_slow(target, scen)
        finally:
            if target is not None:
                target.stop()

    async def run_slow(self, target: tg.Target | None, scen: sc.Scenario) -> None:
        """Many open slow streams at once on a freshly started target: memory per stream."""
        if target is not None:
            target.stop()
            target.start()
            await self.warm(target, 4)
        n = self.levels(scen)[0]
        direct = scenario_job(scen, tg.HOST, tg.UPSTREAM_PORT, direct=True)
        job = target.job(scen) if target else direct
        assert job is not None
        pids = target.pids() if target else [self.upstream.pid] if self.upstream else []
        before = tg.rss_bytes(pids)
        cpu0 = tg.cpu_seconds(pids)
        seen: dict[str, int] = {}

        def on_open() -> None:
            seen["rss"] = tg.rss_bytes(pids)

        res = await run_slow(job, n, on_open=on_open, timeout=60.0)
        row = self._row(target, scen, res)
        row["rss_before_mb"] = round(before / 2**20, 1)
        row["rss_mb"] = round(seen.get("rss", 0) / 2**20, 1)
        row["kb_per_stream"] = round((seen.get("rss", before) - before) / 1024 / n, 1)
        if res.ok:
            row["cpu_us_per_req"] = round((tg.cpu_seconds(pids) - cpu0) / res.ok * 1e6, 1)
        self.rows.append(row)
        self.progress(row)
        log(
            f"{row['target']:<8} {scen.name}: {n} open streams, RSS {row['rss_before_mb']} → "
            f"{row['rss_mb']} MB = {row['kb_per_stream']} KB per stream, "
            f"gap p99 {row.get('gap_p99_ms')}ms"
        )

    def machine(self) -> dict[str, Any]:
        cpu = ""
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
        import aiohttp
        import msgspec

        try:
            import uvloop

            uv = str(getattr(uvloop, "__version__", "?"))
        except ImportError:
            uv = "not installed"
        return {
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "cpu": cpu,
            "cores": tg.CORES,
            "memory_gb": round(os.sysconf("SC_PHYS_PAGES") * tg.PAGE / 2**30, 1),
            "kernel": platform.release(),
            "python": platform.python_version(),
            "aiohttp": aiohttp.__version__,
            "msgspec": msgspec.__version__,
            "uvloop": uv,
            "pinning": (
                f"taskset: targets on core {tg.TARGET_CORE}, driver + fake upstreams on core "
                f"{tg.LOAD_CORE}"
                if tg.TASKSET
                else "none (taskset missing or a single core): numbers are noisier"
            ),
            "mode": "quick" if self.quick else "full",
            "warmup_s": self.warmup,
            "window_s": self.duration,
        }

    async def main(self) -> None:
        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        if tg.TASKSET:
            os.sched_setaffinity(0, {tg.LOAD_CORE})
        t0 = time.monotonic()
        log(f"mode {'quick' if self.quick else 'full'}; raw files in {self.workdir}")
        self.start_upstream()
        try:
            names = self.args.targets.split(",") if self.args.targets else None
            targets: list[tg.Target | None] = [None] if not names or "direct" in names else []
            cfg = Path(self.args.config)
            candidates: list[tg.Target] = [tg.Gateway(self.workdir, cfg), tg.Nginx(self.workdir)]
            # The relays with no gateway logic (bench/floors.py): what the server costs.
            candidates += [floors.Floor(kind, self.workdir) for kind in floors.KINDS]
            if self.args.peers:
                candidates += [tg.LiteLLM(self.workdir), tg.Portkey(self.workdir)]
            targets += [t for t in candidates if names is None or t.name in names]
            for t in targets:
                await self.run_target(t)
        finally:
            if self.upstream is not None:
                self.upstream.terminate()
                self.upstream.wait(5)
        data = {
            "machine": self.machine(),
            "targets": self.targets_info,
            "scenarios": [
                {"name": s.name, "note": s.note, "stream": s.stream} for s in self.scenarios
            ],
            "rows": self.rows,
            "elapsed_s": round(time.monotonic() - t0, 1),
        }
        out = Path(self.args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "latest.json").write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
        report.write(data, out)
        log(f"done in {data['elapsed_s']}s: {out / 'latest.md'}, {out / 'latest.png'}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="short windows, fewer levels (< 2 min)")
    p.add_argument("--peers", action="store_true", help="also LiteLLM proxy and Portkey gateway")
    p.add_argument("--only", help="comma-separated scenario names")
    p.add_argument(
        "--targets",
        help="comma-separated: direct,gateway,nginx,relay-aiohttp,relay-protocol,litellm,portkey",
    )
    p.add_argument("--config", default=str(tg.ROOT / "config" / "bench.json"))
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(Bench(args).main())


if __name__ == "__main__":
    main()
