"""Peak memory and time of a relayed body after it was read: the model rename, the usage
option a stream adds, and the send through the upstream client (issue 20).

``python -m bench.bodymem DIR [DIR ...]``: for each source tree (imported from DIR), the
``openai`` backend's ``_body`` under a request context, then ``H1Client.request`` to a
sink in this process that reads into one preallocated buffer (so the sink allocates
nothing), for a 1 MB prose body (the bench's prompt-1mb) with the model first or last,
JSON or a stream (the gateway adds ``stream_options.include_usage``). Peak = tracemalloc's
peak while the body is renamed and sent, plus the body itself, ÷ the body's size: 1.0×
means no copy of the body was held. Time: min over runs of ``_body`` + send + answer
(tracemalloc off). uvloop, as the CLI runs; ``--asyncio`` for asyncio's own loop."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import sys
import time
import tracemalloc
from typing import Any

import uvloop

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: application/json\r\n\r\n{}"


class Sink(asyncio.BufferedProtocol):
    """Reads each request into one buffer and answers once Content-Length bytes came."""

    def __init__(self) -> None:
        self.buf = bytearray(512 * 1024)
        self.view = memoryview(self.buf)
        self.left = -1
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.view

    def buffer_updated(self, nbytes: int) -> None:
        if self.left < 0:  # the head is in the first read (the client writes it first)
            head_end = self.buf.find(b"\r\n\r\n", 0, nbytes)
            i = self.buf.find(b"Content-Length: ", 0, head_end)
            j = self.buf.find(b"\r\n", i)
            self.left = int(self.buf[i + 16 : j]) - (nbytes - head_end - 4)
        else:
            self.left -= nbytes
        if self.left == 0:
            self.left = -1
            assert self.transport is not None
            self.transport.write(ANSWER)


def body(first: bool, stream: bool) -> bytes:
    prompt = ("lorem ipsum " * (1_000_000 // 12 + 1))[:1_000_000]
    doc: dict[str, Any] = {"messages": [{"role": "user", "content": prompt}]}
    if stream:
        doc["stream"] = True
    doc = {"model": "alias", **doc} if first else {**doc, "model": "alias"}
    return json.dumps(doc).encode()


async def run(tree: str, runs: int, allocator: bool) -> list[tuple[str, float, float]]:
    sys.path.insert(0, tree)
    base = importlib.import_module("chromagent_proxy.backends.base")
    openai = importlib.import_module("chromagent_proxy.backends.openai")
    h1pool = importlib.import_module("chromagent_proxy.backends.h1pool")
    schema = importlib.import_module("chromagent_proxy.schema.openai")
    if allocator:  # as the CLI does in each worker (glibc keeps freed bodies' memory)
        importlib.import_module("chromagent_proxy.core.allocator").keep_freed_memory()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Sink, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = h1pool.H1Client()
    backend = openai.OpenAIBackend()
    out = []

    async def once(raw: bytes, stream: bool) -> None:
        base.set_context(base.RequestContext("r", raw, "alias", "gpt-4o-2024-08-06", "a", stream))
        req = schema.ChatCompletionRequest("gpt-4o-2024-08-06", [], stream=stream)
        sent = backend._body(req)
        resp = await client.request(
            "POST",
            f"http://127.0.0.1:{port}/v1/chat/completions",
            {"Content-Type": "application/json"},
            sent,
            connect_timeout=5,
            read_timeout=5,
        )
        del sent
        assert resp.status == 200
        async for _ in resp.content.iter_any():
            pass
        resp.release()

    for first in (True, False):
        for stream in (False, True):
            raw = body(first, stream)
            await once(raw, stream)  # the connection, warm
            best = float("inf")
            for _ in range(runs):
                t = time.perf_counter()
                await once(raw, stream)
                best = min(best, time.perf_counter() - t)
            tracemalloc.start()
            tracemalloc.reset_peak()
            now = tracemalloc.get_traced_memory()[0]
            await once(raw, stream)
            peak = tracemalloc.get_traced_memory()[1] - now
            tracemalloc.stop()
            name = f"model {'first' if first else 'last'}, {'stream' if stream else 'json'}"
            out.append((name, (peak + len(raw)) / len(raw), best * 1000))
    await client.close()
    server.close()
    sys.path.remove(tree)
    for mod in [m for m in sys.modules if m.startswith("chromagent_proxy")]:
        del sys.modules[mod]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("trees", nargs="+")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--asyncio", action="store_true", help="asyncio's loop, not uvloop")
    ap.add_argument("--allocator", action="store_true", help="core/allocator.py first, as the CLI")
    args = ap.parse_args()
    # The CLI runs uvloop: its writelines sends a group of views without joining them.
    factory = asyncio.new_event_loop if args.asyncio else uvloop.new_event_loop
    for tree in args.trees:
        with asyncio.Runner(loop_factory=factory) as runner:
            results = runner.run(run(tree, args.runs, args.allocator))
        for name, peak, ms in results:
            print(f"{tree}\t{name}\tpeak {peak:.2f}x body\t{ms:.3f} ms (min)")


if __name__ == "__main__":
    main()
