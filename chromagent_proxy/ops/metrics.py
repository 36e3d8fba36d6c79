"""Prometheus metrics: plain counters on the request path, rendered at scrape time.

The request path only bumps ints in dicts and one bucket per histogram (no
prometheus-client objects, no locks, no label lookups). A scrape turns the
numbers into prometheus-client metric families and renders them with its
text exposition, or JSON for ``Accept: application/json`` (metrics_render.py).

With several worker processes each worker writes a snapshot of its numbers to
a shared directory (``CHROMAGENT_METRICS_DIR``, set by the supervisor) about
once a second, and at once on SIGUSR1; whichever worker answers a scrape signals
its siblings, waits (up to 0.25 s) for their fresh snapshots and adds its live
numbers to them. Counters of a worker that died are kept (totals stay
monotonic); gauges count only live workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson

from chromagent_proxy.ops.genai import GenAIMetrics, merge_into

log = logging.getLogger("chromagent_proxy")

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
OVERHEAD_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1)

# Model label values: configured names (modelMapping keys) always; names matching a
# routing rule's model glob while fewer than MAX_MODELS are kept; anything else a client
# makes up is "other", so random model names can neither grow the series nor crowd out
# the real ones.
MAX_MODELS = 200
FLUSH_INTERVAL_S = 1.0
# Set by the --workers supervisor: the directory the workers share snapshots through.
SNAPSHOT_DIR_ENV = "CHROMAGENT_METRICS_DIR"
ERROR_CLASSES = ("timeout", "429", "5xx", "connect", "protocol", "auth", "other")


class Hist:
    """A histogram as per-bucket counts (not cumulative) and a sum; +Inf is the last slot."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def dump(self) -> list[float]:
        return [*self.counts, self.sum]


