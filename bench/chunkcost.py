"""What one more streamed chunk costs (issue 20: translated per-chunk cost ≤ 10 µs).

    python -m bench.chunkcost . gemini anthropic openai -r 3 -d 3
    python -m bench.chunkcost . gemini anthropic openai --instr 200

For each family it runs ``<family>-stream`` (20 chunks) and ``<family>-stream-220``
(220 chunks, everything else the same: body, rename, client, upstream) against one
copy of the gateway, and reports ``(cost at 220 − cost at 20) / 200``: the cost of a
chunk with the fixed cost of the request taken out. Wall clock: CPU time of the
gateway process per request, the two points interleaved in every round (which goes
first alternates), the per-chunk figure computed inside each round and the median
reported. ``--instr N``: instructions per request under callgrind (user space only,
deterministic), per chunk; with both, the instructions are also converted to µs with
the run's own ratio (instructions per µs of CPU at 20 chunks), which is an estimate:
callgrind does not see the kernel's share.

The fake upstream writes a gap-free stream at once, so the gateway reads many chunks
per ``read``: this is the cost of decoding, translating and encoding one chunk, not of
one more socket read or write (those are per read, the Core v2 stream shell).
"""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path

from bench import ab
from bench import scenarios as sc
from bench import targets as tg

SMALL, LARGE = 20, 220


def points(family: str) -> tuple[sc.Scenario, sc.Scenario]:
    scens = {s.name: s for s in sc.all_scenarios()}
    small, large = scens[f"{family}-stream"], scens[f"{family}-stream-{LARGE}"]
    assert small.shape.chunks == SMALL and large.shape.chunks == LARGE
    return small, large


async def wall(src: Path, family: str, conc: int, rounds: int, duration: float) -> dict[str, float]:
    small, large = points(family)
    cpu: dict[int, list[float]] = {SMALL: [], LARGE: []}
    per_chunk: list[float] = []
    for r in range(rounds):
        order = [(SMALL, small), (LARGE, large)]
        if r % 2:
            order.reverse()
        for n, scen in order:
            _, c, _, _ = await ab.one(src, scen, conc, duration, "A")
            cpu[n].append(c)
            print(f"  {family} {n} chunks round {r + 1}: {c:.1f} µs CPU/req", flush=True)
        per_chunk.append((cpu[LARGE][-1] - cpu[SMALL][-1]) / (LARGE - SMALL))
    out = {
        "cpu20": statistics.median(cpu[SMALL]),
        "cpu220": statistics.median(cpu[LARGE]),
        "chunk_us": statistics.median(per_chunk),
    }
    print(
        f"{family}: CPU/req {out['cpu20']:.1f} µs at {SMALL} chunks, {out['cpu220']:.1f} µs at "
        f"{LARGE}; per chunk {out['chunk_us']:.2f} µs (rounds "
        f"{', '.join(f'{x:.2f}' for x in per_chunk)})",
        flush=True,
    )
    return out


async def instr(src: Path, family: str, conc: int, total: int) -> dict[str, float]:
    small, large = points(family)
    i20 = await ab.instructions(src, small, conc, total)
    i220 = await ab.instructions(src, large, conc, total)
    out = {"i20": i20, "i220": i220, "chunk_instr": (i220 - i20) / (LARGE - SMALL)}
    print(
        f"{family}: {i20:,.0f} instructions/req at {SMALL} chunks, {i220:,.0f} at {LARGE}; "
        f"per chunk {out['chunk_instr']:,.0f} instructions",
        flush=True,
    )
    return out


async def main_async(args: argparse.Namespace) -> None:
    for family in args.families:
        got: dict[str, float] = {}
        if args.rounds:
            got |= await wall(args.src, family, args.concurrency, args.rounds, args.duration)
        if args.instr:
            got |= await instr(args.src, family, args.instr_concurrency, args.instr)
        if "cpu20" in got and "i20" in got:
            per_us = got["i20"] / got["cpu20"]
            print(
                f"{family}: {per_us:,.0f} instructions per µs of CPU at {SMALL} chunks → "
                f"{got['chunk_instr'] / per_us:.2f} µs per chunk from the instruction count",
                flush=True,
            )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("src", type=Path, help="a directory holding chromagent_proxy/")
    p.add_argument("families", nargs="+", choices=("openai", "gemini", "anthropic"))
    p.add_argument("-r", "--rounds", type=int, default=3, help="wall-clock rounds (0: none)")
    p.add_argument("-d", "--duration", type=float, default=3.0)
    p.add_argument("-c", "--concurrency", type=int, default=64)
    p.add_argument("--instr", type=int, default=0, help="callgrind over this many requests")
    p.add_argument("--instr-concurrency", type=int, default=8)
    p.add_argument("--port-offset", type=int, default=0)
    args = p.parse_args()
    tg.UPSTREAM_PORT += args.port_offset
    tg.PORTS["gateway"] += args.port_offset
    if tg.TASKSET:
        os.sched_setaffinity(0, {tg.LOAD_CORE})
    tg.run_with_upstreams(lambda: main_async(args))


if __name__ == "__main__":
    main()
