"""Turn bench/results/latest.json into latest.md (tables) and latest.png (chart).

python -m bench.report [bench/results]     # re-render from the last raw run
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson

PEERS = ("nginx", "litellm", "portkey")
ORDER = ("direct", "gateway", "nginx", "litellm", "portkey")
FLOORS = ("relay-aiohttp", "relay-protocol")  # bench/floors.py: only in the headline table
NAMES = {
    "direct": "direct (no proxy)",
    "gateway": "**chromagent_proxy**",
    "nginx": "nginx proxy_pass",
    "litellm": "LiteLLM proxy",
    "portkey": "Portkey gateway",
    "relay-aiohttp": "relay on aiohttp's server, no gateway logic",
    "relay-protocol": "relay on a bare asyncio protocol, no gateway logic",
}

SHORT = {
    "direct": "direct",
    "gateway": "chromagent",
    "nginx": "nginx",
    "litellm": "LiteLLM",
    "portkey": "Portkey",
}

Rows = list[dict[str, Any]]


def _get(rows: Rows, target: str, scenario: str, level: int | None = None) -> dict[str, Any] | None:
    for r in rows:
        if (
            r["target"] == target
            and r["scenario"] == scenario
            and (level is None or r["concurrency"] == level)
        ):
            return r
    return None


def _headline_level(rows: Rows, scenario: str) -> int | None:
    levels = sorted({r["concurrency"] for r in rows if r["scenario"] == scenario})
    if not levels:
        return None
    return 64 if 64 in levels else levels[-1]


def _f(v: float | None, digits: int = 2) -> str:
    if v is None:
        return "–"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


def _diff(a: dict[str, Any] | None, b: dict[str, Any] | None, key: str) -> float | None:
    if not a or not b or a.get(key) is None or b.get(key) is None:
        return None
    return float(a[key]) - float(b[key])


def _ratio(a: dict[str, Any] | None, b: dict[str, Any] | None) -> str:
    if not a or not b or not b.get("rps"):
        return "–"
    return f"{a['rps'] / b['rps']:.2f}×"


def headline(data: dict[str, Any]) -> list[str]:
    rows: Rows = data["rows"]
    present = [t for t in ORDER if any(r["target"] == t for r in rows)]
    peers = [p for p in PEERS if p in present]
    out = [
        "| scenario | gateway | req/s (c=64) | p50 / p99 ms | added p50 ms (c=1) | "
        "added p99 ms (c=64) | added TTFT ms (c=1) | RSS MB | CPU µs/req | errors |"
        + "".join(f" × {NAMES[p]} |" for p in peers),
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * len(peers),
    ]
    for scen in data["scenarios"]:
        name = scen["name"]
        if name.startswith("slow-"):
            continue
        lvl = _headline_level(rows, name)
        if lvl is None:
            continue
        d1, dh = _get(rows, "direct", name, 1), _get(rows, "direct", name, lvl)
        for t in present:
            r = _get(rows, t, name, lvl)
            r1 = _get(rows, t, name, 1)
            if r is None:
                continue
            errors = r["errors"] + (r1["errors"] if r1 and r1 is not r else 0)
            ttft = _diff(r1, d1, "ttft_p50_ms") if t != "direct" else None
            cells = [
                f"{name}" + (f" (c={lvl})" if lvl != 64 else ""),
                NAMES[t],
                _f(r["rps"]),
                f"{_f(r['lat_p50_ms'])} / {_f(r['lat_p99_ms'])}",
                _f(_diff(r1, d1, "lat_p50_ms")) if t != "direct" else "",
                _f(_diff(r, dh, "lat_p99_ms")) if t != "direct" else "",
                _f(ttft) if scen["stream"] else "",
                _f(r.get("rss_mb"), 1),
                _f(r.get("cpu_us_per_req"), 1),
                str(errors) if not r.get("complete") else f"{errors} ({r['complete']})",
            ]
            cells += [_ratio(r, _get(rows, p, name, lvl)) if p != t else "" for p in peers]
            out.append("| " + " | ".join(cells) + " |")
    return out


def details(data: dict[str, Any]) -> list[str]:
    out = [
        "| scenario | target | c | req/s | p50 | p90 | p99 | TTFT p50 | TTFT p99 | gap p99 | "
        "complete | errors | CPU µs/req | target CPU % | load-side CPU % | RSS MB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in data["rows"]:
        if r["scenario"].startswith("slow-"):
            continue
        load = r.get("load_cpu_pct")
        flag = " ⚠" if load is not None and load > 90 else ""
        out.append(
            "| "
            + " | ".join(
                [
                    r["scenario"],
                    r["target"],
                    str(r["concurrency"]),
                    _f(r["rps"]),
                    _f(r["lat_p50_ms"]),
                    _f(r["lat_p90_ms"]),
                    _f(r["lat_p99_ms"]),
                    _f(r.get("ttft_p50_ms")),
                    _f(r.get("ttft_p99_ms")),
                    _f(r.get("gap_p99_ms")),
                    r.get("complete", ""),
                    str(r["errors"]),
                    _f(r.get("cpu_us_per_req"), 1),
                    _f(r.get("target_cpu_pct"), 0),
                    _f(load, 0) + flag,
                    _f(r.get("rss_mb"), 1),
                ]
            )
            + " |"
        )
    return out


def floor(data: dict[str, Any]) -> list[str]:
    """The headline (issue 20): CPU per request in the default configuration, ÷ nginx."""
    rows: Rows = data["rows"]
    out = [
        "| scenario | clients | chromagent CPU µs/req | nginx CPU µs/req | ratio | target | "
        "chromagent p99 ÷ p50 | aiohttp relay ÷ nginx | bare relay ÷ nginx |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def ratio(a: float | None, b: float | None) -> str:
        return f"{a / b:.1f}×" if a and b else "–"

    for scen in ("openai-json", "openai-stream"):
        for lvl in sorted({r["concurrency"] for r in rows if r["scenario"] == scen}):
            g, n = _get(rows, "gateway", scen, lvl), _get(rows, "nginx", scen, lvl)
            if not g or lvl < 16:
                continue
            gc, nc = g.get("cpu_us_per_req"), (n or {}).get("cpu_us_per_req")
            relays = [
                ratio((_get(rows, f, scen, lvl) or {}).get("cpu_us_per_req"), nc) for f in FLOORS
            ]
            spread = f"{g['lat_p99_ms'] / g['lat_p50_ms']:.1f}" if g.get("lat_p50_ms") else "–"
            out.append(
                f"| {scen} | {lvl} | {_f(gc, 1)} | {_f(nc, 1)} | {ratio(gc, nc)} | ≤ 5× | "
                f"{spread} | {relays[0]} | {relays[1]} |"
            )
    return out


def slow(data: dict[str, Any]) -> list[str]:
    out = [
        "| target | open streams | RSS before MB | RSS with all open MB | KB per stream | "
        "TTFT p50 ms | gap p99 ms | complete | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in data["rows"]:
        if not r["scenario"].startswith("slow-"):
            continue
        out.append(
            f"| {NAMES[r['target']]} | {r['concurrency']} | {_f(r.get('rss_before_mb'), 1)} | "
            f"{_f(r.get('rss_mb'), 1)} | {_f(r.get('kb_per_stream'), 1)} | "
            f"{_f(r.get('ttft_p50_ms'))} | {_f(r.get('gap_p99_ms'))} | {r.get('complete', '')} | "
            f"{r['errors']} |"
        )
    return out


def goals(data: dict[str, Any]) -> list[str]:
    rows: Rows = data["rows"]

    def g(scenario: str, level: int) -> dict[str, Any] | None:
        return _get(rows, "gateway", scenario, level)

    def d(scenario: str, level: int) -> dict[str, Any] | None:
        return _get(rows, "direct", scenario, level)

    out = ["| goal | target | measured | met |", "|---|---|---|---|"]

    def add(goal: str, want: str, value: float | None, ok: bool | None, unit: str = "") -> None:
        shown = "not measured" if value is None else f"{_f(value)}{unit}"
        mark = "–" if ok is None else ("yes" if ok else "**no**")
        out.append(f"| {goal} | {want} | {shown} | {mark} |")

    pj = g("openai-json", 64)
    rps = pj["rps"] if pj else None
    add(
        "pass-through JSON req/s at 64 clients",
        "≥ 5,000",
        rps,
        None if rps is None else rps >= 5000,
    )
    for peer, want in (("nginx", 1 / 8), ("portkey", 5.0), ("litellm", 50.0)):
        other = _get(rows, peer, "openai-json", 64)
        val = rps / other["rps"] if rps and other and other["rps"] else None
        add(f"… ÷ {peer}", f"≥ {want:g}×", val, None if val is None else val >= want, "×")
    for t in ("gemini-json", "anthropic-json"):
        r = g(t, 64)
        val = r["rps"] / rps if r and rps else None
        add(f"{t} ÷ pass-through at 64", "≥ 0.70", val, None if val is None else val >= 0.7)
    add1 = _diff(g("openai-json", 1), d("openai-json", 1), "lat_p50_ms")
    add(
        "added latency p50 at 1 client",
        "≤ 0.3 ms",
        add1,
        None if add1 is None else add1 <= 0.3,
        " ms",
    )
    add64 = _diff(pj, d("openai-json", 64), "lat_p99_ms")
    add(
        "added latency p99 at 64 clients",
        "≤ 25 ms",
        add64,
        None if add64 is None else add64 <= 25,
        " ms",
    )
    tt = _diff(g("openai-stream", 1), d("openai-stream", 1), "ttft_p50_ms")
    add("added TTFT p50 at 1 client", "≤ 0.5 ms", tt, None if tt is None else tt <= 0.5, " ms")
    st = g("openai-stream", 64)
    srps = st["rps"] if st else None
    add(
        "complete 20-chunk streams/s at 64", "≥ 2,500", srps, None if srps is None else srps >= 2500
    )
    paced = g("openai-stream-paced", 1)
    gap = paced.get("gap_p99_ms") if paced else None
    add(
        "chunks forwarded one by one (5 ms upstream gaps, c=1): gap p99",
        "≈ 5 ms, not 0 / 100",
        gap,
        None if gap is None else 3 <= gap <= 15,
        " ms",
    )
    idle = data["targets"].get("gateway", {}).get("rss_idle_mb")
    add("resident memory idle", "≤ 60 MB", idle, None if idle is None else idle <= 60, " MB")
    sl = next(
        (r for r in rows if r["target"] == "gateway" and r["scenario"].startswith("slow")), None
    )
    kb = sl.get("kb_per_stream") if sl else None
    n = sl["concurrency"] if sl else 1000
    add(
        f"memory per open slow stream ({n} open)",
        "≤ 30 KB",
        kb,
        None if kb is None else kb <= 30,
        " KB",
    )
    return out


def write(data: dict[str, Any], out: Path) -> None:
    m = data["machine"]
    lines = [
        "# chromagent_proxy benchmark",
        "",
        f"Run {m['date']} ({m['mode']} mode: {m['warmup_s']} s warm-up + {m['window_s']} s window "
        f"per point), {data.get('elapsed_s', '?')} s in all. Machine: {m['cpu']}, {m['cores']} "
        f"cores, {m['memory_gb']} GB, Linux {m['kernel']}; Python {m['python']}, aiohttp "
        f"{m['aiohttp']}, msgspec {m['msgspec']}, uvloop {m['uvloop']}. Pinning: {m['pinning']}.",
        "",
        "Versions: "
        + "; ".join(
            f"{NAMES[t].strip('*')} {i.get('version', '')}"
            + (f" (**could not run**: {i['error']})" if i.get("error") else "")
            for t, i in data["targets"].items()
        )
        + ".",
        "",
        "Every answer is checked (full text or both tool calls, usage, `[DONE]`); an answer "
        "that fails a check counts as an error, never as throughput. *Added* = this gateway's "
        "figure minus the direct-to-upstream figure at the same concurrency. TTFT = time to "
        "the first SSE event. CPU µs/req = CPU time of the target's processes in the window ÷ "
        "requests finished in it (direct rows: the fake upstream's RSS and CPU). "
        "Ratios = this row's req/s ÷ that gateway's req/s.",
        "",
        "![latency against concurrency](latest.png)",
        "",
        "## Headline: CPU per request against nginx (default configuration)",
        "",
        "Access log on (JSON to stdout), `modelMapping` renaming the model, a ≈ 1.1 KB chat "
        "body; nginx `proxy_pass` relays the same requests in the same run. Only the ratios "
        "compare across machines. p99 ÷ p50 ≤ 10 is the fairness target (issue 20). The "
        "last two columns are floors (`bench/floors.py`): the same requests relayed through "
        "the gateway's upstream client with no gateway logic, on aiohttp's server and on a "
        "bare asyncio protocol with httptools' parser (JSON only).",
        "",
        *floor(data),
        "",
        "## Goals (issue 9)",
        "",
        *goals(data),
        "",
        "## Per scenario (headline concurrency 64)",
        "",
        *headline(data),
        "",
        "## 1,000 concurrent slow streams (memory per open stream)",
        "",
        *slow(data),
        "",
    ]
    skipped = [
        f"- {NAMES[t].strip('*')}: {s}: {why}"
        for t, i in data["targets"].items()
        if t not in FLOORS
        for s, why in sorted((i.get("skip") or {}).items())
    ]
    if skipped:
        lines += ["## Not run", "", *skipped, ""]
    lines += [
        "## Every point",
        "",
        "⚠ = the driver's core was over 90 % busy: that point may be limited by the load side.",
        "",
        *details(data),
        "",
    ]
    (out / "latest.md").write_text("\n".join(lines))
    chart(data, out / "latest.png")


def chart(data: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no chart (make bench installs it)", file=sys.stderr)
        return
    rows: Rows = data["rows"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    colors = {"direct": "#777777", "gateway": "#d62728", "nginx": "#2ca02c"}
    colors.update(litellm="#1f77b4", portkey="#9467bd")
    for ax, scen, key in (
        (axes[0], "openai-json", "lat"),
        (axes[1], "openai-stream", "lat"),
    ):
        for t in ORDER:
            pts = sorted(
                (r["concurrency"], r[f"{key}_p50_ms"], r[f"{key}_p99_ms"])
                for r in rows
                if r["target"] == t
                and r["scenario"] == scen
                and r[f"{key}_p50_ms"] is not None
                and r["ok"]  # a target whose answers all failed has no latency to show
            )
            if not pts:
                continue
            xs = [p[0] for p in pts]
            label = NAMES[t].strip("*")
            ax.plot(xs, [p[1] for p in pts], "-o", color=colors[t], label=f"{label} p50")
            ax.plot(xs, [p[2] for p in pts], "--", color=colors[t], alpha=0.6, label=f"{label} p99")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel("latency ms (log)")
        ax.set_title(f"{scen}: latency against concurrency")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    ax = axes[2]
    names, values, cols = [], [], []
    for t in ORDER:
        r = _get(rows, t, "openai-json", 64)
        if r:
            names.append(SHORT[t])
            values.append(r["rps"])
            cols.append(colors[t])
    ax.bar(names, values, color=cols)
    ax.set_yscale("log")
    ax.set_ylim(bottom=10)  # bars from a fixed floor, so their heights compare on the log axis
    ax.set_title("openai-json at 64 clients: req/s (log)")
    for i, v in enumerate(values):
        ax.text(i, v, f"{v:,.0f}", ha="center", va="bottom", fontsize=8)
    fig.suptitle(f"chromagent_proxy bench, {data['machine']['date']}, {data['machine']['cpu']}")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "bench/results")
    write(orjson.loads((out / "latest.json").read_bytes()), out)
    print(out / "latest.md")


if __name__ == "__main__":
    main()
