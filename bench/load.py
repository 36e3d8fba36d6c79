"""Async load driver: keep-alive HTTP/1.1 clients on raw asyncio protocols.

A hand-written client (no aiohttp/httpx on the load side) so one core can
drive the gateway and still check every answer. Each of ``concurrency``
workers owns one connection and sends the next request as soon as the last
one is checked. The run is bounded in time: a warm-up (not counted), then the
measurement window; requests/s counts correct answers that finished inside the
window, latencies those that started inside it. Streams record the time to the first
event, every gap between arrivals that carried an event, and completeness.

Ad hoc: ``python -m bench.load --port 18100 --scenario openai-json -c 64``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from bench import apis
from bench import scenarios as sc

Check = Callable[[bytes], "str | None"]


@dataclass(slots=True)
class Job:
    """One prepared request: the exact bytes to send and how to judge the answer."""

    host: str
    port: int
    raw: bytes
    stream: bool
    event_end: bytes  # what ends one event on the wire (to time arrivals)
    check: Check


def make_job(
    host: str, port: int, path: str, body: dict[str, Any], headers: dict[str, str], **kw: Any
) -> Job:
    data = orjson.dumps(body)
    head = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Content-Type: application/json",
        f"Content-Length: {len(data)}",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    raw = ("\r\n".join(head) + "\r\n\r\n").encode() + data
    return Job(host, port, raw, **kw)


@dataclass(slots=True)
class Reply:
    status: int = 0
    body: bytes = b""
    first_event: float = 0.0
    gaps: list[float] = field(default_factory=list)
    backend: str = ""


class ClientConn(asyncio.Protocol):
    """One keep-alive connection, one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._fut: asyncio.Future[Reply] | None = None
        self._buf = bytearray()
        self._reset()

    def _reset(self) -> None:
        self._head_done = False
        self._length = -1
        self._chunked = False
        self._pos = 0  # chunked: where the next chunk size line starts
        self._body = bytearray()
        self._reply = Reply()
        self._last = 0.0
        self._close_after = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        fut = self._fut
        if fut is not None and not fut.done():
            if self._head_done and self._length < 0 and not self._chunked:
                self._finish()  # body delimited by the connection close
            else:
                fut.set_exception(ConnectionError("connection closed mid-answer"))

    def send(self, job: Job, t0: float) -> asyncio.Future[Reply]:
        assert self.transport is not None
        self._reset()
        self._job = job
        self._t0 = t0
        self._fut = asyncio.get_running_loop().create_future()
        self.transport.write(job.raw)
        return self._fut

    def data_received(self, data: bytes) -> None:
        if self._fut is None:
            return
        if self._job.stream and self._head_done and self._job.event_end in data:
            self._mark()
        buf = self._buf
        buf += data
        if not self._head_done:
            end = buf.find(b"\r\n\r\n")
            if end == -1:
                return
            self._parse_head(bytes(buf[:end]))
            del buf[: end + 4]
            if self._job.stream and self._job.event_end in buf:
                self._mark()
        if self._chunked:
            self._dechunk()
        elif self._length >= 0 and len(buf) >= self._length:
            self._body = buf[: self._length]
            del buf[: self._length]
            self._finish()

    def _mark(self) -> None:
        now = time.perf_counter()
        if self._last:
            self._reply.gaps.append(now - self._last)
        else:
            self._reply.first_event = now - self._t0
        self._last = now

    def _parse_head(self, head: bytes) -> None:
        self._head_done = True
        lines = head.split(b"\r\n")
        self._reply.status = int(lines[0].split(b" ", 2)[1])
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            low = name.strip().lower()
            if low == b"content-length":
                self._length = int(value)
            elif low == b"transfer-encoding" and b"chunked" in value.lower():
                self._chunked = True
            elif low == b"connection" and b"close" in value.lower():
                self._close_after = True
            elif low == b"x-chromagent-backend":
                self._reply.backend = value.strip().decode()

    def _dechunk(self) -> None:
        buf = self._buf
        pos = 0
        while True:
            nl = buf.find(b"\r\n", pos)
            if nl == -1:
                break
            size = int(bytes(buf[pos:nl]).split(b";")[0], 16)
            if size == 0:
                if len(buf) < nl + 4:
                    break
                del buf[: nl + 4]
                self._finish()
                return
            if len(buf) < nl + 2 + size + 2:
                break
            self._body += buf[nl + 2 : nl + 2 + size]
            pos = nl + 2 + size + 2
        if pos:
            del buf[:pos]

    def _finish(self) -> None:
        reply = self._reply
        reply.body = bytes(self._body)
        fut, self._fut = self._fut, None
        if self._close_after and self.transport is not None:
            self.transport.close()
            self.closed = True
        if fut is not None and not fut.done():
            fut.set_result(reply)