class Metrics:
    """This process's numbers. Every method on the request path is a few dict operations."""

    def __init__(self, snapshot_dir: str | None = None) -> None:
        self.requests: dict[tuple[str, str, str], int] = {}
        self.latency: dict[str, Hist] = {}
        self.ttft: dict[str, Hist] = {}
        self.overhead = Hist(OVERHEAD_BUCKETS)
        self.tokens: dict[tuple[str, str, str], int] = {}
        self.upstream_errors: dict[tuple[str, str], int] = {}
        self.rate_limited = 0
        self.auth_failures = 0
        self.failovers = 0
        self.active_streams = 0
        self.inflight = 0  # requests being handled right now (saturation)
        self.genai = GenAIMetrics()
        # Backend id → 1 while this process routes around it (cooling down); set by the server.
        self.cooling: Callable[[], dict[str, int]] | None = None
        # Replicas that agree (breaker_redis.py, reload.py): gauges of this process.
        self.config_version = ""
        self.breaker_redis_up: int | None = None  # None: backend health is not shared
        self.breaker_redis_outages = 0
        self._models: set[str] = set()
        self._known: frozenset[str] = frozenset()
        self._patterns: tuple[re.Pattern[str], ...] = ()
        self._listed: set[str] = set()
        self._status_text = {s: str(s) for s in range(100, 600)}
        self.snapshot_dir = snapshot_dir
        self._dirty = False
        self._flusher: asyncio.Task[None] | None = None

    # -- request path -------------------------------------------------------------------

    def label_models(self, known: Iterable[str], patterns: Iterable[re.Pattern[str]]) -> None:
        """The configured model names, and routing-rule globs, that get their own label."""
        self._known = frozenset(known)
        self._patterns = tuple(patterns)

    def listed_models(self, names: Iterable[str]) -> None:
        """Names backends list (``GET /v1/models``): labelled too, at most MAX_MODELS of them."""
        room = max(0, MAX_MODELS - len(self._listed))
        fresh = [n for n in names if n not in self._known and len(n) <= 100][:room]
        if fresh:
            self._listed.update(fresh)
            self._known = self._known | frozenset(fresh)

    def model_label(self, model: str) -> str:
        if model in self._known or model in self._models:
            return model
        if not model:
            return "none"
        if (
            len(self._models) >= MAX_MODELS
            or len(model) > 100
            or not any(p.match(model) for p in self._patterns)
        ):
            return "other"
        self._models.add(model)
        return model

    def observe(
        self,
        backend: str,
        model: str,
        status: int,
        total_s: float,
        ttft_s: float | None,
        overhead_s: float | None,
        tokens_in: int,
        tokens_out: int,
    ) -> None:
        key = (backend, model, self._status_text.get(status) or str(status))
        self.requests[key] = self.requests.get(key, 0) + 1
        hist = self.latency.get(backend)
        if hist is None:
            hist = self.latency[backend] = Hist(LATENCY_BUCKETS)
        hist.observe(total_s)
        if ttft_s is not None:
            hist = self.ttft.get(backend)
            if hist is None:
                hist = self.ttft[backend] = Hist(TTFT_BUCKETS)
            hist.observe(ttft_s)
        if overhead_s is not None:
            self.overhead.observe(overhead_s)
        if tokens_in:
            k = (backend, model, "in")
            self.tokens[k] = self.tokens.get(k, 0) + tokens_in
        if tokens_out:
            k = (backend, model, "out")
            self.tokens[k] = self.tokens.get(k, 0) + tokens_out
        self._dirty = True

    def upstream_error(self, backend: str, klass: str) -> None:
        key = (backend, klass)
        self.upstream_errors[key] = self.upstream_errors.get(key, 0) + 1
        self._dirty = True

    # -- snapshots (several workers) --------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "at": time.time(),
            "requests": [[*k, v] for k, v in self.requests.items()],
            "latency": {b: h.dump() for b, h in self.latency.items()},
            "ttft": {b: h.dump() for b, h in self.ttft.items()},
            "overhead": self.overhead.dump(),
            "tokens": [[*k, v] for k, v in self.tokens.items()],
            "upstream_errors": [[*k, v] for k, v in self.upstream_errors.items()],
            "rate_limited": self.rate_limited,
            "auth_failures": self.auth_failures,
            "failovers": self.failovers,
            "active_streams": self.active_streams,
            "inflight": self.inflight,
            "cooling": sorted(self.cooling().items()) if self.cooling is not None else [],
            "genai": self.genai.snapshot(),
            "config_version": self.config_version,
            "breaker_redis_up": self.breaker_redis_up,
            "breaker_redis_outages": self.breaker_redis_outages,
        }

    def _path(self) -> Path | None:
        if not self.snapshot_dir:
            return None
        return Path(self.snapshot_dir) / f"metrics-{os.getpid()}.json"

    def flush(self) -> None:
        path = self._path()
        if path is None:
            return
        self._dirty = False
        tmp = path.with_suffix(".tmp")
        try:
            tmp.write_bytes(orjson.dumps(self.snapshot()))
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("metrics: cannot write snapshot %s: %s", path, exc)

    def start(self) -> None:
        if self.snapshot_dir and self._flusher is None:
            loop = asyncio.get_running_loop()
            # A sibling answering a scrape asks for a fresh snapshot with SIGUSR1. Installed
            # before the first file exists: siblings only signal workers that have a file.
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(signal.SIGUSR1, self.flush)
            self.flush()
            self._flusher = loop.create_task(self._flush_loop())

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL_S)
            # Gauges change without observe(); always write while requests are open.
            if self._dirty or self.active_streams or self.inflight:
                self.flush()

    async def stop(self) -> None:
        if self._flusher is not None:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                asyncio.get_running_loop().remove_signal_handler(signal.SIGUSR1)
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        self.active_streams = 0
        self.flush()

    async def refresh(self, wait_s: float = 0.25) -> None:
        """Before a scrape: ask the sibling workers for fresh snapshots and wait (briefly) for
        them, so the totals include requests they served a moment ago."""
        if not self.snapshot_dir:
            return
        t0 = time.time()
        self.flush()  # our own file too, so after a scrape every worker's file is current
        asked = self._ask_siblings()
        deadline = t0 + wait_s
        while asked and time.time() < deadline:
            await asyncio.sleep(0.005)
            asked = [p for p in asked if _written_at(p) < t0]

    def _ask_siblings(self) -> list[Path]:
        """SIGUSR1 to every live sibling worker (each flushes its snapshot); their files."""
        assert self.snapshot_dir
        asked: list[Path] = []
        own = self._path()
        for path in Path(self.snapshot_dir).glob("metrics-*.json"):
            try:
                pid = int(path.stem.rsplit("-", 1)[1])
            except ValueError:
                continue
            if path != own and _sibling(pid):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGUSR1)
                    asked.append(path)
        return asked

    def merged(self) -> dict[str, Any]:
        """This process's live numbers plus every other worker's last snapshot."""
        snaps = [self.snapshot()]
        if self.snapshot_dir:
            own = self._path()
            for path in Path(self.snapshot_dir).glob("metrics-*.json"):
                if path == own:
                    continue
                try:
                    snap = orjson.loads(path.read_bytes())
                except (OSError, orjson.JSONDecodeError):
                    continue  # a file being replaced right now; the next scrape sees it
                if not _alive(int(snap.get("pid", 0))):
                    # Gauges count live workers only.
                    snap["active_streams"] = snap["inflight"] = 0
                    snap["cooling"] = []
                    snap["active_streams"] = 0
                    snap["config_version"] = ""
                    snap["breaker_redis_up"] = None
                snaps.append(snap)
        return merge(snaps)


