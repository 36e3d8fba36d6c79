"""Profile the gateway's hot path with py-spy while the driver loads one scenario.

    python -m bench.profile openai-json [-c 64] [-d 8]

Starts the fake upstreams (core 0) and the gateway under ``py-spy record``
(core 1, ``--format raw`` collapsed stacks, native frames off), drives the
scenario, then prints the functions with the most samples: self (where the
time is spent) and inclusive (which call is expensive). The raw stacks stay in
bench/results/raw/profile-<scenario>.txt (not committed); feed them to any
flame-graph tool. py-spy: ``.venv/bin/pip install py-spy``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from bench import scenarios as sc
from bench import targets as tg
from bench.load import run_load, scenario_job


def summarize(path: Path, top: int) -> str:
    self_c: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    by_file: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        count = int(n)
        total += count
        frames = [f.split(" (")[0] + " (" + f.split(" (")[1].split(":")[0].rsplit("/", 1)[-1]
                  if " (" in f else f for f in stack.split(";")]  # fmt: skip
        self_c[frames[-1]] += count
        by_file[frames[-1].rpartition(" (")[2] or "?"] += count
        for f in set(frames):
            incl[f] += count
    if not total:
        return "no samples"
    out = [f"{total} samples", "", "self %   function"]
    out += [f"{c / total * 100:6.1f}   {f}" for f, c in self_c.most_common(top)]
    out += ["", "self %   file (where the time is spent, by module)"]
    out += [f"{c / total * 100:6.1f}   {f}" for f, c in by_file.most_common(top)]
    out += ["", "incl %   function"]
    out += [f"{c / total * 100:6.1f}   {f}" for f, c in incl.most_common(top)]
    return "\n".join(out)


async def drive(scen: sc.Scenario, conc: int, duration: float) -> None:
    job = scenario_job(scen, tg.HOST, tg.PORTS["gateway"])
    res = await run_load(job, conc, duration, 1.0)
    print(
        f"{scen.name} c={conc}: {res.rps:,.0f} req/s, errors {sum(res.errors.values())}",
        flush=True,
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("scenario", nargs="?", default="openai-json")
    p.add_argument("-c", "--concurrency", type=int, default=64)
    p.add_argument("-d", "--duration", type=float, default=8.0)
    p.add_argument("--top", type=int, default=30)
    p.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    p.add_argument("--port-offset", type=int, default=0, help="run beside other benches")
    args = p.parse_args()
    tg.UPSTREAM_PORT += args.port_offset
    tg.PORTS["gateway"] += args.port_offset
    scen = {s.name: s for s in sc.all_scenarios()}[args.scenario]
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    raw = tg.ROOT / "bench" / "results" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    out = raw / f"profile-{scen.name}.txt"
    if tg.TASKSET:
        os.sched_setaffinity(0, {tg.LOAD_CORE})
    env = dict(os.environ, PYTHONPATH=str(tg.ROOT))
    up = subprocess.Popen(
        tg.pinned(
            [sys.executable, "-m", "bench.upstreams", "--port", str(tg.UPSTREAM_PORT)], tg.LOAD_CORE
        ),
        env=env,
        stdout=subprocess.DEVNULL,
    )
    gw = tg.Gateway(raw, tg.ROOT / "config" / "bench.json")
    spy: subprocess.Popen[bytes] | None = None
    try:
        tg.wait_port(tg.UPSTREAM_PORT, up, 15)
        gw.start()
        assert gw.proc is not None
        gw_pid = tg.tree(gw.proc.pid)[-1]  # the python process under taskset
        asyncio.run(drive(scen, args.concurrency, 1.0))  # warm
        spy = subprocess.Popen(
            [
                pyspy,
                "record",
                "--pid",
                str(gw_pid),
                "--format",
                "raw",
                "-o",
                str(out),
                "--rate",
                str(args.rate),
                "--duration",
                str(int(args.duration)),
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.5)
        asyncio.run(drive(scen, args.concurrency, args.duration - 1))
        spy.wait(timeout=60)
    finally:
        gw.stop()
        up.terminate()
        up.wait(5)
    print(summarize(out, args.top))
    print(f"\nraw collapsed stacks: {out}")


if __name__ == "__main__":
    main()