@dataclass(slots=True)
class Result:
    concurrency: int
    duration: float
    ok: int = 0
    counted: int = 0  # finished inside the window
    latencies: list[float] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)
    gaps: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    backends: Counter[str] = field(default_factory=Counter)
    streams_complete: int = 0
    streams_total: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.counted / self.duration if self.duration else 0.0

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "concurrency": self.concurrency,
            "duration_s": round(self.duration, 3),
            "requests": self.ok + sum(self.errors.values()),
            "ok": self.ok,
            "rps": round(self.rps, 1),
            "errors": sum(self.errors.values()),
            "error_kinds": dict(self.errors.most_common(5)),
            **pcts("lat", self.latencies),
        }
        if self.streams_total:
            out.update(pcts("ttft", self.ttfts))
            out.update(pcts("gap", self.gaps))
            out["complete"] = f"{self.streams_complete}/{self.streams_total}"
        if len(self.backends) > 1:
            out["backends"] = dict(self.backends)
        out.update(self.extra)
        return out


def pcts(name: str, values: list[float]) -> dict[str, float | None]:
    if not values:
        return {f"{name}_p50_ms": None, f"{name}_p90_ms": None, f"{name}_p99_ms": None}
    v = sorted(values)
    n = len(v)

    def at(q: float) -> float:
        return round(v[min(n - 1, int(q * n))] * 1000, 3)

    return {f"{name}_p50_ms": at(0.5), f"{name}_p90_ms": at(0.9), f"{name}_p99_ms": at(0.99)}


async def _connect(job: Job) -> ClientConn:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(ClientConn, job.host, job.port)
    return proto


def _judge(job: Job, reply: Reply, res: Result) -> bool:
    if job.stream:
        res.streams_total += 1
    if reply.status != 200:
        res.errors[f"HTTP {reply.status}: {reply.body[:80]!r}"] += 1
        return False
    problem = job.check(reply.body)
    if problem is not None:
        res.errors[problem[:120]] += 1
        return False
    res.ok += 1
    if job.stream:
        res.streams_complete += 1
    if reply.backend:
        res.backends[reply.backend] += 1
    return True


async def run_load(
    job: Job,
    concurrency: int,
    duration: float,
    warmup: float,
    *,
    on_window: Callable[[str], None] | None = None,
    grace: float = 30.0,
) -> Result:
    """Closed loop: ``concurrency`` workers, each sends its next request when the last is done."""
    loop = asyncio.get_running_loop()
    res = Result(concurrency, duration)
    t_start = time.perf_counter()
    w_start = t_start + warmup
    w_end = w_start + duration
    fired: list[str] = []

    def mark(edge: str) -> None:
        fired.append(edge)
        if on_window is not None:
            on_window(edge)

    timers = [
        loop.call_later(warmup, mark, "start"),
        loop.call_later(warmup + duration, mark, "end"),
    ]

    async def worker() -> None:
        conn: ClientConn | None = None
        while True:
            t0 = time.perf_counter()
            if t0 >= w_end:
                break
            if conn is None or conn.closed:
                conn = await _connect(job)
                t0 = time.perf_counter()
            try:
                reply = await conn.send(job, t0)
            except ConnectionError as exc:
                conn = None
                if t0 >= w_start:
                    res.errors[f"connection: {exc}"] += 1
                continue
            t1 = time.perf_counter()
            if t1 < w_start:
                continue
            # Throughput: checked, correct answers that finished inside the window (whenever
            # they started, so a gateway slower than the window still scores what it did).
            if _judge(job, reply, res) and t1 <= w_end:
                res.counted += 1
            if t0 >= w_start:  # latencies: requests that started inside the window
                res.latencies.append(t1 - t0)
                if job.stream:
                    res.ttfts.append(reply.first_event)
                    res.gaps.extend(reply.gaps)
        if conn is not None and conn.transport is not None:
            conn.transport.close()

    gc.collect()
    gc.disable()
    try:
        tasks = [asyncio.ensure_future(worker()) for _ in range(concurrency)]
        done, pending = await asyncio.wait(tasks, timeout=warmup + duration + grace)
        for t in pending:
            t.cancel()
            res.errors["no answer within the grace period"] += 1
        for t in done:
            if t.exception() is not None:
                res.errors[f"driver: {t.exception()!r}"[:120]] += 1
    finally:
        gc.enable()
    # The workers stop on perf_counter and the timers run on the loop's clock: when every
    # worker is done before a window timer fired, mark the edge now (a missed "end" made
    # bench.ab fail with KeyError: 'end').
    for timer, edge in zip(timers, ("start", "end"), strict=True):
        if edge not in fired:
            timer.cancel()
            mark(edge)
    return res


async def run_count(job: Job, concurrency: int, total: int) -> Result:
    """Exactly ``total`` requests over ``concurrency`` connections (for instruction counts)."""
    res = Result(concurrency, 0.0)
    left = [total]

    async def worker() -> None:
        conn = await _connect(job)
        while left[0] > 0:
            left[0] -= 1
            reply = await conn.send(job, time.perf_counter())
            _judge(job, reply, res)
        assert conn.transport is not None
        conn.transport.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    res.duration = time.perf_counter() - t0
    res.counted = res.ok
    return res