def _sibling(pid: int) -> bool:
    """Is ``pid`` a live worker of the same supervisor? (Never signal a recycled pid.)"""
    if pid <= 0 or pid == os.getpid():
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = stat.rsplit(")", 1)[-1].split()
    return len(fields) > 1 and fields[1] == str(os.getppid())


def _written_at(path: Path) -> float:
    try:
        return float(orjson.loads(path.read_bytes()).get("at", 0.0))
    except (OSError, orjson.JSONDecodeError, TypeError, ValueError):
        return 0.0


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _add_hist(into: dict[str, list[float]], key: str, values: list[float]) -> None:
    if not values:
        return
    cur = into.get(key)
    if cur is None or len(cur) != len(values):
        into[key] = list(values)
    else:
        into[key] = [a + b for a, b in zip(cur, values, strict=True)]


def merge(snaps: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "requests": {},
        "latency": {},
        "ttft": {},
        "overhead": [],
        "tokens": {},
        "upstream_errors": {},
        "rate_limited": 0,
        "auth_failures": 0,
        "failovers": 0,
        "active_streams": 0,
        "inflight": 0,
        "cooling": {},
        "genai": {},
        "config_versions": set(),
        "breaker_redis_up": None,
        "breaker_redis_outages": 0,
    }
    for snap in snaps:
        if snap.get("config_version"):
            out["config_versions"].add(snap["config_version"])
        up = snap.get("breaker_redis_up")
        if up is not None:
            # Workers each talk to Redis: the fleet view is up only if every live worker is.
            prev = out["breaker_redis_up"]
            out["breaker_redis_up"] = int(up) if prev is None else min(prev, int(up))
        out["breaker_redis_outages"] += int(snap.get("breaker_redis_outages", 0))
        for name in ("requests", "tokens", "upstream_errors"):
            table = out[name]
            for row in snap.get(name, ()):
                key = tuple(row[:-1])
                table[key] = table.get(key, 0) + row[-1]
        for name in ("latency", "ttft"):
            for b, values in snap.get(name, {}).items():
                _add_hist(out[name], b, values)
        holder = {"": out["overhead"]} if out["overhead"] else {}
        _add_hist(holder, "", snap.get("overhead", []))
        out["overhead"] = holder[""]
        for name in ("rate_limited", "auth_failures", "failovers", "active_streams", "inflight"):
            out[name] += int(snap.get(name, 0))
        # Per backend: how many live workers route around it right now.
        for backend, n in snap.get("cooling", ()):
            out["cooling"][backend] = out["cooling"].get(backend, 0) + int(n)
        merge_into(out["genai"], snap.get("genai", {}))
    return out