async def run_slow(
    job: Job,
    streams: int,
    *,
    on_open: Callable[[], None] | None = None,
    timeout: float = 120.0,
) -> Result:
    """Open ``streams`` slow streams at once; call ``on_open`` when every one has started."""
    res = Result(streams, 0.0)
    conns: list[ClientConn] = []
    for i in range(0, streams, 100):  # stay under listen backlogs
        conns += await asyncio.gather(*(_connect(job) for _ in range(min(100, streams - i))))
    t_start = time.perf_counter()
    futs = []
    for i, conn in enumerate(conns):
        futs.append(conn.send(job, time.perf_counter()))
        if i % 100 == 99:
            await asyncio.sleep(0.01)
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        started = sum(1 for c in conns if c._reply.first_event or (c._fut is None))
        if started >= streams:
            break
        await asyncio.sleep(0.05)
    res.extra["all_open_after_s"] = round(time.perf_counter() - t_start, 3)
    if on_open is not None:
        on_open()
    done, pending = await asyncio.wait(
        [asyncio.ensure_future(f) for f in futs], timeout=max(1.0, deadline - time.perf_counter())
    )
    res.duration = time.perf_counter() - t_start
    for t in pending:
        t.cancel()
        res.errors["stream did not finish in time"] += 1
    for t in done:
        exc = t.exception()
        if exc is not None:
            res.errors[f"connection: {exc}"[:120]] += 1
            continue
        reply = t.result()
        res.latencies.append(0.0)
        res.ttfts.append(reply.first_event)
        res.gaps.extend(reply.gaps)
        _judge(job, reply, res)
    res.latencies = []
    res.counted = res.ok
    for c in conns:
        if c.transport is not None:
            c.transport.close()
    return res


def main() -> None:
    p = argparse.ArgumentParser(description="drive one scenario against one address")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--scenario", default="openai-json")
    p.add_argument("--direct", action="store_true", help="speak the upstream's own dialect")
    p.add_argument("-c", "--concurrency", type=int, default=64)
    p.add_argument("-d", "--duration", type=float, default=5.0)
    p.add_argument("-w", "--warmup", type=float, default=1.0)
    args = p.parse_args()
    scen = {s.name: s for s in sc.all_scenarios()}[args.scenario]
    job = scenario_job(scen, args.host, args.port, direct=args.direct)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    res = asyncio.run(run_load(job, args.concurrency, args.duration, args.warmup))
    print(orjson.dumps(res.summary(), option=orjson.OPT_INDENT_2).decode())
    if res.latencies:
        print(f"mean latency {statistics.fmean(res.latencies) * 1000:.3f} ms")


def event_end(scen: sc.Scenario, native: bool) -> bytes:
    if not native or scen.dialect == "openai":
        return b"\n\n"
    return {"gemini": b"}\r\n\r\n", "ollama": b"}\n"}.get(scen.dialect, b"}\n\n")


def scenario_job(
    scen: sc.Scenario,
    host: str,
    port: int,
    *,
    direct: bool = False,
    model: str | None = None,
    path: str = "/v1/chat/completions",
    headers: dict[str, str] | None = None,
) -> Job:
    """The request for one scenario: native to a stub (direct) or OpenAI to a gateway."""
    hdrs = {"Authorization": "Bearer bench", **(headers or {})}
    # Responses/Embeddings to an openai backend: the stub speaks them itself (direct rows too).
    native_api = scen.client in ("responses", "embeddings") and scen.dialect == "openai"
    if direct and not native_api:
        npath, body = sc.native_request(scen)
        return make_job(
            host,
            port,
            npath,
            body,
            hdrs,
            stream=scen.stream,
            event_end=event_end(scen, True),
            check=lambda b: sc.check_native(scen, b),
        )
    if scen.client == "messages":
        return make_job(
            host,
            port,
            "/v1/messages",
            sc.messages_body(scen, model or scen.gateway_model),
            {"anthropic-version": "2023-06-01", **hdrs},
            stream=scen.stream,
            event_end=b"\n\n",
            check=lambda b: sc.check_messages(scen, b),
        )
    if scen.client in ("responses", "embeddings"):
        responses = scen.client == "responses"
        return make_job(
            host,
            port,
            "/v1/responses" if responses else "/v1/embeddings",
            (apis.responses_body if responses else apis.embeddings_body)(
                scen, model or (scen.upstream_model if direct else scen.gateway_model)
            ),
            hdrs,
            stream=scen.stream,
            event_end=b"\n\n",
            check=lambda b: (apis.check_responses if responses else apis.check_embeddings)(scen, b),
        )
    body = sc.openai_body(scen, model or scen.gateway_model)
    return make_job(
        host,
        port,
        path,
        body,
        hdrs,
        stream=scen.stream,
        event_end=b"\n\n",
        check=lambda b: sc.check_openai(scen, b),
    )


if __name__ == "__main__":
    main()
